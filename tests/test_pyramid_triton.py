"""The Triton backend of pyramid (PSA) attention against the reference backend.

On a machine without a GPU the kernels run in Triton's interpreter (TRITON_INTERPRET=1, set
before ditaccel's kernels are imported), at tiny sizes and in float32/float16 only: the
interpreter's bfloat16 dot products are wrong. On a GPU the same tests run compiled, bfloat16
included. The pooled buffer, the LUT and the level tiers are Triton kernels too, checked on their own.
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

from ditaccel.kernels import pyramid_triton as pt  # noqa: E402
from ditaccel.kernels.pyramid import (  # noqa: E402
    _block_importance,
    pyramid_attention,
    pyramid_forward,
    pyramid_levels,
    pyramid_pool,
    score_importance,
)

DEVICE = "cuda" if CUDA else "cpu"
LEVEL_VALUES = torch.tensor([0, 1, 2, 4, 8])


def _interpreted() -> bool:
    """Triton decides at definition time whether a @triton.jit function is interpreted, so it must
    be imported after the variable is set (tests/conftest.py sets it on machines without a GPU)."""
    import triton.language.standard as tls

    return all(type(f).__name__ == "InterpretedFunction" for f in (tls.sum, tls.max, pt._pyramid_fwd))


IN_PROCESS = CUDA or _interpreted()
needs_process = pytest.mark.skipif(not IN_PROCESS, reason="Triton was imported without TRITON_INTERPRET; covered by test_in_fresh_process")

# fp32 on a GPU runs tf32 dot products (as block_sparse_triton does).
TOL = {torch.float32: 1e-4 if not CUDA else 5e-3, torch.float16: 3e-3, torch.bfloat16: 1.5e-2}
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if CUDA else [])


@pytest.fixture(autouse=True)
def _fixed_config(monkeypatch):
    """On a GPU, one compiled config per shape instead of autotuning every candidate."""
    monkeypatch.setattr(pt, "AUTOTUNE", False)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.float() - ref.float()).norm() / ref.float().norm().clamp_min(1e-12))


def qkv(B, N, H, D, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, N, H, D, generator=g).to(DEVICE, dtype) for _ in range(3)]


def random_levels(shape, seed=0, empty_rows=True):
    """Random level maps with every value present and (optionally) an all-zero query-block row."""
    g = torch.Generator().manual_seed(seed)
    levels = LEVEL_VALUES[torch.randint(0, 5, shape, generator=g)]
    flat = levels.view(-1)
    flat[: min(5, flat.numel())] = LEVEL_VALUES[: flat.numel()]  # every value present
    if empty_rows:
        levels[-1, -1, -1] = 0  # the last query block (short) attends nothing
        levels[0, 0, 1] = 0
    return levels.to(DEVICE)


# --------------------------------------------------------------------------------------------- pooled buffer and LUT


@needs_process
@pytest.mark.parametrize("N,bs", [(150, 32), (150, 64), (128, 32), (300, 128), (40, 16)])
def test_pooled_buffer_matches_pyramid_pool(N, bs):
    _, k, v = qkv(2, N, 3, 16, seed=1)
    pooled = pt.pool_kv(k, v, bs)
    nb = -(-N // bs)
    assert pooled.k.shape == (2, pt.pooled_row_offset(16, nb, bs), 3, 16) and pooled.k.dtype == k.dtype
    for lv in pt.POOLED_LEVELS:
        ref = pyramid_pool(k, v, lv, bs)
        r, row0 = bs // lv, pt.pooled_row_offset(lv, nb, bs)
        # pyramid_pool lists the groups present in sequence order; all blocks but the last are full,
        # so group g is row row0 + g of the buffer (the short block's absent rows follow).
        rows = row0 + torch.arange(len(ref.block), device=k.device)
        assert torch.equal(rows - row0, ref.block * r + (rows - row0) % r)
        assert torch.allclose(pooled.k[:, rows], ref.k, atol=1e-6)
        assert torch.allclose(pooled.v[:, rows], ref.v, atol=1e-6)
        assert torch.allclose(pooled.log_count[rows], ref.log_count.float())
        absent = torch.ones(nb * r, dtype=torch.bool, device=k.device)
        absent[rows - row0] = False
        assert bool((pooled.log_count[row0 : row0 + nb * r][absent] == -math.inf).all())
        assert bool((pooled.k[:, row0 : row0 + nb * r][:, absent] == 0).all())
        assert int(absent.sum()) == nb * r - len(ref.block)


@needs_process
@pytest.mark.parametrize("dtype", DTYPES[1:])
def test_pooled_buffer_of_16_bit_views_matches_pyramid_pool(dtype):
    """The pooling kernel reads [B, N, H, D] views whose token stride is not H * D (k and v sliced
    out of one fused projection) and averages 16-bit values in fp32 before one rounding."""
    B, N, H, D, bs = 2, 200, 3, 32, 64
    g = torch.Generator().manual_seed(7)
    kv = torch.randn(B, N, 2, H, D, generator=g).to(DEVICE, dtype)
    k, v = kv[:, :, 0], kv[:, :, 1]
    assert k.stride(1) == 2 * H * D
    pooled = pt.pool_kv(k, v, bs)
    nb = -(-N // bs)
    for lv in pt.POOLED_LEVELS:
        ref = pyramid_pool(k, v, lv, bs)
        rows = pt.pooled_row_offset(lv, nb, bs) + torch.arange(len(ref.block), device=k.device)
        # One rounding of an fp32 mean: within one unit in the last place (fp32 sums of another order).
        eps = torch.finfo(dtype).eps
        torch.testing.assert_close(pooled.k[:, rows].float(), ref.k.to(dtype).float(), rtol=eps, atol=eps * 1e-3)
        torch.testing.assert_close(pooled.v[:, rows].float(), ref.v.to(dtype).float(), rtol=eps, atol=eps * 1e-3)


@needs_process
@pytest.mark.parametrize("shape", [(2, 3, 7, 7), (1, 1, 5, 5), (2, 1, 1, 1)])
def test_lut_expands_back_to_the_level_map(shape):
    levels = random_levels(shape, seed=3, empty_rows=False)
    lut = pt.pyramid_lut(levels)
    nb = shape[-1]
    assert lut.offsets.shape == (*shape[:3], 5) and lut.indices.shape == shape
    assert lut.offsets.dtype == lut.indices.dtype == torch.int32
    back = torch.zeros_like(levels)
    offsets, indices = lut.offsets.cpu(), lut.indices.cpu()
    for b in range(shape[0]):
        for h in range(shape[1]):
            for i in range(nb):
                o = offsets[b, h, i].tolist()
                assert o[0] == 0 and o == sorted(o)
                for lv, (lo, hi) in zip((1, 2, 4, 8), zip(o, o[1:])):
                    run = indices[b, h, i, lo:hi]
                    assert bool((run[1:] > run[:-1]).all())  # ascending inside a level (the kernel relies on it)
                    back[b, h, i, run.long()] = lv
    assert torch.equal(back, levels)


def torch_lut(levels):
    """The LUT by a stable argsort of the level groups (the torch form the kernel replaced)."""
    group = (levels >= 2).int() + (levels >= 4).int() + (levels >= 8).int()
    group = torch.where(levels == 0, 4, group)
    indices = torch.argsort(group, dim=-1, stable=True).to(torch.int32)
    counts = torch.stack([(group == i).sum(-1, dtype=torch.int32) for i in range(4)], dim=-1)
    return torch.nn.functional.pad(counts.cumsum(-1, dtype=torch.int32), (1, 0)), indices


@needs_process
@pytest.mark.parametrize("shape", [(2, 3, 7, 7), (1, 2, 37, 37), (1, 1, 1, 1)])
def test_lut_kernel_equals_a_stable_sort_of_the_levels(shape):
    levels = random_levels(shape, seed=4, empty_rows=shape[-1] > 1)
    lut = pt.pyramid_lut(levels)
    offsets, indices = torch_lut(levels)
    assert torch.equal(lut.offsets, offsets) and torch.equal(lut.indices, indices)


@needs_process
@pytest.mark.parametrize("mode", ["mass", "fraction"])
@pytest.mark.parametrize("nb", [1, 6, 45])
def test_level_kernel_equals_the_torch_tiers(mode, nb):
    """The Triton tiers-and-scatter after the sort against the torch reference, ties included (a
    stable sort: equal importance ranks the lower block first on both paths)."""
    from ditaccel.kernels.pyramid import _assign_levels

    g = torch.Generator().manual_seed(nb)
    importance = torch.rand(2, 3, nb, nb, generator=g) ** 4
    importance[0, 0, :, : nb // 2] = importance[0, 0, :, :1]  # ties
    importance = (importance / importance.sum(-1, keepdim=True)).to(DEVICE)
    rules = dict(thresholds=(0.3, 0.5, 0.5, 0.8), min_full_fraction=0.1, fractions=(0.2, 0.1, 0.0, 0.3))
    fast = _assign_levels(importance, mode, *rules.values(), use_triton=True)
    slow = _assign_levels(importance, mode, *rules.values(), use_triton=False)
    assert fast.dtype == torch.int32 and torch.equal(fast, slow)
    assert set(torch.unique(fast).tolist()) <= {0, 1, 2, 4, 8}


# --------------------------------------------------------------------------------------------- attention vs reference


def check(levels, B, N, H, D, bs, dtype, extra_kv=None, scale=None, seed=0, **kw):
    q, k, v = qkv(B, N, H, D, dtype, seed)
    out = pyramid_attention(q, k, v, levels=levels, block_size=bs, scale=scale, extra_kv=extra_kv, backend="triton", **kw)
    ext = None
    if extra_kv is not None:
        ext = (extra_kv[0].double(), extra_kv[1].double(), extra_kv[2])
    ref = pyramid_attention(q.double(), k.double(), v.double(), levels=levels, block_size=bs, scale=scale, extra_kv=ext,
                            backend="reference")
    assert out.shape == q.shape and out.dtype == dtype
    assert torch.isfinite(out).all()
    err = rel_err(out, ref)
    assert err < TOL[dtype], f"relative L2 error {err:.2e} >= {TOL[dtype]:.0e}"
    return out, ref


@needs_process
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("per_head", [True, False], ids=["levels_BH", "levels_11"])
def test_matches_reference_mixed_levels(dtype, per_head):
    B, N, H, D, bs = 2, 150, 2, 32, 32  # 5 blocks, the last one 22 tokens
    nb = -(-N // bs)
    levels = random_levels((B, H, nb, nb) if per_head else (1, 1, nb, nb), seed=5)
    out, _ = check(levels, B, N, H, D, bs, dtype)
    empty = (levels == 0).all(-1)  # [., ., nb]: query blocks that attend nothing
    rows = empty.expand(B, H, nb).repeat_interleave(bs, dim=-1)[..., :N].transpose(1, 2)  # [B, N, H]
    assert bool(rows.any()) and bool((out[rows] == 0).all())


@needs_process
@pytest.mark.parametrize(
    "N,bs,D",
    [(300, 128, 32), (100, 16, 16), (256, 64, 64), (200, 256, 16)],
    ids=["block128_ragged", "block16", "block64_whole", "block256"],
)
def test_block_sizes(N, bs, D):
    nb = -(-N // bs)
    levels = random_levels((1, 2, nb, nb), seed=N, empty_rows=False)
    check(levels, 1, N, 2, D, bs, torch.float32)


@needs_process
def test_all_level_one_is_dense_sdpa():
    q, k, v = qkv(2, 130, 2, 64, torch.float32, seed=2)
    nb = -(-130 // 64)
    out = pyramid_attention(q, k, v, levels=torch.ones(1, 1, nb, nb, dtype=torch.int32), block_size=64, backend="triton")
    dense = F.scaled_dot_product_attention(*(x.transpose(1, 2).double() for x in (q, k, v))).transpose(1, 2)
    assert rel_err(out, dense) < TOL[torch.float32]


@needs_process
def test_head_dims_are_padded_and_scale_kept():
    for D in (8, 40):
        nb = 3
        levels = random_levels((1, 1, nb, nb), seed=D, empty_rows=False)
        check(levels, 1, 90, 1, D, 32, torch.float32, scale=0.3)


@needs_process
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_extra_kv_with_per_sample_lengths(dtype):
    B, N, H, D, bs, M = 2, 100, 2, 32, 32, 40
    nb = -(-N // bs)
    levels = random_levels((B, H, nb, nb), seed=9)
    g = torch.Generator().manual_seed(4)
    kx, vx = (torch.randn(B, M, H, D, generator=g).to(DEVICE, dtype) for _ in range(2))
    kv_len = torch.tensor([M, 13], device=DEVICE)
    out, _ = check(levels, B, N, H, D, bs, dtype, extra_kv=(kx, vx, kv_len))
    # Padded extra keys never matter; without kv_len every extra key counts.
    kx2, vx2 = kx.clone(), vx.clone()
    kx2[1, 13:], vx2[1, 13:] = 1e3, -1e3
    q, k, v = qkv(B, N, H, D, dtype, 0)
    again = pyramid_attention(q, k, v, levels=levels, block_size=bs, extra_kv=(kx2, vx2, kv_len), backend="triton")
    assert torch.equal(out, again)
    check(levels, B, N, H, D, bs, dtype, extra_kv=(kx, vx, None))


def test_reference_extra_kv_is_attention_over_concatenated_keys():
    """All blocks at level 1 plus extra keys == SDPA over [k; k_extra] with the padding masked."""
    B, N, H, D, bs, M = 2, 45, 2, 16, 16, 11
    q, k, v = (x.cpu().double() for x in qkv(B, N, H, D, seed=6))
    g = torch.Generator().manual_seed(7)
    kx, vx = (torch.randn(B, M, H, D, generator=g, dtype=torch.float64) for _ in range(2))
    kv_len = torch.tensor([4, 11])
    nb = -(-N // bs)
    out = pyramid_attention(q, k, v, levels=torch.ones(1, 1, nb, nb, dtype=torch.int64), block_size=bs,
                            extra_kv=(kx, vx, kv_len), backend="reference")
    keys, values = torch.cat([k, kx], dim=1), torch.cat([v, vx], dim=1)
    mask = torch.ones(B, 1, 1, N + M, dtype=torch.bool)
    mask[..., N:] = torch.arange(M)[None, None, None, :] < kv_len[:, None, None, None]
    want = F.scaled_dot_product_attention(q.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2), attn_mask=mask)
    assert torch.allclose(out, want.transpose(1, 2), atol=1e-12)
    # Query blocks with every level 0 still attend the extra keys.
    out0 = pyramid_attention(q, k, v, levels=torch.zeros(1, 1, nb, nb, dtype=torch.int64), block_size=bs,
                             extra_kv=(kx, vx, kv_len), backend="reference")
    want0 = F.scaled_dot_product_attention(q.transpose(1, 2), kx.transpose(1, 2), vx.transpose(1, 2), attn_mask=mask[..., N:])
    assert torch.allclose(out0, want0.transpose(1, 2), atol=1e-12)


def test_bad_inputs_name_the_parameter():
    q, k, v = (x.cpu() for x in qkv(2, 40, 2, 16))
    levels = torch.ones(1, 1, 3, 3, dtype=torch.int64)
    kx = torch.randn(2, 5, 2, 16)

    def call(extra, backend="reference", **kw):
        return pyramid_attention(q, k, v, levels=levels, block_size=16, extra_kv=extra, backend=backend, **kw)

    with pytest.raises(ValueError, match="extra_kv"):
        call((kx, kx))
    with pytest.raises(ValueError, match="extra_kv"):
        call(kx)
    with pytest.raises(ValueError, match="k_extra and v_extra"):
        call((kx, kx[:, :4], None))
    with pytest.raises(ValueError, match=r"k_extra must have shape \[2, M, 2, 16\]"):
        call((kx[..., :8], kx[..., :8], None))
    with pytest.raises(ValueError, match=r"k_extra must have shape \[2, M, 2, 16\]"):
        call((kx[:1], kx[:1], None))
    with pytest.raises(ValueError, match="k_extra"):
        call((kx.long(), kx, None))
    with pytest.raises(ValueError, match="kv_len"):
        call((kx, kx, torch.tensor([3.0, 4.0])))
    with pytest.raises(ValueError, match="kv_len"):
        call((kx, kx, torch.tensor([True, False])))
    with pytest.raises(ValueError, match="kv_len"):
        call((kx, kx, torch.tensor([3, 4, 5])))
    with pytest.raises(ValueError, match="kv_len"):
        call((kx, kx, 3))
    with pytest.raises(ValueError, match="backend"):
        call(None, backend="cuda")
    if IN_PROCESS:  # the Triton backend is usable here: its own limits are checked
        q, k, v = (x.to(DEVICE) for x in (q, k, v))
        with pytest.raises(ValueError, match="block_size"):
            pyramid_attention(q, k, v, levels=torch.ones(1, 1, 2, 2, dtype=torch.int64), block_size=24, backend="triton")


def test_triton_backend_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    q, k, v = (x.cpu() for x in qkv(1, 32, 1, 16))
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        pyramid_attention(q, k, v, levels=torch.ones(1, 1, 2, 2, dtype=torch.int64), block_size=16, backend="triton")
    # "auto" on CPU is the reference, whatever the interpreter setting.
    ref = pyramid_attention(q, k, v, levels=torch.ones(1, 1, 2, 2, dtype=torch.int64), block_size=16, backend="reference")
    assert torch.equal(pyramid_attention(q, k, v, levels=torch.ones(1, 1, 2, 2, dtype=torch.int64), block_size=16), ref)


# --------------------------------------------------------------------------------------------- importance and levels


@needs_process
@pytest.mark.parametrize("N,bs,samples,gen", [(150, 32, 8, False), (200, 64, 6, True), (300, 128, 32, False)])
def test_importance_kernel_matches_torch(N, bs, samples, gen):
    q, k, _ = qkv(2, N, 2, 32, seed=N)
    g1 = torch.Generator().manual_seed(1) if gen else None
    g2 = torch.Generator().manual_seed(1) if gen else None
    fast = _block_importance(q, k, bs, samples, 0.2, g1, use_triton=True)
    slow = _block_importance(q, k, bs, samples, 0.2, g2, use_triton=False)
    assert fast.shape == slow.shape and fast.dtype == torch.float32
    assert torch.allclose(fast, slow.float(), rtol=1e-4 if not CUDA else 2e-2, atol=1e-6)
    assert torch.allclose(fast.sum(-1), torch.ones_like(fast.sum(-1)), atol=1e-5)


@needs_process
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("N,bs,D", [(150, 32, 32), (300, 128, 48)])
def test_score_importance_kernel_matches_torch(N, bs, D, dtype):
    """importance="score" through piecewise's statistics kernel (head dim padded to a power of two;
    16-bit inputs take its split-product path) against the PyTorch statistics of the same inputs."""
    q, k, v = qkv(2, N, 2, D, dtype, seed=N + 1)
    fast = score_importance(q, k, v, bs, 0.2, use_triton=True)
    slow = score_importance(*(x.float() for x in (q, k, v)), bs, 0.2, use_triton=False)
    assert fast.shape == slow.shape == (2, 2, -(-N // bs), -(-N // bs))
    exact = dtype == torch.float32 and not CUDA  # fp32 on a GPU runs tf32 products
    assert torch.allclose(fast, slow, rtol=1e-4 if exact else 2e-2, atol=1e-6 if exact else 1e-5)
    assert torch.allclose(fast.sum(-1), torch.ones_like(fast.sum(-1)), atol=1e-5)


@pytest.mark.skipif(not CUDA, reason="host synchronisation is only observable on a GPU")
@pytest.mark.parametrize("mode", ["mass", "fraction"])
def test_runtime_path_never_synchronises(mode):
    q, k, v = qkv(1, 1000, 2, 64, torch.bfloat16, seed=3)
    kx, vx = (x[:, :77] for x in qkv(1, 100, 2, 64, torch.bfloat16, seed=4)[:2])
    kv_len = torch.tensor([50], device=DEVICE)
    pyramid_forward(q, k, v, levels=pyramid_levels(q, k, block_size=128, mode=mode), block_size=128, scale=None,
                    extra_kv=(kx, vx, kv_len))  # compile and autotune first
    pyramid_levels(q, k, v, block_size=128, mode=mode, importance="score")  # and the score's kernels
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        levels = pyramid_levels(q, k, block_size=128, mode=mode)
        pyramid_forward(q, k, v, levels=levels, block_size=128, scale=None, extra_kv=(kx, vx, kv_len))
        levels = pyramid_levels(q, k, v, block_size=128, mode=mode, importance="score")
        pyramid_forward(q, k, v, levels=levels, block_size=128, scale=None, extra_kv=(kx, vx, kv_len))
    finally:
        torch.cuda.set_sync_debug_mode("default")


# --------------------------------------------------------------------------------------------- custom op and torch.compile


@needs_process
def test_custom_op_opcheck_and_compile_without_graph_break():
    """opcheck's schema and fake-tensor tests, and torch.compile(fullgraph=True, aot_eager) over the
    whole Triton path (pooling and LUT glue traced, kernel as the opaque op); both run on CPU with
    the interpreter."""
    B, N, H, D, bs = 1, 70, 2, 16, 32
    q, k, v = qkv(B, N, H, D)
    nb = -(-N // bs)
    levels = random_levels((1, H, nb, nb), seed=2, empty_rows=False)
    pooled = pt.pool_kv(k, v, bs)
    lut = pt.pyramid_lut(levels)
    kx, vx = (x[:, :20] for x in qkv(B, 20, H, D, seed=5)[:2])
    kv_len = torch.tensor([17], dtype=torch.int32, device=DEVICE)
    args = (q, k, v, pooled.k, pooled.v, pooled.log_count, lut.offsets, lut.indices, kx, vx, kv_len, 0.25, bs)
    torch.library.opcheck(pt.pyramid_attention_op, args, test_utils=("test_schema", "test_faketensor"))
    imp_args = (q, k, torch.arange(nb * 8, device=DEVICE).view(nb, 8) % N, 0.25)
    torch.library.opcheck(pt.block_importance_op, imp_args, test_utils=("test_schema", "test_faketensor"))
    torch.library.opcheck(pt.pool_op, (k, v, bs), test_utils=("test_schema", "test_faketensor"))
    from ditaccel.kernels import pyramid_layout_triton as plt

    torch.library.opcheck(plt.level_lut, (levels,), test_utils=("test_schema", "test_faketensor"))
    ranked, order = torch.rand(1, H, nb, nb, device=DEVICE).sort(dim=-1, descending=True, stable=True)
    torch.library.opcheck(plt.levels_op, (ranked, order, True, [0.4, 0.5, 0.6, 0.8], 1),
                          test_utils=("test_schema", "test_faketensor"))

    def f(q, k, v):
        return pyramid_forward(q * 1.0, k, v, levels=levels, block_size=bs, scale=None, extra_kv=(kx, vx, kv_len),
                               backend="triton") + 1.0

    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")  # fullgraph: a graph break raises
    assert torch.allclose(compiled(q, k, v), f(q, k, v), atol=1e-6)


def test_in_fresh_process():
    """Runs this file in a fresh interpreter process when this one cannot (see IN_PROCESS)."""
    if IN_PROCESS:
        return
    env = dict(os.environ, TRITON_INTERPRET="1")
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", __file__], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
