"""Triton forward kernel for block-sparse attention driven by a BlockLayout's LUT.

One program computes one tile of BLOCK_M query rows for one (batch, head): it reads its LUT row
(count + left-packed key-block indices) and runs flash attention over exactly those key blocks.

Math (online softmax in base 2). With c = scale * log2(e), softmax(scale * s) equals
2^(c*s - m) / sum 2^(c*s - m) for any shift m; the kernel keeps per row the running maximum m of
c*s, the running denominator l and the unnormalised output acc, and when a new tile raises the
maximum from m to m' it rescales l and acc by 2^(m - m'). Folding c into the exponent's FMA
(c*s - m) costs nothing over a plain subtraction and keeps q unrounded.

Masking. Whole blocks (the common case after token tiling) run with no mask at all. A block the
layout flags partial gets the exact box test over the 4 canonical coordinates, and a block that
crosses the per-batch key length (padded text) gets `col < kv_len`; both are decided by one
scalar branch per block, so whole blocks never pay for them. The box test lo <= k <= hi is one
unsigned comparison per coordinate, (k - lo) <= (hi - lo) as uint32: below lo the difference
wraps to above 2^31, past any width (coordinates and widths stay under 2^31). Each program reads
its rows' lo and width once, before the key loop. Empty boxes (hi < lo: padding queries) would
get a negative width, which as uint32 admits everything, so they become lo = -2, width 0: no
coordinate is -2 (real ones are >= 0, padding -1), so they still admit nothing. Rows that see no key at all
(padding queries) finish with l == 0 and are written as zeros, like the reference.

Ragged sequences. q, k, v and the output may hold N tokens with seq_len - block_size < N <=
seq_len (a raster-order layout whose padding tokens the caller never materialised): tokens >= N
are absent. Keys >= N are masked like keys beyond kv_len (only blocks crossing N pay), query
rows >= N are not stored. Loads past N need no mask with descriptors (rows of the next batch are
finite and masked out; past the tensor TMA zero-fills) but do with pointers, and the output is
then stored with masked pointer stores: a descriptor store of the last tile would spill into the
next batch's rows.

K/V go through tensor descriptors (TMA on Hopper) over the [B*N, H*D] view of the canonical
[B, N, H, D] tensors, so the kernel reads the model's layout directly with no transpose copy;
other GPUs (and non-viewable strides) use plain pointer loads.
"""

from __future__ import annotations

import functools
import math
import os

import torch
import triton
import triton.language as tl

try:  # host-side tensor descriptors: Triton >= 3.4
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # pragma: no cover - older Triton
    TensorDescriptor = None

LOG2E = 1.4426950408889634
SUPPORTED_HEAD_DIMS = (64, 128)


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@triton.jit
def _load_tile(
    src, bh_offset, stride_n, row0, desc_row0, col0, n_rows,
    BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr, USE_TMA: tl.constexpr, RAGGED: tl.constexpr,
):
    """[BLOCK, HEAD_DIM] tile of tokens row0.. of one (batch, head): through the descriptor, or
    from the base pointer ``src`` plus the (batch, head) element offset (zeros from row n_rows on
    when RAGGED)."""
    if USE_TMA:
        return src.load([desc_row0 + row0, col0])
    else:
        rows = (row0 + tl.arange(0, BLOCK)).to(tl.int64)
        ptrs = src + bh_offset + rows[:, None] * stride_n + tl.arange(0, HEAD_DIM)[None, :]
        if RAGGED:
            return tl.load(ptrs, mask=rows[:, None] < n_rows, other=0.0)
        else:
            return tl.load(ptrs)


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
    BLOCK_N: tl.constexpr,
):
    """qk with -inf where the key is beyond kv_end or (partial blocks only) outside the query's box."""
    offs_n = start_n + tl.arange(0, BLOCK_N)
    kcol = offs_n.to(tl.int64) * 4
    inside = _in_range(k_coord, kcol, 0, lo0, w0) & _in_range(k_coord, kcol, 1, lo1, w1)
    inside = inside & _in_range(k_coord, kcol, 2, lo2, w2) & _in_range(k_coord, kcol, 3, lo3, w3)
    keep = (offs_n[None, :] < kv_end) & (inside | (is_partial == 0))
    return tl.where(keep, qk, float("-inf"))


