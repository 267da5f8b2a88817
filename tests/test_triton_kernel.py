"""The Triton block-sparse kernel against the reference backend.

On a machine without a GPU the kernel runs in Triton's interpreter (TRITON_INTERPRET=1, which
Triton reads when a kernel is defined, so it is set before ditaccel's kernels are imported), at
tiny sizes and in float32/float16 only: the interpreter's bfloat16 dot products are wrong.
On a GPU the same tests run compiled, bfloat16 included.
"""

from __future__ import annotations

import os
import subprocess
import sys

import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402

triton = pytest.importorskip("triton", reason="Triton is not installed (pip install triton)")

from ditaccel.kernels import block_sparse_triton as bst  # noqa: E402
from ditaccel.kernels.attention import block_sparse_attention  # noqa: E402
from ditaccel.kernels.layout import BlockLayout, layout_from_block_mask, pack_block_mask, with_text  # noqa: E402
from ditaccel.kernels.reference import reference_block_sparse_attention  # noqa: E402
from ditaccel.kernels.tiling import build_tiling  # noqa: E402
from ditaccel.plugins.neighborhood import Neighborhood  # noqa: E402
from ditaccel.plugins.radial import Radial  # noqa: E402

DEVICE = "cuda" if CUDA else "cpu"

def _interpreted() -> bool:
    """Triton decides at definition time whether a @triton.jit function is interpreted, for its
    own library functions (tl.sum, tl.max) too, so Triton must be imported after the variable is
    set (tests/conftest.py sets it on machines without a GPU)."""
    import triton.language.standard as tls

    return all(type(f).__name__ == "InterpretedFunction" for f in (tls.sum, tls.max, bst._block_sparse_fwd))


# If Triton was imported before the interpreter was switched on, run this file again in a fresh
# process instead (test_in_fresh_process).
IN_PROCESS = CUDA or _interpreted()
needs_process = pytest.mark.skipif(not IN_PROCESS, reason="Triton was imported without TRITON_INTERPRET; covered by test_in_fresh_process")

DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if CUDA else [])
TOL = {torch.float32: 2e-5 if not CUDA else 5e-3, torch.float16: 3e-3, torch.bfloat16: 1e-2}


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.float() - ref.float()).norm() / ref.float().norm().clamp_min(1e-12))


def check(layout: BlockLayout, B: int, H: int, D: int, dtype: torch.dtype, kv_len=None, seed: int = 0, **launch):
    gen = torch.Generator().manual_seed(seed)
    N = layout.seq_len
    q, k, v = (torch.randn(B, N, H, D, generator=gen).to(DEVICE, dtype) for _ in range(3))
    lay = layout.to(DEVICE)
    if launch:
        out = bst.block_sparse_attention_fwd(
            q, k, v, lay.kv_counts, lay.kv_indices, lay.kv_partial, lay.q_lo, lay.q_hi, lay.k_coord,
            None if kv_len is None else kv_len.to(DEVICE), None, lay.block_size, **launch,
        )
    else:
        out = block_sparse_attention(q, k, v, lay, kv_len, backend="triton")
    ref = reference_block_sparse_attention(q.double(), k.double(), v.double(), lay, kv_len)
    assert out.shape == q.shape and out.dtype == dtype
    assert torch.isfinite(out).all()
    err = rel_err(out, ref)
    assert err < TOL[dtype], f"relative L2 error {err:.2e} >= {TOL[dtype]:.0e}"
    return out, ref


# Partial blocks' two masks: the element-wise box test and the same test through the tensor cores.
MASKS = ["elementwise", "dot"]


def use_mask(monkeypatch, mask: str, layout: BlockLayout) -> None:
    """Mask ``layout``'s partial blocks the named way, at every head_dim; for "dot", check that the
    layout's blocks admit it (else the kernel would quietly take the element-wise test)."""
    from ditaccel.kernels.layout import mask_columns

    monkeypatch.setattr(bst, "DOT_MASK_HEAD_DIMS", (64, 128) if mask == "dot" else ())
    if mask == "dot":
        assert mask_columns(layout.k_coord, layout.block_size, layout.partial_dims) is not None


