#!/usr/bin/env bash
# The dynamic methods on the built-in model (issue 12's quality study): piecewise, top-k and pyramid
# against dense, with radial for reference, 30 held-out prompts x 2 seeds, 20 steps, one GPU.
#   bash benchmarks/eval_tiny_video_dynamic.sh [OUT_DIR] [extra ditaccel eval arguments]
# Presets first (each with its paper's schedule: piecewise/top-k 24% of the steps and the first
# layer dense, pyramid 30% of the steps), then piecewise, top-k and pyramid on one schedule (the
# piecewise preset's) at several densities, so that they meet at matched compute fractions.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/eval_tiny_video_common.sh"
OUT=${1:-benchmarks/results/eval_tiny_video_dynamic}
shift || true
SAME="dense_steps=0.24, dense_layers=1"
METHODS="radial,radial(decay=0.2, block_size=64),piecewise,topk,pyramid"
METHODS+=",piecewise(density=0.3),piecewise(density=0.5),piecewise(order=0),piecewise(order=0, density=0.3)"
METHODS+=",topk(density=0.3),topk(density=0.5)"
METHODS+=",pyramid(mode='mass', $SAME),pyramid(mode='fraction', $SAME)"
METHODS+=",pyramid(mode='fraction', fractions=(0.25, 0.1, 0.1, 0.2), $SAME),pyramid(mode='mass', block_size=64, $SAME)"
run_eval "$OUT" "$METHODS" "$@"
