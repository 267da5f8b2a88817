"""The Triton backend of piecewise (PISA) and top-k attention against the PyTorch reference.

On a machine without a GPU the kernels run in Triton's interpreter (TRITON_INTERPRET=1, set before
Triton is imported) at tiny sizes, in float32/float16 only (the interpreter's bfloat16 dots are
wrong); on a GPU the same tests run compiled, bfloat16 included.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import torch
import torch.nn.functional as F

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402

triton = pytest.importorskip("triton", reason="Triton is not installed (pip install triton)")

from ditaccel.kernels import piecewise_triton as pt  # noqa: E402
from ditaccel.kernels.piecewise import (  # noqa: E402
    blocked,
    piecewise_attention,
    piecewise_selection,
    piecewise_statistics,
    topk_attention,
)

DEVICE = "cuda" if CUDA else "cpu"


def _interpreted() -> bool:
    """Triton decides at definition time whether a @triton.jit function is interpreted, so it must
    have been imported after TRITON_INTERPRET was set (tests/conftest.py sets it without a GPU)."""
    import triton.language.standard as tls

    return all(type(f).__name__ == "InterpretedFunction" for f in (tls.sum, tls.max, pt._piecewise_fwd))


IN_PROCESS = CUDA or _interpreted()
needs_process = pytest.mark.skipif(not IN_PROCESS, reason="Triton was imported without TRITON_INTERPRET; covered by test_in_fresh_process")

DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if CUDA else [])
# Relative L2 error against an fp64 reference. On a GPU fp32 dots run in TF32 (as in the
# block-sparse kernel).
TOL = {torch.float32: 1e-4 if not CUDA else 5e-3, torch.float16: 3e-3, torch.bfloat16: 1.5e-2}


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-12))


def qkv(B=2, N=200, H=2, D=32, dtype=torch.float32, seed=0, count=3):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, N, H, D, generator=g).to(DEVICE, dtype) for _ in range(count)]


def attend(order, q, k, v, backend, **kw):
    """order 0/1: piecewise_attention; None: topk_attention."""
    if order is None:
        return topk_attention(q, k, v, backend=backend, **kw)
    return piecewise_attention(q, k, v, order=order, backend=backend, **kw)


def reference(order, q, k, v, **kw):
    """The reference backend in fp64 (extra keys too)."""
    extra = kw.pop("extra_kv", None)
    if extra is not None:
        extra = (extra[0].double(), extra[1].double(), extra[2])
    return attend(order, q.double(), k.double(), v.double(), "reference", extra_kv=extra, **kw)


def random_selection(shape, p=0.35, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) < p).to(DEVICE)


# --------------------------------------------------------------------------------------------- statistics


@needs_process
@pytest.mark.parametrize("with_h,dtype", [(False, torch.float32), (True, torch.float32), (True, torch.float16)])
def test_statistics_match_reference(with_h, dtype):
    B, N, H, D, bs = 2, 150, 2, 32, 32  # 5 blocks, the last of 22 tokens
    q, k, v = qkv(B, N, H, D, dtype, seed=3)
    k = k + 3  # a large mean key: kc = k - kbar must not lose the centred part
    qbar, kbar, hnorm, kbar_s, vbar_s, h = pt.piecewise_stats_fwd(q, k, v, bs, with_h, splits=2 if with_h else None)
    ref = piecewise_statistics(k.double().cpu(), v.double().cpu(), bs)
    nb = 5
    assert kbar_s.shape == vbar_s.shape == (B * H, pt.SUMMARY_PAD, D) and kbar_s.dtype == q.dtype
    shape = (B, H, nb, D)
    # fp32 statistics of the given inputs (fp16: the summary buffers are rounded to fp16)
    tol = dict(rtol=1e-5, atol=1e-5) if not CUDA else dict(rtol=1e-4, atol=1e-4)
    low = tol if dtype == torch.float32 else dict(rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(qbar.view(shape).double().cpu(), blocked(q.double().cpu(), bs).sum(3) / ref.counts[:, None], **tol)
    torch.testing.assert_close(kbar.view(shape).double().cpu(), ref.kbar, **tol)
    torch.testing.assert_close(kbar_s[:, :nb].reshape(shape).double().cpu(), ref.kbar, **low)
    torch.testing.assert_close(vbar_s[:, :nb].reshape(shape).double().cpu(), ref.vsum / ref.counts[:, None], **low)
    assert kbar_s[:, nb:].abs().max() == 0 and vbar_s[:, nb:].abs().max() == 0  # padding rows stay zero
    torch.testing.assert_close(hnorm.view(B, H, nb).double().cpu(), torch.linalg.matrix_norm(ref.h), **tol)
    if with_h:
        torch.testing.assert_close(h.view(B, H, D, D).double().cpu(), ref.h.sum(2), **tol)
    else:
        assert h.numel() == 0


@needs_process
def test_top_blocks_kernel_keeps_exactly_keep():
    """The bisection on the scores' bits: exactly ``keep`` per row, the largest ones, ties to the
    lowest indices, LUT rows ascending; -inf and negative scores included."""
    g = torch.Generator().manual_seed(41)
    score = torch.randn(5, 37, generator=g) * 3
    score[0] = 1.0  # all tied
    score[1, :10] = -math.inf
    score[2] = -torch.rand(37, generator=g)  # all negative
    score[3, 5:9] = score[3].max() + 1  # a tie among the winners
    for keep in (1, 4, 9, 37):
        lut, sel = pt.select_top_blocks_fwd(score.to(DEVICE), keep)
        lut, sel = lut.cpu().long(), sel.cpu().bool()
        assert bool((sel.sum(-1) == keep).all())
        assert torch.equal(lut, lut.sort(-1).values) and bool(sel.gather(-1, lut).all())
        kth = score.topk(keep, dim=-1).values[:, -1:]
        assert bool((score[sel.logical_not()].view(5, -1) <= kth).all()) and bool((score.masked_fill(~sel, math.inf) >= kth).all())
        assert lut[0].tolist() == list(range(keep))


# --------------------------------------------------------------------------------------------- attention vs reference


@needs_process
@pytest.mark.parametrize(
    "dtype,D,order",
    [(torch.float32, 16, 0), (torch.float32, 16, 1), (torch.float32, 16, None), (torch.float32, 64, 1),
     (torch.float32, 64, None), (torch.float16, 32, 0), (torch.float16, 32, 1), (torch.float16, 32, None),
     (torch.float32, 24, 1)],
    ids=["fp32-d16-order0", "fp32-d16-order1", "fp32-d16-topk", "fp32-d64-order1", "fp32-d64-topk", "fp16-d32-order0",
         "fp16-d32-order1", "fp16-d32-topk", "fp32-d24-padded-order1"],
)
def test_matches_reference_with_same_selection(dtype, D, order):
    B, N, H, bs = 2, 168, 2, 32  # 6 blocks, the last of 8 tokens
    q, k, v = qkv(B, N, H, D, dtype, seed=D)
    nb = 6
    selected = random_selection((B, 1, nb, nb), seed=D)  # per-row counts vary; broadcast over heads
    selected[0, 0, 2, :] = False
    selected[0, 0, 2, 4] = True  # a single block
    selected[1, 0, 3, -1] = True  # the short last block
    if order is not None:
        selected[1, 0, 5] = False  # only summaries
    out = attend(order, q, k, v, "triton", selected=selected, block_size=bs)
    assert out.shape == q.shape and out.dtype == dtype and torch.isfinite(out).all()
    err = rel_err(out, reference(order, q, k, v, selected=selected, block_size=bs))
    assert err < TOL[dtype], f"relative L2 error {err:.2e}"


@needs_process
@pytest.mark.parametrize(
    "bs,config",
    [(16, dict(BLOCK_N=32, BLOCK_S=16)), (32, dict(BLOCK_N=16, BLOCK_S=32)), (16, dict(BLOCK_N=16, BLOCK_S=16))],
    ids=["pairs-of-blocks", "sub-block-tiles", "several-summary-tiles"],
)
@pytest.mark.parametrize("order", [1, None], ids=["order1", "topk"])
def test_tile_shapes(bs, config, order):
    """Key tiles of two LUT entries (odd counts leave half a tile), of half a block, and summary
    tiles fewer than the blocks."""
    B, N, H, D = 1, 280, 1, 32
    q, k, v = qkv(B, N, H, D, seed=5)
    nb = -(-N // bs)
    selected = random_selection((B, H, nb, nb), p=0.3, seed=bs)
    selected[0, 0, 0] = False
    selected[0, 0, 0, [1, 4, nb - 1]] = True  # odd count ending in the short block
    out = pt.triton_piecewise_attention(q, k, v, density=None, selected=selected, block_size=bs, order=order, scale=None,
                                        extra_kv=None, config=dict(config, num_warps=4, num_stages=1))
    err = rel_err(out, reference(order, q, k, v, selected=selected, block_size=bs))
    assert err < TOL[torch.float32], f"relative L2 error {err:.2e}"


@needs_process
@pytest.mark.parametrize("order", [1, None], ids=["order1", "topk"])
def test_descriptor_loads(order):
    """Exact key tiles through 2-D tensor descriptors (TMA on Hopper): rows past N of the short last
    block come from the next batch or past the tensor and must be masked."""
    B, N, H, D, bs = 2, 90, 2, 16, 16
    q, k, v = qkv(B, N, H, D, seed=43)
    nb = 6
    selected = random_selection((B, H, nb, nb), p=0.4, seed=6)
    selected[:, :, :, -1] = True
    out = pt.triton_piecewise_attention(q, k, v, density=None, selected=selected, block_size=bs, order=order, scale=None,
                                        extra_kv=None, use_tma=True)
    assert rel_err(out, reference(order, q, k, v, selected=selected, block_size=bs)) < TOL[torch.float32]


@needs_process
@pytest.mark.parametrize("order", [0, 1, None], ids=["order0", "order1", "topk"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_key_ranges_continue_one_softmax(order, dtype):
    """The exact phase as several launches over contiguous key ranges (what a call whose K/V
    overflow L2 does) equals one launch and the reference: rows whose blocks all sit in one range,
    rows with none in the first range, a row with no block at all, the short last block, the text keys
    (attended once, in the first launch) and the summary phase."""
    B, N, H, D, bs, M = 2, 168, 2, 32, 16, 24  # 11 blocks, the last of 8 tokens
    q, k, v = qkv(B, N, H, D, dtype, seed=61)
    ke, ve = extra_keys(B, M, H, D, dtype, seed=62)
    kv_len = torch.tensor([M, 7], device=DEVICE)
    nb = 11
    selected = random_selection((B, H, nb, nb), p=0.3, seed=63)
    selected[0, 0, 0] = False
    selected[0, 0, 0, :3] = True  # every block in the first range
    selected[0, 1, 4] = False
    selected[0, 1, 4, [8, nb - 1]] = True  # none in the first ranges, the short last block
    selected[1, 0, 6] = False  # nothing exact: text keys (and summaries) only
    kw = dict(selected=selected, block_size=bs, extra_kv=(ke, ve, kv_len))
    ref = reference(order, q, k, v, **kw)
    call = dict(density=None, selected=selected, block_size=bs, order=order, scale=None, extra_kv=(ke, ve, kv_len))
    one = pt.triton_piecewise_attention(q, k, v, **call, kv_ranges=1)
    # against one launch: fp32 in the interpreter is exact to rounding; TF32 dots on a GPU and
    # 16-bit outputs carried between launches round more
    close = 1e-5 if dtype == torch.float32 and not CUDA else 3e-3
    for ranges in (3, nb):
        out = pt.triton_piecewise_attention(q, k, v, **call, kv_ranges=ranges)
        assert rel_err(out, ref) < TOL[dtype], (ranges, rel_err(out, ref))
        assert rel_err(out, one) < close, ranges
    # the density path (every row the same number of entries) and no text keys
    dens = dict(density=0.3, selected=None, block_size=bs, order=order, scale=None, extra_kv=None)
    assert rel_err(pt.triton_piecewise_attention(q, k, v, **dens, kv_ranges=4),
                   pt.triton_piecewise_attention(q, k, v, **dens, kv_ranges=1)) < close


def test_key_range_count_follows_the_footprint(monkeypatch):
    """One launch while a head's K + V fit the L2 budget, then ranges of about KV_RANGE_BYTES."""
    monkeypatch.setattr(pt, "interpreting", lambda: False)
    assert pt.kv_range_count(75_600, 128, 2) == 1  # Wan2.1-14B 720p: 39 MB
    assert pt.kv_range_count(118_800, 128, 2) == 3  # HunyuanVideo 720p: 61 MB
    assert pt.kv_range_count(10**7, 128, 2) == 8  # capped
    monkeypatch.setattr(pt, "L2_KV_BYTES", None)
    assert pt.kv_range_count(118_800, 128, 2) == 1  # switched off


