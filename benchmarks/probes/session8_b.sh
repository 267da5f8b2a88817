# Issue 12's quality study on the H200 (carry .whl and .lpips): the dynamic methods on the built-in model.
export DITACCEL_LPIPS_WEIGHTS=$PWD/.lpips/lpips_alex_v0.1.safetensors
(time bash benchmarks/eval_tiny_video_dynamic.sh $OUT/eval --quiet) > $OUT/eval.log 2>&1; tail -25 $OUT/eval.log
cd $OUT && tar czf eval_tiny_video_dynamic.tgz --exclude=frames eval
# Issue 13's quality study (second call if the first ran long):
# (time bash benchmarks/eval_tiny_video_caches.sh $OUT/eval_caches --quiet) > $OUT/eval_caches.log 2>&1; tail -25 $OUT/eval_caches.log
# cd $OUT && tar czf eval_tiny_video_caches.tgz --exclude=frames eval_caches
