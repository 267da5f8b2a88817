"""Triton kernels of piecewise (PISA) and top-k block attention, their launchers and torch custom ops.

The math is the reference's (``piecewise.py``): per query block, exact attention on the selected
key blocks; piecewise attention also sees every other key block J as one summary key with logit
``tau q.kbar_J + log n_J`` and value ``vbar_J = V_J / n_J``, all in one softmax per row, and at
order 1 adds ``(summary mass) * tau (H/T)^T q`` before normalising. A call is three steps, none of
which synchronises with the host:

1. Statistics (``_piecewise_stats``, one program per (key-block range, batch*head)): per block the
   mean query qbar, mean key kbar, mean value vbar and ||H_J||_F, reading q, k, v ([B, N, H, D])
   in place. H_J = sum_t (k_t - kbar) v_t^T is never stored: ||H_J||_F^2 = sum_{s,t} (kc_s . kc_t)
   (v_s . v_t) with kc = k - kbar, two block x block Gram matrices multiplied elementwise and
   summed, in fp32 accuracy: for 16-bit inputs kc is split into two 16-bit halves (hi + lo) so the
   dots run at the 16-bit tensor-core rate (v's products are exact in the fp32 accumulator); for
   fp32 inputs the dots run as three TF32 products ("tf32x3"). kbar and vbar also go, in q's dtype,
   into zero-padded [B*H, blocks_pad, D] buffers that the summary phase reads as dense tiles. For
   order 1 the same programs accumulate H = sum_J kc_J^T v_J over their range in registers (kc, not
   k: no K^T V - N kbar vbar^T cancellation) and write one D x D partial per program; torch sums
   the few partials.
2. Selection (on the device): scores ``tau qbar_I . kbar_J + log(||H_J||_F + 1e-5)`` by one
   batched matmul, then ``_select_top_blocks`` per (batch*head, query block) row: the ``keep``
   largest by bisection on the scores' bits, written as a sorted LUT row ([B*H, blocks, keep] int32;
   every row has ``keep`` entries) and a uint8 row of the selected map [B*H, blocks, blocks], one
   warp per row (torch's topk + sort + scatter took 4.1 ms at Wan 720p on an H200, a first
   4-warp int64 version of this kernel 3.1 ms: its 32 counting passes each waited on a barrier).
   A caller's own ``selected`` mask becomes a left-packed LUT (stable sort) plus per-row counts.
3. Attention (``_piecewise_fwd``, grid (query blocks, B*H)): per query block, flash attention in
   base 2 over the LUT's key blocks, then over the extra exact keys (text), then, piecewise only,
   over every key block's summary key in tiles of BLOCK_S, the selected ones set to -inf, folded
   into the same running max / denominator / accumulator; the summary mass l_s is kept apart,
   rescaled by the same factor as l and acc whenever the max rises, and at order 1
   ``l_s * (q @ tau H/T)`` joins the accumulator before the division. Top-k compiles the summary
   phase out. Where a head's K and V overflow L2 (``kv_range_count``), the exact phase runs as a few
   launches over contiguous key ranges (a row's sorted LUT entries cut by searchsorted on the device),
   each continuing the last one's softmax from the output and a row LSE; the text keys and the
   summary phase run in the first launch only.

Exact tiles. BLOCK_N <= block: a key block is block/BLOCK_N contiguous tiles, loaded through 2-D
tensor descriptors (TMA) over [B * N, H * D] where usable, else pointers. BLOCK_N = 2 blocks
(block 64): each tile gathers two LUT entries' rows (pointer loads with per-row addresses), so a
64-row query block still runs 64 x 128 dots; an odd count leaves half of the last tile masked.
Entries are sorted, so the short last block of a sequence and an odd count's hole only ever sit
in the last tile(s): one scalar test per tile decides whether to mask.

All offsets into q, k, v and the output are int64. Rows past N are neither loaded (masked loads
read zeros) nor stored. A row that attends nothing (top-k with an empty ``selected`` row and no
extra keys) is written as zeros, like the reference.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .block_sparse_triton import LOG2E, _online_softmax, _row_descriptor, _row_ptrs, _smem_limit, interpreting, tma_usable
from .piecewise import NORM_EPS

# The summary buffers' rows are padded to a multiple of the largest summary tile, so that every
# BLOCK_S of the autotuner reads whole tiles without masks.
SUMMARY_PAD = 128
# Precision of the statistics kernel's fp32 dots on a GPU ("tf32x3": three TF32 products, about
# fp32; "ieee": plain fp32 FMAs, slower). The interpreter always computes in fp32.
STATS_PRECISION = "tf32x3"


# ----------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------


@triton.jit
def _load_rows(base, b, h, rows, n_valid, stride_b, stride_n, stride_h, HEAD_DIM: tl.constexpr, MASKED: tl.constexpr):
    """[len(rows), HEAD_DIM] rows (int64) of one (batch, head); rows >= n_valid read as zeros when MASKED."""
    ptrs = _row_ptrs(base, b, h, rows, stride_b, stride_n, stride_h, HEAD_DIM)
    if MASKED:
        return tl.load(ptrs, mask=rows[:, None] < n_valid, other=0.0)
    else:
        return tl.load(ptrs)


@triton.jit
def _piecewise_stats(
    Q, K, V,  # [B, N, H, D], one set of strides
    stride_b, stride_n, stride_h,
    QBAR, KBAR, HNORM,  # fp32 [BH, blocks, D], [BH, blocks, D], [BH, blocks]
    KBAR_S, VBAR_S,  # q's dtype [BH, blocks_pad, D] (rows past the last block stay zero)
    H_PART,  # fp32 [BH, splits, D, D] (WITH_H)
    N, num_heads, num_blocks, blocks_pad, blocks_per_program, num_splits,
    HEAD_DIM: tl.constexpr,
    BLOCK: tl.constexpr,
    WITH_H: tl.constexpr,
    EVEN_N: tl.constexpr,
    SPLIT: tl.constexpr,  # 16-bit inputs: fp32 operands as two 16-bit halves
    PRECISION: tl.constexpr,  # of the fp32 dots otherwise: "ieee" (interpreter) or "tf32x3" (about fp32 on tensor cores)
):
    split = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // num_heads
    h = bh % num_heads
    r = tl.arange(0, BLOCK)
    d = tl.arange(0, HEAD_DIM)
    first = split * blocks_per_program
    last = tl.minimum(first + blocks_per_program, num_blocks)
    if WITH_H:
        h_acc = tl.zeros([HEAD_DIM, HEAD_DIM], dtype=tl.float32)
    for j in tl.range(first, last):
        rows = (j * BLOCK + r).to(tl.int64)
        valid = rows < N
        q = _load_rows(Q, b, h, rows, N, stride_b, stride_n, stride_h, HEAD_DIM, not EVEN_N).to(tl.float32)
        k = _load_rows(K, b, h, rows, N, stride_b, stride_n, stride_h, HEAD_DIM, not EVEN_N).to(tl.float32)
        v = _load_rows(V, b, h, rows, N, stride_b, stride_n, stride_h, HEAD_DIM, not EVEN_N)
        inv_n = 1.0 / tl.minimum(N - j * BLOCK, BLOCK).to(tl.float32)
        qbar = tl.sum(q, 0) * inv_n
        kbar = tl.sum(k, 0) * inv_n
        vbar = tl.sum(v.to(tl.float32), 0) * inv_n
        kc = k - kbar[None, :]
        if not EVEN_N:
            kc = tl.where(valid[:, None], kc, 0.0)  # rows past N are not keys (their v = 0 makes this belt and braces)
        if SPLIT:
            # 16-bit inputs: kc = hi + lo, both in v's dtype (about 16 mantissa bits together), so the
            # dots run at the 16-bit tensor-core rate; v's products are exact in the fp32 accumulator.
            # With G_v = v v^T symmetric, sum((hi + lo)(hi + lo)^T * G_v) = sum((hi hi^T + 2 hi lo^T) * G_v)
            # up to lo lo^T.
            kc_hi = kc.to(V.dtype.element_ty)
            kc_rest = kc - kc_hi.to(tl.float32)
            gram_k = tl.dot(kc_hi, tl.trans(kc_hi))
            gram_k = tl.dot(kc_hi, tl.trans((2.0 * kc_rest).to(V.dtype.element_ty)), gram_k)
            gram_v = tl.dot(v, tl.trans(v))
            if WITH_H:
                h_acc = tl.dot(tl.trans(kc_hi), v, h_acc)
                h_acc = tl.dot(tl.trans(kc_rest.to(V.dtype.element_ty)), v, h_acc)
        else:
            gram_k = tl.dot(kc, tl.trans(kc), input_precision=PRECISION)
            gram_v = tl.dot(v, tl.trans(v), input_precision=PRECISION)
            if WITH_H:
                h_acc = tl.dot(tl.trans(kc), v, h_acc, input_precision=PRECISION)
        norm2 = tl.sum(tl.sum(gram_k * gram_v, 1), 0)
        stat = bh.to(tl.int64) * num_blocks + j
        tl.store(QBAR + stat * HEAD_DIM + d, qbar)
        tl.store(KBAR + stat * HEAD_DIM + d, kbar)
        tl.store(HNORM + stat, tl.sqrt(tl.maximum(norm2, 0.0)))
        pad = bh.to(tl.int64) * blocks_pad + j
        tl.store(KBAR_S + pad * HEAD_DIM + d, kbar.to(KBAR_S.dtype.element_ty))
        tl.store(VBAR_S + pad * HEAD_DIM + d, vbar.to(VBAR_S.dtype.element_ty))
    if WITH_H:
        part = (bh.to(tl.int64) * num_splits + split) * HEAD_DIM * HEAD_DIM
        tl.store(H_PART + part + d[:, None] * HEAD_DIM + d[None, :], h_acc)


def _stats_splits(num_blocks: int, bh: int, head_dim: int, with_h: bool) -> int:
    """Block ranges per (batch, head). Without H one program per block. With H, each program
    accumulates a D x D partial over its range: enough programs to fill the GPU (~1024), at most
    64 MB of partials."""
    if not with_h:
        return num_blocks
    by_memory = max(1, (1 << 26) // (bh * head_dim * head_dim * 4))
    return max(1, min(num_blocks, -(-1024 // bh), by_memory))


def piecewise_stats_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_size: int, with_h: bool,
                        splits: int | None = None) -> tuple[torch.Tensor, ...]:
    """Raw launcher: (qbar, kbar, hnorm, kbar_s, vbar_s, h) of [B, N, H, D] q, k, v (same strides,
    unit last stride, head_dim a power of two in [16, 128]); see ``piecewise_statistics_op``.
    ``splits`` overrides the number of block ranges per (batch, head) (tests)."""
    B, N, H, D = q.shape
    nb = -(-N // block_size)
    nbp = -(-nb // SUMMARY_PAD) * SUMMARY_PAD
    BH = B * H
    f32 = dict(dtype=torch.float32, device=q.device)
    qbar = torch.empty(BH, nb, D, **f32)
    kbar = torch.empty(BH, nb, D, **f32)
    hnorm = torch.empty(BH, nb, **f32)
    kbar_s = torch.zeros(BH, nbp, D, dtype=q.dtype, device=q.device)
    vbar_s = torch.zeros(BH, nbp, D, dtype=q.dtype, device=q.device)
    splits = _stats_splits(nb, BH, D, with_h) if splits is None else max(1, min(int(splits), nb))
    per = -(-nb // splits)
    splits = -(-nb // per)
    h_part = torch.empty(BH, splits, D, D, **f32) if with_h else hnorm
    if BH * nb:
        _piecewise_stats[(splits, BH)](
            q, k, v, *q.stride()[:3], qbar, kbar, hnorm, kbar_s, vbar_s, h_part,
            N, H, nb, nbp, per, splits,
            HEAD_DIM=D, BLOCK=block_size, WITH_H=bool(with_h), EVEN_N=N % block_size == 0,
            SPLIT=q.dtype in (torch.float16, torch.bfloat16), PRECISION="ieee" if interpreting() else STATS_PRECISION,
            # fp32 operands at 2 stages overflow shared memory at head_dim 128
            num_warps=8 if (with_h and D == 128) or block_size == 128 else 4, num_stages=2 if q.element_size() == 2 else 1,
        )
    h = h_part.sum(1) if with_h else q.new_empty(0, dtype=torch.float32)
    return qbar, kbar, hnorm, kbar_s, vbar_s, h


# ----------------------------------------------------------------------------------------------
# Selection
# ----------------------------------------------------------------------------------------------


@triton.jit
def _select_top_blocks(
    SCORE,  # fp32 [rows, blocks]
    LUT,  # int32 [rows, keep]
    SEL,  # uint8 [rows, blocks]
    num_rows, num_blocks, keep,
    ROWS: tl.constexpr,
    BLOCKS_POW2: tl.constexpr,
):
    """ROWS score rows: per row the ``keep`` largest entries, found by bisecting on an
    order-preserving uint32 image of the fp32 scores (32 counting passes over the row in
    registers), written as a sorted LUT row (positions by a prefix sum) and a 0/1 map. Equal scores
    at the threshold go to the lowest block indices. On a GPU one warp per row: the counts are warp
    shuffles, no barrier."""
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    j = tl.arange(0, BLOCKS_POW2)
    valid = (rows[:, None] < num_rows) & (j[None, :] < num_blocks)
    score = tl.load(SCORE + rows[:, None] * num_blocks + j[None, :], mask=valid, other=0.0)
    bits = score.to(tl.int32, bitcast=True)
    # Unsigned order of floats: set the sign bit of positives, flip every bit of negatives. Absent
    # entries get 0, below every real score (-inf maps to 0x007FFFFF).
    key = tl.where(bits >= 0, bits ^ (-2147483648), ~bits).to(tl.uint32, bitcast=True)
    key = tl.where(valid, key, 0)
    # Largest t with #(key >= t) >= keep: lo always satisfies it (0 counts every block), hi + 1 never does.
    lo = tl.zeros([ROWS], dtype=tl.uint32)
    hi = tl.max(key, 1)
    for _ in tl.static_range(32):
        gap = hi - lo
        mid = lo + (gap >> 1) + (gap & 1)
        enough = tl.sum((key >= mid[:, None]).to(tl.int32), 1) >= keep
        lo = tl.where(enough, mid, lo)
        hi = tl.where(enough, hi, mid - 1)
    above = key > lo[:, None]
    tied = (key == lo[:, None]) & valid
    room = keep - tl.sum(above.to(tl.int32), 1)
    take = above | (tied & (tl.cumsum(tied.to(tl.int32), 1) <= room[:, None]))
    pos = tl.cumsum(take.to(tl.int32), 1) - 1
    tl.store(LUT + rows[:, None] * keep + pos, j[None, :] + 0 * pos, mask=take)
    tl.store(SEL + rows[:, None] * num_blocks + j[None, :], take.to(tl.uint8), mask=valid)


def select_top_blocks_fwd(score: torch.Tensor, keep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw launcher: LUT (int32 [..., keep], ascending) and map (uint8 [..., blocks]) of the ``keep``
    largest entries of each row of the fp32 ``score`` [..., blocks]."""
    nb = score.shape[-1]
    num_rows = score.numel() // max(nb, 1)
    score = score.contiguous()
    lut = torch.empty(*score.shape[:-1], keep, dtype=torch.int32, device=score.device)
    sel = torch.empty(score.shape, dtype=torch.uint8, device=score.device)
    if num_rows and keep:
        pow2 = triton.next_power_of_2(nb)
        rows = 16 if interpreting() else 1  # the interpreter pays per operation, a GPU per barrier
        _select_top_blocks[(triton.cdiv(num_rows, rows),)](score, lut, sel, num_rows, nb, keep, ROWS=rows, BLOCKS_POW2=pow2,
                                                           num_warps=1 if pow2 <= 4096 else 4)
    return lut, sel