def test_range_edges_split_sorted_rows():
    lut = torch.tensor([[[0, 2, 5, 9], [3, 4, 6, 7]]], dtype=torch.int32)
    edges = pt._range_edges(lut, None, 4, 10, 2)  # ranges [0, 5) and [5, 10)
    assert edges[:, 0].tolist() == [[0, 0], [2, 2], [4, 4]]
    counts = torch.tensor([[2, 3]], dtype=torch.int32)  # entries past the count are not keys
    edges = pt._range_edges(torch.tensor([[[0, 7, 1, 2], [3, 4, 6, 0]]], dtype=torch.int32), counts, 0, 10, 2)
    assert edges[:, 0].tolist() == [[0, 0], [1, 2], [2, 3]]


@needs_process
def test_scale_and_large_logits():
    """A given scale, and logits far past exp's fp32 range: exact and summary logits share one max."""
    B, N, H, D, bs = 1, 96, 2, 16, 16
    q, k, v = qkv(B, N, H, D, seed=9)
    q = q * 40
    nb = 6
    selected = torch.zeros(1, H, nb, nb, dtype=torch.bool, device=DEVICE)
    selected[..., 1] = True
    selected[0, 1, 2] = False
    for order in (0, 1):
        out = piecewise_attention(q, k, v, selected=selected, block_size=bs, order=order, scale=0.7, backend="triton")
        assert torch.isfinite(out).all()
        err = rel_err(out, reference(order, q, k, v, selected=selected, block_size=bs, scale=0.7))
        assert err < TOL[torch.float32], f"order {order}: relative L2 error {err:.2e}"