@triton.jit
def _block_sparse_fwd(
    Q, K, V, O,  # tensor descriptors (USE_TMA; O a base pointer when RAGGED) or base pointers of [B, N, H, D] tensors
    stride_qb, stride_qn, stride_qh,
    stride_kb, stride_kn, stride_kh,
    stride_vb, stride_vn, stride_vh,
    stride_ob, stride_on, stride_oh,
    kv_counts, kv_indices, kv_partial,  # LUT: [G, Mq], [G, Mq, W], [G, Mq, W]
    q_lo, q_hi, k_coord,  # int32 [N, 4]
    kv_len,  # int32 [B] (only read with HAS_KV_LEN)
    qk_scale,  # softmax scale * log2(e)
    seq_len, num_heads, num_groups, num_q_blocks, lut_width,  # seq_len: N, the tokens q/k/v/O hold
    SEQ_BUCKET,  # autotune key only
    HEAD_DIM: tl.constexpr,
    LAYOUT_BLOCK: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    NUM_STAGES: tl.constexpr,
    HAS_PARTIAL: tl.constexpr,
    HAS_KV_LEN: tl.constexpr,
    USE_TMA: tl.constexpr,
    RAGGED: tl.constexpr,  # N is not a multiple of LAYOUT_BLOCK (the layout covers more tokens)
    WARP_SPECIALIZE: tl.constexpr = False,
):
    # Query tiles are the fastest grid axis: programs of one head run together and share its
    # K/V in L2.
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // num_heads
    h = pid_bh % num_heads
    lut_row = (pid_bh % num_groups).to(tl.int64) * num_q_blocks + (pid_m * BLOCK_M) // LAYOUT_BLOCK
    count = tl.load(kv_counts + lut_row)
    idx_row = kv_indices + lut_row * lut_width
    flag_row = kv_partial + lut_row * lut_width

    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    b64 = b.to(tl.int64)
    h64 = h.to(tl.int64)
    q_off = b64 * stride_qb + h64 * stride_qh
    k_off = b64 * stride_kb + h64 * stride_kh
    v_off = b64 * stride_vb + h64 * stride_vh
    desc_row0 = b * seq_len  # row of token 0 of this batch in the [B*N, H*D] descriptor view
    col0 = h * HEAD_DIM
    q = _load_tile(Q, q_off, stride_qn, start_m, desc_row0, col0, seq_len, BLOCK_M, HEAD_DIM, USE_TMA, RAGGED)

    kv_end = seq_len
    if HAS_KV_LEN:
        kv_end = tl.minimum(tl.load(kv_len + b), seq_len)
    # Key tiles crossing kv_end need the column test (text padding, or the ragged end).
    CHECK_KV_END: tl.constexpr = HAS_KV_LEN or RAGGED
    if HAS_PARTIAL:
        lo0, w0 = _box_lo_width(q_lo, q_hi, offs_m, 0)
        lo1, w1 = _box_lo_width(q_lo, q_hi, offs_m, 1)
        lo2, w2 = _box_lo_width(q_lo, q_hi, offs_m, 2)
        lo3, w3 = _box_lo_width(q_lo, q_hi, offs_m, 3)

    # m starts finite so that fully masked tiles never produce (-inf) - (-inf).
    m_i = tl.full([BLOCK_M], -1.0e30, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    # A key block of the layout is LAYOUT_BLOCK // BLOCK_N kernel iterations.
    SUB: tl.constexpr = LAYOUT_BLOCK // BLOCK_N
    for it in tl.range(0, count * SUB, num_stages=NUM_STAGES, warp_specialize=WARP_SPECIALIZE):
        entry = it // SUB
        start_n = tl.load(idx_row + entry) * LAYOUT_BLOCK + (it % SUB) * BLOCK_N
        k = _load_tile(K, k_off, stride_kn, start_n, desc_row0, col0, seq_len, BLOCK_N, HEAD_DIM, USE_TMA, RAGGED)
        v = _load_tile(V, v_off, stride_vn, start_n, desc_row0, col0, seq_len, BLOCK_N, HEAD_DIM, USE_TMA, RAGGED)
        qk = tl.dot(q, tl.trans(k))
        # One scalar test per block; whole blocks inside kv_len skip the mask entirely.
        if HAS_PARTIAL:
            is_partial = tl.load(flag_row + entry).to(tl.int32)
            if CHECK_KV_END:
                need_mask = (is_partial != 0) | (start_n + BLOCK_N > kv_end)
            else:
                need_mask = is_partial != 0
            if need_mask:
                qk = _masked_scores(qk, start_n, is_partial, kv_end, k_coord, lo0, w0, lo1, w1, lo2, w2, lo3, w3, BLOCK_N)
        elif CHECK_KV_END:
            if start_n + BLOCK_N > kv_end:
                offs_n = start_n + tl.arange(0, BLOCK_N)
                qk = tl.where(offs_n[None, :] < kv_end, qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        p = tl.math.exp2(qk * qk_scale - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc)
        m_i = m_new

    l_i = tl.where(l_i == 0.0, 1.0, l_i)  # rows with no key at all: output 0
    out = (acc / l_i[:, None]).to(q.dtype)
    if USE_TMA and not RAGGED:
        O.store([desc_row0 + start_m, col0], out)
    else:
        o_base = O + b64 * stride_ob + h64 * stride_oh
        rows = offs_m.to(tl.int64)
        o_ptrs = o_base + rows[:, None] * stride_on + tl.arange(0, HEAD_DIM)[None, :]
        if RAGGED:
            tl.store(o_ptrs, out, mask=rows[:, None] < seq_len)
        else:
            tl.store(o_ptrs, out)


# ----------------------------------------------------------------------------------------------
# Launch configurations and autotuning
# ----------------------------------------------------------------------------------------------


def _config(block_m: int, block_n: int, warps: int, stages: int) -> triton.Config:
    return triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n, "NUM_STAGES": stages}, num_warps=warps, num_stages=stages,
                         pre_hook=_set_descriptor_blocks)


