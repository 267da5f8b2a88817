"""What the dynamic methods (piecewise, top-k, pyramid) share: the token order their blocks are
cut from.

A dynamic method decides per attention call, from q and k, which key blocks each query block
computes, so it has no layout to build; it needs only an order of the video tokens in which
consecutive runs of ``block_size`` tokens are compact 3-D regions (its blocks). "tiled" sorts
the tokens by 3-D tiles of ``block_size`` tokens, whole tiles first, then the edge tiles the grid
cuts short (so the order is a pure permutation that adds no padding tokens, and every whole tile
is one block); "raster" keeps the model's order.
"""

from __future__ import annotations

import functools

from ..kernels.tiling import Grid, TokenTiling, compact_tiling, default_tile

TOKEN_ORDERS = ("tiled", "raster")


@functools.lru_cache(maxsize=32)
def dynamic_tiling(grid: Grid, block_size: int, token_order: str) -> TokenTiling:
    """The token permutation of a dynamic method on ``grid`` (shared by every layer and patch)."""
    grid = tuple(int(g) for g in grid)
    tile = default_tile(grid, block_size) if token_order == "tiled" else None
    return compact_tiling(grid, tile, block_size)