# --------------------------------------------------------------------------------------------- density path


def separated_qkv(B=2, N=250, H=2, D=32, bs=16, seed=0):
    """Blocks with distinct mean keys and spreads, so that no two scores are close to a tie."""
    g = torch.Generator().manual_seed(seed)
    nb = -(-N // bs)
    block = torch.arange(N) // bs
    k = torch.randn(B, N, H, D, generator=g) * (0.3 + torch.rand(B, nb, H, 1, generator=g)[:, block])
    k = k + 2 * torch.randn(B, nb, H, D, generator=g)[:, block]
    q = torch.randn(B, N, H, D, generator=g) + torch.randn(B, nb, H, D, generator=g)[:, block]
    v = torch.randn(B, N, H, D, generator=g)
    return [x.to(DEVICE) for x in (q, k, v)]


@needs_process
@pytest.mark.parametrize("density", [0.2, 0.5])
def test_selection_matches_reference(density):
    bs = 16
    q, k, v = separated_qkv(bs=bs, seed=int(density * 10))
    mine = pt.triton_piecewise_selection(q, k, v, density=density, block_size=bs)
    ref = piecewise_selection(q.double(), k.double(), v.double(), density=density, block_size=bs)
    keep = max(1, math.floor(density * 16))
    assert mine.shape == ref.shape == (2, 2, 16, 16) and bool((mine.sum(-1) == keep).all())
    assert torch.equal(mine.cpu(), ref.cpu())


@needs_process
@pytest.mark.parametrize("order", [0, 1, None], ids=["order0", "order1", "topk"])
def test_density_path_matches_reference(order):
    bs = 16
    q, k, v = separated_qkv(B=1, N=200, bs=bs, seed=7)  # 13 blocks, 3 exact
    out = attend(order, q, k, v, "triton", density=0.25, block_size=bs)
    ref = reference(order, q, k, v, density=0.25, block_size=bs)
    assert rel_err(out, ref) < TOL[torch.float32]


# --------------------------------------------------------------------------------------------- extra keys


def extra_keys(B, M, H, D, dtype=torch.float32, seed=11):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, M, H, D, generator=g).to(DEVICE, dtype) for _ in range(2)]


