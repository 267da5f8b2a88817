"""diffusers' own caches (FirstBlockCache, TaylorSeer, MagCache, TextKVCache, PyramidAttentionBroadcast)
on a patched pipeline, enabled before or after ditaccel.patch: the generation runs, unpatch takes
only our changes away (the result is then exactly that of the cache alone) and disable_cache then
gives back the plain pipeline bit for bit."""

from __future__ import annotations

import pytest
import torch

import ditaccel

from tiny_pipelines import BUILDERS

diffusers = pytest.importorskip("diffusers")


def _config(name: str, pipe, steps: int):
    if name == "first_block":  # a threshold the tiny random models' first-block changes stay under
        return diffusers.FirstBlockCacheConfig(threshold=1.0)
    if name == "taylorseer":
        # Its default patterns (fullmatch "^blocks.*attn") miss Wan's attn1/attn2, and its default
        # warm-up (3 steps) is all of a test generation: name the attention modules, predict step 1.
        return diffusers.TaylorSeerCacheConfig(cache_interval=2, disable_cache_before_step=1,
                                               cache_identifiers=[r"(single_)?(transformer_)?blocks\.\d+\.attn\d?"])
    if name == "mag":
        return diffusers.MagCacheConfig(num_inference_steps=steps, mag_ratios=[1.0] * steps)
    if name == "text_kv":
        return diffusers.TextKVCacheConfig()
    # The whole timestep range: its default (100, 800) misses a 3-step shifted schedule.
    return diffusers.PyramidAttentionBroadcastConfig(spatial_attention_block_skip_range=2,
                                                     spatial_attention_timestep_skip_range=(0, 1000),
                                                     current_timestep_callback=lambda: pipe.current_timestep)


CACHES = ["first_block", "taylorseer", "mag", "text_kv", "pab"]
# Every cache in both orders on Wan (CFG as two calls per step), every cache on FLUX (joint
# attention), FirstBlockCache on the other families.
CASES = [("wan", c, o) for c in CACHES for o in ("cache_first", "patch_first")]
CASES += [("flux", c, "patch_first") for c in CACHES]
CASES += [(family, "first_block", "patch_first") for family in sorted(BUILDERS) if family not in ("wan", "flux")]


@pytest.fixture(scope="module")
def built():
    return {}


@pytest.mark.parametrize("family, cache, order", CASES)
def test_a_diffusers_cache_on_a_patched_pipeline(family, cache, order, built):
    if family not in built:
        built[family] = BUILDERS[family]()
    case = built[family]
    transformer = case.pipe.transformer
    steps = case.call_kwargs["num_inference_steps"]
    if cache == "text_kv" and not hasattr(diffusers, "TextKVCacheConfig"):
        pytest.skip("this diffusers has no TextKVCacheConfig")
    plain = case.generate()
    transformer.enable_cache(_config(cache, case.pipe, steps))
    try:
        cached_alone = case.generate()
    finally:
        transformer.disable_cache()
    if cache != "text_kv":  # the text K/V cache is lossless; the others must have reused something
        assert not torch.equal(cached_alone, plain), f"{cache} changed nothing: it never reused"
    method = ditaccel.Radial(block_size=64)
    if order == "cache_first":
        transformer.enable_cache(_config(cache, case.pipe, steps))
        handle = ditaccel.patch(case.pipe, method, schedule=ditaccel.Schedule())
    else:
        handle = ditaccel.patch(case.pipe, method, schedule=ditaccel.Schedule())
        transformer.enable_cache(_config(cache, case.pipe, steps))
    try:
        both = case.generate()
        assert torch.isfinite(both).all()
        assert any(row["sparse_steps"] for row in handle.summary().rows), "no layer ran sparse under the cache"
    finally:
        ditaccel.unpatch(case.pipe)
    assert transformer.is_cache_enabled
    assert torch.equal(case.generate(), cached_alone)  # our changes gone, diffusers' cache still on
    transformer.disable_cache()
    assert torch.equal(case.generate(), plain)


