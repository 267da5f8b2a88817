"""Model adapters on tiny offline pipelines, one per family: exactness with a full window, every
method end to end, bit-identical unpatch, and the errors a user can hit."""

from __future__ import annotations

import pytest
import torch

import ditaccel
from ditaccel.patching import PatchState
from tiny_pipelines import BUILDERS

FAMILIES = sorted(BUILDERS)
FULL_WINDOW = ditaccel.Neighborhood(window=1.0, block_size=64)  # every key: must equal dense attention
ALL_SPARSE = ditaccel.Schedule()  # no dense steps, no dense layers
TOLERANCE = 1e-5  # fp32, abs max on decoded frames / images

_cases: dict = {}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # The tiny models are dominated by per-op overhead; a second thread only adds contention.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def case_and_baseline(family: str):
    """The tiny pipeline of ``family`` and its never-patched output, built once per session."""
    if family not in _cases:
        case = BUILDERS[family]()
        _cases[family] = (case, case.generate())
    return _cases[family]


@pytest.fixture
def attend_calls(monkeypatch):
    """Records (layer, q shape, text_len, text_mask) of every sparse attention call."""
    calls = []
    attend = PatchState.attend

    def spy(self, layer, q, k, v, *, text_len=0, text_mask=None, scale=None):
        calls.append((layer, tuple(q.shape), text_len, None if text_mask is None else text_mask.clone()))
        return attend(self, layer, q, k, v, text_len=text_len, text_mask=text_mask, scale=scale)

    monkeypatch.setattr(PatchState, "attend", spy)
    return calls


def count_forwards(transformer) -> tuple[list, object]:
    calls = []
    handle = transformer.register_forward_pre_hook(lambda module, args: calls.append(1))
    return calls, handle


@pytest.mark.parametrize("family", FAMILIES)
def test_full_window_equals_dense_and_unpatch_is_exact(family, attend_calls):
    case, baseline = case_and_baseline(family)
    transformer = case.pipe.transformer
    handle = ditaccel.patch(case.pipe, FULL_WINDOW, schedule=ALL_SPARSE)
    state = handle.states[0]
    originals = {layer.index: layer.module.processor for layer in state.layers}
    forwards, hook = count_forwards(transformer)
    try:
        out = case.generate()
        # The sparse processors ran: every layer, on every transformer call, never falling back.
        layers = [layer.index for layer in state.layers]
        assert sorted({call[0] for call in attend_calls}) == layers
        for index in layers:
            assert sum(call[0] == index for call in attend_calls) == len(forwards)
        assert all(type(layer.module.processor) is type(state.sparse[layer.index]) for layer in state.layers)
        steps = case.call_kwargs["num_inference_steps"]
        rows = ditaccel.summary(case.pipe).rows
        assert all(row["sparse_steps"] == list(range(steps)) and row["dense_steps"] == [] for row in rows)
    finally:
        hook.remove()
        ditaccel.unpatch(case.pipe)
    assert out.shape == baseline.shape
    assert (out - baseline).abs().max().item() <= TOLERANCE
    assert all(layer.module.processor is originals[layer.index] for layer in state.layers)
    assert not ditaccel.is_patched(case.pipe)
    assert torch.equal(case.generate(), baseline)


def _methods(family: str):
    image = family == "flux"  # one latent frame: a temporal window of 2 does not fit
    return [
        "radial",
        "neighborhood",
        ditaccel.Radial(block_size=64),
        ditaccel.Neighborhood(window=(1 if image else 2, 3, 3), block_size=64),
    ]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", range(4), ids=["radial", "neighborhood", "Radial64", "Neighborhood64"])
