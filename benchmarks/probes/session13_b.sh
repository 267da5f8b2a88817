# H200 call 2 of session 13 (issues 12, 13), what call 1 (session13_a.sh) ran out of time for:
# 1. residual reuse with sparse references on the full held-out suite (eval_tiny_video_residual_reference.sh);
# 2. the last two rows of eval_tiny_video_pyramid_importance.sh (fractions (0.25, 0.1, 0.1, 0.2), both
#    importance estimates) in their own directory, dense again in the same run;
# 3. attention.py's pyramid rows in mode "fraction" with importance="score" at Wan2.1-14B 720p and
#    HunyuanVideo 720p (call 1 reached only Wan's mass-mode row).
#   run(carry=[...wheels, ".lpips"], command="... (as session13_a.sh) ...; bash benchmarks/probes/session13_b.sh")
export PYTHONUNBUFFERED=1
(time timeout 290 bash benchmarks/eval_tiny_video_residual_reference.sh $OUT/eval_tiny_video_residual_reference --quiet) \
  > $OUT/eval_residual_reference.log 2>&1
rm -rf $OUT/eval_tiny_video_residual_reference/frames $OUT/eval_tiny_video_residual_reference/strips
tail -3 $OUT/eval_residual_reference.log | cut -c1-200
source benchmarks/eval_tiny_video_common.sh  # (run_eval is a function: `timeout run_eval` below failed; session13_c.sh re-runs it)
F="fractions=(0.25, 0.1, 0.1, 0.2), dense_steps=0.24, dense_layers=1"
(time timeout 80 run_eval $OUT/eval_tiny_video_pyramid_importance_b "pyramid(mode='fraction', $F),pyramid(mode='fraction', importance='score', $F)" \
  --no-floor --quiet) > $OUT/eval_pyramid_importance_b.log 2>&1
rm -rf $OUT/eval_tiny_video_pyramid_importance_b/frames
tail -3 $OUT/eval_pyramid_importance_b.log | cut -c1-200
timeout 120 python benchmarks/attention.py --out $OUT --rounds 3 --no-flex --no-xformers --methods pyramid \
  --cases hunyuan_720p,wan14b_720p --pyramid-mode fraction --pyramid-importance score --tag _pyramid_fraction_score \
  > $OUT/attention_pyramid_fraction_score.log 2>&1
grep '"method"' $OUT/attention_pyramid_fraction_score.log | cut -c1-260
