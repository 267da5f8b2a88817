"""Block layouts: the sparsity pattern as data (a LUT), built once and consumed by the kernels.

A layout covers a canonical token sequence of ``seq_len`` tokens cut into blocks of
``block_size``. For every query block it lists, left-packed, the key blocks to compute
(``kv_counts`` + ``kv_indices``, the same shape of data as FlexAttention's BlockMask) and flags the
ones that are only partly allowed (``kv_partial``). Inside a partial block the kernel applies an
exact token mask that is a *box test*: every query token carries an inclusive box
``[q_lo, q_hi]`` over the 4 canonical coordinates (dilation group, t, h, w) and a key token is
allowed when its coordinates ``k_coord`` fall inside. A partial flag is a bit set over those
coordinates (bit c: test coordinate c): a block pair whose every (query, key) pair passes the test
in a coordinate skips that coordinate's compare, so a key block whole in two of three dimensions
costs one compare per score, not four. ``PARTIAL_ALL`` tests every coordinate. Neighbourhood windows (any stride,
dilation, causality), ragged-edge padding and full attention are all boxes, so one in-kernel mask
serves every method; padding keys carry coordinate -1 and fall outside every box.

Leading LUT dimension G is 1 (same pattern for every head), H (per head) or B*H: program
(b, h) reads row ``(b * H + h) % G``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .tiling import PAD_COORD, TokenTiling

# Upper bound used for "no limit" box edges (coordinates are int32).
BOX_MAX = 2**30
# Partial flag testing all 4 coordinates (padding keys carry -1 in each, so any one rejects them).
PARTIAL_ALL = 0b1111
# Under full boxes (lower edges 0) one coordinate is enough to reject padding keys.
FULL_BOX_PADDING = 0b0001


@dataclass(frozen=True, eq=False)
class BlockLayout:
    """Which (query block, key block) pairs to compute, and how to mask the partial ones."""

    block_size: int
    seq_len: int  # canonical length, a multiple of block_size
    kv_counts: torch.Tensor  # int32 [G, num_q_blocks]
    kv_indices: torch.Tensor  # int32 [G, num_q_blocks, max_kv_blocks], left-packed, -1 after count
    kv_partial: torch.Tensor  # int8  [G, num_q_blocks, max_kv_blocks], bit c = test coordinate c (0: whole)
    q_lo: torch.Tensor  # int32 [seq_len, 4]
    q_hi: torch.Tensor  # int32 [seq_len, 4]
    k_coord: torch.Tensor  # int32 [seq_len, 4]
    tiling: TokenTiling | None = field(default=None, repr=False)
    num_text_blocks: int = 0  # trailing blocks holding text tokens (joint attention)
    # int32 [G, num_q_blocks]: how many of each row's entries are video blocks (they come first);
    # None without text blocks (then all of them)
    kv_counts_video: torch.Tensor | None = field(default=None, repr=False)
    # OR of all partial flags: the coordinates the kernel tests in partial blocks (0: none)
    partial_dims: int = field(init=False, repr=False, default=0)

    def __post_init__(self) -> None:
        flags = self.kv_partial.to(torch.int32)
        dims = sum(1 << c for c in range(4) if bool(((flags >> c) & 1).any())) if flags.numel() else 0
        object.__setattr__(self, "partial_dims", dims)

    @property
    def num_blocks(self) -> int:
        return self.seq_len // self.block_size

    @property
    def max_kv_blocks(self) -> int:
        return int(self.kv_indices.shape[-1])

    @property
    def has_partial(self) -> bool:
        return self.partial_dims != 0

    def block_density(self) -> float:
        """Computed block pairs / all block pairs (video and text blocks together)."""
        return float(self.kv_counts.double().mean()) / self.num_blocks

    def video_block_density(self) -> float:
        """Computed video-video block pairs / all video-video block pairs."""
        nv = self.num_blocks - self.num_text_blocks
        if self.num_text_blocks == 0:
            return self.block_density()
        idx = self.kv_indices[:, :nv]
        valid = (idx >= 0) & (idx < nv)
        return float(valid.double().sum()) / (idx.shape[0] * nv * nv)

    def to(self, device: torch.device | str) -> "BlockLayout":
        return BlockLayout(
            self.block_size,
            self.seq_len,
            self.kv_counts.to(device),
            self.kv_indices.to(device),
            self.kv_partial.to(device),
            self.q_lo.to(device),
            self.q_hi.to(device),
            self.k_coord.to(device),
            self.tiling,
            self.num_text_blocks,
            None if self.kv_counts_video is None else self.kv_counts_video.to(device),
        )

    def dense_block_mask(self) -> torch.Tensor:
        """bool [G, num_blocks, num_blocks]: which block pairs are computed."""
        G, M, _ = self.kv_indices.shape
        mask = torch.zeros(G, M, self.num_blocks + 1, dtype=torch.bool, device=self.kv_indices.device)
        idx = self.kv_indices.long().clamp_min(-1) % (self.num_blocks + 1)  # -1 -> spare column
        mask.scatter_(2, idx, True)
        return mask[:, :, : self.num_blocks]


def pack_block_mask(block_mask: torch.Tensor, partial: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-pack a boolean [G, M, N] block mask into (counts, indices, partial flags).

    ``partial``: bool (flag ``PARTIAL_ALL``) or the per-coordinate bits, [M, N] or [G, M, N]."""
    if block_mask.dim() == 2:
        block_mask = block_mask[None]
    G, M, N = block_mask.shape
    counts = block_mask.sum(-1).to(torch.int32)
    width = max(int(counts.max()) if counts.numel() else 0, 1)
    # Stable sort puts the kept columns first, in increasing key-block order.
    order = torch.argsort((~block_mask).to(torch.int8), dim=-1, stable=True)[..., :width]
    kept = torch.gather(block_mask, -1, order)
    indices = torch.where(kept, order, torch.full_like(order, -1)).to(torch.int32)
    if partial is None:
        flags = torch.zeros_like(indices, dtype=torch.int8)
    else:
        if partial.dim() == 2:
            partial = partial[None].expand(G, -1, -1)
        if partial.dtype == torch.bool:
            partial = partial.to(torch.int8) * PARTIAL_ALL
        flags = torch.where(kept, torch.gather(partial.to(torch.int8), -1, order), 0).to(torch.int8)
    return counts, indices, flags