def test_methods_run_end_to_end(family, method, attend_calls):
    case, baseline = case_and_baseline(family)
    config = _methods(family)[method]
    with ditaccel.patch(case.pipe, config):
        out = case.generate()
        rows = ditaccel.summary(case.pipe).rows
    assert not ditaccel.is_patched(case.pipe)
    assert out.shape == baseline.shape and torch.isfinite(out).all()
    assert attend_calls and any(row["sparse_steps"] for row in rows)
    if isinstance(config, ditaccel.Neighborhood):  # a 3x3 spatial window leaves out blocks on every grid here
        assert rows[-1]["block_density"] < 1.0


# What each family hands to attend(): (text position, text length, which samples are padded).
TEXT = {
    "wan": ("none", 0),
    "ltx": ("none", 0),
    "hunyuan_video": ("last", 16),
    "mochi": ("last", 16),
    "cogvideox": ("first", 16),
    "flux": ("first", 16),
}
# A grid other than the pipeline's, per family, for direct transformer calls (batch 2, padded text).
GRIDS = {
    "wan": (3, 6, 11),
    "hunyuan_video": (3, 5, 11),
    "cogvideox": (3, 5, 11),
    "ltx": (3, 5, 11),
    "mochi": (3, 5, 11),
    "flux": (1, 13, 15),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_direct_call_with_padded_text_equals_dense(family, attend_calls):
    case, _ = case_and_baseline(family)
    transformer = case.pipe.transformer
    inputs = case.transformer_inputs(GRIDS[family])
    with torch.no_grad():
        dense = transformer(**inputs)[0]
        with ditaccel.patch(transformer, FULL_WINDOW, schedule=ALL_SPARSE):
            sparse = transformer(**inputs)[0]
        assert torch.equal(transformer(**inputs)[0], dense)
    assert (sparse - dense).abs().max().item() <= TOLERANCE
    position, text_len = TEXT[family]
    assert ditaccel.pipelines.adapter_for(transformer).text_position == position
    n_video = GRIDS[family][0] * GRIDS[family][1] * GRIDS[family][2]
    for _, shape, got_len, text_mask in attend_calls:
        assert got_len == text_len and shape[1] == n_video + text_len
    masks = [call[3] for call in attend_calls]
    if family in ("hunyuan_video", "mochi"):
        # Sample 0 has all 16 text tokens, sample 1 nine: the padding reaches attend() as a mask.
        assert all(mask is not None and mask.sum(1).tolist() == [16, 9] for mask in masks)
    else:
        assert all(mask is None for mask in masks)


@pytest.mark.parametrize("family", FAMILIES)
def test_grid_mismatch_raises(family, monkeypatch):
    case, _ = case_and_baseline(family)
    transformer = case.pipe.transformer
    T, H, W = GRIDS[family]
    inputs = case.transformer_inputs((T, H, W))
    handle = ditaccel.patch(transformer, FULL_WINDOW, schedule=ALL_SPARSE)
    try:
        monkeypatch.setattr(handle.states[0].adapter, "grid", lambda *args: (T, H, W + 1))
        with pytest.raises(ValueError, match="grid does not match the sequence"), torch.no_grad():
            transformer(**inputs)
    finally:
        ditaccel.unpatch(transformer)


def test_flux_reference_image_tokens_are_rejected():
    # FLUX Kontext appends reference-image tokens (ids[:, 0] = 1): they are not on the image grid.
    case, _ = case_and_baseline("flux")
    inputs = case.transformer_inputs((1, 6, 8))
    reference = inputs["img_ids"].clone()
    reference[:, 0] = 1
    inputs["img_ids"] = torch.cat([inputs["img_ids"], reference])
    inputs["hidden_states"] = torch.cat([inputs["hidden_states"]] * 2, dim=1)
    with ditaccel.patch(case.pipe.transformer, FULL_WINDOW, schedule=ALL_SPARSE):
        with pytest.raises(ValueError, match="grid does not match the sequence"), torch.no_grad():
            case.pipe.transformer(**inputs)


def test_flux_ids_are_checked_once_and_again_after_an_in_place_change():
    # A pipeline passes the same img_ids every step: the host-side raster check runs once per tensor
    # (it reads the ids back, a device sync), and again when the tensor changes in place.
    case, _ = case_and_baseline("flux")
    inputs = case.transformer_inputs((1, 6, 8))
    handle = ditaccel.patch(case.pipe.transformer, FULL_WINDOW, schedule=ALL_SPARSE)
    try:
        adapter = handle.states[0].adapter
        checks = []
        original = adapter._grid_of
        adapter._grid_of = lambda ids: checks.append(1) or original(ids)
        with torch.no_grad():
            case.pipe.transformer(**inputs)
            case.pipe.transformer(**inputs)
            assert len(checks) == 1
            inputs["img_ids"][:, 0] = 1  # in place: now reference-image ids, which the check rejects
            with pytest.raises(ValueError, match="grid does not match the sequence"):
                case.pipe.transformer(**inputs)
            assert len(checks) == 2
    finally:
        ditaccel.unpatch(case.pipe.transformer)


def test_ltx_without_grid_arguments_is_rejected():
    case, _ = case_and_baseline("ltx")
    inputs = case.transformer_inputs((2, 4, 4))
    for name in ("num_frames", "height", "width"):
        inputs.pop(name)
    inputs["video_coords"] = torch.zeros(2, 3, 32)
    with ditaccel.patch(case.pipe.transformer, FULL_WINDOW, schedule=ALL_SPARSE):
        with pytest.raises(ValueError, match="num_frames, height and width"), torch.no_grad():
            case.pipe.transformer(**inputs)


def test_flux_steps_follow_the_scaled_timestep():
    # The pipeline passes t / 1000: the step index must still come out 0, 1, 2 (dense, sparse, sparse).
    case, _ = case_and_baseline("flux")
    with ditaccel.patch(case.pipe, "radial", schedule=ditaccel.Schedule(dense_steps=1)):
        case.generate()
        rows = ditaccel.summary(case.pipe).rows
    assert all(row["dense_steps"] == [0] and row["sparse_steps"] == [1, 2] for row in rows)


def test_unknown_processor_is_refused_and_nothing_changes():
    case, _ = case_and_baseline("flux")
    transformer = case.pipe.transformer
    module = transformer.single_transformer_blocks[0].attn
    original = module.processor

    class CustomProcessor(type(original)):
        pass

    module.processor = CustomProcessor()
    try:
        with pytest.raises(NotImplementedError, match="CustomProcessor"):
            ditaccel.patch(case.pipe, "radial")
        assert not ditaccel.is_patched(case.pipe)
        assert type(transformer.transformer_blocks[0].attn.processor).__name__ == "FluxAttnProcessor"
    finally:
        module.processor = original


def test_unsupported_model_raises_type_error_listing_supported_models():
    class SD3Transformer2DModel(torch.nn.Module):
        pass

    with pytest.raises(TypeError) as error:
        ditaccel.patch(SD3Transformer2DModel(), "radial")
    message = str(error.value)
    assert "SD3Transformer2DModel" in message
    for name in (
        "WanTransformer3DModel",
        "HunyuanVideoTransformer3DModel",
        "CogVideoXTransformer3DModel",
        "LTXVideoTransformer3DModel",
        "MochiTransformer3DModel",
        "FluxTransformer2DModel",
    ):
        assert name in message


def _cogvideox_15():
    from diffusers import CogVideoXTransformer3DModel
    from diffusers.models.embeddings import get_3d_rotary_pos_embed

    # 1.5: p_t = 2 packs two latent frames per token; RoPE tables the way the pipeline builds them.
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=2, text_embed_dim=32,
        num_layers=2, sample_width=28, sample_height=20, patch_size=2, patch_size_t=2, max_text_seq_length=16,
        use_rotary_positional_embeddings=True,
    )
    T, H, W = 3, 5, 7
    rotary = get_3d_rotary_pos_embed(embed_dim=16, crops_coords=None, grid_size=(H, W), temporal_size=T, grid_type="slice", max_size=(10, 14))
    inputs = dict(hidden_states=torch.randn(2, 2 * T, 4, 2 * H, 2 * W), encoder_hidden_states=torch.randn(2, 16, 32),
                  timestep=torch.tensor([500, 500]), image_rotary_emb=rotary, return_dict=False)
    return transformer, inputs