def _set_descriptor_blocks(nargs) -> None:
    """Descriptors carry the tile shape, which depends on the config being tried."""
    if not nargs.get("USE_TMA"):
        return
    d, bm, bn = nargs["HEAD_DIM"], nargs["BLOCK_M"], nargs["BLOCK_N"]
    nargs["Q"].block_shape = [bm, d]
    if not nargs.get("RAGGED"):
        nargs["O"].block_shape = [bm, d]
    nargs["K"].block_shape = [bn, d]
    nargs["V"].block_shape = [bn, d]


# Hopper-oriented candidates (BLOCK_M, BLOCK_N, warps, stages); >= 3 stages so the LUT load is
# prefetched along with K/V.
AUTOTUNE_CONFIGS = [
    _config(128, 128, 8, 3),
    _config(128, 64, 8, 3),
    _config(128, 64, 8, 4),
    _config(128, 128, 8, 2),
    _config(128, 128, 4, 3),
    _config(128, 64, 4, 3),
    _config(64, 64, 4, 3),
]


def _smem_bytes(cfg: triton.Config, head_dim: int, elem: int = 2) -> int:
    bm, bn, st = cfg.kwargs["BLOCK_M"], cfg.kwargs["BLOCK_N"], cfg.kwargs["NUM_STAGES"]
    return (bm * head_dim + max(st - 1, 1) * 2 * bn * head_dim) * elem


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
    keep = [
        c for c in configs
        if lb % c.kwargs["BLOCK_M"] == 0 and lb % c.kwargs["BLOCK_N"] == 0 and _smem_bytes(c, d) <= limit
        # 8 warps only pay off on full 128x128-class tiles (the tutorial's Hopper rule)
        and not (c.num_warps == 8 and c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] < 128 * 64)
        # head_dim 128 on H100: 4-warp tiles ran 20-35% slower on sparse layouts, and only the
        # 8-warp configs went through the repeated bf16 checks (benchmarks/results/recheck_480p.json)
        and not (d == 128 and c.num_warps == 4)
    ]
    return keep or [c for c in configs if lb % c.kwargs["BLOCK_M"] == 0 and lb % c.kwargs["BLOCK_N"] == 0][:1]


