#!/usr/bin/env bash
# Pyramid's importance estimate end to end (issue 12): the paper's sampled max logits against
# piecewise's block score (importance='score'), in both modes, on the full held-out suite of
# eval_tiny_video_common.sh, with top-k at neighbouring compute in the same run; the fraction
# preset with 16 importance samples per block too (its GPU cost: attention.py --pyramid-samples 16).
#   bash benchmarks/eval_tiny_video_pyramid_importance.sh [OUT_DIR] [extra ditaccel eval arguments]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/eval_tiny_video_common.sh"
OUT=${1:-benchmarks/results/eval_tiny_video_pyramid_importance}
shift || true
SAME="dense_steps=0.24, dense_layers=1"
METHODS="pyramid,pyramid(importance='score'),topk,topk(density=0.3)"
METHODS+=",pyramid(mode='fraction', $SAME),pyramid(mode='fraction', importance='score', $SAME)"
METHODS+=",pyramid(mode='fraction', samples=16, $SAME)"
METHODS+=",pyramid(mode='fraction', fractions=(0.25, 0.1, 0.1, 0.2), $SAME)"
METHODS+=",pyramid(mode='fraction', fractions=(0.25, 0.1, 0.1, 0.2), importance='score', $SAME)"
run_eval "$OUT" "$METHODS" "$@"
