"""Tile-order forward (ditaccel/tile_order.py): the blocks run on video tokens already in the
layout's tile order. It must give what the per-call token path gives (the same attention, only
the order of the work differs), be used exactly where it is valid, and leave nothing behind."""

from __future__ import annotations

import pytest
import torch

import ditaccel
from ditaccel.kernels.tiling import build_tiling
from ditaccel.patching import PatchState
from ditaccel.tile_order import reorder_tokens, uses_tile_order
from tiny_pipelines import BUILDERS

# Per family: a grid some 64-token tile divides (so tile order applies), a tile that really
# permutes it, and a window that leaves out blocks and cuts others (partial blocks stay exact).
EXACT = {
    "wan": ((4, 8, 16), (2, 4, 8)),
    "hunyuan_video": ((4, 8, 16), (2, 4, 8)),
    "cogvideox": ((4, 8, 16), (2, 4, 8)),
    "ltx": ((4, 8, 16), (2, 4, 8)),
    "flux": ((1, 16, 16), (1, 8, 8)),
}
SUPPORTED = sorted(EXACT)
TOLERANCE = 1e-5  # fp32: the same sums in another order

_cases: dict = {}


def tiny(family: str):
    if family not in _cases:
        _cases[family] = BUILDERS[family]()
    return _cases[family]


def method_for(family: str, tile) -> ditaccel.Neighborhood:
    window = (1, 3, 5) if family == "flux" else (3, 3, 5)
    return ditaccel.Neighborhood(window=window, tile=tile, block_size=64)


@pytest.fixture
def tile_order_seen(monkeypatch):
    """Whether each sparse attention call ran in a tile-order forward."""
    seen = []
    attend = PatchState.attend

    def spy(self, *args, **kwargs):
        seen.append(self.context.tile_order)
        return attend(self, *args, **kwargs)

    monkeypatch.setattr(PatchState, "attend", spy)
    return seen


def run(transformer, inputs, method, tile_order: bool, schedule=None):
    with torch.no_grad(), ditaccel.patch(transformer, method, schedule=schedule or ditaccel.Schedule(dense_layers=(0,)),
                                         backend="reference", tile_order=tile_order):
        return transformer(**inputs)[0]


def test_reorder_tokens_is_the_tilings_permutation():
    gen = torch.Generator().manual_seed(0)
    for grid, tile, dilation in [((4, 8, 16), (2, 4, 8), (1, 1, 1)), ((2, 8, 8), (1, 4, 4), (1, 2, 2))]:
        tiling = build_tiling(grid, tile, 16 if dilation != (1, 1, 1) else 64, dilation)
        assert uses_tile_order(tiling)
        n = tiling.num_tokens
        x = torch.randn(2, 5 + n, 3, generator=gen)  # 5 text tokens first
        tiled = reorder_tokens(x, 1, tiling, to_tiles=True)
        assert torch.equal(tiled[:, :5], x[:, :5])
        assert torch.equal(tiled[:, 5:], tiling.to_canonical(x[:, 5:]))
        assert torch.equal(reorder_tokens(tiled, 1, tiling, to_tiles=False), x)
        # Another token dim (rotary tables [N, D]).
        table = torch.randn(n, 4, generator=gen)
        assert torch.equal(reorder_tokens(table, 0, tiling, to_tiles=True), tiling.to_canonical(table[None])[0])
    with pytest.raises(ValueError, match="at least 128 video tokens"):
        reorder_tokens(torch.zeros(1, 100, 2), 1, build_tiling((2, 8, 8), (2, 4, 8), 64), to_tiles=True)


def test_only_pure_permutations_qualify():
    assert not uses_tile_order(build_tiling((3, 8, 16), (2, 4, 8), 64))  # 3 frames: padded edge tiles
    assert not uses_tile_order(build_tiling((4, 8, 16), None, 64))  # raster order: nothing to do
    assert uses_tile_order(build_tiling((4, 8, 16), (2, 4, 8), 64))