def test_patch_takes_a_diffusers_cache_config_and_unpatch_disables_it(built):
    if "wan" not in built:
        built["wan"] = BUILDERS["wan"]()
    case = built["wan"]
    transformer = case.pipe.transformer
    plain = case.generate()
    method = ditaccel.Radial(block_size=64)
    transformer.enable_cache(diffusers.FirstBlockCacheConfig(threshold=0.2))
    with ditaccel.patch(case.pipe, method, schedule=ditaccel.Schedule()):
        by_hand = case.generate()
    transformer.disable_cache()
    with ditaccel.patch(case.pipe, method, schedule=ditaccel.Schedule(), cache=diffusers.FirstBlockCacheConfig(threshold=0.2)) as handle:
        assert transformer.is_cache_enabled
        through_patch = case.generate()
        # summary() names the diffusers cache: the blocks it skips are counted as run.
        assert handle.summary().diffusers_caches == {"WanTransformer3DModel": "FirstBlockCacheConfig"}
        assert "diffusers' FirstBlockCacheConfig is enabled" in str(handle.summary())
    assert not transformer.is_cache_enabled
    assert torch.equal(through_patch, by_hand)
    with ditaccel.patch(case.pipe, cache=diffusers.FirstBlockCacheConfig(threshold=0.2)):  # dense + diffusers' cache
        case.generate()
    assert torch.equal(case.generate(), plain)


def test_patch_warns_when_a_diffusers_cache_hooks_nothing(built):
    if "wan" not in built:
        built["wan"] = BUILDERS["wan"]()
    case = built["wan"]
    with pytest.warns(RuntimeWarning, match=r"TaylorSeerCacheConfig hooked no module of WanTransformer3DModel.*'blocks\.0\.attn1'"):
        handle = ditaccel.patch(case.pipe, cache=diffusers.TaylorSeerCacheConfig())
    handle.unpatch()
    assert not case.pipe.transformer.is_cache_enabled


def test_broadcast_refuses_diffusers_attention_broadcast_in_one_line(built):
    if "wan" not in built:
        built["wan"] = BUILDERS["wan"]()
    case = built["wan"]
    transformer = case.pipe.transformer
    transformer.enable_cache(_config("pab", case.pipe, 3))
    try:
        with pytest.raises(ValueError, match="ditaccel.Broadcast and diffusers' PyramidAttentionBroadcastConfig"):
            ditaccel.patch(case.pipe, "radial", cache=ditaccel.Broadcast())
        assert not ditaccel.is_patched(case.pipe)
    finally:
        transformer.disable_cache()


@pytest.mark.parametrize("cache", ["taylorseer_lite", "first_block"])
def test_a_diffusers_output_cache_with_a_tiled_method_keeps_one_token_order(cache, built):
    """FirstBlockCache and TaylorSeer keep block or proj_out outputs across steps. A tiled method
    runs its sparse forwards in tile order; with a diffusers cache enabled its dense forwards do
    too, so a kept output is reused in the token order it was made in: the result equals the same
    patch moving tokens per call (tile_order=False). (Before, dense steps ran in model order and
    TaylorSeer extrapolated across the two orders.)"""
    case = built.setdefault("wan", BUILDERS["wan"]())
    method = ditaccel.Neighborhood(window=(3, 3, 3), block_size=64)
    schedule = ditaccel.Schedule(dense_steps=2, dense_layers=0)
    call = {**case.call_kwargs, "num_inference_steps": 6, "num_frames": 13, "height": 64, "width": 128}  # grid 4 x 4 x 8
    outputs = {}
    for tile_order in (True, False):
        config = (diffusers.TaylorSeerCacheConfig(use_lite_mode=True, cache_interval=2, disable_cache_before_step=1)
                  if cache == "taylorseer_lite" else diffusers.FirstBlockCacheConfig(threshold=1.0))
        with ditaccel.patch(case.pipe, method, schedule=schedule, cache=config, tile_order=tile_order,
                            force_sparse=True) as handle:
            outputs[tile_order] = case.pipe(**call, generator=torch.Generator().manual_seed(0)).frames
            order = handle.summary().token_order.get("WanTransformer3DModel", "")
        assert ("tile order" in order) == tile_order, order
    error = float((outputs[True] - outputs[False]).norm() / outputs[False].norm())
    assert error < 1e-5  # 5e-8 here; 2e-2 with the dense steps in model order
