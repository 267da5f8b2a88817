#!/usr/bin/env bash
# Pyramid's importance samples per block, end to end (issue 12): the preset (block_size // 4 = 32
# samples per 128-token block) against 16, on the built-in model's held-out prompts, CPU-sized
# (4 prompts x seed 0, 20 steps). The GPU cost of each is in attention.py's --pyramid-samples rows.
#   bash benchmarks/eval_tiny_video_pyramid_samples_cpu.sh [OUT] [extra ditaccel eval arguments]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/eval_tiny_video_common.sh"
OUT=${1:-benchmarks/results/eval_tiny_video_pyramid_samples_cpu}
shift || true
run_eval_cpu "$OUT" "pyramid,pyramid(samples=16)" 20 "$@"