@pytest.mark.parametrize("family", SUPPORTED)
def test_tile_order_forward_equals_model_order(family, tile_order_seen):
    """A direct transformer call (batch 2, padded text where the family has it) with layer 0 dense:
    dense layers run in tile order too, with their rotary tables reordered."""
    case = tiny(family)
    transformer = case.pipe.transformer
    grid, tile = EXACT[family]
    inputs = case.transformer_inputs(grid)
    method = method_for(family, tile)
    with torch.no_grad():
        never_patched = transformer(**inputs)[0]
    model_order = run(transformer, inputs, method, tile_order=False)
    assert tile_order_seen and not any(tile_order_seen)
    tile_order_seen.clear()
    tiled = run(transformer, inputs, method, tile_order=True)
    assert tile_order_seen and all(tile_order_seen)
    assert (tiled - model_order).abs().max().item() <= TOLERANCE
    assert (tiled - never_patched).abs().max().item() > 100 * TOLERANCE  # the window did leave keys out
    # A fully dense forward in tile order is the dense model (rotary tables move with the tokens).
    full = ditaccel.Neighborhood(window=1.0, tile=tile, block_size=64)
    assert (run(transformer, inputs, full, tile_order=True, schedule=ditaccel.Schedule()) - never_patched).abs().max() <= TOLERANCE
    with torch.no_grad():
        assert torch.equal(transformer(**inputs)[0], never_patched)  # unpatched: hooks gone


@pytest.mark.parametrize("family", ["wan", "mochi"])
def test_model_order_where_tile_order_does_not_apply(family, tile_order_seen):
    """Ragged grids (padding tokens would reach dense layers) and Mochi (tokens are embedded frame
    by frame) keep the model's order; results are the same either way."""
    case = tiny(family)
    transformer = case.pipe.transformer
    grid = (3, 8, 16)
    inputs = case.transformer_inputs(grid)
    method = method_for(family, (2, 4, 8))
    a = run(transformer, inputs, method, tile_order=True)
    assert tile_order_seen and not any(tile_order_seen)
    assert torch.equal(a, run(transformer, inputs, method, tile_order=False))


def test_wan_per_token_timesteps_are_reordered(tile_order_seen):
    """Wan 2.2 TI2V passes one timestep per video token ([B, N]): they move with the tokens."""
    case = tiny("wan")
    transformer = case.pipe.transformer
    grid, tile = EXACT["wan"]
    inputs = case.transformer_inputs(grid)
    n = grid[0] * grid[1] * grid[2]
    inputs["timestep"] = torch.linspace(900.0, 100.0, n)[None]
    method = method_for("wan", tile)
    tiled = run(transformer, inputs, method, tile_order=True)
    assert all(tile_order_seen)
    assert (tiled - run(transformer, inputs, method, tile_order=False)).abs().max().item() <= TOLERANCE


def test_flux_controlnet_residuals_keep_model_order(tile_order_seen):
    case = tiny("flux")
    transformer = case.pipe.transformer
    grid, tile = EXACT["flux"]
    inputs = case.transformer_inputs(grid)
    n = grid[1] * grid[2]
    residual = torch.randn(2, n, transformer.inner_dim, generator=torch.Generator().manual_seed(5))
    inputs["controlnet_block_samples"] = [residual]  # added to raster-ordered image tokens
    method = method_for("flux", tile)
    tiled = run(transformer, inputs, method, tile_order=True)
    assert tile_order_seen and not any(tile_order_seen)
    assert torch.equal(tiled, run(transformer, inputs, method, tile_order=False))


def test_hunyuan_token_replace_keeps_model_order(tile_order_seen):
    from diffusers import HunyuanVideoTransformer3DModel

    torch.manual_seed(0)
    transformer = HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=1, num_single_layers=1,
        num_refiner_layers=1, patch_size=2, guidance_embeds=True, text_embed_dim=16, pooled_projection_dim=8,
        rope_axes_dim=(4, 6, 6), image_condition_type="token_replace",
    ).eval()
    grid, tile = EXACT["hunyuan_video"]
    T, H, W = grid
    inputs = dict(hidden_states=torch.randn(1, 4, T, 2 * H, 2 * W), timestep=torch.tensor([500.0]),
                  encoder_hidden_states=torch.randn(1, 16, 16), encoder_attention_mask=torch.ones(1, 16, dtype=torch.long),
                  pooled_projections=torch.randn(1, 8), guidance=torch.tensor([6000.0]), return_dict=False)
    method = method_for("hunyuan_video", tile)
    out = run(transformer, inputs, method, tile_order=True)
    assert tile_order_seen and not any(tile_order_seen)  # the first frame's tokens are modulated by position
    assert torch.equal(out, run(transformer, inputs, method, tile_order=False))