def stacked(*layouts: BlockLayout) -> BlockLayout:
    """One layout with a LUT row group per input layout (G = len(layouts)); same tiling."""
    base = layouts[0]
    masks = torch.cat([lay.dense_block_mask() for lay in layouts])
    parts = []
    for lay in layouts:
        p = torch.zeros_like(lay.dense_block_mask())
        idx = lay.kv_indices.long()
        p.scatter_(2, idx.clamp_min(0), (lay.kv_partial > 0) & (idx >= 0))
        parts.append(p)
    counts, indices, flags = pack_block_mask(masks, torch.cat(parts))
    return BlockLayout(base.block_size, base.seq_len, counts, indices, flags, base.q_lo, base.q_hi, base.k_coord, base.tiling,
                       base.num_text_blocks)


@needs_process
@pytest.mark.parametrize("dtype", DTYPES)
def test_radial_raster(dtype):
    layout = Radial(decay=0.5, block_size=64, sink=True).build_layout((6, 8, 12))
    assert 0 < layout.block_density() < 1
    check(layout, B=1, H=2, D=64, dtype=dtype)


@needs_process
def test_radial_tiled_ragged_grid_has_padding_blocks():
    # 9 x 13 frames do not divide into 64-token tiles: padding keys sit in partial blocks.
    layout = Radial(decay=0.5, block_size=64, spatial="tiled", sink=False).build_layout((5, 9, 13))
    assert layout.has_partial
    check(layout, B=1, H=1, D=64, dtype=torch.float32)


@needs_process
@pytest.mark.parametrize(
    "method",
    [
        Neighborhood(window=(3, 5, 5), block_size=64),  # stride 1: partial blocks everywhere
        Neighborhood(window=(2, 3, 3), dilation=(1, 2, 2), block_size=64),
        Neighborhood(window=(2, 5, 5), causal=(True, False, False), block_size=64),
        Neighborhood(window=(2, 4, 4), stride=(2, 4, 4), tile=(1, 8, 8), block_size=64),  # whole blocks
    ],
    ids=["stride1", "dilation", "causal", "blocked"],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("mask", MASKS)
def test_neighborhood(method, dtype, mask, monkeypatch):
    layout = method.build_layout((4, 7, 9))
    use_mask(monkeypatch, mask, layout)
    check(layout, B=1, H=2, D=64, dtype=dtype)


@needs_process
@pytest.mark.parametrize("mask", MASKS)
def test_neighborhood_ragged_128_blocks_head_dim_128(mask, monkeypatch):
    layout = Neighborhood(window=(2, 5, 5), block_size=128).build_layout((3, 9, 11))
    assert layout.has_partial and layout.block_size == 128
    use_mask(monkeypatch, mask, layout)
    check(layout, B=1, H=1, D=128, dtype=torch.float16)


@needs_process
@pytest.mark.parametrize("D", [64, 128])
def test_text_tokens_with_padding(D):
    video = Neighborhood(window=(2, 3, 5), block_size=64).build_layout((2, 6, 10))
    text_len = 70  # two text blocks, the second partly padding
    layout = with_text(video, text_len)
    kv_len = torch.tensor([video.seq_len + text_len, video.seq_len + 13], dtype=torch.int32)
    check(layout, B=2, H=1, D=D, dtype=torch.float32, kv_len=kv_len)


@needs_process
def test_text_rows_first_is_only_an_order(monkeypatch):
    # Starting each head's text query tiles first changes which program computes a tile, not what
    # it computes: every tile once, the same result bit for bit as in canonical order.
    video = Neighborhood(window=(2, 3, 5), block_size=64).build_layout((2, 6, 10))
    layout = with_text(video, 150)  # three text tiles after three video tiles
    kv_len = torch.tensor([video.seq_len + 150, video.seq_len + 90], dtype=torch.int32)
    outs = []
    for first in (False, True):
        monkeypatch.setattr(bst, "TEXT_ROWS_FIRST", first)
        outs.append(check(layout, B=2, H=2, D=64, dtype=torch.float32, kv_len=kv_len)[0])
    assert torch.equal(outs[0], outs[1])


@needs_process
def test_padded_text_keys_do_not_matter():
    video = Radial(decay=1.0, block_size=64, sink=False).build_layout((3, 4, 10))
    layout = with_text(video, 50)
    N, kvl = layout.seq_len, video.seq_len + 20
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, N, 1, 64, generator=gen).to(DEVICE) for _ in range(3))
    kv_len = torch.tensor([kvl])
    a = block_sparse_attention(q, k, v, layout, kv_len, backend="triton")
    k[:, kvl:] = 1e3  # would dominate the softmax if it leaked in
    v[:, kvl:] = 1e4
    b = block_sparse_attention(q, k, v, layout, kv_len, backend="triton")
    assert torch.equal(a, b)


