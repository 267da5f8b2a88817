#!/usr/bin/env bash
# Issue 13: quality of diffusers' TaylorSeer (lite mode) with and without radial, on the built-in
# model at 50 steps, the schedule the 50-step speed-ups of benchmarks/pipeline.py model (TaylorSeer's
# warm-up and interval count steps, so the 20-step suite of eval_tiny_video_common.sh would test
# other schedules). On the CPU (about 70 minutes on 2 cores), so 4 held-out prompts x seed 0.
#   bash benchmarks/eval_tiny_video_taylorseer_cpu.sh [OUT_DIR] [extra ditaccel eval arguments]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/eval_tiny_video_common.sh"
OUT=${1:-benchmarks/results/eval_tiny_video_taylorseer_cpu}
shift || true
TS="taylorseer_cache(use_lite_mode=True"
METHODS="radial,radial + broadcast"
METHODS+=",$TS, cache_interval=3, disable_cache_before_step=12)"
METHODS+=",radial + $TS, cache_interval=2, disable_cache_before_step=12)"
METHODS+=",radial + $TS, cache_interval=3, disable_cache_before_step=12)"
METHODS+=",radial + $TS, cache_interval=2, disable_cache_before_step=3)"
run_eval_cpu "$OUT" "$METHODS" 50 "$@"
