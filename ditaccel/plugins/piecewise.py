"""Piecewise attention (PISA, "Piecewise Sparse Attention Is Wiser"): exact or approximate
instead of keep or drop.

Per attention call and per (batch, head, query block), the key blocks of highest score
``tau * qbar_I . kbar_J + log(||H_J||_F + 1e-5)`` are computed exactly, every other block by a
Taylor expansion of exp around its mean key (zeroth order: the block as one summary key standing
for its n_J tokens; first order: plus a correction through the shared key-value matrix H / T),
all in one online softmax. The whole key span is covered at a cost of about density + 1/block of
dense (SPEC 4.3; ``ditaccel.kernels.piecewise_attention`` is the functional form).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import checks
from ..kernels.piecewise import piecewise_attention, piecewise_selection
from ..kernels.tiling import Grid, TokenTiling
from .dynamic import TOKEN_ORDERS, dynamic_tiling


@dataclass(frozen=True)
class Piecewise:
    """Piecewise sparse attention.

    Args:
        density: fraction of the key blocks computed exactly per query block (the top
            max(1, floor(density * blocks)) by score), in (0, 1].
        block_size: tokens per query/key block (64 as in the paper, or 128).
        order: Taylor order of the approximate blocks: 1 (the paper) or 0 (summary keys only).
        token_order: "tiled" (blocks are 3-D tiles of the latent grid) or "raster".
    """

    density: float = 0.15
    block_size: int = 64
    order: int = 1
    token_order: str = "tiled"

    name = "piecewise"
    dynamic = True

    def __post_init__(self) -> None:
        checks.number_in("density", self.density, 0.0, 1.0, low_open=True)
        checks.block_size(self.block_size)
        checks.choice("order", self.order, (0, 1))
        checks.choice("token_order", self.token_order, TOKEN_ORDERS)

    def tiling(self, grid: Grid) -> TokenTiling:
        return dynamic_tiling(tuple(grid), self.block_size, self.token_order)

    def computed_fraction(self, grid: Grid) -> float:
        """What a call computes on ``grid`` (it does not depend on the data): see ``attend``."""
        return piecewise_compute_fraction(math.prod(grid), self.block_size, self.density, approximate=True)

    def attend(self, q, k, v, *, extra_kv=None, scale=None, backend: str = "auto"):
        """q, k, v: [B, N, H, D] video tokens in this method's token order; ``extra_kv`` = (k, v,
        kv_len) attended exactly (text). Returns (output, computed fraction of the video-video
        attention: exact blocks plus one summary key per approximated block)."""
        out = piecewise_attention(q, k, v, density=self.density, block_size=self.block_size, order=self.order,
                                  scale=scale, backend=backend, extra_kv=extra_kv)
        return out, piecewise_compute_fraction(q.shape[1], self.block_size, self.density, approximate=True)

    def block_codes(self, q, k, v, *, scale=None) -> torch.Tensor:
        """int8 [B, H, blocks, blocks] of one call's q, k, v: 2 = computed exactly, 1 = approximated."""
        return piecewise_selection(q, k, v, density=self.density, block_size=self.block_size, scale=scale).to(torch.int8) + 1


def piecewise_compute_fraction(num_tokens: int, block_size: int, density: float, *, approximate: bool) -> float:
    """Keys a query row computes over the N video keys, as a fraction of N: the selected blocks'
    tokens, plus (piecewise) one summary key for every other block."""
    blocks = -(-num_tokens // block_size)
    keep = max(1, math.floor(density * blocks + 1e-9))
    exact = min(num_tokens, keep * block_size)
    return (exact + (blocks - keep if approximate else 0)) / num_tokens
