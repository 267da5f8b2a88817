#!/usr/bin/env bash
# The quality baseline on the built-in model (README "Quality"): 30 held-out prompts x 2 seeds,
# 20 steps, dense + the radial and neighborhood presets + a sweep of each, on one GPU.
#   bash benchmarks/eval_tiny_video.sh [OUT_DIR] [extra ditaccel eval arguments]
# Radial at block 128 gives one layout for every decay on this 16 x 16 x 16 grid (its narrowest
# window is one block, half a frame), so the decay sweep uses 64-token blocks. Neighbourhood
# windows are fractions of the grid, as the preset's are; their block compute is quantised by the
# (4, 4, 8) tile: 0.391 up to 8 tokens per dimension, 0.508 at 10, 0.547 at 12, 0.625 at 16.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/eval_tiny_video_common.sh"
OUT=${1:-benchmarks/results/eval_tiny_video}
shift || true
METHODS="radial,radial(decay=0.2, block_size=64),radial(decay=1.0, block_size=64),radial(decay=2.0, block_size=64)"
# "neighborhood" is the preset, now Neighborhood(window=(0.375, 0.75, 0.75), stride="tile")
# (ditaccel/presets.py). The committed results in benchmarks/results/eval_tiny_video/ were run when it
# was window (0.375, 0.75, 0.75), stride 2 (chosen from this sweep; the one before, window
# (0.5, 0.5, 0.5), stride 1); eval_tiny_video_neighborhood.sh compares the stride-2 and tile windows.
METHODS+=",neighborhood,neighborhood(window=(0.5, 0.5, 0.5)),neighborhood(window=(0.5, 0.5, 0.5), stride=(4, 4, 8))"
METHODS+=",neighborhood(window=(0.625, 0.5, 0.5)),neighborhood(window=(0.5, 0.625, 0.625))"
METHODS+=",neighborhood(window=(0.75, 0.5, 0.5)),neighborhood(window=(0.5, 0.75, 0.75))"
METHODS+=",neighborhood(window=(1.0, 0.5, 0.5)),neighborhood(window=(0.5, 1.0, 1.0))"
# At or under the preset's block density (0.391): wider in space, shorter in time, stride 2.
METHODS+=",neighborhood(window=(0.5, 0.625, 0.625), stride=2)"
METHODS+=",neighborhood(window=(0.25, 0.75, 0.75), stride=2),neighborhood(window=(0.25, 1.0, 1.0), stride=2)"
METHODS+=",neighborhood(window=(0.25, 1.0, 1.0), stride=4),neighborhood(window=(0.5, 0.75, 0.75), stride=2)"
run_eval "$OUT" "$METHODS" "$@"