@needs_process
@pytest.mark.parametrize("order", [0, 1, None], ids=["order0", "order1", "topk"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_extra_kv_with_kv_len(order, dtype):
    B, N, H, D, bs, M = 2, 100, 1, 32, 32, 40
    q, k, v = qkv(B, N, H, D, dtype, seed=13)
    ke, ve = extra_keys(B, M, H, D, dtype)
    kv_len = torch.tensor([M - 3, 5], device=DEVICE)  # per-sample padding; int64 accepted
    nb = 4
    selected = random_selection((B, H, nb, nb), p=0.3, seed=2)
    selected[1, 0, 1] = False  # in top-k this row sees the extra keys only
    kw = dict(selected=selected, block_size=bs, extra_kv=(ke, ve, kv_len))
    out = attend(order, q, k, v, "triton", **kw)
    ref = reference(order, q, k, v, **kw)
    assert rel_err(out, ref) < TOL[dtype]
    # padded extra keys never matter
    ke2, ve2 = ke.clone(), ve.clone()
    ke2[1, 5:], ve2[1, 5:] = 1e4, float("nan")
    ke2[0, M - 3 :] = -1e4
    out2 = attend(order, q, k, v, "triton", selected=selected, block_size=bs, extra_kv=(ke2, ve2, kv_len))
    assert torch.equal(out, out2)
    # no kv_len: every extra key counts
    out3 = attend(order, q, k, v, "triton", selected=selected, block_size=bs, extra_kv=(ke, ve, None))
    assert rel_err(out3, reference(order, q, k, v, selected=selected, block_size=bs, extra_kv=(ke, ve, None))) < TOL[dtype]


@pytest.mark.parametrize("order", [0, 1, None], ids=["order0", "order1", "topk"])
def test_reference_extra_kv_is_dense_attention_over_joint_keys(order):
    """All blocks selected + extra keys == SDPA over [keys, extra keys] with the padded extra keys masked
    (reference backend only, fp64, computed independently)."""
    g = torch.Generator().manual_seed(17)
    B, N, H, D, bs, M = 2, 45, 2, 16, 16, 9
    q, k, v = (torch.randn(B, N, H, D, generator=g, dtype=torch.float64) for _ in range(3))
    ke, ve = (torch.randn(B, M, H, D, generator=g, dtype=torch.float64) for _ in range(2))
    kv_len = torch.tensor([M, 4], dtype=torch.int32)
    every = torch.ones(1, 1, 3, 3, dtype=torch.bool)
    out = attend(order, q, k, v, "reference", selected=every, block_size=bs, extra_kv=(ke, ve, kv_len))
    keys, values = torch.cat([k, ke], 1), torch.cat([v, ve], 1)
    mask = torch.cat([torch.ones(B, N, dtype=torch.bool), torch.arange(M)[None] < kv_len[:, None]], 1)[:, None, None, :]
    dense = F.scaled_dot_product_attention(q.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2), attn_mask=mask)
    torch.testing.assert_close(out, dense.transpose(1, 2), rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------------------------- edge cases and bad input


@needs_process
def test_rows_without_keys_are_zero():
    B, N, H, D, bs = 1, 80, 2, 16, 16
    q, k, v = qkv(B, N, H, D, seed=19)
    selected = random_selection((1, H, 5, 5), p=0.5, seed=4)
    selected[0, 0, 1] = False
    selected[0, 1, 4] = False  # the short last query block (80 = 5 x 16: whole; use rows 64..79)
    out = topk_attention(q, k, v, selected=selected, block_size=bs, backend="triton")
    assert torch.isfinite(out).all()
    assert out[0, 16:32, 0].abs().max() == 0 and out[0, 64:80, 1].abs().max() == 0
    assert rel_err(out, reference(None, q, k, v, selected=selected, block_size=bs)) < TOL[torch.float32]


@needs_process
def test_bad_inputs_name_the_parameter():
    q, k, v = qkv(1, 64, 2, 16)
    ke, ve = extra_keys(1, 8, 2, 16)
    kw = dict(density=0.5, block_size=16, backend="triton")
    with pytest.raises(ValueError, match="extra_kv"):
        piecewise_attention(q, k, v, extra_kv=(ke, ve), **kw)
    with pytest.raises(ValueError, match="k_extra"):
        piecewise_attention(q, k, v, extra_kv=(ke[:, :, :1], ve, None), **kw)
    with pytest.raises(ValueError, match="v_extra"):
        topk_attention(q, k, v, extra_kv=(ke, ve[..., :8], None), **kw)
    with pytest.raises(ValueError, match="same shape"):
        topk_attention(q, k, v, extra_kv=(ke, ve[:, :4], None), **kw)
    with pytest.raises(ValueError, match="kv_len"):
        piecewise_attention(q, k, v, extra_kv=(ke, ve, torch.tensor([3.0])), **kw)
    with pytest.raises(ValueError, match="kv_len"):
        piecewise_attention(q, k, v, extra_kv=(ke, ve, torch.tensor([3, 4])), **kw)
    with pytest.raises(ValueError, match="kv_len"):
        piecewise_attention(q, k, v, extra_kv=(ke, ve, 3), **kw)
    with pytest.raises(ValueError, match="block_size"):
        piecewise_attention(q, k, v, density=0.5, block_size=24, backend="triton")
    big = qkv(1, 32, 1, 160)
    with pytest.raises(ValueError, match="head_dim"):
        topk_attention(*big, density=0.5, block_size=16, backend="triton")
    with pytest.raises(ValueError, match="backend"):
        piecewise_attention(q, k, v, density=0.5, block_size=16, backend="cuda")
    # the reference backend checks extra_kv the same way
    with pytest.raises(ValueError, match="kv_len"):
        piecewise_attention(q.cpu(), k.cpu(), v.cpu(), density=0.5, block_size=16, backend="reference",
                            extra_kv=(ke.cpu(), ve.cpu(), torch.tensor([True])))


def test_triton_backend_needs_cuda_or_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    q = torch.randn(1, 32, 1, 16)
    with pytest.raises(ValueError, match="CUDA"):
        piecewise_attention(q, q, q, density=0.5, block_size=16, backend="triton")


# --------------------------------------------------------------------------------------------- torch.compile


@needs_process
def test_custom_ops_opcheck():
    q, k, v = qkv(1, 40, 1, 16, seed=23)
    stats = torch.ops.ditaccel.piecewise_statistics.default
    torch.library.opcheck(stats, (q, k, v, 16, True), test_utils=("test_schema", "test_faketensor"))
    qbar, kbar, hnorm, kbar_s, vbar_s, h = stats(q, k, v, 16, True)
    lut, sel = pt.select_blocks(qbar, kbar, hnorm, 0.25, 2)
    ht = (h * 0.25 / 40).to(q.dtype)
    args = (q, k, v, lut, None, sel, kbar_s, vbar_s, ht, None, None, None, 0.25, 16, 2)
    torch.library.opcheck(torch.ops.ditaccel.piecewise_attention.default, args, test_utils=("test_schema", "test_faketensor"))


@needs_process
def test_torch_compile_fullgraph():
    """The whole Triton path (statistics op -> top-k glue -> attention op) traces into one graph.
    On CPU the graph runs with aot_eager (the kernels themselves run in the interpreter either way)."""
    B, N, H, D, bs, M = 1, 64, 2, 16, 16, 8
    q, k, v = qkv(B, N, H, D, seed=29)
    ke, ve = extra_keys(B, M, H, D)
    kv_len = torch.tensor([5], dtype=torch.int32, device=DEVICE)

    def f(q, k, v, ke, ve, kv_len):
        a = piecewise_attention(q, k, v, density=0.5, block_size=bs, order=1, backend="triton", extra_kv=(ke, ve, kv_len))
        return a + topk_attention(q, k, v, density=0.5, block_size=bs, backend="triton")

    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True, backend="inductor" if CUDA else "aot_eager")
    out = compiled(q, k, v, ke, ve, kv_len)
    torch.testing.assert_close(out, f(q, k, v, ke, ve, kv_len), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not CUDA, reason="host synchronisation is a GPU matter")
def test_density_path_does_not_synchronise():
    q, k, v = qkv(1, 1024, 2, 64, torch.bfloat16, seed=31)
    ke, ve = extra_keys(1, 64, 2, 64, torch.bfloat16)
    kv_len = torch.tensor([50], device=DEVICE)
    for order in (1, None):
        attend(order, q, k, v, "triton", density=0.2, block_size=64, extra_kv=(ke, ve, kv_len))  # autotune first
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for order in (0, 1, None):
            attend(order, q, k, v, "triton", density=0.2, block_size=64, extra_kv=(ke, ve, kv_len))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    # the exact phase as key ranges (long sequences): their entry offsets are made on the device too
    call = dict(density=0.2, selected=None, block_size=64, order=None, scale=None, extra_kv=(ke, ve, kv_len), kv_ranges=3)
    pt.triton_piecewise_attention(q, k, v, **call)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        pt.triton_piecewise_attention(q, k, v, **call)
    finally:
        torch.cuda.set_sync_debug_mode(0)


@pytest.mark.skipif(not CUDA, reason="bfloat16 dots are wrong in the interpreter")
@pytest.mark.parametrize("order", [1, None], ids=["order1", "topk"])
def test_bfloat16_autotuned(order):
    B, N, H, D, bs = 1, 2000, 4, 128, 64
    q, k, v = qkv(B, N, H, D, torch.bfloat16, seed=37)
    selected = piecewise_selection(q, k, v, density=0.15, block_size=bs)
    out = attend(order, q, k, v, "triton", selected=selected, block_size=bs)
    assert rel_err(out, reference(order, q, k, v, selected=selected, block_size=bs)) < TOL[torch.bfloat16]
    dens = attend(order, q, k, v, "auto", density=0.15, block_size=bs)
    assert rel_err(dens, reference(order, q, k, v, selected=selected, block_size=bs)) < 3e-2  # bf16 ties may differ


def test_in_fresh_process():
    """Runs this file in a fresh interpreter process when this one cannot (see IN_PROCESS)."""
    if IN_PROCESS:
        return
    env = dict(os.environ, TRITON_INTERPRET="1")
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", __file__], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
