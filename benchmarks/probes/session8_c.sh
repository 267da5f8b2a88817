# Issues 12 and 13 on the H200, the call after session8_b.sh (carry .whl, .lpips and .resume: the two
# evaluations' results.json as that call left them when their time ran out): finish both evaluations
# with --resume, then the Wan2.1-1.3B 480p 50-step pipeline (saved after each combination).
export DITACCEL_LPIPS_WEIGHTS=$PWD/.lpips/lpips_alex_v0.1.safetensors PYTHONUNBUFFERED=1
(time timeout 60 bash benchmarks/eval_tiny_video_dynamic.sh .resume/eval --quiet --resume) > $OUT/eval.log 2>&1; tail -3 $OUT/eval.log
(time timeout 70 bash benchmarks/eval_tiny_video_caches.sh .resume/eval_caches --quiet --resume) > $OUT/eval_caches.log 2>&1; tail -3 $OUT/eval_caches.log
(cd .resume && tar czf $OUT/eval_tiny_video_dynamic.tgz --exclude=frames eval && tar czf $OUT/eval_tiny_video_caches.tgz --exclude=frames eval_caches)
timeout 300 python benchmarks/pipeline.py --part pipeline --out $OUT \
  --combinations "dense,radial,radial + broadcast,broadcast,radial + residual_reuse,first_block_cache,radial + first_block_cache" \
  > $OUT/pipeline.log 2>&1; tail -9 $OUT/pipeline.log
