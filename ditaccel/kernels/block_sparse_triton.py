"""Triton forward kernel for block-sparse attention driven by a BlockLayout's LUT.

One program computes one tile of BLOCK_M query rows for one (batch, head): it reads its LUT row
(count + left-packed key-block indices) and runs flash attention over exactly those key blocks.

Math (online softmax in base 2). With c = scale * log2(e), softmax(scale * s) equals
2^(c*s - m) / sum 2^(c*s - m) for any shift m; the kernel keeps per row the running maximum m of
c*s, the running denominator l and the unnormalised output acc, and when a new tile raises the
maximum from m to m' it rescales l and acc by 2^(m - m'). Folding c into the exponent's FMA
(c*s - m) costs nothing over a plain subtraction and keeps q unrounded.

Masking. Whole blocks (the common case after token tiling) run with no mask at all. A block the
layout flags partial gets the exact box test over the canonical coordinates that some partial
block of the layout needs (PARTIAL_DIMS, a compile-time bit set: a stride-1 window over one-frame
tiles tests h and w, not all four), and a block that
crosses the per-batch key length (padded text) gets `col < kv_len`; both are decided by one
scalar branch per block, so whole blocks never pay for them. The box test lo <= k <= hi is one
unsigned comparison per coordinate, (k - lo) <= (hi - lo) as uint32: below lo the difference
wraps to above 2^31, past any width (coordinates and widths stay under 2^31). Each program reads
its rows' lo and width once, before the key loop. Empty boxes (hi < lo: padding queries) would
get a negative width, which as uint32 admits everything, so they become lo = -2, width 0: no
coordinate is -2 (real ones are >= 0, padding -1), so they still admit nothing. Rows that see no key at all
(padding queries) finish with l == 0 and are written as zeros, like the reference.

The dot mask. Element-wise, a partial block costs [BLOCK_M, BLOCK_N] compares per tested
coordinate, about as much as both matmuls at head_dim 64. Where every key block of the layout
holds few distinct values per tested coordinate (tiles: a (2, 8, 8) tile holds 2, 8 and 8),
layout.mask_columns gives each (coordinate, value) of a block a column, and the kernel adds
penalties x one-hot^T to the scores on the tensor cores: [BLOCK_M, MASK_K] compares per block
(MASK_K = 32 for the tiles in use) and one small matmul (_dot_masked_scores). Exact: allowed keys
get + 0, the others a penalty that no softmax weight survives. Its one-hot columns take 8 KB of
shared memory, which at head_dim 128 costs the third K/V stage, so the autotuner times both masks
(config key DOT_MASK) and keeps the faster per shape. H200 (benchmarks/results/logs/session16/):
CogVideoX-5B (head_dim 64) stride 1 7.39 -> 6.31 ms, blocked window 6.70 -> 5.37 ms; at head_dim 128
with 2 stages, stride 1: Wan 720p 73.8 -> 70.3, HunyuanVideo 720p 107.0 -> 104.5, NATTEN's shape
86.2 -> 78.9 ms; blocked windows at head_dim 128 keep the element-wise test and 3 stages.

Where the tokens come from. The layout indexes a canonical sequence: video blocks first
(positions 0 .. video_blocks * block - 1), then text blocks. The kernel reads both where the model
keeps them, so token tiling costs no copy of keys and values:
- rows (MODE 0 pointers, MODE 1 2-D descriptors over [B * rows, H * D]): canonical video
  position p is row video_row0 + p of each batch. This serves raster layouts on the model's own
  tensors (the video may start after the text) and tensors already in canonical order.
- grid boxes (MODE 2): a tiled layout's block j is tile j of the latent grid (tiles in raster
  order, tokens inside a tile in raster order), which a 5-D descriptor over the video tokens
  viewed as [B, T, H, W, heads * D] loads as one box; tokens past the grid's edge read as zeros
  (their coordinates are padding, so the box test drops them). The output goes back row by row
  to the tile's raster places (edge padding skipped); the queries, read once per program, come
  from a copy in canonical order (text queries included). Loading the query tile any other way
  cost more: into registers (pointer loads, or a branch between video and text) ran up to 1.8x
  slower on H100, and a reshaped 5-D box fed to the dot gave wrong results with Triton 3.6.
- text (HAS_TEXT): text position p is row text_row0 + p of its own tensors (the model's, or a
  small reordered copy when a text mask puts valid tokens first). Entries of a LUT row are
  sorted, so the key loop is two loops: the video entries, then the text entries, each with one
  kind of load.

Launch order. Query tiles are the grid's fastest axis, so one head's programs run together and
share its keys and values in L2. Joint attention's text query tiles attend every key, several times
a video tile's work; each head's tiles are rotated so that its text tiles start first
(TEXT_ROWS_FIRST; text_q_blocks says how many there are), instead of the last head's running alone
after everything else.

Ragged ends. In rows mode the video may hold video_len tokens, fewer than its blocks cover
(a raster layout whose padding tokens the caller never materialised): positions >= video_len are
absent. Keys there are masked like keys beyond kv_len (only blocks crossing the end pay), query
rows there are not stored. Loads past the end need no mask with descriptors (the following rows
are finite and masked out; past the tensor TMA zero-fills) but do with pointers, and the output
is then stored with masked pointer stores: a descriptor store of the last tile would spill into
the rows that follow (text, or the next batch). Text keys past text_len (or kv_len) are masked
the same way.

All [B, N, H, D] tensors are read in the model's layout (no transpose copy); GPUs without tensor
descriptors use plain pointer loads (and the caller gathers tiled layouts).
"""

from __future__ import annotations

import functools
import math
import os

import torch
import triton
import triton.language as tl
from torch.utils.weak import WeakIdKeyDictionary

try:  # host-side tensor descriptors: Triton >= 3.4
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # pragma: no cover - older Triton
    TensorDescriptor = None

from .layout import PARTIAL_ALL, MaskColumns, mask_columns

