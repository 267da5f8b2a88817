"""Radial attention ("Radial Attention: O(n log n) Sparse Attention with Energy Decay").

A static mask, identical for every head, layer and sparse step. Attention energy decays with
temporal and spatial distance, so the spatial window a query sees in another frame shrinks as
the frame distance d = |i - j| grows:

- s = tokens per latent frame, S2 = the smallest power of two strictly greater than s,
  g(d) = bit length of d (band g covers distances 2^(g-1) .. 2^g - 1).
- d <= 1: the whole frame. d >= 2: keys within w(d) = max(B, S2 * 2^-g(d) * decay) of the
  query's in-frame position (B = block size).
- When the undecayed width u = S2 * 2^-g(d) falls under B, the frame pair is kept only when
  d mod floor(B / u) == 0: far frames are visited more rarely instead of more thinly.
- Optional attention sink: every query also sees the whole first latent frame (Wan).
- The token mask is quantized to blocks: a block is computed when, among its columns that hold
  any allowed entry, more than 60% are allowed for over a third of the block's rows.

``spatial="raster"`` measures in-frame distance on the raster index, as the paper does.
``spatial="tiled"`` reorders each frame into 2-D tiles and uses a square window of the same area
(side sqrt(2w + 1)), the natural 2-D generalisation: its kept blocks hold more of the needed
energy per computed block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import checks
from ..kernels.layout import BlockLayout, layout_from_block_mask
from ..kernels.tiling import PAD_COORD, Grid, TokenTiling, build_tiling

SPATIAL_MODES = ("raster", "tiled")
COLUMN_DENSITY = 1.0 / 3.0  # a column counts as needed when over a third of its rows are allowed
COLUMN_SHARE = 0.6  # a block is kept when over 60% of its touched columns are needed


@dataclass(frozen=True)
class Radial:
    """Radial attention.

    Args:
        decay: spatial window scale in (0, inf); the window at frame distance d is
            max(block_size, S2 * 2^-bitlen(d) * decay). None = the model's preset (Wan 0.2,
            HunyuanVideo 0.95, others 1.0).
        block_size: tokens per block (128, or 64).
        spatial: "raster" (paper: distance on the in-frame raster index) or "tiled" (2-D window
            on 2-D tiles).
        sink: every query also attends the whole first latent frame. None = model preset (Wan
            on, others off).
    """

    decay: float | None = None
    block_size: int = 128
    spatial: str = "raster"
    sink: bool | None = None

    name = "radial"

    def __post_init__(self) -> None:
        if self.decay is not None:
            checks.number_in("decay", self.decay, 0.0, math.inf, low_open=True)
        checks.block_size(self.block_size)
        checks.choice("spatial", self.spatial, SPATIAL_MODES)
        if self.sink is not None and not isinstance(self.sink, bool):
            raise TypeError(f"sink must be True, False or None (model default), got {self.sink!r}")

    def build_layout(self, grid: Grid, device: torch.device | str | None = None) -> BlockLayout:
        tiling = self.tiling(grid)
        mask = radial_block_mask(tiling, self.decay_or_default, bool(self.sink), device=device)
        return layout_from_block_mask(mask.cpu(), tiling)

    @property
    def decay_or_default(self) -> float:
        return 1.0 if self.decay is None else float(self.decay)

    def tiling(self, grid: Grid) -> TokenTiling:
        if self.spatial == "raster":
            return build_tiling(grid, None, self.block_size)
        return build_tiling(grid, spatial_tile(grid, self.block_size), self.block_size)


def spatial_tile(grid: Grid, block_size: int) -> tuple[int, int, int]:
    """A one-frame tile (1, th, tw) of block_size tokens with the least padding on (H', W')."""
    best = None
    for th in (d for d in range(1, block_size + 1) if block_size % d == 0):
        tw = block_size // th
        if max(th, tw) > 2 * min(th, tw):
            continue  # keep tiles near-square: the window is a square
        padded = -(-grid[1] // th) * th * (-(-grid[2] // tw) * tw)
        cost = (padded, th)
        if best is None or cost < best[0]:
            best = (cost, (1, th, tw))
    return best[1]


def radial_frame_windows(num_frames: int, frame_tokens: int, decay: float, block_size: int, sink: bool) -> torch.Tensor:
    """float64 [T, T]: the in-frame raster window half-width for each (query frame, key frame);
    inf = whole frame, -1 = frame pair skipped."""
    s2 = 1 << frame_tokens.bit_length()  # smallest power of two strictly greater than s
    i = torch.arange(num_frames)
    d = (i[:, None] - i[None, :]).abs()
    win = torch.full((num_frames, num_frames), -1.0, dtype=torch.float64)
    for dist in range(num_frames):
        sel = d == dist
        if dist <= 1:
            win[sel] = math.inf
            continue
        u = s2 / 2 ** dist.bit_length()
        if u < block_size and dist % math.floor(block_size / u) != 0:
            continue
        win[sel] = max(block_size, u * decay)
    if sink:
        win[:, 0] = math.inf
    return win


def radial_block_mask(
    tiling: TokenTiling, decay: float, sink: bool, device: torch.device | str | None = None, max_chunk_elems: int = 2**25
) -> torch.Tensor:
    """bool [num_blocks, num_blocks] over the canonical (possibly tiled) video sequence.

    Built token by token, one chunk of query blocks at a time, on ``device`` (a GPU builds the
    75k-token Wan 720p mask in well under a second; a CPU takes about a minute)."""
    T, H, W = tiling.grid
    bs = tiling.block_size
    win = radial_frame_windows(T, H * W, decay, bs, sink).to(device)
    c = tiling.coords.long().to(device)
    real = c[:, 0] != PAD_COORD
    frame, y, x = c[:, 1].clamp_min(0), c[:, 2], c[:, 3]
    n = c.shape[0]
    nb = n // bs
    rows_per_block = real.view(nb, bs).sum(-1)
    out = torch.zeros(nb, nb, dtype=torch.bool, device=c.device)
    chunk = max(1, max_chunk_elems // (bs * n))
    for start in range(0, nb, chunk):
        rows = slice(start * bs, min(start + chunk, nb) * bs)
        w = win[frame[rows][:, None], frame[None, :]]  # [R, n]
        if tiling.tile is None:
            dist = ((y[rows] * W + x[rows])[:, None] - (y * W + x)[None, :]).abs().double()
            ok = dist <= w
        else:
            # Square window of the same area as the raster band of half-width w.
            half = (torch.sqrt(2 * w.clamp_min(0) + 1) - 1) / 2
            cheb = torch.maximum((y[rows][:, None] - y[None, :]).abs(), (x[rows][:, None] - x[None, :]).abs()).double()
            ok = (cheb <= half) | torch.isinf(w)
        ok &= w >= 0
        ok &= real[rows][:, None] & real[None, :]
        # Quantize: per (query block, key block), count needed columns among touched columns.
        col_count = ok.view(-1, bs, n).sum(1).view(-1, nb, bs)  # [qb, kb, bs]
        qrows = rows_per_block[start : start + col_count.shape[0]].view(-1, 1, 1)
        touched = (col_count > 0).sum(-1)
        needed = (col_count.double() > qrows * COLUMN_DENSITY).sum(-1)
        out[start : start + col_count.shape[0]] = (touched > 0) & (needed > COLUMN_SHARE * touched)
    return out
