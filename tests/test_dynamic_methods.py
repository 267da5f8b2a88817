"""The dynamic methods (piecewise, top-k, pyramid) patched into every model family: at full
density they are exactly dense attention (token order, text handling and padding included), a
sparse call equals the functional layer on the method's token order, summary() counts what they
computed, and unpatch restores."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import ditaccel
from ditaccel.kernels import piecewise_attention, pyramid_attention, pyramid_levels, topk_attention
from ditaccel.method_spec import parse_method_spec
from ditaccel.patching import PatchState
from ditaccel.plugins.piecewise import piecewise_compute_fraction

from tiny_pipelines import BUILDERS

FAMILIES = sorted(BUILDERS)
GRIDS = {"flux": (1, 20, 22)}
DEFAULT_GRID = (6, 8, 12)  # 576 video tokens: not a multiple of the block

FULL = {
    "piecewise": ditaccel.Piecewise(density=1.0),
    "topk": ditaccel.TopK(density=1.0),
    "pyramid": ditaccel.Pyramid(mode="fraction", fractions=(1.0, 0.0, 0.0, 0.0), block_size=64),
}


@pytest.fixture(scope="module")
def cases():
    return {}


def get_case(cases, family):
    if family not in cases:
        cases[family] = BUILDERS[family]()
    return cases[family]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", sorted(FULL))
def test_full_density_equals_the_unpatched_model(family, name, cases):
    case = get_case(cases, family)
    transformer = case.pipe.transformer
    inputs = case.transformer_inputs(GRIDS.get(family, DEFAULT_GRID))
    with torch.no_grad():
        dense = transformer(**inputs)[0]
        with ditaccel.patch(transformer, FULL[name], schedule=ditaccel.Schedule()) as handle:
            sparse = transformer(**inputs)[0]
            fraction = handle.summary().compute_fraction
    torch.testing.assert_close(sparse, dense, atol=2e-5, rtol=1e-4)
    assert fraction == pytest.approx(1.0, abs=1e-6)  # every block exact (piecewise: no summary key left)


def _spy(monkeypatch):
    calls = []
    original = PatchState.attend

    def recording(self, layer, q, k, v, **kwargs):
        out = original(self, layer, q, k, v, **kwargs)
        calls.append(dict(state=self, q=q, k=k, v=v, out=out, tiled=self.context.tile_order, **kwargs))
        return out

    monkeypatch.setattr(PatchState, "attend", recording)
    return calls


@pytest.mark.parametrize("family", ["wan", "hunyuan_video", "flux"])
@pytest.mark.parametrize(
    "method",
    [ditaccel.Piecewise(density=0.3), ditaccel.TopK(density=0.3, token_order="raster"),
     ditaccel.Pyramid(mode="fraction", fractions=(0.3, 0.2, 0.2, 0.2), block_size=64),
     ditaccel.Pyramid(mode="mass", block_size=64, importance="score")],
    ids=["piecewise", "topk-raster", "pyramid", "pyramid-score"],
)
def test_sparse_call_equals_the_functional_layer_on_the_method_token_order(family, method, cases, monkeypatch):
    """Video queries: the functional layer on the video tokens in the method's order, valid text
    keys as exact extra keys; text queries: dense over every valid key."""
    case = get_case(cases, family)
    transformer = case.pipe.transformer
    grid = GRIDS.get(family, DEFAULT_GRID)
    calls = _spy(monkeypatch)
    with torch.no_grad(), ditaccel.patch(transformer, method, schedule=ditaccel.Schedule()):
        transformer(**case.transformer_inputs(grid))
    assert calls
    tiling = method.tiling(grid)
    n_video = grid[0] * grid[1] * grid[2]
    for call in calls:
        q, k, v, out = call["q"], call["k"], call["v"], call["out"]
        text_len, text_mask, scale = call.get("text_len", 0), call.get("text_mask"), call.get("scale")
        first = call["state"].adapter.text_position == "first"
        video = slice(text_len, None) if first else slice(0, n_video)
        text = slice(0, text_len) if first else slice(n_video, None)
        B = q.shape[0]
        valid = torch.ones(B, text_len, dtype=torch.bool) if text_mask is None else text_mask.bool()
        # Extra keys per sample: the valid text tokens first, in order (then padding, cut off).
        order = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)
        pick = lambda x: torch.stack([x[b, text][order[b]] for b in range(B)])  # noqa: E731
        extra = (pick(k), pick(v), valid.sum(1).int()) if text_len else None
        qv, kv, vv = (x[:, video] for x in (q, k, v))
        if not call["tiled"]:
            qv, kv, vv = (tiling.to_canonical(x) for x in (qv, kv, vv))
        if isinstance(method, ditaccel.Piecewise):
            ref = piecewise_attention(qv, kv, vv, density=0.3, order=1, scale=scale, backend="reference", extra_kv=extra)
        elif isinstance(method, ditaccel.TopK):
            ref = topk_attention(qv, kv, vv, density=0.3, scale=scale, backend="reference", extra_kv=extra)
        else:
            levels = pyramid_levels(qv, kv, vv, block_size=64, mode=method.mode, fractions=method.fractions, scale=scale,
                                    importance=method.importance)
            ref = pyramid_attention(qv, kv, vv, levels=levels, block_size=64, scale=scale, backend="reference", extra_kv=extra)
        got = out[:, video] if call["tiled"] else tiling.to_canonical(out[:, video])
        torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-4)
        if text_len:
            keys = torch.ones(B, q.shape[1], dtype=torch.bool)
            keys[:, text] = valid
            dense = F.scaled_dot_product_attention(q[:, text].transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                   attn_mask=keys[:, None, None, :], scale=scale)
            torch.testing.assert_close(out[:, text], dense.transpose(1, 2), atol=2e-5, rtol=1e-4)


def test_tile_order_forward_gives_the_same_output(cases):
    case = get_case(cases, "wan")
    transformer = case.pipe.transformer
    inputs = case.transformer_inputs((4, 8, 8))  # 256 tokens: the (4, 4, 4) tile divides the grid
    method = ditaccel.Piecewise(density=0.3)
    with torch.no_grad():
        with ditaccel.patch(transformer, method, schedule=ditaccel.Schedule()) as handle:
            tiled = transformer(**inputs)[0]
            assert "tile order" in handle.summary().token_order["WanTransformer3DModel"]
        with ditaccel.patch(transformer, method, schedule=ditaccel.Schedule(), tile_order=False):
            moved = transformer(**inputs)[0]
    torch.testing.assert_close(tiled, moved, atol=1e-5, rtol=1e-5)


def test_summary_counts_what_the_dynamic_methods_computed(cases):
    case = get_case(cases, "wan")
    steps = case.call_kwargs["num_inference_steps"]
    n_video = 5 * 5 * 9  # the generation's 225 video tokens: 4 blocks of 64, the last holding 33
    with ditaccel.patch(case.pipe, ditaccel.TopK(density=0.3), schedule=ditaccel.Schedule(dense_steps=1, dense_layers=1)) as handle:
        case.generate()
        summary = handle.summary()
    sparse = piecewise_compute_fraction(n_video, 64, 0.3, approximate=False)
    rows = summary.rows
    assert rows[0]["method"] == "dense" and rows[1]["method"] == "topk"
    assert rows[1]["block_density"] == pytest.approx(sparse)
    # Layer 0 always dense, layer 1 dense on step 0 only.
    assert summary.compute_fraction == pytest.approx((steps + 1 + (steps - 1) * sparse) / (2 * steps))
    with ditaccel.patch(case.pipe, ditaccel.Pyramid(mode="fraction", block_size=64), schedule=ditaccel.Schedule()) as handle:
        case.generate()
        fraction = handle.summary().compute_fraction
    # Of 4 blocks the default fractions keep one exact (10%, at least one) and skip the rest (the
    # cumulative counts 0.4, 0.6, 0.6, 1.4 round to 0, 1, 1, 1). Which block depends on the data, so
    # the fraction lies between the short block's share and a full block's.
    assert 33 / n_video - 1e-6 <= fraction <= 64 / n_video + 1e-6


def test_unpatch_restores_bit_identically(cases):
    case = get_case(cases, "wan")
    baseline = case.generate()
    for method in ("piecewise", "pyramid", "topk"):
        with ditaccel.patch(case.pipe, method):
            case.generate()
        assert torch.equal(case.generate(), baseline)


def test_presets_and_specs():
    from ditaccel.presets import preset

    method, schedule = preset("pyramid", "wan")
    assert method == ditaccel.Pyramid(mode="fraction", importance="score") and schedule.dense_steps == 0.3
    assert preset("pyramid", "cogvideox")[0] == method
    assert preset("piecewise", "flux")[1].dense_layers == 4
    spec = parse_method_spec("piecewise(density=0.2, order=0, dense_steps=0.1)")
    assert spec.method == ditaccel.Piecewise(density=0.2, order=0)
    assert spec.patch_arguments("wan")["schedule"].dense_steps == 0.1
    assert parse_method_spec("topk").method == "topk"
    assert parse_method_spec("pyramid(mode='mass', importance='score')").method == ditaccel.Pyramid(mode="mass", importance="score")


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: ditaccel.Piecewise(density=0.0), "density"),
        (lambda: ditaccel.Piecewise(order=2), "order"),
        (lambda: ditaccel.TopK(token_order="hilbert"), "token_order"),
        (lambda: ditaccel.Pyramid(mode="topk"), "mode"),
        (lambda: ditaccel.Pyramid(fractions=(0.5, 0.5, 0.5, 0.0)), "fractions"),
        (lambda: ditaccel.Pyramid(thresholds=(0.5, 0.4, 0.6, 0.8)), "thresholds"),
        (lambda: ditaccel.Pyramid(samples=0), "samples"),
        (lambda: ditaccel.Pyramid(importance="oracle"), "importance"),
        (lambda: ditaccel.Pyramid(importance="score", samples=16), "samples"),
        (lambda: ditaccel.Piecewise(block_size=32), "block_size"),
    ],
)
def test_bad_configs_name_the_parameter(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


@pytest.mark.parametrize("method", [ditaccel.Piecewise(density=0.3), ditaccel.Pyramid(mode="mass", block_size=64)],
                         ids=["piecewise", "pyramid"])
def test_regional_compile_of_a_dynamic_method_on_the_reference_backend(method, cases):
    """compile_repeated_blocks(fullgraph=True): the per-call selection, the attention and the
    device-side computed-fraction counter trace without a graph break; same output as eager."""
    from torch._dynamo.utils import counters

    case = get_case(cases, "wan")
    transformer = case.pipe.transformer
    inputs = case.transformer_inputs(DEFAULT_GRID)
    torch._dynamo.reset()
    counters.clear()
    try:
        with torch.no_grad(), ditaccel.patch(transformer, method, schedule=ditaccel.Schedule(), backend="reference") as handle:
            eager = transformer(**inputs)[0]
            transformer.compile_repeated_blocks(fullgraph=True, backend="eager")
            compiled = transformer(**inputs)[0]
            summary = handle.summary()
    finally:
        for block in transformer.blocks:
            block._compiled_call_impl = None  # the module-scoped case is shared with other tests
        torch._dynamo.reset()
    assert counters["stats"]["unique_graphs"] == 1
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)
    # The compiled forward's calls were counted too: 2 forwards x 2 sparse layers.
    assert [row["calls"] for row in summary.rows] == [2, 2]
    assert 0 < summary.compute_fraction < 1


@pytest.mark.parametrize("grid, block", [((21, 45, 80), 64), ((13, 30, 45), 128), ((5, 5, 9), 64), ((1, 20, 22), 64)])
def test_tile_order_of_the_dynamic_methods_is_a_permutation_with_whole_tiles_as_blocks(grid, block):
    """Whole tiles first: each is exactly one block (a compact 3-D region); the edge tiles the grid
    cuts short follow. The tiling's coordinates are those of the raster tokens it moves."""
    from ditaccel.plugins.dynamic import dynamic_tiling

    tiling = dynamic_tiling(grid, block, "tiled")
    n = tiling.num_tokens
    assert tiling.canon_len == n and torch.equal(tiling.raster_to_canon.sort().values, torch.arange(n))
    T, H, W = grid
    r = torch.arange(n)
    assert torch.equal(tiling.coords[tiling.raster_to_canon, 1:].long(), torch.stack([r // (H * W), (r // W) % H, r % W], 1))
    tile = torch.tensor(tiling.tile)
    whole_tiles = math.prod((g // t for g, t in zip(grid, tiling.tile)))
    blocks = tiling.coords[: whole_tiles * block, 1:].long().view(whole_tiles, block, 3)
    span = blocks.amax(1) - blocks.amin(1) + 1
    assert bool((span == tile).all()) and bool((blocks.amin(1) % tile == 0).all())


def test_the_triton_backend_through_the_runtime(monkeypatch):
    """attend_dynamic with backend="triton" (Triton's interpreter on a CPU): text first and last, a
    text mask, batch 2, a grid the tile does not divide, strided views of the model's tensors;
    against the reference backend."""
    from ditaccel.plugins.sparse_attention import SparseAttention

    pytest.importorskip("triton")
    grid, text_len, B, H, D = (3, 5, 7), 9, 2, 2, 32
    n = math.prod(grid)
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, n + text_len, H, D, generator=gen) for _ in range(3))
    mask = torch.ones(B, text_len, dtype=torch.bool)
    mask[1, 4:] = False
    for method in (ditaccel.Piecewise(density=0.3), ditaccel.TopK(density=0.3),
                   ditaccel.Pyramid(mode="fraction", fractions=(0.3, 0.2, 0.2, 0.2), block_size=64)):
        for position in ("first", "last"):
            kw = dict(text_len=text_len, text_position=position, text_mask=mask)
            got = SparseAttention(method, backend="triton").attend_dynamic(q, k, v, grid, **kw)[0]
            ref = SparseAttention(method, backend="reference").attend_dynamic(q, k, v, grid, **kw)[0]
            torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
