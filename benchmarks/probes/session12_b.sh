# Next H200 call (issue 13), left by session 11: the TaylorSeer rows' quality on the full held-out
# suite at 50 steps (the CPU study had 4 prompts x 1 seed), dense and radial in the same run.
#   run(carry=[".whl"], command="... (as session11_a.sh) ...; bash benchmarks/probes/session12_b.sh")
export PYTHONUNBUFFERED=1
(time timeout 540 bash benchmarks/eval_tiny_video_taylorseer_cpu.sh $OUT/eval_tiny_video_taylorseer --num-prompts 30 --seeds 0,1 \
  --quiet) > $OUT/eval.log 2>&1; tail -12 $OUT/eval.log | cut -c1-200
