#!/usr/bin/env bash
# Pyramid's Wan preset end to end (issue 12): the paper's mode "mass" with its sampled importance
# (the preset today, and two lower thresholds for a curve) against mode "fraction" with each
# importance estimate at two splits, all on the built-in (Wan) model's full held-out suite with
# the preset's schedule (30% of the steps dense). The question: at equal compute, does the Wan
# preset lose anything by taking the fraction + score form, whose importance pass is one
# statistics read (Wan2.1-14B 720p: 8.7% of the call) instead of sampled logits (39%)?
#   bash benchmarks/eval_tiny_video_pyramid_wan_preset.sh [OUT_DIR] [extra ditaccel eval arguments]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/eval_tiny_video_common.sh"
OUT=${1:-benchmarks/results/eval_tiny_video_pyramid_wan_preset}
shift || true
RICH="fractions=(0.25, 0.1, 0.1, 0.2)"
METHODS="pyramid"
METHODS+=",pyramid(mode='mass', thresholds=(0.3, 0.375, 0.45, 0.6)),pyramid(mode='mass', thresholds=(0.2, 0.25, 0.3, 0.4))"
METHODS+=",pyramid(mode='fraction', importance='score'),pyramid(mode='fraction', importance='score', $RICH)"
METHODS+=",pyramid(mode='fraction'),pyramid(mode='fraction', $RICH)"
run_eval "$OUT" "$METHODS" "$@"