_block_sparse_fwd_tuned = triton.autotune(
    configs=AUTOTUNE_CONFIGS,
    key=["HEAD_DIM", "LAYOUT_BLOCK", "SEQ_BUCKET", "HAS_PARTIAL", "HAS_KV_LEN", "USE_TMA", "RAGGED"],
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


def _use_tma(q, k, v, out) -> bool:
    if TensorDescriptor is None:
        return False
    if not all(_descriptor_view_ok(x) for x in (q, k, v, out)):
        return False
    if q.device.type != "cuda":
        return True  # interpreter: descriptors are emulated
    return _tma_supported(q.device.index if q.device.index is not None else torch.cuda.current_device())


def _descriptor(x: torch.Tensor, block_rows: int) -> "TensorDescriptor":
    B, N, H, D = x.shape
    return TensorDescriptor(x, [B * N, H * D], [x.stride(1), 1], [block_rows, D])


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
    has_partial: bool = True,
    config: dict | None = None,
    use_tma: bool | None = None,
) -> torch.Tensor:
    """Raw launcher. q, k, v: [B, N, H, D] (canonical order, last dim contiguous); LUT tensors as
    in BlockLayout, on q's device. Returns a new [B, N, H, D] tensor.

    N may fall short of the layout's length L (kv_counts.shape[1] * block_size) by less than one
    block: tokens N..L-1 are then treated as absent (keys masked, query rows not computed), which
    spares the caller from padding raster-order sequences.

    has_partial=False skips the per-block partial-flag test (for layouts with no partial block).
    config: {"BLOCK_M", "BLOCK_N", "num_warps", "num_stages"} to bypass the autotuner.
    """
    B, N, H, D = q.shape
    if D not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"head_dim must be one of {SUPPORTED_HEAD_DIMS} for the Triton kernel, got {D}")
    layout_len = kv_counts.shape[-1] * block_size
    if not layout_len - block_size < N <= layout_len:
        raise ValueError(
            f"sequence length {N} must be within one block (block_size={block_size}) below the layout's {layout_len} tokens"
        )
    ragged = N != layout_len
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    kv_counts, kv_indices, kv_partial, q_lo, q_hi, k_coord = (
        x.contiguous() for x in (kv_counts, kv_indices, kv_partial, q_lo, q_hi, k_coord)
    )
    out = torch.empty((B, N, H, D), dtype=q.dtype, device=q.device)
    if B * N * H == 0:
        return out
    G, M = kv_counts.shape
    W = kv_indices.shape[-1]
    if scale is None:
        scale = 1.0 / math.sqrt(D)
    tma = _use_tma(q, k, v, out) if use_tma is None else use_tma
    if tma:
        Qa, Ka, Va, Oa = (_descriptor(x, block_size) for x in (q, k, v, out))
        if ragged:
            Oa = out  # masked pointer stores (see the module docstring)
    else:
        Qa, Ka, Va, Oa = q, k, v, out
    has_kv_len = kv_len is not None
    kv_len_arg = kv_len.to(device=q.device, dtype=torch.int32) if has_kv_len else kv_counts
    args = (
        Qa, Ka, Va, Oa,
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *out.stride()[:3],
        kv_counts, kv_indices, kv_partial, q_lo, q_hi, k_coord, kv_len_arg,
        float(scale) * LOG2E,
        N, H, G, M, W,
        1 << max(N - 1, 1).bit_length(),
    )
    flags = dict(HEAD_DIM=D, LAYOUT_BLOCK=block_size, HAS_PARTIAL=bool(has_partial), HAS_KV_LEN=has_kv_len, USE_TMA=tma,
                 RAGGED=ragged)
    if config is None and not interpreting():
        grid = lambda meta: (triton.cdiv(N, meta["BLOCK_M"]), B * H)  # noqa: E731
        _block_sparse_fwd_tuned[grid](*args, **flags)
        return out
    cfg = dict(default_config(D, block_size), **(config or {}))
    bm, bn = cfg["BLOCK_M"], cfg["BLOCK_N"]
    if block_size % bm or block_size % bn:
        raise ValueError(f"BLOCK_M={bm} and BLOCK_N={bn} must divide the layout block size {block_size}")
    if tma:
        _set_descriptor_blocks({"Q": Qa, "K": Ka, "V": Va, "O": Oa, "USE_TMA": True, "RAGGED": ragged, "HEAD_DIM": D,
                                "BLOCK_M": bm, "BLOCK_N": bn})
    _block_sparse_fwd[(triton.cdiv(N, bm), B * H)](
        *args, **flags, BLOCK_M=bm, BLOCK_N=bn, NUM_STAGES=cfg["num_stages"],
        WARP_SPECIALIZE=bool(cfg.get("WARP_SPECIALIZE", False)),
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    return out
