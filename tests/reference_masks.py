"""Token-level masks built straight from each method's definition, in the model's raster order.

Written independently of ditaccel's layout code (plain loops and numpy, no tiling, no blocks
except where the method itself quantizes to blocks), so tests can compare every attention call
with SDPA under these masks.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def neighborhood_axis_mask(length: int, window: int, stride: int, dilation: int, causal: bool) -> np.ndarray:
    """bool [length, length]: query x may attend key y along one axis (NATTEN's definition)."""
    m = np.zeros((length, length), dtype=bool)
    for x in range(length):
        r = x % dilation
        xg = x // dilation
        group = list(range(r, length, dilation))
        n = len(group)
        if causal:
            leader = min(xg // stride * stride + stride - 1, n - 1)
            keys = [yg for yg in range(n) if yg <= xg and leader - yg < window]
        else:
            left = window // 2
            leader = min(xg // stride * stride + stride // 2, n - 1)
            start = min(max(leader - left, 0), n - window)
            keys = list(range(start, start + window))
        for yg in keys:
            m[x, group[yg]] = True
    return m


def neighborhood_mask(grid, window, stride=(1, 1, 1), dilation=(1, 1, 1), causal=(False, False, False)) -> np.ndarray:
    """bool [N, N] over raster tokens of grid (T, H, W): the AND of the three axis masks."""
    axes = [neighborhood_axis_mask(grid[d], window[d], stride[d], dilation[d], causal[d]) for d in range(3)]
    m = axes[0][:, None, None, :, None, None] & axes[1][None, :, None, None, :, None] & axes[2][None, None, :, None, None, :]
    n = math.prod(grid)
    return m.reshape(n, n)


def radial_mask(grid, decay: float, sink: bool, block: int) -> np.ndarray:
    """bool [N, N]: the radial rule on raster tokens, then quantized to raster blocks of ``block``
    tokens (kept when over 60% of the block's touched columns are allowed for over a third of
    the block's rows)."""
    T, H, W = grid
    s = H * W
    s2 = 2 ** s.bit_length()
    n = T * s
    frame = np.arange(n) // s
    pos = np.arange(n) % s
    token = np.zeros((n, n), dtype=bool)
    for i in range(T):
        for j in range(T):
            d = abs(i - j)
            rows, cols = frame == i, frame == j
            if d <= 1 or (sink and j == 0):
                token[np.ix_(rows, cols)] = True
                continue
            g = d.bit_length()
            u = s2 * 2.0**-g
            if u < block and d % math.floor(block / u) != 0:
                continue
            w = max(block, u * decay)
            token[np.ix_(rows, cols)] = np.abs(pos[rows][:, None] - pos[cols][None, :]) <= w
    out = np.zeros_like(token)
    nb = -(-n // block)
    for bq in range(nb):
        rq = slice(bq * block, min((bq + 1) * block, n))
        real_rows = rq.stop - rq.start
        for bk in range(nb):
            rk = slice(bk * block, min((bk + 1) * block, n))
            col_density = token[rq, rk].sum(0)
            touched = (col_density > 0).sum()
            needed = (col_density > real_rows / 3.0).sum()
            if touched > 0 and needed > 0.6 * touched:
                out[rq, rk] = True
    return out


def joint_mask(video: np.ndarray, text_len: int, text_position: str, text_valid: torch.Tensor | None, batch: int) -> torch.Tensor:
    """bool [B, S, S]: video part from ``video``; text rows see every valid key; video rows also see
    every valid text key. text_valid: bool [B, text_len] (None = all valid)."""
    nv = video.shape[0]
    S = nv + text_len
    v = torch.from_numpy(video)
    if text_valid is None:
        text_valid = torch.ones(batch, text_len, dtype=torch.bool)
    out = torch.zeros(batch, S, S, dtype=torch.bool)
    vid = slice(text_len, S) if text_position == "first" else slice(0, nv)
    txt = slice(0, text_len) if text_position == "first" else slice(nv, S)
    out[:, vid, vid] = v
    out[:, vid, txt] = text_valid[:, None, :]
    out[:, txt, vid] = True
    out[:, txt, txt] = text_valid[:, None, :]
    return out
