# H200 call 3 of session 12 (issues 12, 13): session12_d.sh (pyramid's layout kernels: tests in
# bf16, the overhead probe, attention.py's pyramid rows at 32 and 16 samples), then the TaylorSeer
# quality rows on the full held-out suite at 50 steps (30 prompts x 2 seeds; dense, radial, radial +
# TaylorSeer lite every 3 steps after 12, TaylorSeer alone), as much as the call's time allows.
#   run(carry=[".whl"], command="... (as session11_a.sh) ...; bash benchmarks/probes/session12_e.sh")
export PYTHONUNBUFFERED=1
bash benchmarks/probes/session12_d.sh
TS="taylorseer_cache(use_lite_mode=True, cache_interval=3, disable_cache_before_step=12)"
(time timeout 330 bash benchmarks/eval_tiny_video_taylorseer_cpu.sh $OUT/eval_tiny_video_taylorseer --num-prompts 30 \
  --seeds 0,1 --quiet --methods "radial,radial + $TS,$TS") > $OUT/eval.log 2>&1; tail -12 $OUT/eval.log | cut -c1-200