@needs_process
def test_per_head_lut_groups():
    grid = (4, 8, 8)
    a = Radial(decay=0.3, block_size=64, sink=False).build_layout(grid)
    b = Radial(decay=2.0, block_size=64, sink=True).build_layout(grid)
    layout = stacked(a, b)
    assert layout.kv_counts.shape[0] == 2
    check(layout, B=1, H=2, D=64, dtype=torch.float32)
    # G = B * H: the program of (batch b, head h) uses row b * H + h.
    check(stacked(a, b, b, a), B=2, H=2, D=64, dtype=torch.float16)


@needs_process
def test_empty_rows_and_sub_block_tiles():
    tiling = build_tiling((1, 16, 32), None, 64)
    nb = tiling.num_blocks
    mask = torch.rand(nb, nb, generator=torch.Generator().manual_seed(1)) < 0.4
    mask[0] = False  # a query block with no key block: output 0
    mask[1] = True
    layout = layout_from_block_mask(mask, tiling)
    out, _ = check(layout, B=1, H=1, D=64, dtype=torch.float32)
    assert out[:, :64].abs().max() == 0
    # Kernel tiles smaller than the layout's blocks: 2 x 32-row query tiles, 2 key sub-tiles.
    check(layout, B=1, H=1, D=64, dtype=torch.float32, config={"BLOCK_M": 32, "BLOCK_N": 32})


@needs_process
@pytest.mark.parametrize("use_tma", [True, False], ids=["descriptors", "pointers"])
def test_load_paths_and_strided_inputs(use_tma):
    layout = Neighborhood(window=(2, 3, 5), block_size=64).build_layout((2, 6, 10))
    N, H, D = layout.seq_len, 2, 64
    gen = torch.Generator().manual_seed(5)
    qkv = torch.randn(1, N, 3, H, D, generator=gen).to(DEVICE, torch.float16)  # a fused projection
    q, k, v = qkv.unbind(2)  # strided views
    lay = layout.to(DEVICE)
    out = bst.block_sparse_attention_fwd(q, k, v, lay.kv_counts, lay.kv_indices, lay.kv_partial, lay.q_lo, lay.q_hi,
                                         lay.k_coord, None, None, 64, use_tma=use_tma)
    ref = reference_block_sparse_attention(q.double(), k.double(), v.double(), lay)
    assert rel_err(out, ref) < TOL[torch.float16]


