"""Layouts + token order + reference backend against masks built from each method's definition."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ditaccel import Neighborhood, Radial
from ditaccel.kernels import build_tiling, reference_block_sparse_attention
from ditaccel.kernels.layout import mask_columns, pack_block_mask, with_text
from ditaccel.plugins.sparse_attention import SparseAttention

from reference_masks import joint_mask, neighborhood_mask, radial_mask


def sdpa_with_mask(q, k, v, mask):
    """q, k, v [B, S, H, D]; mask bool [B, S, S] or [S, S]."""
    if mask.dim() == 2:
        mask = mask[None]
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask[:, None])
    return out.transpose(1, 2)


def random_qkv(batch, seq, heads=2, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, seq, heads, dim, generator=g) for _ in range(3)]


NEIGHBORHOOD_CASES = [
    # grid, window, stride, dilation, causal
    ((5, 9, 11), (3, 5, 5), (1, 1, 1), (1, 1, 1), (False, False, False)),
    ((4, 10, 12), (2, 4, 6), (1, 2, 3), (1, 1, 1), (False, False, False)),  # even windows + stride
    ((4, 8, 8), (4, 8, 8), (4, 8, 8), (1, 1, 1), (False, False, False)),  # blocked: whole windows
    ((6, 9, 10), (3, 3, 3), (1, 1, 1), (2, 2, 3), (False, False, False)),  # dilation, ragged groups
    ((5, 7, 9), (3, 3, 5), (1, 1, 2), (1, 1, 1), (True, False, False)),  # causal in time
    ((4, 6, 6), (2, 3, 3), (2, 3, 3), (2, 1, 1), (True, True, False)),
    ((3, 5, 7), (3, 5, 7), (1, 1, 1), (1, 1, 1), (False, False, False)),  # window = grid
]


@pytest.mark.parametrize("grid,window,stride,dilation,causal", NEIGHBORHOOD_CASES)
@pytest.mark.parametrize("block_size", [64, 128])
def test_neighborhood_matches_definition(grid, window, stride, dilation, causal, block_size):
    method = Neighborhood(window=window, stride=stride, dilation=dilation, causal=causal, block_size=block_size)
    q, k, v = random_qkv(2, math.prod(grid))
    out = SparseAttention(method, backend="reference")(q, k, v, grid)
    expected = sdpa_with_mask(q, k, v, torch.from_numpy(neighborhood_mask(grid, window, stride, dilation, causal)))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("grid", [(1, 8, 12), (6, 8, 8), (16, 16, 16)])
def test_a_fractional_window_caps_the_stride(grid):
    # The neighbourhood preset's shape: stride 2 on a one-frame grid (window 1) is stride 1 in time.
    method = Neighborhood(window=(0.25, 0.75, 0.75), stride=2, block_size=64)
    window = method.resolve_window(grid)
    stride = tuple(min(2, w) for w in window)
    assert method.resolve_stride(grid) == stride
    q, k, v = random_qkv(1, math.prod(grid))
    out = SparseAttention(method, backend="reference")(q, k, v, grid)
    expected = sdpa_with_mask(q, k, v, torch.from_numpy(neighborhood_mask(grid, window, stride)))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="stride"):  # an int window keeps the strict check
        Neighborhood(window=(1, 6, 6), stride=2)


def test_perfectly_block_sparse_neighborhood_has_no_partial_blocks():
    # Stride groups (4,8,8) are whole tiles and every window starts on a tile edge
    # (leader - floor(w/2) = 4g+2-2, 8g+4-12): every block pair is whole.
    method = Neighborhood(window=(4, 24, 24), stride=(4, 8, 8), tile=(2, 8, 8))
    layout = method.build_layout((8, 32, 32))
    assert not layout.has_partial
    assert 0 < layout.block_density() < 0.5


@pytest.mark.parametrize("grid", [(8, 32, 32), (16, 16, 16), (4, 16, 48), (1, 32, 32)])
@pytest.mark.parametrize("window", [(0.375, 0.75, 0.75), (0.5, 0.5, 0.5), (1.0, 0.25, 1.0)])
def test_tile_stride_makes_fractional_windows_whole_blocks(grid, window):
    # stride="tile": one window per query tile, fractional windows rounded to an odd number of
    # tiles (or the whole dimension), so on grids the tile divides no block pair is partial; the
    # layout is the explicit config's and attends exactly the definition's keys.
    method = Neighborhood(window=window, stride="tile", block_size=64)
    tile, resolved = method.choose_tile(grid), method.resolve_window(grid)
    assert all(g % t == 0 for g, t in zip(grid, tile))
    for d in range(3):
        fraction_tokens = max(1, round(window[d] * grid[d]))
        whole = [n * tile[d] for n in range(1, grid[d] // tile[d] + 1, 2)] + [grid[d]]
        assert resolved[d] in whole
        assert abs(resolved[d] - fraction_tokens) == min(abs(c - fraction_tokens) for c in whole)
    stride = method.resolve_stride(grid)
    assert stride == tuple(min(t, w) for t, w in zip(tile, resolved))
    layout = method.build_layout(grid)
    assert not layout.has_partial
    explicit = Neighborhood(window=resolved, stride=stride, tile=tile, block_size=64).build_layout(grid)
    assert torch.equal(layout.kv_indices, explicit.kv_indices) and torch.equal(layout.kv_counts, explicit.kv_counts)
    q, k, v = random_qkv(1, math.prod(grid), seed=1)
    out = SparseAttention(method, backend="reference")(q, k, v, grid)
    expected = sdpa_with_mask(q, k, v, torch.from_numpy(neighborhood_mask(grid, resolved, stride)))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_tile_stride_rejects_other_strings():
    with pytest.raises(ValueError, match="stride.*tile"):
        Neighborhood(window=(0.5, 0.5, 0.5), stride="tiles")


@pytest.mark.parametrize("grid,window,dilation,causal", [
    ((6, 12, 16), (0.5, 0.5, 0.5), (2, 1, 1), (False, False, False)),  # dilated time
    ((8, 16, 16), (0.5, 0.75, 0.75), (1, 1, 1), (True, False, False)),  # causal time
    ((5, 9, 11), (0.5, 0.5, 0.5), (1, 1, 1), (False, False, False)),  # a grid the tile does not divide
    ((8, 16, 16), (4, 8, 0.5), (1, 1, 1), (False, False, False)),  # integer windows of whole tiles
])
def test_tile_stride_edge_cases_attend_the_definition(grid, window, dilation, causal):
    method = Neighborhood(window=window, stride="tile", dilation=dilation, causal=causal, block_size=64)
    resolved, stride = method.resolve_window(grid), method.resolve_stride(grid)
    q, k, v = random_qkv(1, math.prod(grid), seed=2)
    out = SparseAttention(method, backend="reference")(q, k, v, grid)
    expected = sdpa_with_mask(q, k, v, torch.from_numpy(neighborhood_mask(grid, resolved, stride, dilation, causal)))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_tile_stride_refuses_windows_it_cannot_place():
    # An integer window shorter than the tile would make stride = window (no neighbourhood left).
    with pytest.raises(ValueError, match=r'stride="tile" needs windows of at least one tile.*dimension 0'):
        Neighborhood(window=(1, 3, 3), stride="tile", block_size=64).build_layout((4, 8, 16))
    # A dimension shorter than its dilation: the same error as an explicit stride gives.
    with pytest.raises(ValueError, match="window\\*dilation must be <= the grid size"):
        Neighborhood(window=(0.5, 0.5, 0.5), stride="tile", dilation=(2, 1, 1), block_size=64).build_layout((1, 8, 16))


def test_a_whole_dimension_window_is_not_the_one_token_window():
    # Neighborhood(window=1.0) == Neighborhood(window=1) as dataclasses (1.0 == 1): the shared layout
    # cache must still tell them apart.
    one = SparseAttention(Neighborhood(window=(1, 1, 1), block_size=64)).video_layout((4, 8, 16))
    whole = SparseAttention(Neighborhood(window=(1.0, 1.0, 1.0), block_size=64)).video_layout((4, 8, 16))
    assert one.video_block_density() < 0.5 and whole.video_block_density() == 1.0


@pytest.mark.parametrize("grid,window,stride,dilation,causal,tile", [
    *(case + (None,) for case in NEIGHBORHOOD_CASES),
    ((4, 32, 32), (3, 20, 20), (1, 1, 1), (1, 1, 1), (False, False, False), (1, 8, 8)),  # stride 1, no padding
])
def test_partial_bits_name_exactly_the_failing_coordinates(grid, window, stride, dilation, causal, tile):
    # Bit c of a computed pair's flag is set iff some (real query, key) pair of the two blocks
    # fails coordinate c of the box test (a key block with padding tests every coordinate).
    layout = Neighborhood(window=window, stride=stride, dilation=dilation, causal=causal, block_size=64,
                          tile=tile).build_layout(grid)
    bs = layout.block_size
    kc = layout.k_coord.long().view(layout.num_blocks, bs, 4)
    lo, hi = layout.q_lo.long().view(layout.num_blocks, bs, 4), layout.q_hi.long().view(layout.num_blocks, bs, 4)
    seen_one_dim = False
    for qb in range(layout.num_blocks):
        for e in range(int(layout.kv_counts[0, qb])):
            kb, flag = int(layout.kv_indices[0, qb, e]), int(layout.kv_partial[0, qb, e])
            real_q, real_k = kc[qb, :, 0] != -1, kc[kb, :, 0] != -1
            passes = (lo[qb][real_q][:, None] <= kc[kb][real_k][None]) & (kc[kb][real_k][None] <= hi[qb][real_q][:, None])
            expected = sum(1 << c for c in range(4) if not bool(passes[..., c].all()))
            if bool(real_q.all()) and bool(real_k.all()):
                assert flag == expected, (qb, kb, flag, expected)
            else:  # padding: one coordinate more at most, one whose lower edges reject -1
                assert flag & expected == expected and bin(flag & ~expected).count("1") <= 1
                tested = [c for c in range(4) if flag >> c & 1]
                assert any(bool((lo[qb][real_q][:, c] >= 0).all()) for c in tested)
            seen_one_dim |= bin(flag).count("1") == 1
    if tile is not None:
        assert seen_one_dim  # stride-1 windows have blocks partial in one dimension only


@pytest.mark.parametrize("grid,window,stride,dilation,causal,tile", [
    *(case + (None,) for case in NEIGHBORHOOD_CASES),
    ((3, 13, 21), (2, 5, 5), (1, 1, 1), (1, 1, 1), (False, False, False), (2, 4, 8)),  # padding in every tile row
])
def test_mask_columns_count_the_failed_coordinates(grid, window, stride, dilation, causal, tile):
    # The kernel's dot mask: for every (query, key) pair of a block pair, the rows' penalties
    # (-1 per column whose value is outside the query's box, in the column's coordinate) times the
    # keys' one-hot columns must be minus the number of tested coordinates that the key fails.
    layout = Neighborhood(window=window, stride=stride, dilation=dilation, causal=causal, block_size=64,
                          tile=tile).build_layout(grid)
    dims = layout.partial_dims
    cols = mask_columns(layout.k_coord, layout.block_size, dims)
    if dims == 0:  # whole blocks only: nothing to mask
        assert cols is None
        return
    assert cols is not None and cols.width in (16, 32, 64)
    assert sorted(set(cols.columns.tolist())) == [c for c in range(4) if dims >> c & 1]
    bs, nb = layout.block_size, layout.num_blocks
    kc = layout.k_coord.long().view(nb, bs, 4)
    lo, hi = layout.q_lo.long().view(nb, bs, 4), layout.q_hi.long().view(nb, bs, 4)
    onehot = cols.onehot.view(nb, bs, cols.width)
    assert torch.equal(onehot.sum(-1), torch.full((nb, bs), float(bin(dims).count("1"))))  # one column per coordinate
    c = cols.columns.long()
    for qb in range(0, nb, 3):
        for kb in range(nb):
            vals = cols.values[kb].long()
            penalty = -((vals[None] < lo[qb][:, c]) | (vals[None] > hi[qb][:, c])).double()  # [bs, K]
            got = penalty @ onehot[kb].double().T
            fails = sum(((kc[kb][None, :, d] < lo[qb][:, None, d]) | (kc[kb][None, :, d] > hi[qb][:, None, d])).double()
                        for d in range(4) if dims >> d & 1)
            assert torch.equal(got, -fails), (qb, kb)


def test_mask_columns_refuse_blocks_with_too_many_values():
    # Raster blocks of 128 tokens along 100-token rows hold 100 w values: wider than the dot mask takes.
    coords = torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(2.0), torch.arange(2.0), torch.arange(64.0),
                                        indexing="ij"), -1).view(-1, 4).int()
    assert mask_columns(coords, 128, 0b1000) is not None  # 64 w values fit
    wide = torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(1.0), torch.arange(2.0), torch.arange(128.0),
                                      indexing="ij"), -1).view(-1, 4).int()
    assert mask_columns(wide, 128, 0b1000) is None
    assert mask_columns(wide, 128, 0) is None


@pytest.mark.parametrize("grid,decay,sink", [((9, 16, 16), 0.2, True), ((12, 10, 13), 0.5, False), ((17, 8, 8), 1.0, True)])
def test_radial_matches_definition(grid, decay, sink):
    method = Radial(decay=decay, sink=sink, block_size=64)
    q, k, v = random_qkv(1, math.prod(grid), seed=1)
    out = SparseAttention(method, backend="reference")(q, k, v, grid)
    expected = sdpa_with_mask(q, k, v, torch.from_numpy(radial_mask(grid, decay, sink, 64)))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    layout = SparseAttention(method).video_layout(grid)
    assert layout.video_block_density() < 1.0  # the grid is large enough to be sparse


def test_radial_density_matches_paper_scale():
    # Wan2.1 480p 81 frames: the notes measure ~0.34 block density with decay 0.2.
    layout = Radial(decay=0.2, sink=True).build_layout((21, 30, 52))
    assert 0.30 < layout.video_block_density() < 0.37


def test_radial_tiled_variant_keeps_whole_frames_near_the_diagonal():
    grid = (6, 16, 16)
    layout = Radial(decay=0.2, spatial="tiled", block_size=64, sink=False).build_layout(grid)
    assert layout.tiling.tile[0] == 1 and math.prod(layout.tiling.tile) == 64
    q, k, v = random_qkv(1, math.prod(grid), seed=2)
    out = SparseAttention(Radial(decay=0.2, spatial="tiled", block_size=64, sink=False), backend="reference")(q, k, v, grid)
    assert torch.isfinite(out).all()
    # Frame distance <= 1 is always whole-frame: the token mask from the layout covers it.
    blocks = layout.dense_block_mask()[0]
    per_frame = 256 // 64
    assert blocks[:per_frame, : 2 * per_frame].all()


@pytest.mark.parametrize("text_position", ["first", "last"])
@pytest.mark.parametrize("method", [Neighborhood(window=(2, 3, 5), block_size=64), Radial(decay=0.3, sink=False, block_size=64)])
def test_joint_text_with_padding(text_position, method):
    grid = (6, 8, 9)
    text_len = 21
    nv = math.prod(grid)
    q, k, v = random_qkv(2, nv + text_len, seed=3)
    text_valid = torch.ones(2, text_len, dtype=torch.bool)
    text_valid[0, 15:] = False  # right padding
    text_valid[1, ::4] = False  # holes anywhere are honoured too
    out = SparseAttention(method, backend="reference")(q, k, v, grid, text_len=text_len, text_position=text_position, text_mask=text_valid)
    if isinstance(method, Neighborhood):
        video = neighborhood_mask(grid, method.window, method.stride, method.dilation, method.causal)
    else:
        video = radial_mask(grid, method.decay, method.sink, method.block_size)
    expected = sdpa_with_mask(q, k, v, joint_mask(video, text_len, text_position, text_valid, 2))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_text_without_mask_attends_all_text_but_not_block_padding():
    grid = (3, 5, 7)
    q, k, v = random_qkv(1, math.prod(grid) + 10, seed=4)
    method = Neighborhood(window=(3, 5, 7), block_size=64)
    out = SparseAttention(method, backend="reference")(q, k, v, grid, text_len=10, text_position="last")
    torch.testing.assert_close(out, sdpa_with_mask(q, k, v, torch.ones(q.shape[1], q.shape[1], dtype=torch.bool)), atol=1e-5, rtol=1e-5)


def test_tiling_round_trip_and_padding_coordinates():
    tiling = build_tiling((5, 9, 11), (2, 8, 8), 128, dilation=(1, 2, 1))
    x = torch.randn(2, math.prod((5, 9, 11)), 3)
    canon = tiling.to_canonical(x)
    assert canon.shape[1] == tiling.canon_len and tiling.canon_len % 128 == 0
    torch.testing.assert_close(tiling.from_canonical(canon), x, rtol=0, atol=0)
    pad = tiling.coords[:, 0] == -1
    assert canon[:, pad].abs().sum() == 0
    assert int((~pad).sum()) == x.shape[1]


def test_layouts_are_built_once_per_grid():
    runner = SparseAttention(Neighborhood(window=(2, 3, 3), block_size=64), backend="reference")
    q, k, v = random_qkv(1, 4 * 6 * 6)
    runner(q, k, v, (4, 6, 6))
    first = runner.video_layout((4, 6, 6))
    runner(q, k, v, (4, 6, 6))
    assert runner.video_layout((4, 6, 6)) is first
    assert len(runner._video_layouts) == 1


def test_per_head_lut_groups():
    # Two heads with different block patterns (G = H): the reference honours each row group.
    tiling = build_tiling((2, 8, 8), None, 64)
    nb = tiling.num_blocks
    mask = torch.zeros(2, nb, nb, dtype=torch.bool)
    mask[0] = torch.eye(nb, dtype=torch.bool)
    mask[1] = True
    counts, idx, flags = pack_block_mask(mask)
    from ditaccel.kernels.layout import BlockLayout, full_boxes

    lo, hi = full_boxes(tiling.canon_len)
    layout = BlockLayout(64, tiling.canon_len, counts, idx, flags, lo, hi, tiling.coords, tiling)
    q, k, v = random_qkv(1, tiling.canon_len, heads=2)
    out = reference_block_sparse_attention(q, k, v, layout)
    diag = torch.block_diag(*[torch.ones(64, 64, dtype=torch.bool)] * nb)
    torch.testing.assert_close(out[:, :, 0], sdpa_with_mask(q[:, :, :1], k[:, :, :1], v[:, :, :1], diag)[:, :, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[:, :, 1], sdpa_with_mask(q[:, :, 1:], k[:, :, 1:], v[:, :, 1:], torch.ones_like(diag))[:, :, 0], atol=1e-5, rtol=1e-5)


def test_with_text_layout_shape():
    layout = with_text(Neighborhood(window=(2, 3, 3), block_size=64).build_layout((4, 6, 6)), 70)
    assert layout.num_text_blocks == 2
    assert layout.seq_len == layout.tiling.canon_len + 128
    assert (layout.kv_counts[0, -2:] == layout.num_blocks).all()


def test_gather_indices_match_the_scatter_path():
    # CUDA runs the Triton gather with these cached indices; the torch path must agree with it.
    from ditaccel.kernels.permute_triton import gather_tokens_reference

    tiling = build_tiling((3, 9, 10), (1, 8, 16), 128)
    x = torch.randn(2, 270, 2, 8)
    canon = gather_tokens_reference(x, tiling.device_index(x.device, "canon_to_raster"))
    torch.testing.assert_close(canon, tiling.to_canonical(x), rtol=0, atol=0)
    back = gather_tokens_reference(canon, tiling.device_index(x.device, "raster_to_canon"))
    torch.testing.assert_close(back, x, rtol=0, atol=0)
    assert tiling.device_index(x.device, "raster_to_canon") is tiling.device_index(x.device, "raster_to_canon")


def test_layouts_are_shared_between_patches():
    method = Neighborhood(window=(2, 3, 3), block_size=64)
    first = SparseAttention(method).video_layout((4, 6, 6))
    assert SparseAttention(Neighborhood(window=(2, 3, 3), block_size=64)).video_layout((4, 6, 6)) is first
    assert SparseAttention(Neighborhood(window=(2, 3, 4), block_size=64)).video_layout((4, 6, 6)) is not first