LOG2E = 1.4426950408889634
SUPPORTED_HEAD_DIMS = (64, 128)
# Launch order of joint attention's text query tiles (see the kernel): first in each head's run of
# programs. H200, the per-call path with text (benchmarks/results/logs/session15/a): HunyuanVideo
# 720p stride-1 window 108.9 -> 107.6 ms, CogVideoX-5B stride 1 7.49 -> 7.39 ms, radial at
# HunyuanVideo 97.2 -> 96.6 ms. A module constant so that a benchmark can time the canonical order.
TEXT_ROWS_FIRST = True
# Head dims whose partial blocks are masked through the tensor cores (_dot_masked_scores) where the
# layout's blocks allow it (layout.mask_columns). A module constant so that a benchmark can time
# both masks in one call.
DOT_MASK_HEAD_DIMS = (64, 128)


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@triton.jit
def _row_ptrs(base, b, h, rows, stride_b, stride_n, stride_h, HEAD_DIM: tl.constexpr):
    """Pointers to the [len(rows), HEAD_DIM] elements of token rows ``rows`` (int64) of one (batch, head)."""
    return (base + b.to(tl.int64) * stride_b + h.to(tl.int64) * stride_h + rows[:, None] * stride_n
            + tl.arange(0, HEAD_DIM)[None, :])


@triton.jit
def _rows_tile(
    src, b, h, row0, rows, pos, stride_b, stride_n, stride_h,
    BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr, USE_TMA: tl.constexpr, CLIP: tl.constexpr,
):
    """[BLOCK, HEAD_DIM] tile of positions pos.. of one (batch, head) of a rows source (position p
    is row row0 + p of the batch): through a 2-D descriptor over [B * rows, H * D], or from the
    base pointer ``src`` (rows at or past ``rows`` read as zeros when CLIP)."""
    if USE_TMA:
        return src.load([b * rows + row0 + pos, h * HEAD_DIM])
    else:
        r = (row0 + pos + tl.arange(0, BLOCK)).to(tl.int64)
        ptrs = _row_ptrs(src, b, h, r, stride_b, stride_n, stride_h, HEAD_DIM)
        if CLIP:
            return tl.load(ptrs, mask=r[:, None] < rows, other=0.0)
        else:
            return tl.load(ptrs)