def full_boxes(seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Query boxes that admit every non-padding key."""
    lo = torch.zeros(seq_len, 4, dtype=torch.int32)
    hi = torch.full((seq_len, 4), BOX_MAX, dtype=torch.int32)
    return lo, hi


def padding_blocks(tiling: TokenTiling) -> torch.Tensor:
    """bool [num_blocks]: blocks that contain at least one padding token."""
    pad = tiling.coords[:, 0] == PAD_COORD
    return pad.view(-1, tiling.block_size).any(-1)


def layout_from_block_mask(block_mask: torch.Tensor, tiling: TokenTiling) -> BlockLayout:
    """A whole-block layout (e.g. radial) over a tiled video sequence; blocks holding padding keys
    are flagged partial and masked by full boxes (which reject padding coordinates)."""
    partial = (padding_blocks(tiling).to(torch.int8) * FULL_BOX_PADDING)[None, :].expand(block_mask.shape[-2], -1)
    counts, indices, flags = pack_block_mask(block_mask, partial)
    lo, hi = full_boxes(tiling.canon_len)
    return BlockLayout(tiling.block_size, tiling.canon_len, counts, indices, flags, lo, hi, tiling.coords.clone(), tiling)


def layout_from_boxes(
    q_lo: torch.Tensor,
    q_hi: torch.Tensor,
    tiling: TokenTiling,
    chunk: int = 64,
    device: torch.device | str | None = None,
    separable: bool = False,
) -> BlockLayout:
    """The exact layout of a box mask: a block pair is computed when any (query, key) pair in it
    passes the box test, and is whole (no in-kernel mask) when every pair passes.

    ``separable=True`` promises that each query's box edge in a dimension depends only on the
    query's coordinate in that dimension, monotonically, with no gaps between the boxes of
    neighbouring queries (true of neighbourhood windows with stride <= window). A tile's real
    tokens are a product of per-dimension ranges, so a block pair is then non-empty exactly when
    every dimension overlaps: the per-dimension test is exact and the token check is skipped.

    ``device``: where to run the exact check of candidate block pairs (a GPU does the 100k-token
    stride-1 neighbourhoods in seconds; the CPU takes minutes). The layout comes back on the CPU."""
    bs = tiling.block_size
    if device is not None and torch.device(device).type != "cpu":
        chunk = max(chunk, 1024)
    kc = tiling.coords.long().to(device)
    lo, hi = q_lo.long().to(device), q_hi.long().to(device)
    nb = tiling.num_blocks
    pad_key = (kc[:, 0] == PAD_COORD).view(nb, bs)  # padding tokens (as keys, and as queries)
    # Candidates (necessary condition per dimension), then an exact check on each candidate.
    big = torch.iinfo(torch.int64).max
    kb = kc.view(nb, bs, 4)
    kmin = torch.where(pad_key[..., None], big, kb).amin(1)  # [nb, 4]
    kmax = torch.where(pad_key[..., None], -big, kb).amax(1)
    lo_min = lo.view(nb, bs, 4).amin(1)
    hi_max = hi.view(nb, bs, 4).amax(1)
    cand = ((lo_min[:, None, :] <= kmax[None]) & (kmin[None] <= hi_max[:, None, :])).all(-1)
    cand &= ~pad_key.all(-1)[None, :]
    bits = _partial_bits(kb, lo.view(nb, bs, 4), hi.view(nb, bs, 4), pad_key, cand)
    whole = bits == 0
    if separable:
        check = torch.zeros_like(cand)
        block_mask = cand.clone()
    else:
        check = cand & ~whole
        block_mask = whole.clone()
    qi, ki = check.nonzero(as_tuple=True)
    for s in range(0, qi.numel(), chunk):
        q_b, k_b = qi[s : s + chunk], ki[s : s + chunk]
        ql = lo.view(nb, bs, 4)[q_b][:, :, None, :]  # [c, bs, 1, 4]
        qh = hi.view(nb, bs, 4)[q_b][:, :, None, :]
        kk = kb[k_b][:, None, :, :]  # [c, 1, bs, 4]
        ok = ((ql <= kk) & (kk <= qh)).all(-1) & ~pad_key[k_b][:, None, :]
        block_mask[q_b, k_b] = ok.flatten(1).any(-1)
    partial = torch.where(block_mask & ~whole, bits, 0).cpu()
    counts, indices, flags = pack_block_mask(block_mask.cpu(), partial)
    return BlockLayout(bs, tiling.canon_len, counts, indices, flags, q_lo.int().cpu(), q_hi.int().cpu(), tiling.coords.clone(), tiling)


def _partial_bits(kb: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, pad: torch.Tensor, computed: torch.Tensor) -> torch.Tensor:
    """int8 [nb, nb]: the coordinates the kernel must test for each (query block, key block) pair
    (kb, lo, hi: [nb, bs, 4] key coordinates and query boxes per block; pad: [nb, bs] padding).

    Bit c is set where some real (query, key) pair fails coordinate c: over a block pair, the
    largest lower edge > the smallest key coordinate, or the largest key > the smallest upper edge.
    Padding needs one tested coordinate more at most: a padding query's box is empty in every
    coordinate, so any tested one rejects it; a padding key (-1 everywhere) fails any coordinate
    whose lower edges are all >= 0. Where a pair with padding tests no such coordinate yet, one is
    added, preferably one that the real pairs of ``computed`` (bool [nb, nb], the candidate pairs)
    already need somewhere: the kernel's tests are per layout, so padding then costs nothing extra
    (all four if no coordinate qualifies)."""
    big = torch.iinfo(torch.int64).max
    kmin = torch.where(pad[..., None], big, kb).amin(1)  # [nb, 4] over real keys
    kmax = torch.where(pad[..., None], -big, kb).amax(1)
    lo_max = torch.where(pad[..., None], -big, lo).amax(1)  # over real queries
    hi_min = torch.where(pad[..., None], big, hi).amin(1)
    lo_min = torch.where(pad[..., None], big, lo).amin(1)
    fails = ~((lo_max[:, None, :] <= kmin[None]) & (kmax[None] <= hi_min[:, None, :]))  # [nb, nb, 4]
    weights = 1 << torch.arange(4, device=kb.device)
    bits = (fails.long() * weights).sum(-1)
    rejects_pad = (lo_min >= 0).long() * weights  # [nb, 4]: coordinates that reject a padding key
    ok = rejects_pad.sum(-1)[:, None].expand(-1, kb.shape[0])  # per query block
    used = torch.where(computed, bits, 0)
    used = sum(1 << c for c in range(4) if bool(((used >> c) & 1).any()))
    preferred = torch.where((ok & used) != 0, ok & used, ok)
    lowest = preferred & -preferred  # lowest set bit (0 where no coordinate qualifies)
    has_pad = pad.any(-1)
    needs = (has_pad[:, None] | has_pad[None, :]) & ((bits & ok) == 0)
    bits = torch.where(needs, torch.where(lowest > 0, bits | lowest, PARTIAL_ALL), bits)
    return bits.to(torch.int8)


def with_text(layout: BlockLayout, text_len: int) -> BlockLayout:
    """Append ``text_len`` text tokens (padded to whole blocks) after the video sequence.

    Text is dense both ways: text query blocks see every block, video query blocks additionally
    see every text block. Padded text keys are masked at call time by the per-batch key length,
    so text blocks themselves are whole; video blocks keep their own flags.
    """
    if text_len <= 0:
        return layout
    bs = layout.block_size
    nt = -(-text_len // bs)
    nv = layout.num_blocks
    G, M, W = layout.kv_indices.shape
    dev = layout.kv_indices.device
    text_idx = torch.arange(nv, nv + nt, dtype=torch.int32, device=dev)
    # Video rows: their video blocks, then all text blocks (counts differ per row: pack again).
    rows = torch.full((G, M, W + nt), -1, dtype=torch.int32, device=dev)
    flags = torch.zeros((G, M, W + nt), dtype=torch.int8, device=dev)
    rows[..., :W] = layout.kv_indices
    flags[..., :W] = layout.kv_partial
    pos = layout.kv_counts.long()[..., None] + torch.arange(nt, device=dev)  # where text goes
    rows.scatter_(2, pos, text_idx.expand(G, M, nt).contiguous())
    counts = layout.kv_counts + nt
    # Text rows: every block; video blocks that contain padding need the (full) box mask.
    all_idx = torch.arange(nv + nt, dtype=torch.int32, device=dev)
    # Text rows' boxes are full, so any coordinate rejects padding keys: one the video rows test already.
    pad_bit = (layout.partial_dims & -layout.partial_dims) or FULL_BOX_PADDING
    pad_vid = ((layout.k_coord[:, 0] == PAD_COORD).view(nv, bs).any(-1).to(torch.int8) * pad_bit).to(dev)
    text_flags = torch.cat([pad_vid, torch.zeros(nt, dtype=torch.int8, device=dev)])
    width = max(W + nt, nv + nt)
    out_idx = torch.full((G, M + nt, width), -1, dtype=torch.int32, device=dev)
    out_flags = torch.zeros((G, M + nt, width), dtype=torch.int8, device=dev)
    out_idx[:, :M, : W + nt] = rows
    out_flags[:, :M, : W + nt] = flags
    out_idx[:, M:, : nv + nt] = all_idx
    out_flags[:, M:, : nv + nt] = text_flags
    out_counts = torch.cat([counts, torch.full((G, nt), nv + nt, dtype=torch.int32, device=dev)], dim=1)
    lo_t, hi_t = full_boxes(nt * bs)
    return BlockLayout(
        bs,
        layout.seq_len + nt * bs,
        out_counts,
        out_idx,
        out_flags,
        torch.cat([layout.q_lo, lo_t.to(layout.q_lo.device)]),
        torch.cat([layout.q_hi, hi_t.to(layout.q_hi.device)]),
        torch.cat([layout.k_coord, torch.zeros(nt * bs, 4, dtype=torch.int32, device=layout.k_coord.device)]),
        layout.tiling,
        nt,
        torch.cat([layout.kv_counts, torch.full((G, nt), nv, dtype=torch.int32, device=dev)], dim=1),
    )


@dataclass(frozen=True)
class MaskColumns:
    """A layout's box test rewritten as a matrix product, for partial blocks (the kernel's dot mask).

    Inside one key block a coordinate takes few distinct values (a (2, 8, 8) tile: 2, 8 and 8, plus
    -1 where padding hangs over the grid). Give every (coordinate, distinct value) of a block a
    column: ``onehot[j]`` marks the columns of key j's values, and for a query row the kernel
    builds a [BLOCK_M, K] row of penalties, -P where the column's value is outside the row's box,
    0 inside. The product rows x onehot^T is then -P times the number of coordinates in which the
    key fails the box, and 0 where the key is allowed: the element-wise test, with [BLOCK_M, K]
    compares per block instead of [BLOCK_M, BLOCK_N] per coordinate, and the rest on tensor cores.
    """

    values: torch.Tensor  # int32 [num_blocks, K]: the coordinate value of each column, per key block
    onehot: torch.Tensor  # float32 [seq_len, K]: 1 at the columns of each key's values
    columns: torch.Tensor  # int32 [K]: the coordinate each column tests
    width: int  # K, a power of two >= 16 (Triton's ranges; the tensor cores' step)


def mask_columns(k_coord: torch.Tensor, block_size: int, dims: int, max_width: int = 64) -> MaskColumns | None:
    """The dot mask's tables for key coordinates ``k_coord`` [L, 4] cut into blocks of
    ``block_size``, testing the coordinates of bit set ``dims``; None when some block needs more than
    ``max_width`` columns (raster blocks spanning many rows) or ``dims`` is empty."""
    coords = [c for c in range(4) if dims >> c & 1]
    if not coords:
        return None
    L = k_coord.shape[0]
    nb = L // block_size
    kc = k_coord.reshape(nb, block_size, 4).long()
    parts = []
    for c in coords:
        s, order = torch.sort(kc[:, :, c], dim=1)
        new = torch.ones_like(s, dtype=torch.bool)
        new[:, 1:] = s[:, 1:] != s[:, :-1]
        rank_sorted = new.long().cumsum(1) - 1  # rank of each sorted value among the block's distinct ones
        rank = torch.empty_like(rank_sorted).scatter_(1, order, rank_sorted)
        width = int(rank_sorted[:, -1].max()) + 1 if nb else 1
        values = s[:, :1].expand(nb, width).clone()  # unused columns repeat the first value (no key marks them)
        values.scatter_(1, rank_sorted, s)
        parts.append((c, width, values, rank))
    total = sum(w for _, w, _, _ in parts)
    K = max(16, 1 << (total - 1).bit_length())  # a power of two (Triton's ranges), at least the tensor cores' step
    if K > max_width:
        return None
    values = torch.zeros(nb, K, dtype=torch.int32, device=k_coord.device)
    onehot = torch.zeros(nb, block_size, K, dtype=torch.float32, device=k_coord.device)
    columns = torch.full((K,), coords[0], dtype=torch.int32, device=k_coord.device)
    start = 0
    for c, width, vals, rank in parts:
        values[:, start:start + width] = vals.to(torch.int32)
        columns[start:start + width] = c
        onehot.scatter_(2, (rank + start)[..., None], 1.0)
        start += width
    # Spare columns (up to K): no key marks them, so their penalties never count.
    return MaskColumns(values, onehot.view(L, K), columns, K)
