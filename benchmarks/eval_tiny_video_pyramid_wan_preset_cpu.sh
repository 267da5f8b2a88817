#!/usr/bin/env bash
# The CPU-sized side of eval_tiny_video_pyramid_wan_preset.sh (issue 12): fraction mode with
# piecewise's block score at the default split and at (0.25, 0.1, 0.1, 0.2), on the built-in (Wan)
# model with its preset schedule, 4 held-out prompts x seed 0, 20 steps. Dense is deterministic on
# the CPU, so the mass + sampled preset's row is eval_tiny_video_pyramid_mass_samples_cpu's (25.95 dB
# at 0.554 of dense compute, same prompts, seed and steps); about 80 minutes on 2 cores.
#   bash benchmarks/eval_tiny_video_pyramid_wan_preset_cpu.sh [OUT] [extra ditaccel eval arguments]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/eval_tiny_video_common.sh"
OUT=${1:-benchmarks/results/eval_tiny_video_pyramid_wan_preset_cpu}
shift || true
run_eval_cpu "$OUT" "pyramid(mode='fraction', importance='score', fractions=(0.25, 0.1, 0.1, 0.2)),pyramid(mode='fraction', importance='score')" 20 "$@"
