#!/usr/bin/env bash
# Issue 13: does residual reuse buy more quality than spending the same compute on a denser
# sparse method? Radial at increasing compute (larger decay: wider bands) against radial +
# residual reuse (its refreshes' dense calls counted in the compute), on the built-in model, 20
# steps like the main suite, on the CPU (about 25 minutes on 2 cores): 4 held-out prompts x seed 0.
#   bash benchmarks/eval_tiny_video_residual_cpu.sh [OUT_DIR] [extra ditaccel eval arguments]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/eval_tiny_video_common.sh"
OUT=${1:-benchmarks/results/eval_tiny_video_residual_cpu}
shift || true
METHODS="radial(decay=2.0, block_size=64),radial(decay=4.0, block_size=64),radial(decay=8.0, block_size=64)"
METHODS+=",radial + residual_reuse,radial + residual_reuse(refresh_every=10)"
METHODS+=",radial(decay=0.2, block_size=64) + residual_reuse(refresh_every=10)"
run_eval_cpu "$OUT" "$METHODS" 20 "$@"
