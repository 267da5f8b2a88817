#!/usr/bin/env bash
# Pyramid's importance estimate end to end (issue 12): the paper's sampled max logits against
# piecewise's block score (importance='score'), on the full held-out suite of
# eval_tiny_video_common.sh, with top-k at neighbouring compute in the same run; fraction mode with
# 16 importance samples per block too (its GPU cost: attention.py --pyramid-samples 16). Mind the
# first pair: "pyramid" is the built-in (Wan) model's preset, mode "mass", while
# "pyramid(importance='score')" starts from Pyramid's own defaults, mode "fraction" (as every
# config written with arguments): two modes at 0.553 and 0.404 of dense compute, not one. The
# rows with "mode='fraction'" compare the estimates in one mode.
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