def _cogvideox_2b():
    from diffusers import CogVideoXTransformer3DModel

    # 2B: absolute sin-cos positions, no rotary tables.
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=2, text_embed_dim=32,
        num_layers=2, sample_width=10, sample_height=7, patch_size=2, max_text_seq_length=16,
    )
    inputs = dict(hidden_states=torch.randn(2, 3, 4, 10, 14), encoder_hidden_states=torch.randn(2, 16, 32),
                  timestep=torch.tensor([500, 500]), return_dict=False)
    return transformer, inputs


def _hunyuan_video_i2v():
    from diffusers import HunyuanVideoTransformer3DModel

    # I2V "token_replace": other block classes around the same attention.
    transformer = HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=2, num_single_layers=2,
        num_refiner_layers=1, patch_size=2, guidance_embeds=True, text_embed_dim=16, pooled_projection_dim=8,
        rope_axes_dim=(4, 6, 6), image_condition_type="token_replace",
    )
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1, 9:] = 0
    inputs = dict(hidden_states=torch.randn(2, 4, 3, 10, 14), timestep=torch.tensor([500.0, 500.0]),
                  encoder_hidden_states=torch.randn(2, 16, 16), encoder_attention_mask=mask,
                  pooled_projections=torch.randn(2, 8), guidance=torch.tensor([6000.0, 6000.0]), return_dict=False)
    return transformer, inputs


