# H200 call 1 of session 13 (issues 12, 13):
# 1. pyramid's importance="score" on the GPU: its tests (kernel vs torch in fp32/fp16, no host sync in bf16);
# 2. attention.py's pyramid rows with importance="score" (Wan2.1-14B 720p mass preset,
#    HunyuanVideo 720p fraction preset), overhead and speed-up against cuDNN in the same run;
# 3. the end-to-end studies on the built-in model's full held-out suite: pyramid's importance
#    (eval_tiny_video_pyramid_importance.sh), residual reuse with sparse references
#    (eval_tiny_video_residual_reference.sh); frames deleted (the device returns few files).
#   run(carry=[".whl"], command="... (as session11_a.sh) ...; bash benchmarks/probes/session13_a.sh")
export PYTHONUNBUFFERED=1
timeout 100 python -m pytest -q -x tests/test_pyramid_triton.py -k "score or synchronises or importance" > $OUT/pytest_pyramid_score_h200.log 2>&1
tail -2 $OUT/pytest_pyramid_score_h200.log
timeout 100 python benchmarks/attention.py --out $OUT --rounds 3 --no-flex --no-xformers --methods pyramid \
  --cases wan14b_720p,hunyuan_720p --pyramid-importance score --tag _pyramid_score > $OUT/attention_pyramid_score.log 2>&1
grep '"method"' $OUT/attention_pyramid_score.log | cut -c1-260
for S in pyramid_importance residual_reference; do
  (time timeout 160 bash benchmarks/eval_tiny_video_$S.sh $OUT/eval_tiny_video_$S --quiet) > $OUT/eval_$S.log 2>&1
  rm -rf $OUT/eval_tiny_video_$S/frames
  tail -4 $OUT/eval_$S.log | cut -c1-200
done