@triton.jit
def _box_origin(blk, nt_h: tl.constexpr, nt_w: tl.constexpr, TT: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr):
    """Grid coordinates (t, h, w) of the first token of tile ``blk`` (tiles in raster order)."""
    tw = blk % nt_w
    rest = blk // nt_w
    return (rest // nt_h) * TT, (rest % nt_h) * TH, tw * TW


@triton.jit
def _box_rows(blk, nt_h: tl.constexpr, nt_w: tl.constexpr, grid_t, grid_h, grid_w, TT: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr):
    """Raster token index (within the video) of every position of tile ``blk``, and whether the
    position is inside the grid (edge tiles hang over it)."""
    t0, h0, w0 = _box_origin(blk, nt_h, nt_w, TT, TH, TW)
    i = tl.arange(0, TT * TH * TW)
    t = t0 + i // (TH * TW)
    hh = h0 + (i // TW) % TH
    w = w0 + i % TW
    inside = (t < grid_t) & (hh < grid_h) & (w < grid_w)
    return (t * grid_h + hh) * grid_w + w, inside


@triton.jit
def _video_tile(
    src, b, h, pos, row0, rows, stride_b, stride_n, stride_h, nt_h: tl.constexpr, nt_w: tl.constexpr,
    BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr, MODE: tl.constexpr, CLIP: tl.constexpr,
    TT: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr,
):
    """Tile of canonical video positions pos..pos+BLOCK-1: a 3-D box of the latent grid read in
    place (MODE 2: 5-D descriptor over [B, T, H, W, heads*D]; out-of-grid tokens read as zeros),
    or rows (MODE 1: 2-D descriptor, MODE 0: pointers)."""
    if MODE == 2:
        t0, h0, w0 = _box_origin(pos // BLOCK, nt_h, nt_w, TT, TH, TW)
        return src.load([b, t0, h0, w0, h * HEAD_DIM]).reshape(BLOCK, HEAD_DIM)
    else:
        return _rows_tile(src, b, h, row0, rows, pos, stride_b, stride_n, stride_h, BLOCK, HEAD_DIM, MODE == 1, CLIP)


@triton.jit
def _box_lo_width(q_lo, q_hi, offs_m, c: tl.constexpr):
    """One coordinate of the rows' boxes as (lo, width) for the unsigned range test; empty boxes
    become (-2, 0), which no coordinate passes (see the module docstring)."""
    qrow = offs_m.to(tl.int64) * 4 + c
    lo = tl.load(q_lo + qrow)
    width = tl.load(q_hi + qrow) - lo
    empty = width < 0
    return tl.where(empty, -2, lo), tl.where(empty, 0, width).to(tl.uint32)


@triton.jit
def _in_range(k_coord, kcol, c: tl.constexpr, lo, width):
    """[rows, cols]: lo <= k <= lo + width, as one unsigned comparison."""
    kc = tl.load(k_coord + kcol + c)
    return (kc[None, :] - lo[:, None]).to(tl.uint32) <= width[:, None]


@triton.jit
def _masked_scores(
    qk, start_n, is_partial, kv_end, k_coord, lo0, w0, lo1, w1, lo2, w2, lo3, w3,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PARTIAL_DIMS: tl.constexpr, CAN_CROSS: tl.constexpr,
):
    """qk with -inf where the key is outside the query's box in one of the coordinates
    PARTIAL_DIMS names (partial blocks only) or, when a block can cross it (CAN_CROSS), at or past
    kv_end. Both are compile-time choices: the coordinates no partial block of the layout needs
    cost nothing (a stride-1 window over one-frame tiles tests h and w only), and without a key end
    inside the video the end test is dropped. Per-block choices in the loop (a scalar branch per
    coordinate) ran 1.4-1.7x slower on the H200 than the straight-line tests; so did, less, one
    branch between a single coordinate chosen at run time (blocks whose flag names one) and all of
    them: CogVideoX-5B stride 1 7.39 -> 7.92 ms, HunyuanVideo 720p stride 1 107.6 -> 116.1 ms, only
    CogVideoX's blocked window (three coordinates) gained, 6.71 -> 6.60 ms (logs/session15/b). Loading
    the key coordinates at the top of every iteration, with K and V, was slower too (CogVideoX-5B
    stride 1 7.40 -> 7.69 ms, blocked 6.71 -> 7.12; logs/session15/d)."""
    offs_n = start_n + tl.arange(0, BLOCK_N)
    kcol = offs_n.to(tl.int64) * 4
    inside = tl.full([BLOCK_M, BLOCK_N], 1, tl.int1)
    if PARTIAL_DIMS & 1:
        inside = inside & _in_range(k_coord, kcol, 0, lo0, w0)
    if PARTIAL_DIMS & 2:
        inside = inside & _in_range(k_coord, kcol, 1, lo1, w1)
    if PARTIAL_DIMS & 4:
        inside = inside & _in_range(k_coord, kcol, 2, lo2, w2)
    if PARTIAL_DIMS & 8:
        inside = inside & _in_range(k_coord, kcol, 3, lo3, w3)
    if CAN_CROSS:
        inside = (offs_n[None, :] < kv_end) & (inside | (is_partial == 0))
    return tl.where(inside, qk, float("-inf"))


@triton.jit
def _column_edges(lo, width, col_coord, c: tl.constexpr, lo_c, w_c):
    """lo and width ([rows, columns]) with the rows' edges in coordinate c at the columns testing it."""
    mine = col_coord[None, :] == c
    return tl.where(mine, lo_c[:, None], lo), tl.where(mine, w_c[:, None], width)


@triton.jit
def _dot_masked_scores(
    qk, start_n, is_partial, kv_end, mask_values, mask_onehot, cols, col_coord, lo0, w0, lo1, w1, lo2, w2, lo3, w3,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, LAYOUT_BLOCK: tl.constexpr, PARTIAL_DIMS: tl.constexpr,
    CAN_CROSS: tl.constexpr, MASK_K: tl.constexpr,
):
    """_masked_scores through the tensor cores (layout.MaskColumns): each column of the key block
    stands for one value of one coordinate; the rows' penalties ([BLOCK_M, MASK_K]: -2^125 where
    the value is outside the row's box) times the keys' one-hot columns add -2^125 per failed
    coordinate to the score, and exactly 0 where the key is allowed (penalties up to 4 * 2^125 stay
    finite; scaled, they fall below the running maximum's start, so such a key weighs 0)."""
    offs_n = start_n + tl.arange(0, BLOCK_N)
    vals = tl.load(mask_values + (start_n // LAYOUT_BLOCK).to(tl.int64) * MASK_K + cols)
    # Each column's coordinate: the rows' lower edge and width in that coordinate.
    lo = tl.zeros([BLOCK_M, MASK_K], tl.int32)
    width = tl.zeros([BLOCK_M, MASK_K], tl.uint32)
    if PARTIAL_DIMS & 1:
        lo, width = _column_edges(lo, width, col_coord, 0, lo0, w0)
    if PARTIAL_DIMS & 2:
        lo, width = _column_edges(lo, width, col_coord, 1, lo1, w1)
    if PARTIAL_DIMS & 4:
        lo, width = _column_edges(lo, width, col_coord, 2, lo2, w2)
    if PARTIAL_DIMS & 8:
        lo, width = _column_edges(lo, width, col_coord, 3, lo3, w3)
    inside = (vals[None, :] - lo).to(tl.uint32) <= width
    if CAN_CROSS:
        inside = inside | (is_partial == 0)
    # In the one-hot table's dtype: bf16 on the GPU, fp32 in the interpreter (its bf16 dots are wrong).
    penalty = tl.where(inside, 0.0, -4.253529586511731e37).to(mask_onehot.dtype.element_ty)
    onehot = tl.load(mask_onehot + offs_n.to(tl.int64)[:, None] * MASK_K + cols[None, :])
    qk = tl.dot(penalty, tl.trans(onehot), qk)
    if CAN_CROSS:
        qk = tl.where(offs_n[None, :] < kv_end, qk, float("-inf"))
    return qk


@triton.jit
def _online_softmax(qk, v, m_i, l_i, acc, qk_scale):
    """Fold one tile of scores (and its values) into the running max, denominator and output."""
    m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
    p = tl.math.exp2(qk * qk_scale - m_new[:, None])
    alpha = tl.math.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    acc = tl.dot(p.to(v.dtype), v, acc)
    return m_new, l_i, acc


@triton.jit
def _block_sparse_fwd(
    Q, K, V, O,  # video sources: 5-D descriptors (MODE 2), 2-D descriptors (MODE 1) or base pointers (MODE 0)
    O_ptr,  # base pointer of the video output (masked or per-row stores)
    QT, KT, VT,  # text sources: 2-D descriptors (TEXT_TMA) or base pointers
    OT_ptr,  # base pointer of the text output
    stride_vb, stride_vn, stride_vh,  # video q/k/v (pointer loads; the launcher makes them equal)
    stride_ob, stride_on, stride_oh,  # video output
    stride_tb, stride_tn, stride_th,  # text q/k/v
    stride_tob, stride_ton, stride_toh,  # text output
    video_row0, video_rows, video_len,  # rows source: position p is row video_row0 + p of rows per batch; video_len positions exist
    text_row0, text_rows, text_len,  # text position p (canonical video_blocks * LAYOUT_BLOCK + p) is row text_row0 + p
    grid_t, grid_h, grid_w,  # the latent grid (MODE 2)
    kv_counts, kv_counts_video, kv_indices, kv_partial,  # LUT: [G, Mq], [G, Mq], [G, Mq, W], [G, Mq, W]
    q_lo, q_hi, k_coord,  # int32 [L, 4]
    mask_values, mask_onehot, mask_cols,  # layout.MaskColumns (read with MASK_K > 0)
    kv_len,  # int32 [B] (only read with HAS_KV_LEN): keys at canonical positions >= kv_len[b] are ignored
    qk_scale,  # softmax scale * log2(e)
    num_heads, num_groups, num_q_blocks, video_blocks, lut_width,
    text_q_blocks,  # the LUT's last query blocks that are text rows (read with TEXT_ROWS_FIRST)
    SEQ_BUCKET,  # autotune key only
    HEAD_DIM: tl.constexpr,
    LAYOUT_BLOCK: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    NUM_STAGES: tl.constexpr,
    PARTIAL_DIMS: tl.constexpr,  # coordinates partial blocks test (bit c: coordinate c); 0: no partial block
    VIDEO_CAN_CROSS: tl.constexpr,  # can a video key block cross the key end (ragged video, or kv_len inside it)?
    HAS_KV_LEN: tl.constexpr,
    MODE: tl.constexpr,  # 0 rows through pointers, 1 rows through descriptors, 2 grid boxes in place
    VIDEO_RAGGED: tl.constexpr,  # rows mode: video_len < video_blocks * LAYOUT_BLOCK (absent tail)
    VIDEO_CLIP: tl.constexpr,  # pointer rows mode: loads may run past the source's rows
    VIDEO_STORE_MASKED: tl.constexpr,  # rows mode: output tiles may run past video_len
    HAS_TEXT: tl.constexpr,
    TEXT_TMA: tl.constexpr,
    TEXT_CLIP: tl.constexpr,
    TT: tl.constexpr = 1, TH: tl.constexpr = 1, TW: tl.constexpr = 1,  # the tile (MODE 2)
    # Tiles per grid column and row (MODE 2). Compile-time, so that finding a tile's origin costs
    # multiplies, not integer divisions: with runtime divisors the box kernel issued ~11% more
    # instructions than the rows kernel (ncu, NATTEN's case: 28.2 vs 25.3 ms).
    NT_H: tl.constexpr = 1, NT_W: tl.constexpr = 1,
    WARP_SPECIALIZE: tl.constexpr = False,
    TEXT_ROWS_FIRST: tl.constexpr = False,  # start each head's text query tiles first
    MASK_K: tl.constexpr = 0,  # > 0: the layout's blocks admit the dot mask (_dot_masked_scores), MASK_K columns
    DOT_MASK: tl.constexpr = True,  # with MASK_K > 0, use it (a config choice: the autotuner times both masks)
):
    # Query tiles are the fastest grid axis: programs of one head run together and share its
    # K/V in L2.
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    if TEXT_ROWS_FIRST:  # each head's tiles rotated so that its text tiles start first (docstring)
        pid_m = (pid_m + ((num_q_blocks - text_q_blocks) * LAYOUT_BLOCK) // BLOCK_M) % tl.num_programs(0)
    b = pid_bh // num_heads
    h = pid_bh % num_heads
    q_block = (pid_m * BLOCK_M) // LAYOUT_BLOCK
    lut_row = (pid_bh % num_groups).to(tl.int64) * num_q_blocks + q_block
    count = tl.load(kv_counts + lut_row)
    idx_row = kv_indices + lut_row * lut_width
    flag_row = kv_partial + lut_row * lut_width
    video_end = video_blocks * LAYOUT_BLOCK  # canonical position of the first text token

    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    is_text_row = start_m >= video_end
    if MODE == 2:
        # Grid boxes: all queries (text too) come from one copy in canonical order.
        q = _rows_tile(Q, b, h, 0, video_rows, start_m, stride_vb, stride_vn, stride_vh, BLOCK_M, HEAD_DIM, True, False)
    elif HAS_TEXT:
        if is_text_row:
            q = _rows_tile(QT, b, h, text_row0, text_rows, start_m - video_end, stride_tb, stride_tn, stride_th,
                           BLOCK_M, HEAD_DIM, TEXT_TMA, TEXT_CLIP)
        else:
            q = _video_tile(Q, b, h, start_m, video_row0, video_rows, stride_vb, stride_vn, stride_vh, NT_H, NT_W,
                            BLOCK_M, HEAD_DIM, MODE, VIDEO_CLIP, TT, TH, TW)
    else:
        q = _video_tile(Q, b, h, start_m, video_row0, video_rows, stride_vb, stride_vn, stride_vh, NT_H, NT_W,
                        BLOCK_M, HEAD_DIM, MODE, VIDEO_CLIP, TT, TH, TW)

    # Keys at canonical positions >= the end of their part (or kv_len) are masked; only blocks
    # crossing the end pay for it.
    kv_cap = video_end + text_len
    if HAS_KV_LEN:
        kv_cap = tl.minimum(tl.load(kv_len + b), kv_cap)
    v_end = kv_cap
    if VIDEO_RAGGED:
        v_end = tl.minimum(kv_cap, video_len)
    if PARTIAL_DIMS != 0:
        lo0, w0 = _box_lo_width(q_lo, q_hi, offs_m, 0)
        lo1, w1 = _box_lo_width(q_lo, q_hi, offs_m, 1)
        lo2, w2 = _box_lo_width(q_lo, q_hi, offs_m, 2)
        lo3, w3 = _box_lo_width(q_lo, q_hi, offs_m, 3)
    if MASK_K > 0:
        mcols = tl.arange(0, MASK_K)
        col_coord = tl.load(mask_cols + mcols)

    # m starts finite so that fully masked tiles never produce (-inf) - (-inf).
    m_i = tl.full([BLOCK_M], -1.0e30, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    # A key block of the layout is LAYOUT_BLOCK // BLOCK_N kernel iterations. Entries are sorted,
    # so the video blocks come first, then the text blocks: two loops, each with one kind of load.
    SUB: tl.constexpr = LAYOUT_BLOCK // BLOCK_N
    n_video = count
    if HAS_TEXT:
        n_video = tl.load(kv_counts_video + lut_row)
    for it in tl.range(0, n_video * SUB, num_stages=NUM_STAGES, warp_specialize=WARP_SPECIALIZE):
        entry = it // SUB
        start_n = tl.load(idx_row + entry) * LAYOUT_BLOCK + (it % SUB) * BLOCK_N
        k = _video_tile(K, b, h, start_n, video_row0, video_rows, stride_vb, stride_vn, stride_vh, NT_H, NT_W,
                        BLOCK_N, HEAD_DIM, MODE, VIDEO_CLIP, TT, TH, TW)
        v = _video_tile(V, b, h, start_n, video_row0, video_rows, stride_vb, stride_vn, stride_vh, NT_H, NT_W,
                        BLOCK_N, HEAD_DIM, MODE, VIDEO_CLIP, TT, TH, TW)
        qk = tl.dot(q, tl.trans(k))
        # One scalar test per block; whole blocks inside the key end skip the mask entirely. The
        # end test stays even where no block can cross the end (no kv_len, no ragged tail): the
        # branch keeps the key-block index in registers, and Triton 3.6's pipeliner then gives
        # K and V NUM_STAGES buffers instead of 2 (H100, NATTEN's case: 31.2 -> 28.7 ms,
        # benchmarks/probes/variant_probe.py).
        if PARTIAL_DIMS != 0:
            is_partial = tl.load(flag_row + entry).to(tl.int32)
            if (is_partial != 0) | (start_n + BLOCK_N > v_end):
                if DOT_MASK and MASK_K > 0:
                    qk = _dot_masked_scores(qk, start_n, is_partial, v_end, mask_values, mask_onehot, mcols, col_coord,
                                            lo0, w0, lo1, w1, lo2, w2, lo3, w3, BLOCK_M, BLOCK_N, LAYOUT_BLOCK,
                                            PARTIAL_DIMS, VIDEO_CAN_CROSS, MASK_K)
                else:
                    qk = _masked_scores(qk, start_n, is_partial, v_end, k_coord, lo0, w0, lo1, w1, lo2, w2, lo3, w3,
                                        BLOCK_M, BLOCK_N, PARTIAL_DIMS, VIDEO_CAN_CROSS)
        elif start_n + BLOCK_N > v_end:
            offs_n = start_n + tl.arange(0, BLOCK_N)
            qk = tl.where(offs_n[None, :] < v_end, qk, float("-inf"))
        m_i, l_i, acc = _online_softmax(qk, v, m_i, l_i, acc, qk_scale)

    if HAS_TEXT:
        # Text blocks are whole; only the block crossing the text end (or kv_len) is masked.
        for it in tl.range(n_video * SUB, count * SUB, num_stages=NUM_STAGES, warp_specialize=WARP_SPECIALIZE):
            start_n = tl.load(idx_row + it // SUB) * LAYOUT_BLOCK + (it % SUB) * BLOCK_N
            pos = start_n - video_end
            k = _rows_tile(KT, b, h, text_row0, text_rows, pos, stride_tb, stride_tn, stride_th, BLOCK_N, HEAD_DIM,
                           TEXT_TMA, TEXT_CLIP)
            v = _rows_tile(VT, b, h, text_row0, text_rows, pos, stride_tb, stride_tn, stride_th, BLOCK_N, HEAD_DIM,
                           TEXT_TMA, TEXT_CLIP)
            qk = tl.dot(q, tl.trans(k))
            if start_n + BLOCK_N > kv_cap:
                offs_n = start_n + tl.arange(0, BLOCK_N)
                qk = tl.where(offs_n[None, :] < kv_cap, qk, float("-inf"))
            m_i, l_i, acc = _online_softmax(qk, v, m_i, l_i, acc, qk_scale)

    l_i = tl.where(l_i == 0.0, 1.0, l_i)  # rows with no key at all: output 0
    out = (acc / l_i[:, None]).to(q.dtype)
    if HAS_TEXT:
        if is_text_row:
            pos = start_m - video_end + tl.arange(0, BLOCK_M)
            ptrs = _row_ptrs(OT_ptr, b, h, (text_row0 + pos).to(tl.int64), stride_tob, stride_ton, stride_toh, HEAD_DIM)
            tl.store(ptrs, out, mask=pos[:, None] < text_len)
        else:
            _store_video(O, O_ptr, out, b, h, q_block, start_m, video_row0, video_rows, video_len,
                         stride_ob, stride_on, stride_oh, NT_H, NT_W, grid_t, grid_h, grid_w, BLOCK_M, HEAD_DIM, MODE,
                         VIDEO_STORE_MASKED, TT, TH, TW)
    else:
        _store_video(O, O_ptr, out, b, h, q_block, start_m, video_row0, video_rows, video_len,
                     stride_ob, stride_on, stride_oh, NT_H, NT_W, grid_t, grid_h, grid_w, BLOCK_M, HEAD_DIM, MODE,
                     VIDEO_STORE_MASKED, TT, TH, TW)


@triton.jit
def _store_video(
    O, O_ptr, out, b, h, q_block, start_m, video_row0, video_rows, video_len,
    stride_ob, stride_on, stride_oh, nt_h: tl.constexpr, nt_w: tl.constexpr, grid_t, grid_h, grid_w,
    BLOCK_M: tl.constexpr, HEAD_DIM: tl.constexpr, MODE: tl.constexpr, MASKED: tl.constexpr,
    TT: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr,
):
    if MODE == 2:
        # Row by row to the tile's raster positions; padding positions of edge tiles are skipped.
        raster, inside = _box_rows(q_block, nt_h, nt_w, grid_t, grid_h, grid_w, TT, TH, TW)
        ptrs = _row_ptrs(O_ptr, b, h, (video_row0 + raster).to(tl.int64), stride_ob, stride_on, stride_oh, HEAD_DIM)
        tl.store(ptrs, out, mask=inside[:, None])
    elif MODE == 1 and not MASKED:
        O.store([b * video_rows + video_row0 + start_m, h * HEAD_DIM], out)
    else:
        # Masked pointer stores: a descriptor store of a tile past video_len would spill into the
        # rows that follow (text, or the next batch).
        offs_m = start_m + tl.arange(0, BLOCK_M)
        ptrs = _row_ptrs(O_ptr, b, h, (video_row0 + offs_m).to(tl.int64), stride_ob, stride_on, stride_oh, HEAD_DIM)
        if MASKED:
            tl.store(ptrs, out, mask=offs_m[:, None] < video_len)
        else:
            tl.store(ptrs, out)


# ----------------------------------------------------------------------------------------------
# Launch configurations and autotuning
# ----------------------------------------------------------------------------------------------


def _config(block_m: int, block_n: int, warps: int, stages: int, dot_mask: bool = True) -> triton.Config:
    return triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n, "NUM_STAGES": stages, "DOT_MASK": dot_mask}, num_warps=warps,
                         num_stages=stages, pre_hook=_set_descriptor_blocks)


def _set_descriptor_blocks(nargs) -> None:
    """Row descriptors carry the tile shape, which depends on the config being tried (grid boxes
    are always one layout block)."""
    d, bm, bn = nargs["HEAD_DIM"], nargs["BLOCK_M"], nargs["BLOCK_N"]
    if nargs.get("MODE") == 1:
        nargs["Q"].block_shape = [bm, d]
        nargs["K"].block_shape = [bn, d]
        nargs["V"].block_shape = [bn, d]
        if not nargs.get("VIDEO_STORE_MASKED"):
            nargs["O"].block_shape = [bm, d]
    if nargs.get("HAS_TEXT") and nargs.get("TEXT_TMA"):
        nargs["QT"].block_shape = [bm, d]
        nargs["KT"].block_shape = [bn, d]
        nargs["VT"].block_shape = [bn, d]


# Hopper-oriented candidates (BLOCK_M, BLOCK_N, warps, stages); >= 3 stages so the LUT load is
# prefetched along with K/V. Each with either mask for partial blocks where the layout admits the
# dot mask: its one-hot key columns need shared memory (8 KB at 32 columns), so at head_dim 128 it
# runs with 2 stages, where the element-wise test keeps 3 (the autotuner weighs the two).
_TILES = [(128, 128, 8, 3), (128, 64, 8, 3), (128, 64, 8, 4), (128, 128, 8, 2), (128, 128, 4, 3), (128, 64, 4, 3), (64, 64, 4, 3)]
AUTOTUNE_CONFIGS = [_config(*t, dot_mask=dot) for dot in (True, False) for t in _TILES]


def _smem_bytes(cfg: triton.Config, head_dim: int, elem: int = 2, mask_k: int = 0) -> int:
    """Shared memory of a config: the query tile and NUM_STAGES buffers each of K and V (what
    Triton 3.6 allocates for the key loop on sm_90; 128x128x128 bf16 at 3 stages: 229,376 bytes plus
    24 of barriers), and the dot mask's one-hot key columns."""
    bm, bn, st = cfg.kwargs["BLOCK_M"], cfg.kwargs["BLOCK_N"], cfg.kwargs["NUM_STAGES"]
    return (bm * head_dim + st * 2 * bn * head_dim + bn * mask_k * cfg.kwargs.get("DOT_MASK", True)) * elem


@functools.lru_cache(maxsize=None)
def _smem_limit() -> int:
    try:
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        return int(getattr(props, "shared_memory_per_block_optin", 232448))
    except Exception:  # pragma: no cover
        return 232448


def _prune_configs(configs, named_args, **kwargs):
    args = {**named_args, **kwargs}  # constexprs arrive as keyword arguments
    lb, d = args["LAYOUT_BLOCK"], args["HEAD_DIM"]
    limit = _smem_limit()
    box = args.get("MODE") == 2  # grid boxes are read whole: one layout block per tile
    configs = [c for c in configs if not box or c.kwargs["BLOCK_M"] == c.kwargs["BLOCK_N"] == lb]
    if not args.get("MASK_K", 0):  # no dot mask to choose: one config per tile
        configs = [c for c in configs if c.kwargs.get("DOT_MASK", True)]
    keep = [
        c for c in configs
        if lb % c.kwargs["BLOCK_M"] == 0 and lb % c.kwargs["BLOCK_N"] == 0 and _smem_bytes(c, d, mask_k=args.get("MASK_K", 0)) <= limit
        # 8 warps only pay off on full 128x128-class tiles (the tutorial's Hopper rule)
        and not (c.num_warps == 8 and c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] < 128 * 64)
        # head_dim 128 on H100: 4-warp tiles ran 20-35% slower on sparse layouts, and only the
        # 8-warp configs went through the repeated bf16 checks (benchmarks/results/recheck_480p.json);
        # 64-key tiles ran 10-20% slower than 128 at every case probed (benchmarks/results/logs/
        # probe_canonical_h100.log), and once won an autotuning run by noise (kernel 18% slower)
        and not (d == 128 and (c.num_warps == 4 or (c.kwargs["BLOCK_N"] < 128 and lb >= 128)))
    ]
    return keep or [c for c in configs if lb % c.kwargs["BLOCK_M"] == 0 and lb % c.kwargs["BLOCK_N"] == 0][:1]


_block_sparse_fwd_tuned = triton.autotune(
    configs=AUTOTUNE_CONFIGS,
    key=["HEAD_DIM", "LAYOUT_BLOCK", "SEQ_BUCKET", "PARTIAL_DIMS", "HAS_KV_LEN", "MODE", "VIDEO_RAGGED", "HAS_TEXT", "TEXT_TMA",
         "TEXT_ROWS_FIRST", "MASK_K"],
    prune_configs_by={"early_config_prune": _prune_configs},
)(_block_sparse_fwd)


def default_config(head_dim: int, layout_block: int) -> dict:
    """The config used without autotuning (interpreter, or an explicit request)."""
    bm = min(128, layout_block)
    if interpreting():
        return {"BLOCK_M": bm, "BLOCK_N": layout_block, "num_warps": 4, "num_stages": 1}
    return {"BLOCK_M": bm, "BLOCK_N": min(128, layout_block), "num_warps": 8 if head_dim == 128 else 4, "num_stages": 3}


# ----------------------------------------------------------------------------------------------
# Launcher
# ----------------------------------------------------------------------------------------------


def _descriptor_view_ok(x: torch.Tensor) -> bool:
    """Is [B, N, H, D] viewable as rows B*N by columns H*D with unit column stride?"""
    B, N, H, D = x.shape
    sb, sn, sh, sd = x.stride()
    return sd == 1 and sh == D and (B == 1 or sb == N * sn) and (sn * x.element_size()) % 16 == 0 and x.data_ptr() % 16 == 0


@functools.lru_cache(maxsize=None)
def _tma_supported(device_index: int) -> bool:
    if TensorDescriptor is None:
        return False
    major, _ = torch.cuda.get_device_capability(device_index)
    return major >= 9


def tma_usable(*tensors: torch.Tensor) -> bool:
    """Can the kernel read (and write) these [B, N, H, D] tensors through tensor descriptors?"""
    if TensorDescriptor is None or not all(_descriptor_view_ok(x) for x in tensors):
        return False
    x = tensors[0]
    if x.device.type != "cuda":
        return True  # interpreter: descriptors are emulated
    return _tma_supported(x.device.index if x.device.index is not None else torch.cuda.current_device())


def _row_descriptor(x: torch.Tensor, block_rows: int) -> "TensorDescriptor":
    B, N, H, D = x.shape
    return TensorDescriptor(x, [B * N, H * D], [x.stride(1), 1], [block_rows, D])


def _box_descriptor(x: torch.Tensor, start: int, grid, tile) -> "TensorDescriptor":
    """5-D descriptor over the video tokens x[:, start : start + T*H*W] seen as [B, T, H, W, heads*D]."""
    B, _, H, D = x.shape
    T, Hg, Wg = grid
    sb, sn = x.stride(0), x.stride(1)
    return TensorDescriptor(x[:, start:], [B, T, Hg, Wg, H * D], [sb, Hg * Wg * sn, Wg * sn, sn, 1], [1, *tile, D])


def box_readable(x: torch.Tensor, start: int) -> bool:
    """Can the kernel read grid boxes of x's video tokens in place (5-D descriptor constraints)?"""
    B, N, H, D = x.shape
    sb, sn, sh, sd = x.stride()
    e = x.element_size()
    return (sd == 1 and sh == D and (sn * e) % 16 == 0 and (sb * e) % 16 == 0 and (x.data_ptr() + start * sn * e) % 16 == 0)


def _check_sequence(N: int, layout_len: int, block_size: int) -> None:
    if not layout_len - block_size < N <= layout_len:
        raise ValueError(
            f"sequence length {N} must be within one block (block_size={block_size}) below the layout's {layout_len} tokens"
        )


def block_sparse_attention_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_counts: torch.Tensor,
    kv_indices: torch.Tensor,
    kv_partial: torch.Tensor,
    q_lo: torch.Tensor,
    q_hi: torch.Tensor,
    k_coord: torch.Tensor,
    kv_len: torch.Tensor | None,
    scale: float | None,
    block_size: int,
    *,
    has_partial: bool | int = True,
    config: dict | None = None,
    use_tma: bool | None = None,
    text_blocks: int = 0,
) -> torch.Tensor:
    """Raw launcher on canonical-order tensors. q, k, v: [B, N, H, D] (last dim contiguous); LUT
    tensors as in BlockLayout, on q's device. Returns a new [B, N, H, D] tensor.

    N may fall short of the layout's length L (kv_counts.shape[1] * block_size) by less than one
    block: tokens N..L-1 are then treated as absent (keys masked, query rows not computed), which
    spares the caller from padding raster-order sequences.

    has_partial: which coordinates partial blocks test, the layout's ``partial_dims`` (an int bit
    set; True: all four, False: no partial block, which skips the per-block flag test).
    config: {"BLOCK_M", "BLOCK_N", "num_warps", "num_stages"} (and optionally "DOT_MASK": False for the element-wise
    box test in partial blocks) to bypass the autotuner.
    text_blocks: how many of the layout's last blocks are joint attention's text (dense rows, which
    the kernel starts first; see TEXT_ROWS_FIRST).
    """
    B, N, H, D = q.shape
    _check_head_dim(D)
    _check_sequence(N, kv_counts.shape[-1] * block_size, block_size)
    out = torch.empty((B, N, H, D), dtype=q.dtype, device=q.device)
    _launch(q, k, v, out, (kv_counts, kv_counts, kv_indices, kv_partial, q_lo, q_hi, k_coord), kv_len, scale, block_size,
            video_start=0, video_len=N, video_blocks=kv_counts.shape[-1], box=None, text=None,
            has_partial=has_partial, config=config, use_tma=use_tma, text_blocks=text_blocks)
    return out


def block_sparse_attention_placed(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lut: tuple,
    kv_len: torch.Tensor | None,
    scale: float | None,
    block_size: int,
    *,
    video_start: int,
    video_len: int,
    video_blocks: int,
    box: tuple | None,
    text: tuple | None,
    has_partial: bool | int,
    config: dict | None = None,
    kv_len_covers_video: bool = False,
    text_blocks: int | None = None,
) -> None:
    """Launcher on tensors in the model's token order, written into ``out`` in place.

    lut = (kv_counts, kv_counts_video, kv_indices, kv_partial, q_lo, q_hi, k_coord) of a layout whose
    first ``video_blocks`` blocks are video. Video: ``box=None`` reads canonical position p from row
    video_start + p of q, k, v (raster layouts, or tensors already in canonical order; positions from
    video_len on are absent); ``box=(grid, tile, q_canonical)`` reads key/value tile j of the latent grid whose
    raster tokens are k[:, video_start : video_start + prod(grid)] in place (5-D tensor descriptors),
    all queries from q_canonical ([B, layout length, H, D]: canonical video, then the text), and
    writes the output rows back to their raster places in ``out``. Text:
    ``(qt, kt, vt, ot, row0, length)``, canonical text position p being row row0 + p.
    ``kv_len_covers_video``: the caller promises kv_len >= the video's canonical length (kv_len
    only cuts text padding), so video blocks skip the key-end test. ``text_blocks``: how many of the
    layout's last blocks are text rows when ``text`` is None (text already in the video's buffer);
    with ``text`` given, the blocks after ``video_blocks``."""
    _check_head_dim(q.shape[-1])
    _launch(q, k, v, out, lut, kv_len, scale, block_size, video_start=video_start, video_len=video_len,
            video_blocks=video_blocks, box=box, text=text, has_partial=has_partial, config=config, use_tma=None,
            kv_len_covers_video=kv_len_covers_video,
            text_blocks=lut[0].shape[-1] - video_blocks if text_blocks is None else text_blocks)


# k_coord -> (block size, dims, MaskColumns or None); an entry goes with its tensor (a layout's own).
_DOT_MASKS = WeakIdKeyDictionary()


def _dot_mask_tables(k_coord: torch.Tensor, block_size: int, dims: int) -> MaskColumns | None:
    """layout.mask_columns for these key coordinates, on their device, in the kernel's operand dtype,
    built once per coordinate tensor and reused by every call."""
    hit = _DOT_MASKS.get(k_coord)
    if hit is not None and hit[:2] == (block_size, dims):
        return hit[2]
    cols = mask_columns(k_coord, block_size, dims)
    if cols is not None and not interpreting():
        cols = MaskColumns(cols.values, cols.onehot.to(torch.bfloat16), cols.columns, cols.width)
    _DOT_MASKS[k_coord] = (block_size, dims, cols)
    return cols


def _partial_dims(has_partial: bool | int) -> int:
    """The kernel's PARTIAL_DIMS from a launcher's ``has_partial``: True tests every coordinate,
    False none, an int names them (a layout's ``partial_dims``)."""
    if isinstance(has_partial, bool):
        return PARTIAL_ALL if has_partial else 0
    if not 0 <= int(has_partial) <= PARTIAL_ALL:
        raise ValueError(f"has_partial must be a bool or a coordinate bit set in 0..{PARTIAL_ALL}, got {has_partial}")
    return int(has_partial)


def _check_head_dim(D: int) -> None:
    if D not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"head_dim must be one of {SUPPORTED_HEAD_DIMS} for the Triton kernel, got {D}")


def _launch(q, k, v, out, lut, kv_len, scale, block_size, *, video_start, video_len, video_blocks, box, text,
            has_partial, config, use_tma, kv_len_covers_video=False, text_blocks=0) -> None:
    B, S, H, D = q.shape
    kv_counts, kv_counts_video, kv_indices, kv_partial, q_lo, q_hi, k_coord = (x.contiguous() for x in lut)
    dims = _partial_dims(has_partial)
    dot_mask = _dot_mask_tables(lut[6], block_size, dims) if dims and D in DOT_MASK_HEAD_DIMS else None
    G, M = kv_counts.shape
    W = kv_indices.shape[-1]
    if B * H * M == 0 or video_len == 0:
        return
    if scale is None:
        scale = 1.0 / math.sqrt(D)
    has_text = text is not None and video_blocks < M
    qt, kt, vt, ot, text_row0, text_len = text if has_text else (q, k, v, out, 0, 0)
    if box is not None:
        mode = 2
        if not (tma_usable(q, box[2]) and all(box_readable(x, video_start) for x in (k, v))):
            raise ValueError("grid boxes need tensor descriptors (Hopper or newer, 16-byte aligned rows)")
    else:
        tma = tma_usable(q, k, v, out) if use_tma is None else use_tma
        mode = 1 if tma else 0
    if mode == 0 and not (k.stride() == q.stride() and v.stride() == q.stride()):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()  # pointer loads share one set of strides
    text_tma = has_text and mode > 0 and tma_usable(qt, kt, vt)
    if has_text and not text_tma and not (kt.stride() == qt.stride() and vt.stride() == qt.stride()):
        qt, kt, vt = qt.contiguous(), kt.contiguous(), vt.contiguous()
    video_ragged = box is None and video_len < video_blocks * block_size
    q_rows, q_strides = S, q.stride()[:3]
    if mode == 2:
        grid, tile, q_canonical = box
        Qa = _row_descriptor(q_canonical, block_size)
        Ka, Va, Oa = _box_descriptor(k, video_start, grid, tile), _box_descriptor(v, video_start, grid, tile), out
        q_rows, q_strides = q_canonical.shape[1], q_canonical.stride()[:3]
        grid_dims = tuple(int(g) for g in grid)
        tile_kw = dict(TT=tile[0], TH=tile[1], TW=tile[2], NT_H=-(-grid[1] // tile[1]), NT_W=-(-grid[2] // tile[2]))
    else:
        Qa, Ka, Va, Oa = (_row_descriptor(x, block_size) for x in (q, k, v, out)) if mode == 1 else (q, k, v, out)
        grid_dims = (1, 1, 1)
        tile_kw = {}
    QTa, KTa, VTa = (_row_descriptor(x, block_size) for x in (qt, kt, vt)) if text_tma else (qt, kt, vt)
    has_kv_len = kv_len is not None
    kv_len_arg = kv_len.to(device=q.device, dtype=torch.int32) if has_kv_len else kv_counts
    args = (
        Qa, Ka, Va, Oa, out, QTa, KTa, VTa, ot,
        *q_strides, *out.stride()[:3], *qt.stride()[:3], *ot.stride()[:3],
        video_start, q_rows, video_len, text_row0, qt.shape[1], text_len,
        *grid_dims,
        kv_counts, kv_counts_video, kv_indices, kv_partial, q_lo, q_hi, k_coord,
        *((dot_mask.values, dot_mask.onehot, dot_mask.columns) if dot_mask else (k_coord,) * 3),
        kv_len_arg,
        float(scale) * LOG2E,
        H, G, M, video_blocks, W, text_blocks,
        1 << max(M * block_size - 1, 1).bit_length(),
    )
    span = video_blocks * block_size
    flags = dict(
        HEAD_DIM=D, LAYOUT_BLOCK=block_size, PARTIAL_DIMS=dims,
        MASK_K=dot_mask.width if dot_mask else 0,
        VIDEO_CAN_CROSS=bool(video_ragged or (has_kv_len and not kv_len_covers_video)), HAS_KV_LEN=has_kv_len, MODE=mode,
        VIDEO_RAGGED=video_ragged, VIDEO_CLIP=mode == 0 and video_start + span > S, VIDEO_STORE_MASKED=video_ragged,
        HAS_TEXT=has_text, TEXT_TMA=text_tma, TEXT_CLIP=has_text and not text_tma and text_row0 + (M - video_blocks) * block_size > qt.shape[1],
        TEXT_ROWS_FIRST=TEXT_ROWS_FIRST and text_blocks > 0,
        **tile_kw,
    )
    # Query tiles: every block of the layout, except that rows-mode tiles wholly past the last
    # video row (sub-block tiles of a ragged end, no text after them) have nothing to store.
    rows = video_len if mode < 2 and not has_text else M * block_size
    if config is None and not interpreting():
        grid_fn = lambda meta: (triton.cdiv(rows, meta["BLOCK_M"]), B * H)  # noqa: E731
        _block_sparse_fwd_tuned[grid_fn](*args, **flags)
        return
    cfg = dict(default_config(D, block_size), **(config or {}))
    bm, bn = cfg["BLOCK_M"], cfg["BLOCK_N"]
    if block_size % bm or block_size % bn or (mode == 2 and not bm == bn == block_size):
        raise ValueError(f"BLOCK_M={bm} and BLOCK_N={bn} must divide the layout block size {block_size} "
                         "(and equal it when reading grid boxes)")
    _set_descriptor_blocks({"Q": Qa, "K": Ka, "V": Va, "O": Oa, "QT": QTa, "KT": KTa, "VT": VTa, "HEAD_DIM": D,
                            "BLOCK_M": bm, "BLOCK_N": bn, **flags})
    # The dot mask where asked (default) and where its one-hot columns fit beside this config's stages.
    dot = bool(cfg.get("DOT_MASK", True)) and (interpreting() or _smem_bytes(
        _config(bm, bn, cfg["num_warps"], cfg["num_stages"]), D, mask_k=flags["MASK_K"]) <= _smem_limit())
    _block_sparse_fwd[(triton.cdiv(rows, bm), B * H)](
        *args, **flags, BLOCK_M=bm, BLOCK_N=bn, NUM_STAGES=cfg["num_stages"], DOT_MASK=dot,
        WARP_SPECIALIZE=bool(cfg.get("WARP_SPECIALIZE", False)),
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
