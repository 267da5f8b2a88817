"""patch(): every patched attention call equals SDPA under the method's token mask; unpatch
restores exactly, also after an exception; steps and layers follow the schedule."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ditaccel
from ditaccel.patching import PatchState

from reference_masks import joint_mask, neighborhood_mask, radial_mask
from tiny_pipelines import BUILDERS

FAMILIES = sorted(BUILDERS)
GRIDS = {"flux": (1, 20, 22)}  # image model: one frame
DEFAULT_GRID = (6, 8, 12)  # 576 video tokens: not a multiple of 128


@pytest.fixture(scope="module")
def cases():
    return {}


def get_case(cases, family):
    if family not in cases:
        cases[family] = BUILDERS[family]()
    return cases[family]


def spy_attend(monkeypatch):
    calls = []
    original = PatchState.attend

    def recording(self, layer, q, k, v, **kwargs):
        out = original(self, layer, q, k, v, **kwargs)
        calls.append(dict(state=self, layer=layer, q=q, k=k, v=v, out=out, grid=self.context.grid, tiling=self.context.tiling, **kwargs))
        return out

    monkeypatch.setattr(PatchState, "attend", recording)
    return calls


def expected_video_mask(method, grid, tiling=None):
    """The method's token mask over raster tokens; over tile-ordered tokens when the call ran in a
    tile-order forward (``tiling``)."""
    if isinstance(method, ditaccel.Neighborhood):
        window = method.resolve_window(grid)
        mask = neighborhood_mask(grid, window, method.stride, method.dilation, method.causal)
    else:
        mask = radial_mask(grid, method.decay, method.sink, method.block_size)
    if tiling is None:
        return mask
    order = tiling.device_index(torch.device("cpu"), "canon_to_raster").long()
    return mask[order][:, order]


METHODS = [
    ditaccel.Radial(decay=0.3, block_size=64),
    ditaccel.Neighborhood(window=(3, 3, 5), block_size=64),
    ditaccel.Neighborhood(window=(2, 4, 4), stride=(1, 2, 2), dilation=(1, 1, 2), block_size=64),
]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", METHODS, ids=["radial", "neighborhood", "neighborhood-strided-dilated"])
def test_each_attention_call_matches_token_mask(family, method, cases, monkeypatch):
    case = get_case(cases, family)
    transformer = case.pipe.transformer
    grid = GRIDS.get(family, DEFAULT_GRID)
    if isinstance(method, ditaccel.Neighborhood) and grid[0] == 1:
        method = ditaccel.Neighborhood(window=(1,) + method.window[1:], stride=(1,) + method.stride[1:], dilation=(1,) + method.dilation[1:], block_size=64)
    inputs = case.transformer_inputs(grid)
    calls = spy_attend(monkeypatch)
    with ditaccel.patch(transformer, method, schedule=ditaccel.Schedule()), torch.no_grad():
        transformer(**inputs)
    assert calls, "no attention call went through the sparse path"
    # The plain window's default tile (2, 8, 4) divides the grid: those forwards run in tile order.
    tile_ordered = family not in ("flux", "mochi") and method is METHODS[1]
    assert all((c["tiling"] is not None) == tile_ordered for c in calls)
    assert {c["layer"] for c in calls} == {layer.index for layer in calls[0]["state"].layers}
    expected_counts = None
    if "encoder_attention_mask" in inputs:
        expected_counts = sorted(inputs["encoder_attention_mask"].bool().sum(1).tolist())
    for call in calls:
        q, k, v = call["q"], call["k"], call["v"]
        assert call["grid"] == grid
        B, S = q.shape[:2]
        text_len = call.get("text_len", 0)
        text_mask = call.get("text_mask")
        if expected_counts is not None and text_len:
            counts = text_mask.sum(1).tolist() if text_mask is not None else [text_len] * B
            assert all(c in expected_counts for c in counts), (counts, expected_counts)
        position = call["state"].adapter.text_position
        mask = joint_mask(expected_video_mask(call["state"].method, grid, call["tiling"]), text_len, position, text_mask, B)
        scale = call.get("scale")
        ref = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask[:, None], scale=scale)
        torch.testing.assert_close(call["out"], ref.transpose(1, 2), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_unpatch_is_bit_identical_even_after_an_exception(family, cases):
    case = get_case(cases, family)
    baseline = case.generate()
    ditaccel.patch(case.pipe, ditaccel.Neighborhood(window=(1, 3, 3), block_size=64), schedule=ditaccel.Schedule())
    calls = {"n": 0}

    def explode(module, args, kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("boom inside a patched generation")

    hook = case.pipe.transformer.register_forward_pre_hook(explode, with_kwargs=True)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            case.generate()
    finally:
        hook.remove()
    ditaccel.unpatch(case.pipe)
    assert not ditaccel.is_patched(case.pipe)
    assert torch.equal(case.generate(), baseline)


def test_schedule_keeps_first_steps_and_layers_dense(cases):
    case = get_case(cases, "wan")
    steps = case.call_kwargs["num_inference_steps"]
    with ditaccel.patch(case.pipe, ditaccel.Radial(block_size=64), schedule=ditaccel.Schedule(dense_steps=1, dense_layers=1)) as handle:
        case.generate()
        rows = handle.summary().rows
    assert rows[0]["method"] == "dense" and rows[0]["sparse_steps"] == []
    assert rows[1]["dense_steps"] == [0] and rows[1]["sparse_steps"] == list(range(1, steps))
    assert 0 < rows[1]["block_density"] <= 1


def test_fractional_schedule_counts_steps_of_this_generation(cases):
    case = get_case(cases, "wan")
    with ditaccel.patch(case.pipe, "radial", schedule=ditaccel.Schedule(dense_steps=0.5, dense_last_steps=1, dense_layers=0)) as handle:
        case.pipe(**{**case.call_kwargs, "num_inference_steps": 6}, generator=torch.Generator().manual_seed(0))
        row = handle.summary().rows[1]
    assert row["dense_steps"] == [0, 1, 2, 5]
    assert row["sparse_steps"] == [3, 4]


def test_patch_twice_is_refused_and_unpatch_without_patch_is_an_error(cases):
    case = get_case(cases, "wan")
    with ditaccel.patch(case.pipe, "radial"):
        with pytest.raises(ValueError, match="already patched"):
            ditaccel.patch(case.pipe, "neighborhood")
    with pytest.raises(ValueError, match="not patched"):
        ditaccel.unpatch(case.pipe)


def test_summary_prints_a_table(cases):
    case = get_case(cases, "wan")
    with ditaccel.patch(case.pipe, "radial") as handle:
        case.generate()
        text = str(handle.summary())
    assert "blocks.1.attn1" in text and "radial" in text and "density" in text


@pytest.mark.parametrize("family", ["wan", "cogvideox", "flux", "ltx", "hunyuan_video"])
def test_layout_is_built_before_the_first_attention_call(family, cases):
    """The transformer's pre-hook builds the layout eagerly (outside any torch.compile region), so
    a compiled block only looks it up: at the first attention call it must already be cached."""
    case = get_case(cases, family)
    transformer = case.pipe.transformer
    grid = GRIDS.get(family, DEFAULT_GRID)
    seen = []
    with ditaccel.patch(transformer, ditaccel.Radial(decay=0.3, block_size=64), schedule=ditaccel.Schedule(dense_steps=0)) as handle:
        state = handle.states[0]
        first = state.layers[0].module
        hook = first.register_forward_pre_hook(lambda module, args: seen.append(dict(state.runner._layouts)))
        try:
            with torch.no_grad():
                transformer(**case.transformer_inputs(grid))
        finally:
            hook.remove()
        used = set(state.runner._layouts)
    assert seen, "the first attention layer never ran"
    cached = seen[0]
    assert len(cached) == 1 and next(iter(cached))[0] == tuple(grid), cached.keys()
    assert used == set(cached)  # the attention calls used the layout the hook built (same text length)


def test_regional_compile_of_a_patched_model_on_the_reference_backend(cases):
    """compile_repeated_blocks(fullgraph=True) over a patched transformer on the CPU fallback: no
    graph break (fullgraph raises on one), one graph for all blocks, same output as eager."""
    from torch._dynamo.utils import counters

    case = get_case(cases, "wan")
    transformer = case.pipe.transformer
    inputs = case.transformer_inputs(DEFAULT_GRID)
    torch._dynamo.reset()
    counters.clear()
    try:
        with torch.no_grad(), ditaccel.patch(transformer, ditaccel.Radial(decay=0.3, block_size=64),
                                             schedule=ditaccel.Schedule(dense_steps=0), backend="reference"):
            eager = transformer(**inputs)[0]
            transformer.compile_repeated_blocks(fullgraph=True, backend="eager")
            compiled = transformer(**inputs)[0]
            again = transformer(**inputs)[0]
    finally:
        for block in transformer.blocks:
            block._compiled_call_impl = None  # the module-scoped case is shared with other tests
        torch._dynamo.reset()
    assert counters["stats"]["unique_graphs"] == 1
    assert torch.allclose(eager, compiled, atol=1e-5) and torch.equal(compiled, again)


def test_an_attention_backend_set_before_patch_stays_the_layers(monkeypatch):
    """diffusers' set_attention_backend() before patch(): the dense steps keep that backend, the
    sparse processors' exact fallback runs it too (also under another process-wide backend), a
    backend set while patched reaches the dense processors, and unpatch() gives back the same
    processor objects with it, generating bit-identically."""
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry, attention_backend

    chosen = AttentionBackendName._NATIVE_MATH
    # set_attention_backend also sets diffusers' process-wide backend: restore it after the test.
    monkeypatch.setattr(_AttentionBackendRegistry, "_active_backend", _AttentionBackendRegistry._active_backend)
    calls = []  # (backend, self-attention?) per dispatched attention call

    def recorded(name, run):
        def call(**kwargs):
            calls.append((name, kwargs["query"].shape[1] == kwargs["key"].shape[1]))
            return run(**kwargs)

        return call

    for name, run in list(_AttentionBackendRegistry._backends.items()):
        monkeypatch.setitem(_AttentionBackendRegistry._backends, name, recorded(name, run))

    case = BUILDERS["wan"]()  # its own pipeline: the backend stays set on its processors
    transformer = case.pipe.transformer
    transformer.set_attention_backend(chosen.value)
    reference = case.generate()
    processors = {name: m.processor for name, m in transformer.named_modules() if getattr(m, "processor", None) is not None}
    forwards = []
    hook = transformer.register_forward_pre_hook(lambda module, args: forwards.append(None))
    calls.clear()
    try:
        with attention_backend("native"):  # another process-wide backend: each layer's own must win
            handle = ditaccel.patch(case.pipe, ditaccel.Radial(decay=0.3, block_size=64),
                                    schedule=ditaccel.Schedule(dense_steps=1, dense_layers=1))
            state = handle.states[0]
            assert all(state.sparse[i]._attention_backend == chosen for i in state.sparse)
            patched = case.generate()
            rows = handle.summary().rows
            generation_calls = list(calls)
            # A sparse processor's exact fallback (a mask the sparse path cannot honour).
            layer = state.layers[1].module
            hidden = torch.randn(1, 8, layer.inner_dim)
            with torch.no_grad():
                state.sparse[1](layer, hidden, attention_mask=torch.ones(1, 1, 8, 8, dtype=torch.bool))
            assert calls[len(generation_calls):] == [(chosen, True)]
            # Set while patched (layer 1 holds its sparse processor now): it reaches the dense one.
            assert layer.processor is state.sparse[1]
            transformer.set_attention_backend("native")
            assert state.originals[1]._attention_backend == AttentionBackendName.NATIVE
            transformer.set_attention_backend(chosen.value)
            ditaccel.unpatch(case.pipe)
    finally:
        hook.remove()
    steps = case.call_kwargs["num_inference_steps"]
    per_step = len(forwards) // steps  # CFG: two transformer calls per step
    dense_self = sum(len(row["dense_steps"]) for row in rows) * per_step
    assert rows[1]["sparse_steps"] and dense_self > 0
    assert {name for name, _ in generation_calls} == {chosen}
    assert sum(self_attention for _, self_attention in generation_calls) == dense_self
    assert torch.isfinite(patched).all() and not torch.equal(patched, reference)
    after = {name: m.processor for name, m in transformer.named_modules() if getattr(m, "processor", None) is not None}
    assert after.keys() == processors.keys() and all(after[name] is processors[name] for name in processors)
    assert all(p._attention_backend == chosen for p in after.values())
    assert torch.equal(case.generate(), reference)


FAMILY_NAMES = {"wan": "Wan", "hunyuan_video": "HunyuanVideo", "cogvideox": "CogVideoX", "ltx": "LTX-Video",
                "mochi": "Mochi", "flux": "FLUX"}


def context_parallel_listed() -> str:
    """The families whose adapter declares context_parallel, as the refusal lists them."""
    from ditaccel.pipelines import available_adapters

    names = [FAMILY_NAMES[adapter.family] for adapter in available_adapters() if adapter.context_parallel]
    return f"{', '.join(names[:-1])} and {names[-1]}" if len(names) > 1 else names[0]


def test_context_parallel_refusal_lists_each_family_whose_adapter_declares_it(monkeypatch):
    from ditaccel.pipelines.base import context_parallel_unsupported
    from ditaccel.pipelines.mochi import MochiAdapter

    monkeypatch.setattr(MochiAdapter, "context_parallel", True)
    assert "Mochi" in context_parallel_listed()
    assert f"supported on {context_parallel_listed()} so far, not on ltx;" in context_parallel_unsupported("ltx")


@pytest.mark.parametrize("family", ["hunyuan_video", "ltx", "cogvideox", "mochi"])
def test_context_parallel_on_an_untested_family_is_refused_at_the_first_forward(family):
    # Refused before the first step runs (the sparse processors' own check would only fire after the
    # dense warm-up steps). The parallel config is faked: only its presence matters here.
    from types import SimpleNamespace

    supported = context_parallel_listed()
    assert "Wan" in supported and "FLUX" in supported  # tests/test_context_parallel.py runs these
    case = BUILDERS[family]()
    transformer = case.pipe.transformer
    ran = []
    handle = ditaccel.patch(case.pipe, "radial")
    try:
        transformer._parallel_config = SimpleNamespace(context_parallel_config=object())
        hook = transformer.register_forward_pre_hook(lambda *args: ran.append(1), prepend=True)
        with pytest.raises(NotImplementedError, match=f"context parallelism is supported on {supported} so far, not on {family}"):
            case.generate()
        hook.remove()
        assert len(ran) == 1  # the first forward, refused there
    finally:
        del transformer._parallel_config
        handle.unpatch()
