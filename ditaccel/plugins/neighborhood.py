"""Neighborhood attention (NATTEN's generalized neighborhood attention) on the latent grid.

Per dimension of the (T', H', W') grid: window w, stride s, dilation δ, causal flag; a query
attends a key when the key lies in the query's window in every dimension.

- Dilation splits an axis into δ interleaved groups (index mod δ); attention stays inside a
  group and is measured on the group coordinate floor(x / δ).
- Window halves: left = floor(w/2), right = floor(w/2) + (w mod 2) - 1, so even windows work.
- Stride: s consecutive queries share the window of their group leader
  min(floor(x/s)*s + floor(s/2), L-1); window start = clamp(leader - left, 0, L - w), so every
  query sees exactly w keys (windows shift inward at the borders). s = 1 is sliding-window NA,
  s = w blocked (Swin-like) attention.
- stride="tile": the queries of one token tile share a window (s = the tile), and windows given
  as fractions round to an odd number of tiles (or the whole dimension): then a window starts on
  a tile boundary, and a block pair is partial only where the grid's padded edge (or, for causal
  windows, the diagonal) cuts it (GNA's "perfectly block-sparse" recipe; the presets use it).
  The tile is the default one (least padding): where it is longer than a dimension, the window
  in that dimension is the whole dimension.
- Causal: leader = min(floor(x/s)*s + s - 1, L-1); keys y <= x with leader - y < w.

Each query's window is a box over the canonical coordinates (group, t, h, w), which is exactly
what the block layout stores; tiles that divide the stride groups and windows make every block
pair whole ("perfectly block-sparse"), otherwise the kernel masks the partial blocks exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import checks
from ..kernels.layout import BOX_MAX, BlockLayout, layout_from_boxes
from ..kernels.tiling import PAD_COORD, Grid, TokenTiling, build_tiling, default_tile

Triple = tuple[int, int, int]


@dataclass(frozen=True)
class Neighborhood:
    """Neighborhood attention over the latent grid (T', H', W').

    Args:
        window: keys per dimension (t, h, w). An int is a token count; a float in (0, 1] is a
            fraction of that grid dimension (rounded, at least 1), handy for presets that must
            fit any resolution.
        stride: queries per dimension that share one window (1 = sliding window, = window:
            blocked attention). Must be <= window; where the window is a fraction of the grid,
            the stride is capped at the window it resolves to (a preset's stride 2 on a one-frame
            image is stride 1 in time). ``"tile"``: the stride is the token tile, and fractional
            windows round to the nearest odd number of tiles (at least one, at most the whole
            dimension), so windows are whole blocks.
        dilation: interleaved groups per dimension; window * dilation must be <= grid size.
        causal: per-dimension causality (keys at or before the query only).
        tile: token tile (t, h, w) holding block_size tokens; None picks one that divides the
            stride groups where possible and wastes little padding.
        block_size: tokens per query/key block (128, or 64).
    """

    window: tuple[float, float, float] = (3, 7, 7)
    stride: Triple | str = (1, 1, 1)
    dilation: Triple = (1, 1, 1)
    causal: tuple[bool, bool, bool] = (False, False, False)
    tile: Triple | None = None
    block_size: int = 128

    def __post_init__(self) -> None:
        object.__setattr__(self, "window", checks.triple("window", self.window, allow_fraction=True))
        if isinstance(self.stride, str):
            if self.stride != "tile":
                raise ValueError(f"stride must be a tuple of 3 ints (t, h, w), an int, or \"tile\", got {self.stride!r}")
        else:
            object.__setattr__(self, "stride", checks.triple("stride", self.stride))
        object.__setattr__(self, "dilation", checks.triple("dilation", self.dilation))
        object.__setattr__(self, "causal", checks.bool_triple("causal", self.causal))
        checks.block_size(self.block_size)
        if self.tile is not None:
            object.__setattr__(self, "tile", checks.triple("tile", self.tile))
            if math.prod(self.tile) != self.block_size:
                raise ValueError(f"tile={self.tile} must hold block_size={self.block_size} tokens (t*h*w == block_size)")
        for d in range(3):
            w = self.window[d]
            if isinstance(w, int) and self.stride != "tile" and self.stride[d] > w:
                raise ValueError(f"stride={self.stride} must be <= window={self.window} in every dimension (dimension {d})")

    name = "neighborhood"

    def resolve_window(self, grid: Grid) -> Triple:
        """Token windows for ``grid``; checks them against the grid."""
        window = tuple(
            max(1, round(w * grid[d])) if isinstance(w, float) else int(w) for d, w in enumerate(self.window)
        )
        self._check_window(window, grid)
        if self.stride == "tile":
            tile = self.choose_tile(grid)
            for d in range(3):
                if not isinstance(self.window[d], float) and window[d] < min(tile[d], grid[d] // self.dilation[d]):
                    raise ValueError(
                        f'stride="tile" needs windows of at least one tile: window={window} is shorter than the tile '
                        f"{tile} in dimension {d} on grid {tuple(grid)} (give the window as a fraction, a longer "
                        "window, or an explicit stride)")
            window = tuple(whole_tiles(w, tile[d], grid[d] // self.dilation[d]) if isinstance(self.window[d], float) else w
                           for d, w in enumerate(window))
        return window

    def _check_window(self, window: Triple, grid: Grid) -> None:
        for d in range(3):
            if window[d] * self.dilation[d] > grid[d]:
                raise ValueError(
                    f"window*dilation must be <= the grid size in every dimension: window={window}, "
                    f"dilation={self.dilation}, grid (T', H', W')={tuple(grid)} (dimension {d})"
                )
            if self.stride != "tile" and self.stride[d] > window[d] and not isinstance(self.window[d], float):
                raise ValueError(f"stride={self.stride} must be <= window={window} (dimension {d})")

    def resolve_stride(self, grid: Grid) -> Triple:
        """The stride on ``grid``: capped at the window where the window is a fraction (the
        tile, capped at the window, for stride="tile")."""
        window = self.resolve_window(grid)
        if self.stride == "tile":
            return tuple(min(t, w) for t, w in zip(self.choose_tile(grid), window))
        return tuple(min(s, w) if isinstance(f, float) else s for s, w, f in zip(self.stride, window, self.window))

    def choose_tile(self, grid: Grid) -> Triple:
        if self.tile is not None:
            return self.tile
        sub = tuple(-(-grid[d] // self.dilation[d]) for d in range(3))
        if self.stride == "tile":  # the tile sets the stride: the least padding, then cube-like
            return default_tile(sub, self.block_size)
        return default_tile(sub, self.block_size, align=self.resolve_stride(grid))

    def build_layout(self, grid: Grid, device: torch.device | str | None = None) -> BlockLayout:
        window = self.resolve_window(grid)
        tiling = build_tiling(grid, self.choose_tile(grid), self.block_size, self.dilation)
        q_lo, q_hi = neighborhood_boxes(tiling, window, self.resolve_stride(grid), self.causal)
        # Windows slide monotonically with stride <= window: the per-dimension block test is exact.
        return layout_from_boxes(q_lo, q_hi, tiling, device=device, separable=True)


def whole_tiles(window: int, tile: int, length: int) -> int:
    """The window nearest ``window`` that starts and ends on tile boundaries when its stride is the
    tile: an odd number of tiles (the leader sits mid-tile, the window's left half is then whole
    tiles), or the whole ``length``. Ties go to the larger window."""
    candidates = [n * tile for n in range(1, length // tile + 1, 2)] + [length]
    return min(candidates, key=lambda c: (abs(c - window), -c))


def window_bounds(x: torch.Tensor, length: torch.Tensor, window: int, stride: int, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Inclusive [lo, hi] key range of query coordinates ``x`` on an axis of ``length`` (per query)."""
    if causal:
        leader = torch.minimum((x // stride) * stride + stride - 1, length - 1)
        return (leader - window + 1).clamp_min(0), x
    left = window // 2
    leader = torch.minimum((x // stride) * stride + stride // 2, length - 1)
    start = torch.minimum((leader - left).clamp_min(0), length - window)
    return start, start + window - 1


def neighborhood_boxes(tiling: TokenTiling, window: Triple, stride: Triple, causal: tuple[bool, bool, bool]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per canonical token, the inclusive box of keys it attends. Padding queries get an empty
    box: their output is discarded, and a full box would make every edge tile attend everything."""
    c = tiling.coords.long()
    real = c[:, 0] != PAD_COORD
    shapes = torch.tensor(tiling.group_shapes, dtype=torch.long)  # [groups, 3]
    lo = torch.full((c.shape[0], 4), BOX_MAX, dtype=torch.long)
    hi = torch.full((c.shape[0], 4), PAD_COORD, dtype=torch.long)
    g = c[real, 0]
    lo[real, 0] = g
    hi[real, 0] = g
    for d in range(3):
        length = shapes[g, d]
        a, b = window_bounds(c[real, d + 1], length, window[d], stride[d], causal[d])
        lo[real, d + 1] = a
        hi[real, d + 1] = b
    return lo.int(), hi.int()
