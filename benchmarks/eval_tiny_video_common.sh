# shellcheck shell=bash
# Sourced by the eval_tiny_video*.sh scripts: the one `ditaccel eval` invocation they share. Their
# results are compared across runs (README "Quality", benchmarks/report.py), which holds only while
# every script runs the same model, prompts, seeds and steps: change them here, for all of them.
#   run_eval OUT_DIR METHODS [extra ditaccel eval arguments]
run_eval() {
  local out=$1 methods=$2
  shift 2
  HF_HUB_OFFLINE=1 python -m ditaccel.cli eval --model built-in --prompts held-out --seeds 0,1 --steps 20 \
    --methods "$methods" --out "$out" "$@"
}

# The quick CPU studies (no GPU at hand): 4 held-out prompts x seed 0, no noise floor, no profile;
# STEPS as the study needs it (the schedule a 50-step speed-up models, or the suite's 20).
#   run_eval_cpu OUT_DIR METHODS STEPS [extra ditaccel eval arguments]
run_eval_cpu() {
  local out=$1 methods=$2 steps=$3
  shift 3
  HF_HUB_OFFLINE=1 python -m ditaccel.cli eval --model built-in --prompts held-out --num-prompts 4 --seeds 0 --steps "$steps" \
    --no-floor --no-profile --methods "$methods" --out "$out" "$@"
}
