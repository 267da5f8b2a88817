#!/usr/bin/env bash
# Pyramid's importance samples per block, end to end (issue 12), CPU-sized (4 held-out prompts x
# seed 0, 20 steps). What it compares (found in session 13): the built-in model's preset "pyramid"
# (mode "mass", 32 samples per 128-token block) against "pyramid(samples=16)", which is Pyramid's
# own defaults (mode "fraction", as every config written with arguments) with 16 samples: two modes,
# not two sample counts. The same mode at 32 and 16 samples: eval_tiny_video_pyramid_importance.sh.
#   bash benchmarks/eval_tiny_video_pyramid_samples_cpu.sh [OUT] [extra ditaccel eval arguments]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/eval_tiny_video_common.sh"
OUT=${1:-benchmarks/results/eval_tiny_video_pyramid_samples_cpu}
shift || true
run_eval_cpu "$OUT" "pyramid,pyramid(samples=16)" 20 "$@"