@needs_process
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("mask", MASKS)
def test_box_test_edges_and_empty_boxes(dtype, mask, monkeypatch):
    # Every block partial, random boxes whose edges land on key coordinates (the unsigned range
    # test must keep lo and hi inclusive), some starting below 0 (padding keys, coordinate -1,
    # must still need the group coordinate to reject them) and some empty (must admit nothing).
    from ditaccel.kernels.layout import BOX_MAX

    tiling = build_tiling((2, 12, 20), None, 64)  # 480 tokens: the last block is partly padding
    n = tiling.canon_len
    gen = torch.Generator().manual_seed(19)
    lo = torch.randint(-2, 10, (n, 4), generator=gen, dtype=torch.int32)
    hi = lo + torch.randint(0, 12, (n, 4), generator=gen, dtype=torch.int32)
    lo[:, 0], hi[:, 0] = 0, 0  # group coordinate
    lo[:, 1], hi[:, 1] = 0, BOX_MAX
    empty = torch.rand(n, generator=gen) < 0.1
    lo[empty], hi[empty] = BOX_MAX, -1
    nb = tiling.num_blocks
    counts, idx, flags = pack_block_mask(torch.ones(nb, nb, dtype=torch.bool), torch.ones(nb, nb, dtype=torch.bool))
    layout = BlockLayout(64, n, counts, idx, flags, lo, hi, tiling.coords.clone(), tiling)
    use_mask(monkeypatch, mask, layout)
    out, _ = check(layout, B=1, H=1, D=64, dtype=dtype)
    assert out[0, empty.to(out.device)].abs().max() == 0


@needs_process
@pytest.mark.parametrize("use_tma", [True, False], ids=["descriptors", "pointers"])
@pytest.mark.parametrize("D", [64, 128])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_unpadded_raster_sequence(dtype, D, use_tma):
    # 6 x 8 x 11 = 528 tokens, layout 576 (9 blocks of 64): the last block holds 16 real tokens
    # and q, k, v stop there. Two batches: the last tile of batch 0 must not touch batch 1.
    layout = Radial(decay=0.5, block_size=64, sink=True).build_layout((6, 8, 11))
    N = 6 * 8 * 11
    assert N % 64 and layout.seq_len == 576
    gen = torch.Generator().manual_seed(13)
    q, k, v = (torch.randn(2, N, 2, D, generator=gen).to(DEVICE, dtype) for _ in range(3))
    lay = layout.to(DEVICE)
    ref = reference_block_sparse_attention(q.double(), k.double(), v.double(), lay)
    padded = [torch.cat([x.double(), x.new_zeros(2, layout.seq_len - N, 2, D).double()], 1) for x in (q, k, v)]
    assert torch.equal(ref, reference_block_sparse_attention(*padded, lay)[:, :N])  # the oracle pads
    for config in (None, {"BLOCK_M": 32, "BLOCK_N": 32}):  # 32-row tiles: one lies wholly past N
        out = bst.block_sparse_attention_fwd(q, k, v, lay.kv_counts, lay.kv_indices, lay.kv_partial, lay.q_lo, lay.q_hi,
                                             lay.k_coord, None, None, 64, use_tma=use_tma, config=config)
        assert out.shape == q.shape and torch.isfinite(out).all()
        assert rel_err(out, ref) < TOL[dtype]
    kv_len = torch.tensor([N - 40, N + 30], dtype=torch.int32)  # a key length past N is cut at N
    out = block_sparse_attention(q, k, v, lay, kv_len.to(DEVICE), backend="triton")
    assert rel_err(out, reference_block_sparse_attention(q.double(), k.double(), v.double(), lay, kv_len)) < TOL[dtype]


@needs_process
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_sparse_attention_raster_without_copies_equals_padded_path(dtype, monkeypatch):
    from ditaccel.kernels.tiling import TokenTiling
    from ditaccel.plugins.sparse_attention import SparseAttention

    grid, H, D = (5, 8, 13), 2, 64
    runner = SparseAttention(Radial(decay=0.5, block_size=64, sink=True), backend="triton")
    gen = torch.Generator().manual_seed(17)
    qkv = torch.randn(1, 5 * 8 * 13, 3, H, D, generator=gen).to(DEVICE, dtype)  # a fused projection
    q, k, v = qkv.unbind(2)
    layout = runner.layout(grid, 0, q.device)
    assert layout.seq_len > q.shape[1]
    tiling = layout.tiling
    padded = block_sparse_attention(*(tiling.to_canonical(x).contiguous() for x in (q, k, v)), layout, backend="triton")
    copies = []
    monkeypatch.setattr(TokenTiling, "to_canonical", lambda self, x, dim=1: copies.append(1))
    out = runner(q, k, v, grid)
    assert not copies
    assert torch.equal(out, tiling.from_canonical(padded))