# ----------------------------------------------------------------------------------------------
# Attention
# ----------------------------------------------------------------------------------------------


@triton.jit
def _piecewise_fwd(
    Q, K, V, O,
    KD, VD,  # 2-D descriptors over k, v as [B * N, H * D] (USE_TMA), else K, V again
    stride_b, stride_n, stride_h,  # q, k, v (the launcher makes them equal)
    stride_ob, stride_on, stride_oh,
    KE, VE,  # extra keys / values [B, M, H, D] (HAS_EXTRA)
    stride_eb, stride_en, stride_eh,
    extra_len,  # M
    KV_LEN,  # int32 [B] (HAS_KV_LEN): extra keys at index >= kv_len[b] are ignored
    LUT,  # int32 [BH, blocks, lut_width]: selected key blocks of each query block, sorted, left-packed
    COUNTS,  # int32 [BH, blocks] (HAS_COUNTS), else every row has fixed_count entries
    lut_width, fixed_count,
    ENTRY_LO, ENTRY_HI,  # int32 [BH, blocks] (KV_RANGE): this launch's LUT entries of each row, [lo, hi)
    LSE,  # fp32 [BH, N]: row log2-sum-exp of the launches so far (HAS_PRIOR reads it, WRITE_LSE writes it)
    SEL,  # uint8 [BH, blocks, blocks]: nonzero where the key block is exact (SUMMARY)
    KBAR_S, VBAR_S,  # [BH, blocks_pad, D] summary keys / values, q's dtype (SUMMARY)
    HT,  # [BH, D, D] tau * H / N in q's dtype (ORDER1)
    N, num_heads, num_blocks, blocks_pad,
    qk_scale,  # tau * log2(e)
    SEQ_BUCKET, COUNT_BUCKET,  # autotune keys only
    HEAD_DIM: tl.constexpr,
    LAYOUT_BLOCK: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_S: tl.constexpr,
    NUM_STAGES: tl.constexpr,
    EVEN_N: tl.constexpr,
    HAS_COUNTS: tl.constexpr,
    HAS_EXTRA: tl.constexpr,
    HAS_KV_LEN: tl.constexpr,
    SUMMARY: tl.constexpr,
    ORDER1: tl.constexpr,
    USE_TMA: tl.constexpr,  # exact key tiles through KD / VD (tiles of at most one block)
    KV_RANGE: tl.constexpr = False,  # exact phase over entries [ENTRY_LO, ENTRY_HI) of the row only
    HAS_PRIOR: tl.constexpr = False,  # continue the softmax of earlier launches (O and LSE hold it)
    WRITE_LSE: tl.constexpr = False,  # a later launch continues: store the row LSE with the output
):
    # Query tiles are the fastest grid axis: programs of one head run together and share its K/V in L2.
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // num_heads
    h = bh % num_heads
    start_m = pid_m * BLOCK_M
    q_block = start_m // LAYOUT_BLOCK
    row = bh.to(tl.int64) * num_blocks + q_block
    if KV_RANGE:
        first = tl.load(ENTRY_LO + row)
        count = tl.load(ENTRY_HI + row)
    else:
        first = 0
        if HAS_COUNTS:
            count = tl.load(COUNTS + row)
        else:
            count = fixed_count
    idx_row = LUT + row * lut_width

    offs_m = (start_m + tl.arange(0, BLOCK_M)).to(tl.int64)
    q = _load_rows(Q, b, h, offs_m, N, stride_b, stride_n, stride_h, HEAD_DIM, not EVEN_N)
    lse_ptrs = LSE + bh.to(tl.int64) * N + offs_m

    if HAS_PRIOR:
        # The earlier launches' normalised output and row LSE: a running state with max = LSE, sum 1.
        m_i = tl.load(lse_ptrs, mask=offs_m < N, other=-1.0e30)
        l_i = tl.full([BLOCK_M], 1.0, dtype=tl.float32)
        acc = _load_rows(O, b, h, offs_m, N, stride_ob, stride_on, stride_oh, HEAD_DIM, not EVEN_N).to(tl.float32)
    else:
        # m starts finite so that fully masked tiles never produce (-inf) - (-inf).
        m_i = tl.full([BLOCK_M], -1.0e30, dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    r = tl.arange(0, BLOCK_N)

    # (a) exact attention over the selected key blocks (this launch's range of them)
    if BLOCK_N <= LAYOUT_BLOCK:
        SUB: tl.constexpr = LAYOUT_BLOCK // BLOCK_N
        for it in tl.range(first * SUB, count * SUB, num_stages=NUM_STAGES):
            start_n = tl.load(idx_row + it // SUB).to(tl.int64) * LAYOUT_BLOCK + (it % SUB) * BLOCK_N
            cols = start_n + r
            if USE_TMA:
                # Rows past N belong to the next batch (finite, masked below) or lie past the
                # tensor (zero-filled).
                k = KD.load([(b * N + start_n).to(tl.int32), h * HEAD_DIM])
                v = VD.load([(b * N + start_n).to(tl.int32), h * HEAD_DIM])
            else:
                k = _load_rows(K, b, h, cols, N, stride_b, stride_n, stride_h, HEAD_DIM, not EVEN_N)
                v = _load_rows(V, b, h, cols, N, stride_b, stride_n, stride_h, HEAD_DIM, not EVEN_N)
            qk = tl.dot(q, tl.trans(k))
            if start_n + BLOCK_N > N:  # only the short last block of the sequence
                qk = tl.where(cols[None, :] < N, qk, float("-inf"))
            m_i, l_i, acc = _online_softmax(qk, v, m_i, l_i, acc, qk_scale)
    else:
        # Each tile gathers PER consecutive LUT entries; entries past the count point past the
        # last block (rows >= N), which the masked loads read as zeros and the last tile masks.
        PER: tl.constexpr = BLOCK_N // LAYOUT_BLOCK
        n_tiles = tl.cdiv(count - first, PER)
        for it in tl.range(0, n_tiles, num_stages=NUM_STAGES):
            entry = first + it * PER + r // LAYOUT_BLOCK
            blk = tl.load(idx_row + entry, mask=entry < count, other=num_blocks)
            cols = blk.to(tl.int64) * LAYOUT_BLOCK + r % LAYOUT_BLOCK
            k = _load_rows(K, b, h, cols, N, stride_b, stride_n, stride_h, HEAD_DIM, True)
            v = _load_rows(V, b, h, cols, N, stride_b, stride_n, stride_h, HEAD_DIM, True)
            qk = tl.dot(q, tl.trans(k))
            if it == n_tiles - 1:  # sorted entries: the short block and the hole are in the last tile
                qk = tl.where(cols[None, :] < N, qk, float("-inf"))
            m_i, l_i, acc = _online_softmax(qk, v, m_i, l_i, acc, qk_scale)

    # (b) extra exact keys (joint attention's text), cut at kv_len
    if HAS_EXTRA:
        kv_end = extra_len
        if HAS_KV_LEN:
            kv_end = tl.maximum(tl.minimum(tl.load(KV_LEN + b), extra_len), 0)
        for start_e in tl.range(0, kv_end, BLOCK_N, num_stages=NUM_STAGES):
            cols = (start_e + r).to(tl.int64)
            k = _load_rows(KE, b, h, cols, kv_end, stride_eb, stride_en, stride_eh, HEAD_DIM, True)
            v = _load_rows(VE, b, h, cols, kv_end, stride_eb, stride_en, stride_eh, HEAD_DIM, True)
            qk = tl.dot(q, tl.trans(k))
            if start_e + BLOCK_N > kv_end:
                qk = tl.where(cols[None, :] < kv_end, qk, float("-inf"))
            m_i, l_i, acc = _online_softmax(qk, v, m_i, l_i, acc, qk_scale)

    # (c) piecewise: one summary key per key block not selected, logit tau q.kbar_J + log n_J
    if SUMMARY:
        l_s = tl.zeros([BLOCK_M], dtype=tl.float32)
        s = tl.arange(0, BLOCK_S)
        d = tl.arange(0, HEAD_DIM)
        sel_row = SEL + row * num_blocks
        summary_base = bh.to(tl.int64) * blocks_pad * HEAD_DIM
        for start_s in tl.range(0, num_blocks, BLOCK_S, num_stages=NUM_STAGES):
            blocks = start_s + s
            offs = summary_base + blocks.to(tl.int64)[:, None] * HEAD_DIM + d[None, :]
            kb = tl.load(KBAR_S + offs)  # padded buffer: whole tiles, zeros past the last block
            vb = tl.load(VBAR_S + offs)
            taken = tl.load(sel_row + blocks, mask=blocks < num_blocks, other=1)
            n_j = tl.maximum(tl.minimum(N - blocks * LAYOUT_BLOCK, LAYOUT_BLOCK), 1)
            t = tl.dot(q, tl.trans(kb)) * qk_scale + tl.log2(n_j.to(tl.float32))[None, :]
            t = tl.where(taken[None, :] == 0, t, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(t, 1))
            p = tl.math.exp2(t - m_new[:, None])
            alpha = tl.math.exp2(m_i - m_new)
            mass = tl.sum(p, 1)
            l_i = l_i * alpha + mass
            l_s = l_s * alpha + mass
            acc = acc * alpha[:, None]
            acc = tl.dot(p.to(vb.dtype), vb, acc)
            m_i = m_new
        if ORDER1:
            # sum_{J not sel} e^{tau q.kbar_J} tau n_J (H/T)^T q = (summary mass) * q @ (tau H / T)
            ht = tl.load(HT + bh.to(tl.int64) * HEAD_DIM * HEAD_DIM + d[:, None] * HEAD_DIM + d[None, :])
            acc += l_s[:, None] * tl.dot(q, ht)

    if WRITE_LSE:
        # Rows with nothing yet keep m = -1e30 and sum 1 over a zero output: no mass for later launches.
        tl.store(lse_ptrs, m_i + tl.log2(tl.where(l_i == 0.0, 1.0, l_i)), mask=offs_m < N)
    l_i = tl.where(l_i == 0.0, 1.0, l_i)  # rows that attend nothing: output 0
    out = (acc / l_i[:, None]).to(O.dtype.element_ty)
    ptrs = _row_ptrs(O, b, h, offs_m, stride_ob, stride_on, stride_oh, HEAD_DIM)
    if EVEN_N:
        tl.store(ptrs, out)
    else:
        tl.store(ptrs, out, mask=offs_m[:, None] < N)


def _config(block_n: int, block_s: int, warps: int, stages: int) -> triton.Config:
    return triton.Config({"BLOCK_N": block_n, "BLOCK_S": block_s, "NUM_STAGES": stages}, num_warps=warps, num_stages=stages,
                         pre_hook=_set_descriptor_blocks)


def _set_descriptor_blocks(nargs) -> None:
    """K/V descriptors carry the tile shape, which depends on the config being tried."""
    if nargs.get("USE_TMA"):
        rows = min(nargs["BLOCK_N"], nargs["LAYOUT_BLOCK"])
        nargs["KD"].block_shape = [rows, nargs["HEAD_DIM"]]
        nargs["VD"].block_shape = [rows, nargs["HEAD_DIM"]]


# Hopper candidates (BLOCK_N, BLOCK_S, warps, stages); BLOCK_M is the block size (one program per
# query block). Measured on an H200 (Triton 3.6, bf16, Wan2.1-14B 720p: B=1, H=40, N=75,600,
# D=128, block 64, 177 of 1,182 blocks exact), exact phase alone (top-k kernel): 64-key tiles
# through TMA, 4 warps, 3 stages 37.1 ms = 473 TFLOP/s (82% of cuDNN's dense rate); 2 stages
# 40.1 ms; pointer loads 42.4 ms; pairs of blocks in 128-key tiles (pointer gathers) 60.5 ms at 4
# warps, 80 ms at 8; 8 warps on 64 x 64 tiles 82 ms; 128 summary keys per tile 59 vs 46 ms (order 1).
AUTOTUNE_CONFIGS = [
    _config(64, 64, 4, 3),
    _config(64, 64, 4, 2),
    _config(64, 64, 8, 3),
    _config(128, 64, 8, 2),
    _config(128, 64, 4, 3),
]


def _smem_bytes(cfg: triton.Config, block_m: int, head_dim: int, elem: int = 2) -> int:
    """Shared memory of a config: the query tile and NUM_STAGES buffers of K and V (the summary
    loop's kbar/vbar tiles reuse the same space after the key loop)."""
    bn, bs, st = cfg.kwargs["BLOCK_N"], cfg.kwargs["BLOCK_S"], cfg.kwargs["NUM_STAGES"]
    return (block_m * head_dim + st * 2 * max(bn, bs) * head_dim) * elem


def _prune_configs(configs, named_args, **kwargs):
    args = {**named_args, **kwargs}  # constexprs arrive as keyword arguments
    lb, d, bm = args["LAYOUT_BLOCK"], args["HEAD_DIM"], args["BLOCK_M"]
    limit = _smem_limit()
    keep = [
        c for c in configs
        if _smem_bytes(c, bm, d) <= limit
        # tiles gathering several blocks lost everywhere at block 64 (see above): small blocks only
        and (c.kwargs["BLOCK_N"] <= lb or lb < 64)
        # 8 warps only on 128-row query tiles
        and (c.num_warps == 4 or bm >= 128)
    ]
    return keep or configs[:1]


_piecewise_fwd_tuned = triton.autotune(
    configs=AUTOTUNE_CONFIGS,
    key=["HEAD_DIM", "LAYOUT_BLOCK", "SEQ_BUCKET", "COUNT_BUCKET", "HAS_COUNTS", "HAS_EXTRA", "SUMMARY", "ORDER1", "EVEN_N",
         "USE_TMA", "KV_RANGE", "HAS_PRIOR", "WRITE_LSE"],
    prune_configs_by={"early_config_prune": _prune_configs},
    restore_value=["O", "LSE"],  # a continuing launch reads what it overwrites: tuning trials must not compound
)(_piecewise_fwd)


def default_config(head_dim: int, block_size: int) -> dict:
    """The config used without autotuning (interpreter, or an explicit request)."""
    if interpreting():
        return {"BLOCK_N": block_size, "BLOCK_S": 64, "num_warps": 4, "num_stages": 1}
    return {"BLOCK_N": 64, "BLOCK_S": 64, "num_warps": 8 if block_size == 128 else 4, "num_stages": 3 if block_size <= 64 else 2}


def _bucket(x: int) -> int:
    return 1 << max(int(x) - 1, 1).bit_length()


# Key ranges (the exact phase of one call as several launches, each over the selected key blocks of
# one contiguous range of the sequence, the softmax carried from launch to launch through the output
# and a row LSE). The programs resident at once (consecutive query blocks of one head) read nearly
# every key block of the head between them (top-k at HunyuanVideo 720p: 99.9% of 1,857 blocks over
# 264 query blocks), so a head's K and V must stay in L2 for reuse; at 61 MB (HunyuanVideo 720p) they
# do not: L2 hit rate 66%, against 99.9% when every query block reads the same blocks, and 61.6 ms
# against 52.7 ms (H200, benchmarks/probes/topk_l2_probe.py, logs/session14/a). A call splits when a
# head's K + V exceed L2_KV_BYTES (None: never), into ranges of about KV_RANGE_BYTES; each boundary
# costs one write and one read of the output. HunyuanVideo 720p (3 ranges), autotuned, same run
# (logs/session14/b): top-k's kernel 55.2 ms against 58.5 in one launch (0.85 of cuDNN's rate per
# block, was 0.80), piecewise's call 74.9 against 76.6 ms; Wan 720p (39 MB) stays one launch
# (2 ranges there: 36.9 against 37.3 ms, within noise).
L2_KV_BYTES: int | None = 40 << 20
KV_RANGE_BYTES = 24 << 20


def kv_range_count(N: int, head_dim: int, element_size: int) -> int:
    """Launches the exact phase of an N-key call takes (1 in the interpreter, or with L2_KV_BYTES None)."""
    kv_bytes = 2 * N * head_dim * element_size
    if interpreting() or L2_KV_BYTES is None or kv_bytes <= L2_KV_BYTES:
        return 1
    return min(8, -(-kv_bytes // KV_RANGE_BYTES))


def _range_edges(lut: torch.Tensor, counts: torch.Tensor | None, count: int, num_blocks: int, ranges: int) -> torch.Tensor:
    """int32 [ranges + 1, BH, blocks]: LUT entries [edges[r], edges[r + 1]) of each row are the key
    blocks in [num_blocks * r // ranges, num_blocks * (r + 1) // ranges) (rows are sorted)."""
    BH, rows, W = lut.shape
    entries = torch.arange(W, device=lut.device)
    valid = lut if counts is None else torch.where(entries < counts[..., None], lut, num_blocks)
    # made on the device: no host-to-device copy (the call stays free of host synchronisation)
    bounds = (torch.arange(1, ranges, device=lut.device) * num_blocks // ranges).to(lut.dtype)
    cuts = torch.searchsorted(valid.contiguous(), bounds.expand(BH, rows, ranges - 1).contiguous(), out_int32=True)
    last = counts[..., None] if counts is not None else torch.full((BH, rows, 1), int(count), dtype=torch.int32, device=lut.device)
    first = torch.zeros_like(last)
    return torch.cat([first, cuts, last], dim=-1).permute(2, 0, 1).contiguous()


def piecewise_attention_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    lut: torch.Tensor,
    counts: torch.Tensor | None,
    selected: torch.Tensor | None,
    kbar_s: torch.Tensor | None,
    vbar_s: torch.Tensor | None,
    ht: torch.Tensor | None,
    k_extra: torch.Tensor | None,
    v_extra: torch.Tensor | None,
    kv_len: torch.Tensor | None,
    scale: float,
    block_size: int,
    count: int,
    *,
    config: dict | None = None,
    use_tma: bool | None = None,
    kv_ranges: int | None = None,
) -> torch.Tensor:
    """Raw launcher (see ``piecewise_attention_op``): q, k, v [B, N, H, D] with one set of strides
    and unit last stride, head_dim a power of two in [16, 128]. Returns a new [B, N, H, D] tensor.
    config: {"BLOCK_N", "BLOCK_S", "num_warps", "num_stages"} to bypass the autotuner; use_tma:
    force (or forbid) tensor-descriptor loads of the exact key tiles (default: where usable);
    kv_ranges: launches of the exact phase, each over one contiguous key range (default
    ``kv_range_count``: more than 1 only where a head's K and V overflow L2)."""
    B, N, H, D = q.shape
    nb = -(-N // block_size)
    out = torch.empty((B, N, H, D), dtype=q.dtype, device=q.device)
    if B * H * N == 0:
        return out
    summary = kbar_s is not None
    has_extra = k_extra is not None and k_extra.shape[1] > 0
    ke, ve = (k_extra, v_extra) if has_extra else (q, v)
    # The interpreter emulates descriptors slowly: pointers unless asked.
    tma = (not interpreting() and tma_usable(k, v)) if use_tma is None else bool(use_tma)
    KD, VD = (_row_descriptor(x, block_size) for x in (k, v)) if tma else (k, v)
    dummy = lut
    ranges = kv_range_count(N, D, q.element_size()) if kv_ranges is None else max(1, min(int(kv_ranges), nb))
    if ranges > 1:
        edges = _range_edges(lut, counts, count, nb, ranges)
        lse = torch.empty(B * H, N, dtype=torch.float32, device=q.device)
    grid = (nb, B * H)
    tuned = config is None and not interpreting()
    if not tuned:
        cfg = dict(default_config(D, block_size), **(config or {}))
        _set_descriptor_blocks({"KD": KD, "VD": VD, "BLOCK_N": cfg["BLOCK_N"], "USE_TMA": tma, "LAYOUT_BLOCK": block_size,
                                "HEAD_DIM": D})
    for r in range(ranges):
        opening = r == 0  # the text keys and the summary phase run once, in the first launch
        args = (
            q, k, v, out, KD, VD, *q.stride()[:3], *out.stride()[:3],
            ke, ve, *ke.stride()[:3], ke.shape[1] if has_extra else 0,
            kv_len if kv_len is not None else dummy,
            lut, counts if counts is not None else dummy, lut.shape[-1], int(count),
            edges[r] if ranges > 1 else dummy, edges[r + 1] if ranges > 1 else dummy, lse if ranges > 1 else q,
            selected if summary else dummy, kbar_s if summary else q, vbar_s if summary else q,
            ht if ht is not None else q,
            N, H, nb, kbar_s.shape[1] if summary else 0,
            float(scale) * LOG2E,
            _bucket(N), _bucket(lut.shape[-1]),
        )
        flags = dict(
            HEAD_DIM=D, LAYOUT_BLOCK=block_size, BLOCK_M=block_size, EVEN_N=N % block_size == 0,
            HAS_COUNTS=counts is not None, HAS_EXTRA=has_extra and opening,
            HAS_KV_LEN=has_extra and opening and kv_len is not None,
            SUMMARY=summary and opening, ORDER1=summary and opening and ht is not None, USE_TMA=tma,
            KV_RANGE=ranges > 1, HAS_PRIOR=not opening, WRITE_LSE=r < ranges - 1,
        )
        if tuned:
            _piecewise_fwd_tuned[grid](*args, **flags)
            continue
        _piecewise_fwd[grid](
            *args, **flags, BLOCK_N=cfg["BLOCK_N"], BLOCK_S=cfg["BLOCK_S"], NUM_STAGES=cfg["num_stages"],
            num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
        )
    return out


# ----------------------------------------------------------------------------------------------
# Custom ops (torch.compile keeps them in the graph as opaque calls)
# ----------------------------------------------------------------------------------------------


@torch.library.custom_op("ditaccel::piecewise_statistics", mutates_args=())
def piecewise_statistics_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_size: int, with_h: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per key block of [B, N, H, D] q, k, v: qbar, kbar (fp32 [B*H, blocks, D]), ||H_J||_F (fp32
    [B*H, blocks]), kbar and vbar again in q's dtype, zero-padded to [B*H, blocks_pad, D]
    (blocks_pad a multiple of 128), and H = sum_J H_J (fp32 [B*H, D, D]; empty unless with_h)."""
    return piecewise_stats_fwd(q, k, v, block_size, with_h)


@piecewise_statistics_op.register_fake
def _(q, k, v, block_size, with_h):
    B, N, H, D = q.shape
    nb = -(-N // block_size)
    nbp = -(-nb // SUMMARY_PAD) * SUMMARY_PAD
    f32 = dict(dtype=torch.float32, device=q.device)
    h = q.new_empty(B * H, D, D, dtype=torch.float32) if with_h else q.new_empty(0, dtype=torch.float32)
    return (torch.empty(B * H, nb, D, **f32), torch.empty(B * H, nb, D, **f32), torch.empty(B * H, nb, **f32),
            q.new_empty(B * H, nbp, D), q.new_empty(B * H, nbp, D), h)


@torch.library.custom_op("ditaccel::piecewise_attention", mutates_args=())
def piecewise_attention_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    lut: torch.Tensor,
    counts: torch.Tensor | None,
    selected: torch.Tensor | None,
    kbar_s: torch.Tensor | None,
    vbar_s: torch.Tensor | None,
    ht: torch.Tensor | None,
    k_extra: torch.Tensor | None,
    v_extra: torch.Tensor | None,
    kv_len: torch.Tensor | None,
    scale: float,
    block_size: int,
    count: int,
) -> torch.Tensor:
    """Exact attention of each query block over its LUT row (int32 [B*H, blocks, W], sorted,
    left-packed; ``counts`` int32 [B*H, blocks] or every row ``count`` entries) and over the extra
    keys (``k_extra``/``v_extra`` [B, M, H, D], cut at ``kv_len`` int32 [B]); with ``kbar_s`` /
    ``vbar_s`` (from the statistics op) the summary keys of the blocks not marked in ``selected``
    (uint8 [B*H, blocks, blocks]); with ``ht`` (tau H / N, [B*H, D, D] in q's dtype) the first-order
    term. Returns a new [B, N, H, D] tensor in q's dtype."""
    return piecewise_attention_fwd(q, k, v, lut, counts, selected, kbar_s, vbar_s, ht, k_extra, v_extra, kv_len, scale,
                                   block_size, count)


@piecewise_attention_op.register_fake
def _(q, k, v, lut, counts, selected, kbar_s, vbar_s, ht, k_extra, v_extra, kv_len, scale, block_size, count):
    return torch.empty(q.shape, dtype=q.dtype, device=q.device)


@torch.library.custom_op("ditaccel::piecewise_top_blocks", mutates_args=())
def select_top_blocks_op(score: torch.Tensor, keep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``keep`` largest entries of each row of fp32 ``score`` [..., blocks]: (int32 [..., keep]
    ascending indices, uint8 [..., blocks] map). Ties at the threshold go to the lowest indices."""
    return select_top_blocks_fwd(score, keep)


@select_top_blocks_op.register_fake
def _(score, keep):
    return (score.new_empty(*score.shape[:-1], keep, dtype=torch.int32), score.new_empty(score.shape, dtype=torch.uint8))


# ----------------------------------------------------------------------------------------------
# The Triton path of piecewise_attention / topk_attention
# ----------------------------------------------------------------------------------------------


def padded_head_dim(D: int) -> int:
    """The head dim the kernels run at: the next power of two, at least 16."""
    return max(16, 1 << (D - 1).bit_length())


def _pad(x: torch.Tensor, D: int) -> torch.Tensor:
    return x if x.shape[-1] == D else torch.nn.functional.pad(x, (0, D - x.shape[-1]))


def _kernel_inputs(q, k, v):
    """q, k, v in q's dtype, head dim padded, with one set of strides and a unit last stride."""
    Dp = padded_head_dim(q.shape[-1])
    q, k, v = (_pad(x.to(q.dtype), Dp) for x in (q, k, v))
    if q.stride(-1) != 1 or not (k.stride() == q.stride() and v.stride() == q.stride()):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    return q, k, v


def block_scores(qbar: torch.Tensor, kbar: torch.Tensor, hnorm: torch.Tensor, tau: float) -> torch.Tensor:
    """fp32 [BH, blocks, blocks] selection scores (``piecewise.block_scores``) from the statistics op's
    qbar, kbar and ||H_J||_F."""
    return torch.baddbmm(torch.log(hnorm + NORM_EPS)[:, None, :], qbar, kbar.transpose(1, 2), alpha=float(tau))


def select_blocks(qbar: torch.Tensor, kbar: torch.Tensor, hnorm: torch.Tensor, tau: float, keep: int):
    """LUT (int32 [BH, blocks, keep], sorted) and selected map (uint8 [BH, blocks, blocks]) of the
    ``keep`` key blocks of highest score per query block; all on the device, no host sync."""
    return select_top_blocks_op(block_scores(qbar, kbar, hnorm, tau), keep)


def lut_from_mask(selected: torch.Tensor, batch: int, heads: int):
    """LUT (int32 [BH, blocks, blocks], each row's selected blocks first, ascending), counts (int32
    [BH, blocks]) and selected map (uint8 [BH, blocks, blocks]) of a bool [B|1, H|1, blocks, blocks] mask."""
    nb = selected.shape[-1]
    sel = selected.expand(batch, heads, nb, nb).reshape(batch * heads, nb, nb)
    lut = torch.sort((~sel).to(torch.uint8), dim=-1, stable=True).indices.to(torch.int32)
    counts = sel.sum(-1, dtype=torch.int32)
    return lut, counts, sel.contiguous().view(torch.uint8)


def triton_piecewise_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    density: float | None,
    selected: torch.Tensor | None,
    block_size: int,
    order: int | None,
    scale: float | None,
    extra_kv: tuple | None,
    config: dict | None = None,
    use_tma: bool | None = None,
    kv_ranges: int | None = None,
) -> torch.Tensor:
    """The Triton backend of ``piecewise_attention`` (order 0/1) and ``topk_attention`` (order
    None); arguments already checked. No host synchronisation: statistics op -> top-blocks op (the LUT)
    -> attention op. ``config`` / ``use_tma`` / ``kv_ranges`` (tests, benchmarks) launch the attention
    kernel with that config / load path / number of key ranges directly instead of through the custom
    op and the autotuner."""
    B, N, H, D = q.shape
    tau = D**-0.5 if scale is None else float(scale)
    q, k, v = _kernel_inputs(q, k, v)
    Dp = q.shape[-1]
    nb = -(-N // block_size)
    summary = order is not None
    ke = ve = kv_len = None
    if extra_kv is not None:
        ke, ve, kv_len = extra_kv
        ke, ve = (_pad(x.to(q.dtype), Dp) for x in (ke, ve))
        if ke.stride(-1) != 1 or ve.stride() != ke.stride():
            ke, ve = ke.contiguous(), ve.contiguous()
        if kv_len is not None:
            kv_len = kv_len.to(device=q.device, dtype=torch.int32)
    kbar_s = vbar_s = ht = None
    if summary or density is not None:
        qbar, kbar, hnorm, kbar_s, vbar_s, h = piecewise_statistics_op(q, k, v, block_size, order == 1)
        if order == 1:
            ht = (h * (tau / N)).to(q.dtype)
    if density is not None:
        keep = max(1, math.floor(density * nb + 1e-9))  # as the reference
        lut, sel = select_blocks(qbar, kbar, hnorm, tau, keep)
        counts = None
    else:
        lut, counts, sel = lut_from_mask(selected, B, H)
        keep = 0
    args = (q, k, v, lut, counts, sel if summary else None, kbar_s if summary else None, vbar_s if summary else None, ht,
            ke, ve, kv_len, tau, block_size, keep)
    if config is None and use_tma is None and kv_ranges is None:
        out = piecewise_attention_op(*args)
    else:
        out = piecewise_attention_fwd(*args, config=config, use_tma=use_tma, kv_ranges=kv_ranges)
    return out[..., :D]


def triton_piecewise_selection(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, density: float, block_size: int,
                               scale: float | None = None) -> torch.Tensor:
    """bool [B, H, blocks, blocks]: the blocks the Triton path selects (``piecewise_selection``'s rule
    on the statistics kernel's numbers)."""
    B, N, H, D = q.shape
    tau = D**-0.5 if scale is None else float(scale)
    q, k, v = _kernel_inputs(q, k, v)
    nb = -(-N // block_size)
    qbar, kbar, hnorm, *_ = piecewise_statistics_op(q, k, v, block_size, False)
    _, sel = select_blocks(qbar, kbar, hnorm, tau, max(1, math.floor(density * nb + 1e-9)))
    return sel.view(B, H, nb, nb).bool()

