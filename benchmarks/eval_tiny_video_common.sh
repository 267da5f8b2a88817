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