MODEL_ORDER_CASES = {
    # name: method, grid, text tokens, text position, text mask, head_dim, the path the kernel takes
    "tiled_ragged_grid": (Neighborhood(window=(2, 3, 5), block_size=64), (3, 6, 10), 0, "none", False, 64, "box"),
    "tiled_text_first_masked": (Neighborhood(window=(2, 5, 5), block_size=64), (2, 5, 7), 70, "first", True, 64, "box"),
    "tiled_text_last_hd128": (Neighborhood(window=(2, 4, 4), stride=(2, 4, 4), tile=(1, 8, 8), block_size=64), (2, 8, 16), 40,
                              "last", False, 128, "box"),
    "raster_text_first": (Radial(decay=0.5, block_size=64, sink=True), (3, 5, 9), 50, "first", True, 64, "rows"),
    "raster_text_last": (Radial(decay=1.0, block_size=64, sink=False), (2, 6, 11), 30, "last", False, 64, "rows"),
    "dilation_gathers": (Neighborhood(window=(2, 3, 3), dilation=(1, 2, 2), block_size=64), (2, 7, 9), 20, "first", True, 64,
                         "gather"),
}


@needs_process
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("token_path", ["box", "gather"])
@pytest.mark.parametrize("name", list(MODEL_ORDER_CASES))
def test_model_order_reads_tokens_in_place(name, token_path, dtype, monkeypatch):
    """Model-order q, k, v (video raster, text first/last, padded text per sample) through the
    Triton op against the reference's explicit canonical sequence. Tiled layouts either have keys
    and values read as grid boxes in place (queries gathered) or go through one gather per tensor
    (token_path; dilated windows always do); raster ones are read as rows."""
    from ditaccel.kernels import ops
    from ditaccel.kernels.attention import block_sparse_attention_model_order
    from ditaccel.plugins.sparse_attention import SparseAttention

    method, grid, text_len, position, masked, D, path = MODEL_ORDER_CASES[name]
    B, H = 2, 2
    n_video = grid[0] * grid[1] * grid[2]
    gen = torch.Generator().manual_seed(23)
    qkv = torch.randn(B, n_video + text_len, 3, H, D, generator=gen).to(DEVICE, dtype)  # a fused projection
    q, k, v = qkv.unbind(2)
    mask = None
    if masked:
        mask = torch.rand(B, text_len, generator=gen) < 0.7
        mask[:, 0] = True
    runner = SparseAttention(method, backend="triton")
    monkeypatch.setattr(ops, "TOKEN_PATH", token_path)
    if token_path == "gather" and path == "box":
        path = "gather"
    gathers = []
    real_gather = ops._gather
    monkeypatch.setattr(ops, "_gather", lambda x, i, out=None: gathers.append(1) or real_gather(x, i, out=out))
    out = runner(q, k, v, grid, text_len=text_len, text_position=position, text_mask=mask)
    # gather: q, k, v in and the output back; grid boxes: the queries only; rows: nothing
    assert len(gathers) == {"gather": 4, "box": 1, "rows": 0}[path]
    layout = runner.layout(grid, text_len, q.device)
    first = position == "first"
    kwargs = dict(video_start=text_len if first else 0, text_start=0 if first else n_video, text_len=text_len)
    if masked:
        kwargs["text_order"] = torch.argsort((~mask).to(torch.int8), dim=1, stable=True).to(DEVICE)
        kwargs["kv_len"] = (layout.tiling.canon_len + mask.sum(1)).to(DEVICE, torch.int32)
    ref = block_sparse_attention_model_order(q.double(), k.double(), v.double(), layout, backend="reference", **kwargs)
    assert out.shape == q.shape and torch.isfinite(out).all()
    assert rel_err(out, ref) < TOL[dtype]
    assert (layout.tiling.tile is not None) == (path != "rows")


