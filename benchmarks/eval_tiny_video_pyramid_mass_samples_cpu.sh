#!/usr/bin/env bash
# Pyramid's importance samples in mass mode, end to end (issue 12): the Wan preset's 32 samples per
# 128-token block against 16, both mode "mass" (eval_tiny_video_pyramid_samples_cpu.sh compared two
# modes by mistake). CPU-sized, the same prompts, seeds and steps as that script (4 held-out prompts
# x seed 0, 20 steps; dense is deterministic on the CPU, so its preset row, 25.95 dB at 0.554 of dense
# compute, is the 32-sample side); about 40 minutes on 2 cores.
#   bash benchmarks/eval_tiny_video_pyramid_mass_samples_cpu.sh [OUT] [extra ditaccel eval arguments]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/eval_tiny_video_common.sh"
OUT=${1:-benchmarks/results/eval_tiny_video_pyramid_mass_samples_cpu}
shift || true
run_eval_cpu "$OUT" "pyramid(mode='mass', samples=16)" 20 "$@"
