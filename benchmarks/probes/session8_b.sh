# Issues 12 and 13 on the H200, one call (carry .whl and .lpips): the quality studies of the dynamic
# methods and of the caches on the built-in model, then the Wan2.1-14B 720p step kinds (issue 13's
# 50-step totals). Each part under its own time limit.
export DITACCEL_LPIPS_WEIGHTS=$PWD/.lpips/lpips_alex_v0.1.safetensors PYTHONUNBUFFERED=1
(time timeout 190 bash benchmarks/eval_tiny_video_dynamic.sh $OUT/eval --quiet) > $OUT/eval.log 2>&1; tail -4 $OUT/eval.log
(time timeout 150 bash benchmarks/eval_tiny_video_caches.sh $OUT/eval_caches --quiet) > $OUT/eval_caches.log 2>&1; tail -4 $OUT/eval_caches.log
(cd $OUT && tar czf eval_tiny_video_dynamic.tgz --exclude=frames eval && tar czf eval_tiny_video_caches.tgz --exclude=frames eval_caches && rm -rf eval eval_caches)
timeout 230 python benchmarks/pipeline.py --part steps --out $OUT > $OUT/pipeline_steps.log 2>&1; tail -9 $OUT/pipeline_steps.log