TILED_CASES = {
    # name: method, grid (the tile divides it), text tokens, text position, text mask, head_dim
    "text_last_hd128": (Neighborhood(window=(2, 4, 4), stride=(2, 4, 4), tile=(1, 8, 8), block_size=64), (2, 8, 16), 40,
                        "last", False, 128),
    "text_first_masked_partial": (Neighborhood(window=(2, 3, 5), tile=(2, 4, 8), block_size=64), (4, 8, 8), 70, "first", True, 64),
    "video_only": (Neighborhood(window=(3, 3, 3), tile=(2, 4, 8), block_size=64), (4, 4, 16), 0, "none", False, 64),
}


@needs_process
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("name", list(TILED_CASES))
def test_video_tiled_reads_rows_without_copies(name, dtype, monkeypatch):
    """A tile-order forward hands the video tokens over tiled already: the op reads them as rows,
    moves none, and equals the reference on the same tokens in raster order (reordered)."""
    from ditaccel.kernels import ops
    from ditaccel.plugins.sparse_attention import SparseAttention

    method, grid, text_len, position, masked, D = TILED_CASES[name]
    B, H = 2, 2
    n_video = grid[0] * grid[1] * grid[2]
    gen = torch.Generator().manual_seed(29)
    q, k, v = (torch.randn(B, n_video + text_len, H, D, generator=gen).to(DEVICE, dtype) for _ in range(3))
    mask = None
    if masked:
        mask = torch.rand(B, text_len, generator=gen) < 0.7
        mask[:, 0] = True
    runner = SparseAttention(method, backend="triton")
    tiling = runner.video_layout(grid).tiling
    first = position == "first"
    video = slice(text_len if first else 0, (text_len if first else 0) + n_video)

    def tiled(x):
        y = x.clone()
        y[:, video] = tiling.to_canonical(x[:, video])
        return y

    gathers = []
    real_gather = ops._gather
    monkeypatch.setattr(ops, "_gather", lambda x, i, out=None: gathers.append(1) or real_gather(x, i, out=out))
    out = runner(tiled(q), tiled(k), tiled(v), grid, text_len=text_len, text_position=position, text_mask=mask, video_tiled=True)
    assert not gathers
    ref = SparseAttention(method, backend="reference")(q.double(), k.double(), v.double(), grid, text_len=text_len,
                                                       text_position=position, text_mask=mask)
    assert out.shape == q.shape and torch.isfinite(out).all()
    assert rel_err(out, tiled(ref)) < TOL[dtype]


def test_video_tiled_refuses_padded_tilings():
    from ditaccel.kernels.attention import block_sparse_attention_model_order

    layout = Neighborhood(window=(2, 3, 3), tile=(2, 4, 8), block_size=64).build_layout((3, 8, 8))
    x = torch.zeros(1, 3 * 8 * 8, 1, 64)
    with pytest.raises(ValueError, match="video_tiled=True needs a tiling without padding"):
        block_sparse_attention_model_order(x, x, x, layout, video_tiled=True, backend="reference")


@needs_process
def test_model_order_padded_text_never_leaks():
    """Padded text keys and tokens past the grid's edge tiles must not reach any output."""
    from ditaccel.plugins.sparse_attention import SparseAttention

    grid, text_len, H, D = (2, 5, 7), 40, 1, 64
    runner = SparseAttention(Neighborhood(window=(2, 3, 3), block_size=64), backend="triton")
    gen = torch.Generator().manual_seed(29)
    q, k, v = (torch.randn(1, text_len + 70, H, D, generator=gen).to(DEVICE) for _ in range(3))
    mask = torch.ones(1, text_len, dtype=torch.bool)
    mask[:, 25:] = False
    a = runner(q, k, v, grid, text_len=text_len, text_position="first", text_mask=mask)
    k[:, 25:text_len] = 1e3
    v[:, 25:text_len] = 1e4
    b = runner(q, k, v, grid, text_len=text_len, text_position="first", text_mask=mask)
    assert torch.equal(a[:, :25], b[:, :25]) and torch.equal(a[:, text_len:], b[:, text_len:])


