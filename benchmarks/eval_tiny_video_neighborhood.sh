#!/usr/bin/env bash
# Issue 15: the quality side of the per-family "neighborhood" presets on the built-in model (30
# held-out prompts x 2 seeds, 20 steps, one GPU): the earlier preset (window (0.375, 0.75, 0.75),
# stride 2) against tile-strided windows (stride="tile": one window per query tile, fractional
# windows rounded to an odd number of tiles, every block whole), whose speed at each family's real
# shapes benchmarks/probes/neighborhood_presets.py measures.
#   bash benchmarks/eval_tiny_video_neighborhood.sh [OUT_DIR] [extra ditaccel eval arguments]
# On this 16 x 16 x 16 grid the 128-token tile is (4, 4, 8), the 64-token one (4, 4, 4).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/eval_tiny_video_common.sh"
OUT=${1:-benchmarks/results/eval_tiny_video_neighborhood}
shift || true
METHODS="neighborhood(window=(0.375, 0.75, 0.75), stride=2)"
METHODS+=',neighborhood(window=(0.375, 0.75, 0.75), stride="tile")'
METHODS+=',neighborhood(window=(0.5, 0.75, 0.75), stride="tile")'
METHODS+=',neighborhood(window=(0.375, 1.0, 1.0), stride="tile")'
METHODS+=',neighborhood(window=(0.375, 0.5, 0.5), stride="tile")'
METHODS+=',neighborhood(window=(0.375, 0.75, 0.75), stride="tile", block_size=64)'
METHODS+=',neighborhood(window=(0.375, 0.5, 0.5), stride="tile", block_size=64)'
run_eval "$OUT" "$METHODS" "$@"
