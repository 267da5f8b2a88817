"""Top-k block attention: the keep-or-drop baseline that piecewise and pyramid attention are
measured against. Piecewise's selection score picks the exact blocks; every other block is
dropped (``ditaccel.kernels.topk_attention`` is the functional form)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import checks
from ..kernels.piecewise import piecewise_selection, topk_attention
from ..kernels.tiling import Grid, TokenTiling
from .dynamic import TOKEN_ORDERS, dynamic_tiling
from .piecewise import piecewise_compute_fraction


@dataclass(frozen=True)
class TopK:
    """Top-k block attention.

    Args:
        density: fraction of the key blocks computed per query block (the top
            max(1, floor(density * blocks)) by piecewise's score); the rest are dropped.
        block_size: tokens per query/key block (64 or 128).
        token_order: "tiled" (blocks are 3-D tiles of the latent grid) or "raster".
    """

    density: float = 0.15
    block_size: int = 64
    token_order: str = "tiled"

    name = "topk"
    dynamic = True

    def __post_init__(self) -> None:
        checks.number_in("density", self.density, 0.0, 1.0, low_open=True)
        checks.block_size(self.block_size)
        checks.choice("token_order", self.token_order, TOKEN_ORDERS)

    def tiling(self, grid: Grid) -> TokenTiling:
        return dynamic_tiling(tuple(grid), self.block_size, self.token_order)

    def computed_fraction(self, grid: Grid) -> float:
        """What a call computes on ``grid`` (it does not depend on the data): see ``attend``."""
        return piecewise_compute_fraction(math.prod(grid), self.block_size, self.density, approximate=False)

    def attend(self, q, k, v, *, extra_kv=None, scale=None, backend: str = "auto"):
        """As ``Piecewise.attend``; the computed fraction counts the selected blocks only."""
        out = topk_attention(q, k, v, density=self.density, block_size=self.block_size, scale=scale, backend=backend,
                             extra_kv=extra_kv)
        return out, piecewise_compute_fraction(q.shape[1], self.block_size, self.density, approximate=False)

    def block_codes(self, q, k, v, *, scale=None) -> torch.Tensor:
        """int8 [B, H, blocks, blocks] of one call's q, k, v: 2 = computed, 0 = dropped."""
        return piecewise_selection(q, k, v, density=self.density, block_size=self.block_size, scale=scale).to(torch.int8) * 2