@needs_process
def test_unsupported_head_dim_is_padded_and_scale_kept():
    layout = Radial(decay=1.0, block_size=64, sink=False).build_layout((2, 8, 8)).to(DEVICE)
    gen = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(1, layout.seq_len, 1, 40, generator=gen).to(DEVICE) for _ in range(3))
    out = block_sparse_attention(q, k, v, layout, backend="triton", scale=0.3)
    ref = reference_block_sparse_attention(q.double(), k.double(), v.double(), layout, scale=0.3)
    assert out.shape == q.shape and rel_err(out, ref) < TOL[torch.float32]


@needs_process
def test_custom_op_compiles_without_graph_break():
    from ditaccel.kernels.ops import block_sparse_attention_op

    layout = Radial(decay=1.0, block_size=64, sink=False).build_layout((2, 8, 8)).to(DEVICE)
    gen = torch.Generator().manual_seed(9)
    q, k, v = (torch.randn(1, layout.seq_len, 1, 64, generator=gen).to(DEVICE) for _ in range(3))
    kv_len = torch.tensor([layout.seq_len - 5], dtype=torch.int32, device=DEVICE)
    args = (q, k, v, layout.kv_counts, layout.kv_indices, layout.kv_partial, layout.q_lo, layout.q_hi, layout.k_coord,
            kv_len, 0.125, 64, False)
    torch.library.opcheck(block_sparse_attention_op, args, test_utils=("test_schema", "test_faketensor"))

    def f(q, k, v):
        return block_sparse_attention(q * 1.0, k, v, layout, kv_len, backend="triton") + 1.0

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


@needs_process
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_token_gather_round_trip(dtype):
    from ditaccel.kernels.permute_triton import gather_tokens, gather_tokens_reference, inverse_index

    tiling = build_tiling((3, 7, 9), (1, 4, 4), 16)  # ragged: padding in the canonical order
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(2, tiling.num_tokens, 3, 40, generator=gen).to(DEVICE, dtype)
    to_canon = inverse_index(tiling.raster_to_canon.to(DEVICE), tiling.canon_len)
    canon = gather_tokens(x, to_canon)
    assert torch.equal(canon, tiling.to_canonical(x))
    assert torch.equal(canon, gather_tokens_reference(x, to_canon))
    back = gather_tokens(canon, tiling.raster_to_canon.to(DEVICE))
    assert torch.equal(back, x)


