"""Triton backend of pyramid (PSA) attention: the pooled K/V buffer, the level LUT, the forward
kernel, the block-importance kernel of the level assignment, and their torch custom ops.

Math (pyramid.py's docstring, SPEC 4.4). Query block I sees key block J at level l in {1, 2, 4, 8}
(0: not at all): the block's keys and values averaged over groups of l consecutive tokens, each
pooled key's logit raised by log(count of its group), so its softmax weight is count * e^{s} and
the one softmax of the row counts the tokens it stands for. In base 2, with c = scale * log2(e),
a full group's logit is c * q.kbar + log2(l): a constant per level, folded into the running-max
shift of the online softmax (m' = max(m, max(c*s) + log2 l); p = 2^(c*s - (m' - log2 l))), so a
pooled tile costs the same per element as an exact one. Only groups of a short last block (the
sequence's last key block) carry another count; they, and rows that do not exist, get their own
correction on the one tile that can hold them (below).

Pooled buffer (``pool_kv``). Level 1 is read from k and v in place. Levels 2, 4, 8 live in ONE
[B, rows, H, D] tensor per K and V, in k's dtype: level 2 of every key block, then level 4, then
level 8; key block J at level l is the contiguous run of R_l = block_size / l rows starting at
``pooled_row_offset(l) + J * R_l``. Rows of a short last block that hold no token are zeros with
log-count -inf. ``log_count`` (fp32 [rows], shared by all batches and heads) holds log(count).
Built by one Triton launch per tensor (``_pool_fwd``): a program averages one key block's rows
over a slice of their H * D columns for all three levels (each level's strided loads hit the
block's tile in L2, so DRAM reads k and v once): 0.80 ms at Wan2.1-14B 720p on an H200, where
the torch version it replaced (a strided mean per level straight into the buffer, reading k and v
three times) took 3.31 ms (probes/pyramid_overhead.py).

LUT (``pyramid_lut``). Per (batch|1, head|1, query block): the key blocks sorted by level (1, 2,
4, 8; skipped blocks last), ascending inside a level, in ``indices`` [Bl, Hl, blocks, blocks], and
the start of each level's run in ``offsets`` [Bl, Hl, blocks, 5] (offsets[..., 4]: end of the
level-8 run). Built on the GPU by pyramid_layout_triton.level_lut (prefix sums, no sort), no host sync.

Kernel (``_pyramid_fwd``). Grid (query tiles of BLOCK_M = min(block_size, 128) rows, B * H). One
online softmax; one pipelined loop per level, whose tiles always have BLOCK_N rows:
- R_l >= BLOCK_N: a key block is R_l / BLOCK_N tiles of consecutive rows.
- R_l <  BLOCK_N: one tile packs BLOCK_N / R_l key blocks of the level (row r of the tile is row
  r % R_l of the level's (t * PACK + r // R_l)-th block), so level 8 at block 128 runs 128-wide
  tiles of 8 blocks, not 16-row ones, and block sizes whose R_l < 16 need no padded tiles. Entries
  past the level's count (in its last tile only) read block 0 and are masked.
Entries of a level are ascending, so the sequence's last key block (the only short one) can only
sit in a level's last tile: the masks (entries past the count, tokens past N, pooled rows with
another count) are applied there only, behind one scalar branch. Then the optional extra keys
(``extra_kv``: text tokens every query attends exactly), masked beyond ``kv_len[b]``. Query rows
past N are not stored; a row that attends nothing (levels all 0, no extra keys) is written as zeros.
int64 row offsets; pointer loads (pooled tiles gather rows, so no single TMA box would serve them).
Measured (H200, Wan2.1-14B 720p, bf16, block 128, the 15%-compute fraction preset): 42.7 ms, of
which the level-1 loop alone 27.4 ms (74% of cuDNN's dense rate) and the level-2 and level-8 loops
~9.5 ms each (~55%: 15-tile loops whose gathered K/V get 2 pipeline buffers, not 3). One merged
loop over every pooled row (levels mixed inside a tile, a per-row log2(count) bias) ran 59.5 ms.

Importance (``block_importance_fwd``), pyramid_levels' per-call cost with importance="sampled": the sampled query rows of
``128 // samples`` query blocks per program against all sampled keys, per sampled row the max
logit inside each key block; the block maxima go to a scratch buffer while the row max is
tracked, then are read back as exp(max - row max), maxed over each query block's rows and
normalised per query block. One pass over the keys (the reference needs the row max first) at
the cost of a scratch of 4 bytes per (sampled row, key block), bounded by launching chunks of
query blocks. Its matrix work is 1/32 of dense attention's at block_size // 4 samples: 9.4 ms at
Wan 720p on an H200 (5.2 ms with 16 samples, 2.3 ms with 8).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from .block_sparse_triton import LOG2E, _online_softmax, _row_ptrs, _smem_limit, interpreting
from .pyramid_layout_triton import level_lut

POOLED_LEVELS = (2, 4, 8)  # level 1 is read from k and v in place
MAX_HEAD_DIM = 128


# ----------------------------------------------------------------------------------------------
# Pooled K/V buffer and LUT (Triton kernels, no host synchronisation)
# ----------------------------------------------------------------------------------------------


class PooledBuffer(NamedTuple):
    """Levels 2, 4, 8 of K and V in one buffer each (layout in the module docstring)."""

    k: torch.Tensor  # [B, rows, H, D] in k's dtype
    v: torch.Tensor  # [B, rows, H, D]
    log_count: torch.Tensor  # fp32 [rows]: log(tokens in the group); -inf for rows with none


class PyramidLUT(NamedTuple):
    offsets: torch.Tensor  # int32 [Bl, Hl, blocks, 5]: start of the level 1, 2, 4, 8 runs, end of the level-8 run
    indices: torch.Tensor  # int32 [Bl, Hl, blocks, blocks]: key blocks by level, ascending inside a level


def pooled_row_offset(level: int, num_blocks: int, block_size: int) -> int:
    """First row of ``level`` (2, 4 or 8) in the pooled buffer."""
    return num_blocks * sum(block_size // lv for lv in POOLED_LEVELS if lv < level)


def pooled_rows(num_blocks: int, block_size: int) -> int:
    return pooled_row_offset(16, num_blocks, block_size)


def pool_kv(k: torch.Tensor, v: torch.Tensor, block_size: int) -> PooledBuffer:
    """Levels 2, 4 and 8 of k and v ([B, N, H, D]; block_size a power of two >= 16) in one buffer
    each, with the log-counts: one Triton launch per tensor (``pool_op``), means in fp32."""
    B, N, H, D = k.shape
    nb = -(-N // block_size)
    pk, pv = pool_op(k, v, block_size)
    log_count = torch.cat([_log_counts(lv, N, nb, block_size, k.device) for lv in POOLED_LEVELS])
    return PooledBuffer(pk, pv, log_count)


@triton.jit
def _pool_level(x_rows, out_rows, first, n_tokens, stride_xn, stride_on, cols, col_ok, out_row0,
                BLOCK: tl.constexpr, LEVEL: tl.constexpr, COLS: tl.constexpr):
    """One key block's groups of LEVEL consecutive rows averaged: the group's o-th rows are one
    strided load each (the block's tile stays in L2 between levels, so DRAM reads it once)."""
    R: tl.constexpr = BLOCK // LEVEL
    g = tl.arange(0, R)
    acc = tl.zeros([R, COLS], dtype=tl.float32)
    for o in tl.static_range(LEVEL):
        row = g * LEVEL + o
        ok = ((first + row) < n_tokens)[:, None] & col_ok[None, :]
        acc += tl.load(x_rows + row.to(tl.int64)[:, None] * stride_xn + cols[None, :], mask=ok, other=0.0).to(tl.float32)
    # Tokens present in each group: LEVEL except in a short last block (0 -> the row stays 0).
    count = tl.minimum(tl.maximum(n_tokens - (first + g * LEVEL), 1), LEVEL).to(tl.float32)
    dst = out_rows + (out_row0 + g).to(tl.int64)[:, None] * stride_on + cols[None, :]
    tl.store(dst, (acc / count[:, None]).to(out_rows.dtype.element_ty), mask=col_ok[None, :])


@triton.jit
def _pool_fwd(X, OUT, stride_xb, stride_xn, stride_ob, stride_on, n_tokens, num_blocks, width,
              BLOCK: tl.constexpr, COLS: tl.constexpr):
    """Grid (key blocks, column chunks of the [tokens, H * D] rows, B). Rows of x are contiguous
    H * D vectors, so every load is a run of whole rows' slices."""
    blk = tl.program_id(0)
    cols = tl.program_id(1) * COLS + tl.arange(0, COLS)
    col_ok = cols < width
    b = tl.program_id(2).to(tl.int64)
    first = blk * BLOCK
    x_rows = X + b * stride_xb + first.to(tl.int64) * stride_xn
    out_rows = OUT + b * stride_ob
    # Buffer rows (pooled_row_offset): level 2 of every block, then level 4, then level 8.
    _pool_level(x_rows, out_rows, first, n_tokens, stride_xn, stride_on, cols, col_ok, blk * (BLOCK // 2), BLOCK, 2, COLS)
    _pool_level(x_rows, out_rows, first, n_tokens, stride_xn, stride_on, cols, col_ok,
                num_blocks * (BLOCK // 2) + blk * (BLOCK // 4), BLOCK, 4, COLS)
    _pool_level(x_rows, out_rows, first, n_tokens, stride_xn, stride_on, cols, col_ok,
                num_blocks * (BLOCK // 2 + BLOCK // 4) + blk * (BLOCK // 8), BLOCK, 8, COLS)


POOL_COLS = 128  # columns of the [tokens, H * D] rows per program
POOL_WARPS = 8  # 0.80 ms for k and v at Wan2.1-14B 720p on an H200 (4 warps 0.97, torch 3.31)


def pool_fwd(x: torch.Tensor, block_size: int, *, cols: int = POOL_COLS, num_warps: int = POOL_WARPS) -> torch.Tensor:
    """[B, rows, H, D] buffer of x's levels 2, 4, 8 (x: [B, N, H, D], block_size a power of two >= 16)."""
    B, N, H, D = x.shape
    nb = -(-N // block_size)
    if x.stride(-1) != 1 or x.stride(-2) != D:
        x = x.contiguous()
    out = x.new_empty(B, pooled_rows(nb, block_size), H, D)
    if B * N * H * D == 0:
        return out.zero_()
    width = H * D
    _pool_fwd[(nb, triton.cdiv(width, cols), B)](
        x, out, x.stride(0), x.stride(1), out.stride(0), out.stride(1), N, nb, width, BLOCK=block_size, COLS=cols,
        num_warps=1 if interpreting() else num_warps,
    )
    return out


@torch.library.custom_op("ditaccel::pyramid_pool", mutates_args=())
def pool_op(k: torch.Tensor, v: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Levels 2, 4, 8 of k and v (``pool_fwd``), each [B, rows, H, D] in its input's dtype."""
    return pool_fwd(k, block_size), pool_fwd(v, block_size)


@pool_op.register_fake
def _(k, v, block_size):
    B, N, H, D = k.shape
    rows = pooled_rows(-(-N // block_size), block_size)
    return k.new_empty(B, rows, H, D), v.new_empty(B, rows, *v.shape[2:])


def _log_counts(level: int, N: int, nb: int, bs: int, device) -> torch.Tensor:
    r = bs // level
    row = torch.arange(nb * r, device=device)
    first_token = (row // r) * bs + (row % r) * level
    return (N - first_token).clamp(0, level).to(torch.float32).log()  # log 0 = -inf: no token


def pyramid_lut(levels: torch.Tensor) -> PyramidLUT:
    """LUT of an int level map [Bl, Hl, blocks, blocks] (values in {0, 1, 2, 4, 8}; others are not
    checked here: 3 counts as 2, and so on), built by one Triton launch (pyramid_layout_triton.py)."""
    offsets, indices = level_lut(levels)
    return PyramidLUT(offsets, indices)


# ----------------------------------------------------------------------------------------------
# Attention kernel
# ----------------------------------------------------------------------------------------------


@triton.jit
def _pooled_online_softmax(qk, v, m_i, l_i, acc, qk_scale, LOG2_LEVEL: tl.constexpr):
    """_online_softmax for keys whose base-2 logit is c*s + log2(level): the constant bias moves
    into the row-max shift, so each element still costs one FMA before its exp2."""
    m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale + LOG2_LEVEL)
    p = tl.math.exp2(qk * qk_scale - (m_new - LOG2_LEVEL)[:, None])
    alpha = tl.math.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    acc = tl.dot(p.to(v.dtype), v, acc)
    return m_new, l_i, acc


@triton.jit
def _level_pass(
    acc, m_i, l_i, q, K, V, b, h, stride_b, stride_n, stride_h,
    idx_row, first, count, row0, seq_len, LOG_COUNT, qk_scale,
    LEVEL: tl.constexpr, LOG2_LEVEL: tl.constexpr, LAYOUT_BLOCK: tl.constexpr, BLOCK_N: tl.constexpr,
    HEAD_DIM: tl.constexpr, RAGGED: tl.constexpr, NUM_STAGES: tl.constexpr,
):
    """Fold the ``count`` key blocks of one level (LUT entries first .. first + count - 1) into the
    softmax. K, V: k and v (level 1) or the pooled buffers, whose level starts at row ``row0``."""
    R: tl.constexpr = LAYOUT_BLOCK // LEVEL  # rows per key block at this level
    PACK: tl.constexpr = (BLOCK_N + R - 1) // R  # key blocks per tile (R < BLOCK_N)
    SUB: tl.constexpr = (R + BLOCK_N - 1) // BLOCK_N  # tiles per key block (R >= BLOCK_N)
    offs = tl.arange(0, BLOCK_N)
    n_tiles = tl.cdiv(count, PACK) * SUB
    for t in tl.range(0, n_tiles, num_stages=NUM_STAGES):
        if PACK > 1:
            e = t * PACK + offs // R
            blk = tl.load(idx_row + first + e, mask=e < count, other=0)
            rows = row0 + blk.to(tl.int64) * R + offs % R
        else:
            blk = tl.load(idx_row + first + t // SUB)
            rows = row0 + blk.to(tl.int64) * R + ((t % SUB) * BLOCK_N + offs)
        k_ptrs = _row_ptrs(K, b, h, rows, stride_b, stride_n, stride_h, HEAD_DIM)
        v_ptrs = _row_ptrs(V, b, h, rows, stride_b, stride_n, stride_h, HEAD_DIM)
        if LEVEL == 1 and RAGGED:  # the short last block's tile runs past the sequence
            k = tl.load(k_ptrs, mask=rows[:, None] < seq_len, other=0.0)
            v = tl.load(v_ptrs, mask=rows[:, None] < seq_len, other=0.0)
        else:  # pooled buffers hold every row of every block
            k = tl.load(k_ptrs)
            v = tl.load(v_ptrs)
        qk = tl.dot(q, tl.trans(k))
        # Only a level's last tile can hold entries past its count or the short last block. Level 1
        # keeps the test even without a short block: with the branch, Triton 3.6's pipeliner keeps
        # the block index in registers and gives K and V NUM_STAGES buffers instead of 2 (as in
        # block_sparse_triton; checked on the sm_90 TTGIR).
        if PACK > 1 or RAGGED or LEVEL == 1:
            if t >= n_tiles - SUB:
                if LEVEL == 1:
                    qk = tl.where(rows[None, :] < seq_len, qk, float("-inf"))
                else:
                    keep = offs >= 0
                    if PACK > 1:
                        keep = e < count
                    if RAGGED:
                        # Groups of the short block carry log2(their count), not log2(level); rows
                        # without a token have -inf. In units of qk (qk_scale > 0).
                        lc = tl.load(LOG_COUNT + rows)
                        keep = keep & (lc > float("-inf"))
                        qk = qk + tl.where(keep, (lc * 1.4426950408889634 - LOG2_LEVEL) / qk_scale, 0.0)[None, :]
                    qk = tl.where(keep[None, :], qk, float("-inf"))
        if LEVEL == 1:
            m_i, l_i, acc = _online_softmax(qk, v, m_i, l_i, acc, qk_scale)
        else:
            m_i, l_i, acc = _pooled_online_softmax(qk, v, m_i, l_i, acc, qk_scale, LOG2_LEVEL)
    return acc, m_i, l_i


@triton.jit
def _pyramid_fwd(
    Q, K, V, PK, PV, LOG_COUNT, KX, VX, O,
    lut_offsets, lut_indices,  # int32 [Bl*Hl*blocks, 5], [Bl*Hl*blocks, blocks]
    kv_len,  # int32 [B] (read only with HAS_KV_LEN): extra keys from kv_len[b] on are ignored
    stride_qb, stride_qn, stride_qh,
    stride_kb, stride_kn, stride_kh,  # k and v (the launcher makes them equal)
    stride_pb, stride_pn, stride_ph,  # pooled k and v
    stride_xb, stride_xn, stride_xh,  # extra k and v
    stride_ob, stride_on, stride_oh,
    qk_scale,  # softmax scale * log2(e), > 0
    seq_len, num_heads, num_blocks, group_b, group_h, extra_len,
    row4, row8,  # first pooled rows of levels 4 and 8
    SEQ_BUCKET,  # autotune key only
    HEAD_DIM: tl.constexpr,
    LAYOUT_BLOCK: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    NUM_STAGES: tl.constexpr,
    RAGGED: tl.constexpr,  # seq_len is not a multiple of LAYOUT_BLOCK
    Q_CLIP: tl.constexpr,  # seq_len is not a multiple of BLOCK_M
    HAS_EXTRA: tl.constexpr,
    HAS_KV_LEN: tl.constexpr,
):
    # Query tiles are the fastest grid axis: programs of one head run together and share its
    # K/V (and pooled K/V) in L2.
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // num_heads
    h = pid_bh % num_heads
    start_m = pid_m * BLOCK_M
    lut_row = (b * group_b + h * group_h).to(tl.int64) * num_blocks + start_m // LAYOUT_BLOCK
    idx_row = lut_indices + lut_row * num_blocks
    starts = lut_offsets + lut_row * 5
    s1 = tl.load(starts + 1)
    s2 = tl.load(starts + 2)
    s4 = tl.load(starts + 3)
    s8 = tl.load(starts + 4)

    offs_m = start_m + tl.arange(0, BLOCK_M)
    q_ptrs = _row_ptrs(Q, b, h, offs_m.to(tl.int64), stride_qb, stride_qn, stride_qh, HEAD_DIM)
    if Q_CLIP:
        q = tl.load(q_ptrs, mask=offs_m[:, None] < seq_len, other=0.0)
    else:
        q = tl.load(q_ptrs)

    # m starts finite so that fully masked tiles never produce (-inf) - (-inf).
    m_i = tl.full([BLOCK_M], -1.0e30, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    # Exact blocks first: they usually hold the row maximum, so later tiles rescale less.
    acc, m_i, l_i = _level_pass(acc, m_i, l_i, q, K, V, b, h, stride_kb, stride_kn, stride_kh, idx_row, 0, s1, 0,
                                seq_len, LOG_COUNT, qk_scale, 1, 0.0, LAYOUT_BLOCK, BLOCK_N, HEAD_DIM, RAGGED, NUM_STAGES)
    acc, m_i, l_i = _level_pass(acc, m_i, l_i, q, PK, PV, b, h, stride_pb, stride_pn, stride_ph, idx_row, s1, s2 - s1, 0,
                                seq_len, LOG_COUNT, qk_scale, 2, 1.0, LAYOUT_BLOCK, BLOCK_N, HEAD_DIM, RAGGED, NUM_STAGES)
    acc, m_i, l_i = _level_pass(acc, m_i, l_i, q, PK, PV, b, h, stride_pb, stride_pn, stride_ph, idx_row, s2, s4 - s2, row4,
                                seq_len, LOG_COUNT, qk_scale, 4, 2.0, LAYOUT_BLOCK, BLOCK_N, HEAD_DIM, RAGGED, NUM_STAGES)
    acc, m_i, l_i = _level_pass(acc, m_i, l_i, q, PK, PV, b, h, stride_pb, stride_pn, stride_ph, idx_row, s4, s8 - s4, row8,
                                seq_len, LOG_COUNT, qk_scale, 8, 3.0, LAYOUT_BLOCK, BLOCK_N, HEAD_DIM, RAGGED, NUM_STAGES)

    if HAS_EXTRA:
        # Extra keys (text), exact for every query row; only the tile crossing the end is masked.
        x_end = extra_len
        if HAS_KV_LEN:
            x_end = tl.maximum(tl.minimum(tl.load(kv_len + b), extra_len), 0)
        offs_n = tl.arange(0, BLOCK_N)
        for t in tl.range(0, tl.cdiv(x_end, BLOCK_N), num_stages=NUM_STAGES):
            rows = (t * BLOCK_N + offs_n).to(tl.int64)
            inside = rows[:, None] < extra_len
            k = tl.load(_row_ptrs(KX, b, h, rows, stride_xb, stride_xn, stride_xh, HEAD_DIM), mask=inside, other=0.0)
            v = tl.load(_row_ptrs(VX, b, h, rows, stride_xb, stride_xn, stride_xh, HEAD_DIM), mask=inside, other=0.0)
            qk = tl.dot(q, tl.trans(k))
            if (t + 1) * BLOCK_N > x_end:
                qk = tl.where(rows[None, :] < x_end, qk, float("-inf"))
            m_i, l_i, acc = _online_softmax(qk, v, m_i, l_i, acc, qk_scale)

    l_i = tl.where(l_i == 0.0, 1.0, l_i)  # rows that attend nothing: output 0
    out = (acc / l_i[:, None]).to(O.dtype.element_ty)
    o_ptrs = _row_ptrs(O, b, h, offs_m.to(tl.int64), stride_ob, stride_on, stride_oh, HEAD_DIM)
    if Q_CLIP:
        tl.store(o_ptrs, out, mask=offs_m[:, None] < seq_len)
    else:
        tl.store(o_ptrs, out)


def _config(block_n: int, warps: int, stages: int) -> triton.Config:
    return triton.Config({"BLOCK_N": block_n, "NUM_STAGES": stages}, num_warps=warps, num_stages=stages)


# Hopper-oriented candidates (BLOCK_N, warps, stages). BLOCK_M is min(block_size, 128), not tuned:
# a query tile never spans two query blocks' LUT rows.
AUTOTUNE_CONFIGS = [
    _config(128, 8, 3),
    _config(128, 8, 2),
    _config(64, 8, 3),
    _config(64, 4, 3),
    _config(64, 4, 4),
    _config(128, 4, 3),
]


def _smem_bytes(block_m: int, block_n: int, stages: int, head_dim: int, elem: int) -> int:
    """The query tile and NUM_STAGES buffers each of K and V (block_sparse_triton's estimate)."""
    return (block_m * head_dim + stages * 2 * block_n * head_dim) * elem


def _prune_configs(configs, named_args, **kwargs):
    args = {**named_args, **kwargs}  # constexprs arrive as keyword arguments
    lb, d, bm = args["LAYOUT_BLOCK"], args["HEAD_DIM"], args["BLOCK_M"]
    elem = args["Q"].element_size()
    limit = _smem_limit()
    fits = [c for c in configs if c.kwargs["BLOCK_N"] <= lb]
    keep = [
        c for c in fits
        if _smem_bytes(bm, c.kwargs["BLOCK_N"], c.kwargs["NUM_STAGES"], d, elem) <= limit
        # 8 warps only pay off on 128-row query tiles with 64+ keys (block_sparse_triton's rule)
        and not (c.num_warps == 8 and bm * c.kwargs["BLOCK_N"] < 128 * 64)
    ]
    return keep or [_config(min(lb, 64), 4, 2)]


_pyramid_fwd_tuned = triton.autotune(
    configs=AUTOTUNE_CONFIGS,
    key=["HEAD_DIM", "LAYOUT_BLOCK", "SEQ_BUCKET", "RAGGED", "HAS_EXTRA", "HAS_KV_LEN"],
    prune_configs_by={"early_config_prune": _prune_configs},
)(_pyramid_fwd)


# Autotune on CUDA (off: default_config, e.g. for tests that would compile every candidate).
AUTOTUNE = True


def default_config(head_dim: int, block_size: int) -> dict:
    """The config used without autotuning (interpreter, or an explicit request)."""
    bn = min(128, block_size)
    if interpreting():
        return {"BLOCK_N": bn, "num_warps": 4, "num_stages": 1}
    return {"BLOCK_N": bn, "num_warps": 8 if head_dim == 128 else 4, "num_stages": 3}


def pyramid_attention_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pooled_k: torch.Tensor,
    pooled_v: torch.Tensor,
    log_count: torch.Tensor,
    lut_offsets: torch.Tensor,
    lut_indices: torch.Tensor,
    k_extra: torch.Tensor | None,
    v_extra: torch.Tensor | None,
    kv_len: torch.Tensor | None,
    scale: float,
    block_size: int,
    *,
    config: dict | None = None,
) -> torch.Tensor:
    """Raw launcher. q, k, v: [B, N, H, D] of one dtype, D a power of two in 16..128; pooled
    buffers and LUT as ``pool_kv`` and ``pyramid_lut`` make them (LUT [Bl, Hl, blocks, .] with Bl
    in (1, B), Hl in (1, H)); k_extra, v_extra: [B, M, H, D] or None; kv_len: int32 [B] or None.
    Returns a new [B, N, H, D] tensor. config: {"BLOCK_N", "num_warps", "num_stages"} bypasses the
    autotuner."""
    B, N, H, D = q.shape
    out = torch.empty((B, N, H, D), dtype=q.dtype, device=q.device)
    if B * H * N == 0:
        return out
    Bl, Hl, nb = lut_indices.shape[:3]
    if not (D & (D - 1) == 0 and 16 <= D <= MAX_HEAD_DIM):
        raise ValueError(f"head_dim must be a power of two in [16, {MAX_HEAD_DIM}] for the kernel, got {D}")
    if block_size < 16 or block_size & (block_size - 1) or nb != -(-N // block_size):  # tl.arange, tl.dot
        raise ValueError(f"block_size {block_size} must be a power of two >= 16 with {N} tokens in {nb} blocks")
    if q.stride(-1) != 1:
        q = q.contiguous()
    if k.stride() != v.stride() or k.stride(-1) != 1:
        k, v = k.contiguous(), v.contiguous()
    has_extra = k_extra is not None and k_extra.shape[1] > 0
    if has_extra:
        if k_extra.stride() != v_extra.stride() or k_extra.stride(-1) != 1:
            k_extra, v_extra = k_extra.contiguous(), v_extra.contiguous()
        kx, vx, extra_len, x_strides = k_extra, v_extra, k_extra.shape[1], k_extra.stride()[:3]
    else:
        kx, vx, extra_len, x_strides = k, v, 0, (0, 0, 0)
    has_kv_len = has_extra and kv_len is not None
    kv_len_arg = kv_len.to(device=q.device, dtype=torch.int32) if has_kv_len else lut_offsets
    bm = min(block_size, 128)
    args = (
        q, k, v, pooled_k, pooled_v, log_count, kx, vx, out,
        lut_offsets.contiguous(), lut_indices.contiguous(), kv_len_arg,
        *q.stride()[:3], *k.stride()[:3], *pooled_k.stride()[:3], *x_strides, *out.stride()[:3],
        float(scale) * LOG2E,
        N, H, nb, Hl if Bl > 1 else 0, 1 if Hl > 1 else 0, extra_len,
        pooled_row_offset(4, nb, block_size), pooled_row_offset(8, nb, block_size),
        1 << max(N - 1, 1).bit_length(),
    )
    flags = dict(HEAD_DIM=D, LAYOUT_BLOCK=block_size, BLOCK_M=bm, RAGGED=N % block_size != 0, Q_CLIP=N % bm != 0,
                 HAS_EXTRA=has_extra, HAS_KV_LEN=has_kv_len)
    grid = (triton.cdiv(N, bm), B * H)
    if config is None and AUTOTUNE and not interpreting():
        _pyramid_fwd_tuned[grid](*args, **flags)
        return out
    cfg = dict(default_config(D, block_size), **(config or {}))
    if cfg["BLOCK_N"] > block_size or cfg["BLOCK_N"] < 16:
        raise ValueError(f"BLOCK_N={cfg['BLOCK_N']} must be in [16, block_size={block_size}]")
    _pyramid_fwd[grid](*args, **flags, BLOCK_N=cfg["BLOCK_N"], NUM_STAGES=cfg["num_stages"],
                       num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    return out


@torch.library.custom_op("ditaccel::pyramid_attention", mutates_args=())
def pyramid_attention_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pooled_k: torch.Tensor,
    pooled_v: torch.Tensor,
    log_count: torch.Tensor,
    lut_offsets: torch.Tensor,
    lut_indices: torch.Tensor,
    k_extra: torch.Tensor | None,
    v_extra: torch.Tensor | None,
    kv_len: torch.Tensor | None,
    scale: float,
    block_size: int,
) -> torch.Tensor:
    """The pyramid kernel on prepared inputs (see ``pyramid_attention_fwd``); a new [B, N, H, D]."""
    return pyramid_attention_fwd(q, k, v, pooled_k, pooled_v, log_count, lut_offsets, lut_indices, k_extra, v_extra,
                                 kv_len, scale, block_size)


@pyramid_attention_op.register_fake
def _(q, k, v, pooled_k, pooled_v, log_count, lut_offsets, lut_indices, k_extra, v_extra, kv_len, scale, block_size):
    return q.new_empty(q.shape)


def _pad_head_dim(*xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Tensors with head_dim zero-padded to the next power of two >= 16 (q.k and the kept output
    columns are unchanged; callers keep the real head dim's scale)."""
    D = xs[0].shape[-1]
    if D > MAX_HEAD_DIM:
        raise ValueError(f"head_dim must be <= {MAX_HEAD_DIM} for the Triton kernel, got {D}")
    target = max(16, 1 << (D - 1).bit_length())
    if target == D:
        return xs
    return tuple(torch.nn.functional.pad(x, (0, target - D)) for x in xs)


def triton_pyramid_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    levels: torch.Tensor,
    block_size: int,
    scale: float | None,
    extra_kv: tuple | None,
) -> torch.Tensor:
    """Triton backend of ``pyramid_attention`` (arguments checked by the caller): pooled buffer
    and LUT built by their Triton kernels on q's device, then the kernel as a custom op. No host
    synchronisation when ``levels`` (and ``kv_len``) are on q's device."""
    D = q.shape[-1]
    scale = D**-0.5 if scale is None else float(scale)
    if not scale > 0:
        raise ValueError(f"scale must be > 0 for the Triton backend, got {scale}")
    dtype = q.dtype
    k, v = k.to(dtype), v.to(dtype)
    kx = vx = kv_len = None
    if extra_kv is not None:
        kx, vx, kv_len = extra_kv
        kx, vx = kx.to(dtype), vx.to(dtype)
        if kv_len is not None:
            kv_len = kv_len.to(device=q.device, dtype=torch.int32)
        q, k, v, kx, vx = _pad_head_dim(q, k, v, kx, vx)
    else:
        q, k, v = _pad_head_dim(q, k, v)
    pooled = pool_kv(k, v, block_size)
    lut = pyramid_lut(levels.to(q.device))
    out = pyramid_attention_op(q, k, v, pooled.k, pooled.v, pooled.log_count, lut.offsets, lut.indices, kx, vx, kv_len,
                               scale, block_size)
    return out[..., :D]


# ----------------------------------------------------------------------------------------------
# Block importance (level assignment)
# ----------------------------------------------------------------------------------------------


@triton.jit
def _importance_fwd(
    Q, K, sample_rows,  # sample_rows: int32 [blocks, SAMPLES] token row of each sampled position
    scratch,  # fp32 [programs of this launch, ROWS, blocks]: block maxima
    out,  # fp32 [B * H, blocks, blocks]
    stride_qb, stride_qn, stride_qh, stride_kb, stride_kn, stride_kh,
    qk_scale, num_heads, num_blocks, block0, programs_m,
    SAMPLES: tl.constexpr, SP: tl.constexpr, QB: tl.constexpr, KB: tl.constexpr, JC: tl.constexpr,
    HEAD_DIM: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // num_heads
    h = pid_bh % num_heads
    ROWS: tl.constexpr = QB * SP
    COLS: tl.constexpr = KB * SP
    r = tl.arange(0, ROWS)
    qblk = block0 + pid_m * QB + r // SP
    row_ok = (r % SP < SAMPLES) & (qblk < num_blocks)
    tok = tl.load(sample_rows + qblk * SAMPLES + r % SP, mask=row_ok, other=0)
    q = tl.load(_row_ptrs(Q, b, h, tok.to(tl.int64), stride_qb, stride_qn, stride_qh, HEAD_DIM))
    scr = scratch + (pid_bh.to(tl.int64) * programs_m + pid_m) * ROWS * num_blocks
    scr_rows = scr + r[:, None].to(tl.int64) * num_blocks

    # Pass 1: per sampled row, the max (base-2 scaled) logit inside each key block, and over all.
    c = tl.arange(0, COLS)
    m_r = tl.full([ROWS], -1.0e30, dtype=tl.float32)
    for jt in range(0, tl.cdiv(num_blocks, KB)):
        kblk = jt * KB + c // SP
        col_ok = (c % SP < SAMPLES) & (kblk < num_blocks)
        ktok = tl.load(sample_rows + kblk * SAMPLES + c % SP, mask=col_ok, other=0)
        k = tl.load(_row_ptrs(K, b, h, ktok.to(tl.int64), stride_kb, stride_kn, stride_kh, HEAD_DIM))
        s = tl.dot(q, tl.trans(k))
        # Padded sample columns (always, if any) and key blocks past the end (last tile) are masked.
        if SAMPLES < SP:
            s = tl.where(col_ok[None, :], s, float("-inf"))
        elif (jt + 1) * KB > num_blocks:
            s = tl.where(col_ok[None, :], s, float("-inf"))
        # The scale (> 0) commutes with the max: applied to the [ROWS, KB] maxima only.
        bmax = tl.max(tl.reshape(s, (ROWS, KB, SP)), axis=2) * qk_scale
        m_r = tl.maximum(m_r, tl.max(bmax, 1))
        j = jt * KB + tl.arange(0, KB)
        tl.store(scr_rows + j[None, :], bmax, mask=j[None, :] < num_blocks)
    tl.debug_barrier()  # pass 2 reads maxima other threads of the program wrote

    # Pass 2: exp(max - row max), maxed over each query block's sampled rows; the row sums.
    total = tl.zeros([QB], dtype=tl.float32)
    qb = block0 + pid_m * QB + tl.arange(0, QB)
    out_rows = out + (pid_bh.to(tl.int64) * num_blocks + qb[:, None]) * num_blocks
    for jc in range(0, tl.cdiv(num_blocks, JC)):
        j = jc * JC + tl.arange(0, JC)
        bmax = tl.load(scr_rows + j[None, :], mask=j[None, :] < num_blocks, other=float("-inf"))
        rel = tl.where(row_ok[:, None], tl.math.exp2(bmax - m_r[:, None]), 0.0)
        rel = tl.max(tl.reshape(rel, (QB, SP, JC)), axis=1)  # [QB, JC]
        total += tl.sum(rel, 1)
        tl.store(out_rows + j[None, :], rel, mask=(qb[:, None] < num_blocks) & (j[None, :] < num_blocks))
    # Pass 3: normalise each query block's row to sum 1.
    tl.debug_barrier()
    total = tl.where(total > 0, total, 1.0)
    for jc in range(0, tl.cdiv(num_blocks, JC)):
        j = jc * JC + tl.arange(0, JC)
        ok = (qb[:, None] < num_blocks) & (j[None, :] < num_blocks)
        rel = tl.load(out_rows + j[None, :], mask=ok, other=0.0)
        tl.store(out_rows + j[None, :], rel / total[:, None], mask=ok)


IMPORTANCE_ROWS = 128  # sampled query rows (and key columns) per tile
SCRATCH_BYTES = 1 << 29  # block-maxima scratch per launch; more query blocks take more launches


def block_importance_fwd(q: torch.Tensor, k: torch.Tensor, sample_rows: torch.Tensor, scale: float, *,
                         rows: int = IMPORTANCE_ROWS, cols: int = IMPORTANCE_ROWS, config: dict | None = None) -> torch.Tensor:
    """fp32 [B, H, blocks, blocks] block importance (pyramid._block_importance's definition) of
    q, k [B, N, H, D] (D a power of two in 16..128) at the token rows ``sample_rows`` (int
    [blocks, samples], the same in every block up to a short last block's squeeze)."""
    B, N, H, D = q.shape
    nb, samples = sample_rows.shape
    out = torch.empty(B, H, nb, nb, dtype=torch.float32, device=q.device)
    if B * H * nb == 0:
        return out
    if q.stride() != k.stride() or q.stride(-1) != 1:
        q, k = q.contiguous(), k.contiguous()
    sp = max(1, 1 << (samples - 1).bit_length())
    qb = max(1, rows // sp)
    kb = max(1, cols // sp)
    rows = qb * sp
    programs = triton.cdiv(nb, qb)
    per_launch = max(1, min(programs, SCRATCH_BYTES // (4 * B * H * rows * nb)))
    scratch = torch.empty(B * H * per_launch * rows * nb, dtype=torch.float32, device=q.device)
    sample_rows = sample_rows.to(device=q.device, dtype=torch.int32).contiguous()
    jc = 64
    # 4 warps: 9.4 ms vs 15.0 ms with 8 (Wan 720p, H200; other tile shapes 10.5-12.5 ms).
    cfg = dict(num_warps=4, num_stages=1) if interpreting() else dict(num_warps=4, num_stages=3)
    cfg.update(config or {})
    for first in range(0, programs, per_launch):
        count = min(per_launch, programs - first)
        _importance_fwd[(count, B * H)](
            q, k, sample_rows, scratch, out, *q.stride()[:3], *k.stride()[:3], float(scale) * LOG2E, H, nb,
            first * qb, per_launch, SAMPLES=samples, SP=sp, QB=qb, KB=kb, JC=jc, HEAD_DIM=D, **cfg,
        )
    return out


@torch.library.custom_op("ditaccel::pyramid_importance", mutates_args=())
def block_importance_op(q: torch.Tensor, k: torch.Tensor, sample_rows: torch.Tensor, scale: float) -> torch.Tensor:
    """Block importance of sampled tokens (see ``block_importance_fwd``): fp32 [B, H, blocks, blocks]."""
    return block_importance_fwd(q, k, sample_rows, scale)


@block_importance_op.register_fake
def _(q, k, sample_rows, scale):
    B, _, H, _ = q.shape
    nb = sample_rows.shape[0]
    return q.new_empty(B, H, nb, nb, dtype=torch.float32)


def triton_block_importance(q: torch.Tensor, k: torch.Tensor, sample_rows: torch.Tensor, scale: float) -> torch.Tensor:
    """Block importance through the custom op; head dims padded to a power of two (scale kept)."""
    q, k = _pad_head_dim(q, k.to(q.dtype))
    return block_importance_op(q, k, sample_rows, float(scale))


__all__ = [
    "PooledBuffer",
    "PyramidLUT",
    "block_importance_fwd",
    "pool_kv",
    "pooled_row_offset",
    "pyramid_attention_fwd",
    "pyramid_lut",
    "triton_block_importance",
    "triton_pyramid_attention",
]
