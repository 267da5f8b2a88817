#!/usr/bin/env bash
# Attention caching on the built-in model (issue 13's quality study): ours (broadcast, residual
# reuse) alone and with sparse methods, diffusers' FirstBlockCache and TaylorSeer alone and with
# radial; 30 held-out prompts x 2 seeds, 20 steps, one GPU.
#   bash benchmarks/eval_tiny_video_caches.sh [OUT_DIR] [extra ditaccel eval arguments]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/eval_tiny_video_common.sh"
OUT=${1:-benchmarks/results/eval_tiny_video_caches}
shift || true
METHODS="radial,neighborhood,broadcast,broadcast(period=3),radial + broadcast"
METHODS+=",radial + residual_reuse,radial + residual_reuse(refresh_every=2),neighborhood + residual_reuse"
METHODS+=",piecewise + residual_reuse,first_block_cache(threshold=0.05),radial + first_block_cache(threshold=0.05)"
METHODS+=",taylorseer_cache,radial + taylorseer_cache"
run_eval "$OUT" "$METHODS" "$@"
