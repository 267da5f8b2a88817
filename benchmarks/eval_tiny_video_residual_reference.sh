#!/usr/bin/env bash
# Residual reuse with a sparse reference (issue 13): does refreshing the residual against a richer
# radial config (cheaper than dense) buy more quality than spending the same compute on radial
# itself? Radial at several widths against radial + residual reuse with dense and sparse
# references, on the full held-out suite of eval_tiny_video_common.sh (a GPU run: ~2 minutes on
# an H200; eval_tiny_video_residual_cpu.sh is the 4-prompt CPU study of the dense reference).
#   bash benchmarks/eval_tiny_video_residual_reference.sh [OUT_DIR] [extra ditaccel eval arguments]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/eval_tiny_video_common.sh"
OUT=${1:-benchmarks/results/eval_tiny_video_residual_reference}
shift || true
WIDE4="radial(decay=4.0, block_size=64)"
WIDE8="radial(decay=8.0, block_size=64)"
NARROW="radial(decay=0.2, block_size=64)"
METHODS="radial,radial(decay=2.0, block_size=64),$WIDE4,$WIDE8"
METHODS+=",radial + residual_reuse,radial + residual_reuse(reference='$WIDE4'),radial + residual_reuse(reference='$WIDE8')"
METHODS+=",$NARROW,$NARROW + residual_reuse(refresh_every=10),$NARROW + residual_reuse(reference='$WIDE4', refresh_every=10)"
METHODS+=",$NARROW + residual_reuse(reference='$WIDE8', refresh_every=10)"
run_eval "$OUT" "$METHODS" "$@"
