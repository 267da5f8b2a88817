"""Pyramid attention (PSA, "Pyramid Sparse Attention"): every (query block, key block) pair is
computed at a resolution, not kept or dropped.

Per attention call, importance is estimated from sampled tokens (or, ``importance="score"``, from
piecewise's block score: the non-Wan preset's choice); per query block the key blocks,
sorted by importance, get level 1 (exact), 2, 4 or 8 (keys and values averaged over groups of
that many consecutive tokens, the logit raised by log of the group size) or are skipped, by
cumulative importance mass ("mass", the paper's Wan presets) or by fixed fractions of the blocks
("fraction"). All levels share one online softmax (SPEC 4.4; ``ditaccel.kernels.pyramid_attention``
and ``pyramid_levels`` are the functional form).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import checks
from ..kernels.pyramid import (
    BLOCK_FRACTIONS, MASS_THRESHOLDS, MIN_FULL_FRACTION, MODES, check_importance, check_level_fractions, pyramid_forward,
    pyramid_levels,
)
from ..kernels.tiling import Grid, TokenTiling
from .dynamic import TOKEN_ORDERS, dynamic_tiling


@dataclass(frozen=True)
class Pyramid:
    """Pyramid sparse attention.

    Args:
        mode: "mass" (levels by cumulative importance mass) or "fraction" (fixed fractions of the
            blocks per level).
        thresholds: mode "mass": upper bounds of the cumulative mass for levels 1, 2, 4, 8 (the
            rest skipped). Default: the paper's Wan2.1-14B preset (0.4, 0.5, 0.6, 0.8).
        min_full_fraction: mode "mass": at least this fraction of each row's blocks exact.
        fractions: mode "fraction": fractions of the blocks at levels 1, 2, 4, 8 (the rest
            skipped). Default (0.10, 0.05, 0.0, 0.20): about 15% of dense compute.
        block_size: tokens per query/key block (128 as in the paper, or 64).
        samples: importance "sampled": sampled tokens per block (default block_size // 4).
        importance: how each call ranks the key blocks of a query block: "sampled" (the paper's
            max logits of sampled tokens) or "score" (piecewise's block score, softmax over key
            blocks: one statistics pass, no samples; see benchmarks/fidelity.py for the two).
        token_order: "tiled" (blocks are 3-D tiles of the latent grid) or "raster".
    """

    mode: str = "fraction"
    thresholds: tuple[float, float, float, float] = MASS_THRESHOLDS
    min_full_fraction: float = MIN_FULL_FRACTION
    fractions: tuple[float, float, float, float] = BLOCK_FRACTIONS
    block_size: int = 128
    samples: int | None = None
    importance: str = "sampled"
    token_order: str = "tiled"

    name = "pyramid"
    dynamic = True

    def __post_init__(self) -> None:
        checks.choice("mode", self.mode, MODES)
        checks.block_size(self.block_size)
        checks.choice("token_order", self.token_order, TOKEN_ORDERS)
        checks.number_in("min_full_fraction", self.min_full_fraction, 0.0, 1.0)
        object.__setattr__(self, "thresholds", check_level_fractions("thresholds", self.thresholds, cumulative=True))
        object.__setattr__(self, "fractions", check_level_fractions("fractions", self.fractions, cumulative=False))
        check_importance(self.importance, self.samples, self.block_size)

    def tiling(self, grid: Grid) -> TokenTiling:
        return dynamic_tiling(tuple(grid), self.block_size, self.token_order)

    def computed_fraction(self, grid: Grid) -> None:
        """None: what a call computes depends on the data (``attend`` returns it per call)."""
        return None

    def attend(self, q, k, v, *, extra_kv=None, scale=None, backend: str = "auto"):
        """q, k, v: [B, N, H, D] video tokens in this method's token order; ``extra_kv`` = (k, v,
        kv_len) attended exactly (text). Returns (output, computed fraction of the video-video
        attention: a 0-dim tensor, each block pair at level l counting 1/l of its keys)."""
        levels = self.levels(q, k, v, scale)
        out = pyramid_forward(q, k, v, levels=levels, block_size=self.block_size, scale=scale, backend=backend,
                                extra_kv=extra_kv)
        return out, pyramid_compute_fraction(levels, q.shape[1], self.block_size)

    def levels(self, q, k, v, scale=None) -> torch.Tensor:
        """int32 [B, H, blocks, blocks] levels of one call's q, k, v (``pyramid_levels``)."""
        return pyramid_levels(q, k, v, block_size=self.block_size, mode=self.mode, thresholds=self.thresholds,
                              min_full_fraction=self.min_full_fraction, fractions=self.fractions, samples=self.samples,
                              scale=scale, importance=self.importance)

    def block_codes(self, q, k, v, *, scale=None) -> torch.Tensor:
        """int8 [B, H, blocks, blocks] of one call's q, k, v: 2 = exact (level 1), 1 = pooled (2, 4, 8), 0 = skipped."""
        levels = self.levels(q, k, v, scale)
        return (levels == 1).to(torch.int8) + (levels > 0).to(torch.int8)


def pyramid_compute_fraction(levels: torch.Tensor, num_tokens: int, block_size: int) -> torch.Tensor:
    """Pooled keys a query row computes over the N video keys, as a fraction of N, averaged over
    batch, heads and query blocks (on the levels' device: no host synchronisation)."""
    counts = torch.clamp(num_tokens - torch.arange(levels.shape[-1], device=levels.device) * block_size, max=block_size)
    per_level = torch.where(levels > 0, 1.0 / levels.clamp_min(1).float(), 0.0)
    return (per_level * counts).sum(-1).mean() / num_tokens
