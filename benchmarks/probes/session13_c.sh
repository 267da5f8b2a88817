# H200 call 3 of session 13 (issue 12): the part of session13_b.sh that did not start (`timeout`
# cannot run a shell function): the last two rows of eval_tiny_video_pyramid_importance.sh
# (fractions (0.25, 0.1, 0.1, 0.2), both importance estimates), dense again in the same run.
#   run(carry=[...wheels, ".lpips"], command="... (as session13_a.sh) ...; bash benchmarks/probes/session13_c.sh")
export PYTHONUNBUFFERED=1
F="fractions=(0.25, 0.1, 0.1, 0.2), dense_steps=0.24, dense_layers=1"
(time timeout 120 bash -c "source benchmarks/eval_tiny_video_common.sh && run_eval $OUT/eval_tiny_video_pyramid_importance_b \
  \"pyramid(mode='fraction', $F),pyramid(mode='fraction', importance='score', $F)\" --no-floor --quiet") > $OUT/eval_pyramid_importance_b.log 2>&1
rm -rf $OUT/eval_tiny_video_pyramid_importance_b/frames
tail -3 $OUT/eval_pyramid_importance_b.log | cut -c1-200