def test_an_exception_leaves_no_module_in_tile_order(monkeypatch):
    """After a forward that raised, the rotary module called on its own returns raster tables,
    and unpatch still restores everything."""
    case = tiny("wan")
    transformer = case.pipe.transformer
    grid, tile = EXACT["wan"]
    inputs = case.transformer_inputs(grid)
    with torch.no_grad():
        rope_before = transformer.rope(inputs["hidden_states"])
        expected = transformer(**inputs)[0]
    handle = ditaccel.patch(transformer, method_for("wan", tile), schedule=ditaccel.Schedule(), backend="reference")
    state = handle.states[0]

    def fail(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(state.runner, "__call__", fail)
    monkeypatch.setattr(type(state), "attend", lambda self, *a, **k: fail())
    with pytest.raises(RuntimeError, match="boom"), torch.no_grad():
        transformer(**inputs)
    assert state.context.tiling is None and not state.context.tile_order
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(transformer.rope(inputs["hidden_states"]), rope_before))
    handle.unpatch()
    with torch.no_grad():
        assert torch.equal(transformer(**inputs)[0], expected)


def test_tile_order_argument_is_checked():
    with pytest.raises(TypeError, match="tile_order must be True or False"):
        ditaccel.patch(tiny("wan").pipe, "neighborhood", tile_order="yes")
    assert not ditaccel.is_patched(tiny("wan").pipe)


def test_cogvideox_2b_absolute_positions_move_with_the_tokens(tile_order_seen):
    """CogVideoX 2B adds absolute sin-cos positions inside its patch embedding (no rotary tables):
    the entry hook reorders tokens that already carry them."""
    from diffusers import CogVideoXTransformer3DModel

    torch.manual_seed(0)
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=2, text_embed_dim=32,
        num_layers=2, sample_width=16, sample_height=8, sample_frames=13, patch_size=2, max_text_seq_length=16,
    ).eval()
    gen = torch.Generator().manual_seed(3)
    inputs = dict(hidden_states=torch.randn(2, 4, 4, 8, 16, generator=gen), encoder_hidden_states=torch.randn(2, 16, 32, generator=gen),
                  timestep=torch.tensor([500, 500]), return_dict=False)  # grid (4, 4, 8)
    method = ditaccel.Neighborhood(window=(3, 3, 5), tile=(2, 4, 8), block_size=64)
    tiled = run(transformer, inputs, method, tile_order=True)
    assert tile_order_seen and all(tile_order_seen)
    assert (tiled - run(transformer, inputs, method, tile_order=False)).abs().max().item() <= TOLERANCE


def test_summary_says_how_the_tokens_were_ordered():
    case = tiny("wan")
    transformer = case.pipe.transformer
    grid, tile = EXACT["wan"]
    method = method_for("wan", tile)
    expected = [
        ((4, 8, 16), True, "tile order (2, 4, 8), reordered once per forward"),
        ((3, 8, 16), True, "tokens moved in each attention call (tile (2, 4, 8) does not divide grid (3, 8, 16))"),
        ((4, 8, 16), False, "tokens moved in each attention call (tile_order=False)"),
    ]
    for grid, tile_order, text in expected:
        with torch.no_grad(), ditaccel.patch(transformer, method, schedule=ditaccel.Schedule(), backend="reference",
                                             tile_order=tile_order) as handle:
            assert handle.summary().token_order == {}  # no forward yet
            transformer(**case.transformer_inputs(grid))
            summary = handle.summary()
        assert text in summary.token_order["WanTransformer3DModel"]
        assert str(summary).endswith(summary.token_order["WanTransformer3DModel"])


@pytest.mark.parametrize("scope", ["regional", "whole_model"])
def test_compile_in_tile_order(scope):
    """diffusers' compile_repeated_blocks(fullgraph=True) (the tile-order hooks sit outside the
    blocks: no graph break) or torch.compile of the whole patched transformer (the hooks are traced
    with it): same output as eager."""
    case = tiny("wan")
    transformer = case.pipe.transformer
    grid, tile = EXACT["wan"]
    inputs = case.transformer_inputs(grid)
    torch._dynamo.reset()
    try:
        with torch.no_grad(), ditaccel.patch(transformer, method_for("wan", tile), schedule=ditaccel.Schedule(dense_layers=(0,)),
                                             backend="reference") as handle:
            eager = transformer(**inputs)[0]
            if scope == "regional":
                transformer.compile_repeated_blocks(fullgraph=True, backend="eager")
                compiled = transformer(**inputs)[0]
            else:
                compiled = torch.compile(transformer, backend="eager")(**inputs)[0]
            assert "tile order" in handle.summary().token_order["WanTransformer3DModel"]
    finally:
        for block in transformer.blocks:
            block._compiled_call_impl = None  # the tiny model is shared with other tests
        torch._dynamo.reset()
    assert torch.allclose(eager, compiled, atol=1e-5)