def _flux_dev():
    from diffusers import FluxTransformer2DModel

    # dev: guidance embedding.
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=2, num_single_layers=2, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8], guidance_embeds=True,
    )
    rows, cols = torch.meshgrid(torch.arange(9), torch.arange(13), indexing="ij")
    img_ids = torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).reshape(-1, 3).float()
    inputs = dict(hidden_states=torch.randn(2, 117, 4), encoder_hidden_states=torch.randn(2, 16, 32),
                  pooled_projections=torch.randn(2, 32), timestep=torch.tensor([0.5, 0.5]), guidance=torch.tensor([3.5, 3.5]),
                  img_ids=img_ids, txt_ids=torch.zeros(16, 3), return_dict=False)
    return transformer, inputs


VARIANTS = {"cogvideox_1.5": _cogvideox_15, "cogvideox_2b": _cogvideox_2b, "hunyuan_video_i2v": _hunyuan_video_i2v, "flux_dev": _flux_dev}


# HunyuanVideo's processor never uses fused projections: no fused variant for it.
VARIANT_CASES = [(v, fused) for v in sorted(VARIANTS) for fused in (False, True) if not (fused and v.startswith("hunyuan"))]


@pytest.mark.parametrize("variant,fused", VARIANT_CASES, ids=[f"{v}-{'fused' if f else 'separate'}_qkv" for v, f in VARIANT_CASES])
def test_model_variants_equal_dense(variant, fused, attend_calls):
    torch.manual_seed(0)
    transformer, inputs = VARIANTS[variant]()
    transformer.eval()
    if fused:
        transformer.fuse_qkv_projections()  # CogVideoX swaps in FusedCogVideoXAttnProcessor2_0 here
    with torch.no_grad():
        dense = transformer(**inputs)[0]
        with ditaccel.patch(transformer, FULL_WINDOW, schedule=ALL_SPARSE) as handle:
            sparse = transformer(**inputs)[0]
            layers = {layer.index for layer in handle.states[0].layers}
    assert {call[0] for call in attend_calls} == layers
    assert (sparse - dense).abs().max().item() <= TOLERANCE