@needs_process
@pytest.mark.parametrize("method", ["radial", "neighborhood_tile_order"])
def test_patched_wan_regional_compile_has_no_graph_break(method, monkeypatch):
    """diffusers' compile_repeated_blocks(fullgraph=True) over a patched transformer: a graph break
    anywhere in a block (our op included) raises; the compiled forward equals the eager one. The
    neighbourhood's (1, 8, 8) tiles divide the 3x8x8 grid: its blocks run in tile order."""
    diffusers = pytest.importorskip("diffusers")
    import ditaccel
    from ditaccel.kernels import ops

    calls = []
    real = ops.block_sparse_attention_placed
    monkeypatch.setattr(ops, "block_sparse_attention_placed", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    tiled = []
    real_op = ops.triton_model_order_attention
    monkeypatch.setattr(ops, "triton_model_order_attention", lambda *a, **kw: tiled.append(kw["video_tiled"]) or real_op(*a, **kw))
    cfg = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=64, in_channels=16, out_channels=16, text_dim=32,
               freq_dim=32, ffn_dim=64, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6)
    torch.manual_seed(0)
    model = diffusers.WanTransformer3DModel(**cfg).eval().to(DEVICE)
    gen = torch.Generator().manual_seed(1)
    inputs = dict(hidden_states=torch.randn(1, 16, 3, 16, 16, generator=gen).to(DEVICE), timestep=torch.tensor([500], device=DEVICE),
                  encoder_hidden_states=torch.randn(1, 8, 32, generator=gen).to(DEVICE))
    torch._dynamo.reset()
    config = (ditaccel.Radial(decay=0.5, sink=True, block_size=64) if method == "radial"
              else ditaccel.Neighborhood(window=(2, 5, 5), tile=(1, 8, 8), block_size=64))
    # force_sparse: on a GPU the cost model would time (and might choose) dense for these tiny shapes
    with torch.no_grad(), ditaccel.patch(model, config, schedule=ditaccel.Schedule(dense_steps=0, dense_layers=0),
                                         backend="triton", force_sparse=True):
        eager = model(**inputs, return_dict=False)[0]
        assert tiled == [method != "radial"] * 2
        assert len(calls) == 2  # one sparse call per layer
        model.compile_repeated_blocks(fullgraph=True, backend="aot_eager")
        compiled = model(**inputs, return_dict=False)[0]
    assert len(calls) == 4
    assert torch.allclose(eager, compiled, atol=1e-5)


@needs_process
def test_token_path_auto_picks_one_and_keeps_it(monkeypatch):
    from ditaccel.kernels import ops
    from ditaccel.plugins.sparse_attention import SparseAttention

    monkeypatch.setattr(ops, "TOKEN_PATH", "auto")
    monkeypatch.setattr(ops, "_chosen_paths", {})
    runner = SparseAttention(Neighborhood(window=(2, 3, 5), block_size=64), backend="triton")
    gen = torch.Generator().manual_seed(31)
    q, k, v = (torch.randn(1, 3 * 6 * 10, 2, 64, generator=gen).to(DEVICE) for _ in range(3))
    a = runner(q, k, v, (3, 6, 10))
    assert list(ops._chosen_paths.values()) in (["box"], ["gather"])
    b = runner(q, k, v, (3, 6, 10))
    assert len(ops._chosen_paths) == 1 and torch.equal(a, b)


@needs_process
def test_config_chooses_the_mask():
    # The autotuner's DOT_MASK key: the same layout through either mask, both exact.
    layout = Neighborhood(window=(3, 5, 5), block_size=64).build_layout((3, 6, 9))
    outs = [check(layout, B=1, H=1, D=64, dtype=torch.float32, config={"BLOCK_M": 64, "BLOCK_N": 64, "DOT_MASK": dot})[0]
            for dot in (True, False)]
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)


@needs_process
def test_dot_mask_tables_are_built_once_per_layout_and_dropped_with_it(monkeypatch):
    # Dropped with it: also no runtime cache may keep a used layout alive (ops._device_layouts once did).
    import gc

    built = []
    real = bst.mask_columns
    monkeypatch.setattr(bst, "mask_columns", lambda *a, **kw: built.append(1) or real(*a, **kw))
    base = Neighborhood(window=(3, 5, 5), block_size=64).build_layout((3, 6, 9))  # kept in the method's layout cache
    layout = BlockLayout(base.block_size, base.seq_len, base.kv_counts, base.kv_indices, base.kv_partial, base.q_lo, base.q_hi,
                         base.k_coord.clone(), base.tiling).to(DEVICE)
    for seed in (0, 1):
        check(layout, B=1, H=1, D=64, dtype=torch.float32, seed=seed)
    assert len(built) == 1 and id(layout.k_coord) in {id(t) for t in bst._DOT_MASKS.keys()}
    key = id(layout.k_coord)
    del layout
    gc.collect()
    assert key not in {id(t) for t in bst._DOT_MASKS.keys()}
