"""Attention broadcast (ditaccel.Broadcast): a computing step's output is kept and a reusing step
returns that very tensor, per CFG branch (two calls per step on Wan, one batched call on
CogVideoX), state does not leak between generations, period 1 and a zero memory cap change
nothing, it composes with a sparse method, summary() counts reuse, unpatch restores."""

from __future__ import annotations

import pytest
import torch

import ditaccel

from tiny_pipelines import BUILDERS


@pytest.fixture(scope="module")
def cases():
    return {}


def get_case(cases, family):
    if family not in cases:
        cases[family] = BUILDERS[family]()
    return cases[family]


def record_outputs(handle):
    """Every attention module output of the patched layers: (layer, step, call in step) -> output."""
    state = handle.states[0]
    seen = {}
    hooks = [
        layer.module.register_forward_hook(
            lambda module, args, out, index=layer.index: seen.__setitem__((index, state.context.step, state.context.call_in_step), out)
        )
        for layer in state.layers
    ]
    return seen, hooks


def generate(case, steps, seed=0):
    return case.pipe(**{**case.call_kwargs, "num_inference_steps": steps}, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family, calls_per_step", [("wan", 2), ("cogvideox", 1)])
def test_reuse_steps_return_the_kept_output_of_their_own_branch(family, calls_per_step, cases):
    case = get_case(cases, family)
    steps = 6
    cache = ditaccel.Broadcast(period=3, window=(0.0, 1.0))  # steps 0 and 3 compute, 1, 2, 4, 5 reuse
    with ditaccel.patch(case.pipe, cache=cache) as handle:
        seen, hooks = record_outputs(handle)
        try:
            generate(case, steps)
        finally:
            for hook in hooks:
                hook.remove()
        rows = handle.summary().rows
    layers = [row["layer"] for row in rows]
    assert all(row["reused_steps"] == [1, 2, 4, 5] and row["dense_steps"] == [0, 3] for row in rows)
    for layer in layers:
        for call in range(calls_per_step):
            for step, source in ((1, 0), (2, 0), (4, 3), (5, 3)):
                assert seen[(layer, step, call)] is seen[(layer, source, call)]
            assert seen[(layer, 3, call)] is not seen[(layer, 0, call)]
        if calls_per_step == 2:  # cond and uncond never share an output
            assert seen[(layer, 1, 1)] is seen[(layer, 0, 1)] and seen[(layer, 1, 0)] is seen[(layer, 0, 0)]
            if layer > 0:  # the first block's self-attention sees the same latents in both branches
                assert not torch.equal(seen[(layer, 1, 1)], seen[(layer, 1, 0)])


def test_computing_steps_equal_the_uncached_pipeline_until_the_first_reuse(cases):
    """Inside a generation, the steps before the first reuse are exactly the uncached ones; period 1
    and a zero memory cap reuse nothing: bit-identical to no cache, also with a sparse method."""
    case = get_case(cases, "wan")
    baseline = generate(case, 4).frames
    with ditaccel.patch(case.pipe, cache=ditaccel.Broadcast(period=1, window=(0.0, 1.0))):
        assert torch.equal(generate(case, 4).frames, baseline)
    with ditaccel.patch(case.pipe, cache=ditaccel.Broadcast(window=(0.0, 1.0), max_cache_bytes=0)) as handle:
        assert torch.equal(generate(case, 4).frames, baseline)
        assert all(row["reused_calls"] == 0 for row in handle.summary().rows)
    radial = ditaccel.Radial(block_size=64)
    with ditaccel.patch(case.pipe, radial, schedule=ditaccel.Schedule()):
        sparse = generate(case, 4).frames
    with ditaccel.patch(case.pipe, radial, schedule=ditaccel.Schedule(), cache=ditaccel.Broadcast(period=1)):
        assert torch.equal(generate(case, 4).frames, sparse)
    with ditaccel.patch(case.pipe, cache=ditaccel.Broadcast(period=2, window=(0.5, 1.0))):
        cached = generate(case, 4).frames  # steps 2 computes, 3 reuses
    assert not torch.equal(cached, baseline)


def test_state_resets_between_generations_and_summary_counts_reuse(cases):
    case = get_case(cases, "wan")
    cache = ditaccel.Broadcast(period=2, window=(0.0, 1.0))
    with ditaccel.patch(case.pipe, ditaccel.Radial(block_size=64), schedule=ditaccel.Schedule(dense_steps=1), cache=cache) as handle:
        first = generate(case, 4).frames
        second = generate(case, 4).frames  # nothing kept from the first generation
        summary = handle.summary()
        state = handle.states[0]
    assert torch.equal(first, second)
    row = summary.rows[1]
    assert row["dense_steps"] == [0] and row["sparse_steps"] == [2] and row["reused_steps"] == [1, 3]
    assert row["reused_calls"] == 2 * 2 * 2  # 2 generations x 2 reused steps x 2 CFG calls
    sparse_density = state.block_density(state.context.grid)
    calls = row["calls"]
    assert calls == 2 * 4 * 2
    expected = (2 * 2 * 1.0 + 2 * 2 * sparse_density) / calls  # dense step 0, sparse step 2; reused count 0
    assert row["computed_blocks"] / calls == pytest.approx(expected)
    name = "WanTransformer3DModel"
    assert summary.cache_bytes[name] > 0 and "attention cache peak" in str(summary)


def test_unpatch_removes_the_cache_and_its_context_wrapper(cases):
    case = get_case(cases, "wan")
    transformer = case.pipe.transformer
    baseline = generate(case, 4).frames
    with ditaccel.patch(case.pipe, cache=ditaccel.Broadcast(window=(0.0, 1.0))):
        assert "cache_context" in transformer.__dict__
        generate(case, 4)
    assert "cache_context" not in transformer.__dict__
    assert torch.equal(generate(case, 4).frames, baseline)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: ditaccel.Broadcast(period=0), "period"),
        (lambda: ditaccel.Broadcast(window=(0.8, 0.2)), "window"),
        (lambda: ditaccel.Broadcast(window=0.5), "window"),
        (lambda: ditaccel.Broadcast(layers=3), "layers"),
        (lambda: ditaccel.Broadcast(max_cache_bytes=-1), "max_cache_bytes"),
        (lambda: ditaccel.ResidualReuse(refresh_every=0), "refresh_every"),
        (lambda: ditaccel.ResidualReuse(reference="sparse"), "reference"),
        (lambda: ditaccel.ResidualReuse(reference=3), "reference"),
        (lambda: ditaccel.ResidualReuse(layers=(1, -2)), "layers"),
    ],
)
def test_bad_cache_configs_name_the_parameter(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


def spy_attend(monkeypatch):
    from ditaccel.patching import PatchState

    calls = []
    original = PatchState.attend

    def recording(self, layer, q, k, v, **kwargs):
        out = original(self, layer, q, k, v, **kwargs)
        calls.append(dict(state=self, layer=layer, q=q, k=k, v=v, out=out, step=self.context.step,
                          call=self.context.call_in_step, refresh=self.residuals.refresh, **kwargs))
        return out

    monkeypatch.setattr(PatchState, "attend", recording)
    return calls


@pytest.mark.parametrize("family", ["wan", "flux"])
def test_residual_reuse_outputs_the_reference_on_refresh_and_sparse_plus_residual_after(family, cases, monkeypatch):
    from ditaccel.plugins.sparse_attention import dense_attention

    case = get_case(cases, family)
    calls = spy_attend(monkeypatch)
    method = ditaccel.Radial(block_size=64)
    with ditaccel.patch(case.pipe, method, schedule=ditaccel.Schedule(), cache=ditaccel.ResidualReuse(refresh_every=2)) as handle:
        generate(case, 4)
        summary = handle.summary()
    assert calls
    kept = {}
    for c in calls:
        state = c["state"]
        text = dict(text_len=c.get("text_len", 0), text_position=state.adapter.text_position, text_mask=c.get("text_mask"),
                    scale=c.get("scale"))
        sparse = state.runner(c["q"], c["k"], c["v"], state.context.grid, video_tiled=False, **text)
        key = (c["layer"], c["call"])
        if c["refresh"]:
            reference = dense_attention(c["q"], c["k"], c["v"], **text)
            assert torch.equal(c["out"], reference)
            kept[key] = reference - sparse
        else:
            assert torch.equal(c["out"], sparse + kept[key])
    assert {c["step"] for c in calls if c["refresh"]} == {0, 2} and {c["step"] for c in calls if not c["refresh"]} == {1, 3}
    assert sum(summary.cache_bytes.values()) > 0


def test_residual_reuse_refreshing_every_step_is_dense_attention(cases):
    case = get_case(cases, "wan")
    dense = generate(case, 3).frames
    with ditaccel.patch(case.pipe, ditaccel.Radial(block_size=64), schedule=ditaccel.Schedule(),
                        cache=ditaccel.ResidualReuse(refresh_every=1)):
        refreshed = generate(case, 3).frames
    with ditaccel.patch(case.pipe, ditaccel.Radial(block_size=64), schedule=ditaccel.Schedule()):
        sparse = generate(case, 3).frames
    torch.testing.assert_close(refreshed, dense, atol=1e-5, rtol=1e-5)
    assert (refreshed - dense).abs().max() < (sparse - dense).abs().max()
    with pytest.raises(ValueError, match="give a method too"):
        ditaccel.patch(case.pipe, cache=ditaccel.ResidualReuse())
    assert not ditaccel.is_patched(case.pipe)


def test_residual_reuse_with_a_richer_sparse_reference(cases):
    case = get_case(cases, "wan")
    cache = ditaccel.ResidualReuse(refresh_every=2, reference=ditaccel.Radial(decay=4.0, block_size=64))
    with ditaccel.patch(case.pipe, ditaccel.Neighborhood(window=(3, 3, 3), block_size=64), schedule=ditaccel.Schedule(),
                        cache=cache) as handle:
        out = generate(case, 4).frames
        assert handle.states[0].tile_order_hooks is None  # the reference's token order differs from the method's
    assert torch.isfinite(out).all()


def test_method_specs_with_a_cache():
    from ditaccel.method_spec import parse_method_spec, parse_method_specs

    specs = parse_method_specs("radial + broadcast(period=3), broadcast(window=(0.2, 0.8)), "
                               "radial(decay=0.5, dense_steps=0.3) + residual_reuse(refresh_every=4)")
    assert [s.is_dense for s in specs] == [False, False, False]
    assert specs[0].patch_arguments("wan") == {"method": "radial", "cache": ditaccel.Broadcast(period=3)}
    assert specs[1].patch_arguments("wan") == {"method": None, "cache": ditaccel.Broadcast(window=(0.2, 0.8))}
    arguments = specs[2].patch_arguments("wan")
    assert arguments["cache"] == ditaccel.ResidualReuse(refresh_every=4) and arguments["schedule"].dense_steps == 0.3
    richer = parse_method_spec("neighborhood(window=(3, 3, 3)) + residual_reuse(reference='radial(decay=4.0, block_size=64)')")
    assert richer.cache == ditaccel.ResidualReuse(reference=ditaccel.Radial(decay=4.0, block_size=64))
    for bad, message in [("radial + broadcast + broadcast", "a method, a cache"), ("dense + broadcast", "cache alone"),
                         ("broadcast(every=2)", "no parameter 'every'"), ("radial + neighborhood", "a method, a cache"),
                         ("radial + residual_reuse(reference='radial')", "method config with arguments"),
                         ("radial + residual_reuse(reference='radial(decay=2.0, dense_steps=2)')", "no schedule fields"),
                         ("radial + residual_reuse(reference='radial(width=2)')", "no parameter 'width'")]:
        with pytest.raises(ValueError, match=message):
            parse_method_spec(bad)


def test_broadcast_under_regional_compile_does_not_recompile_per_step(cases):
    """compile_repeated_blocks(fullgraph=True): reuse is decided outside the compiled blocks (a few
    fixed processor objects per layer), so a second generation compiles nothing new; same output."""
    from torch._dynamo.utils import counters

    case = get_case(cases, "wan")
    transformer = case.pipe.transformer
    cache = ditaccel.Broadcast(period=2, window=(0.0, 1.0))
    torch._dynamo.reset()
    counters.clear()
    try:
        with ditaccel.patch(case.pipe, ditaccel.Radial(block_size=64), schedule=ditaccel.Schedule(dense_steps=1), cache=cache,
                            backend="reference"):
            eager = generate(case, 4).frames
            transformer.compile_repeated_blocks(fullgraph=True, backend="eager")
            compiled = generate(case, 4).frames
            graphs = counters["stats"]["unique_graphs"]
            again = generate(case, 4).frames
            assert counters["stats"]["unique_graphs"] == graphs
    finally:
        for block in transformer.blocks:
            block._compiled_call_impl = None  # the module-scoped case is shared with other tests
        torch._dynamo.reset()
    assert graphs <= 4  # dense, sparse, each under a keeping processor, replay: not one per step or layer
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)
    assert torch.equal(compiled, again)


def test_broadcast_with_a_tiled_method_replays_outputs_in_the_order_they_were_made(cases):
    """A tiled neighbourhood runs its forwards in tile order; with Broadcast the dense and the
    all-reused forwards do too, so kept outputs are replayed in their own token order: the result
    equals the same patch moving tokens per call (tile_order=False)."""
    case = get_case(cases, "wan")
    method = ditaccel.Neighborhood(window=(3, 3, 3), block_size=64)
    cache = ditaccel.Broadcast(period=2, window=(0.0, 1.0))
    schedule = ditaccel.Schedule(dense_steps=1)
    call = {**case.call_kwargs, "num_inference_steps": 4, "num_frames": 13, "height": 64, "width": 128}  # grid 4 x 4 x 8
    outputs = {}
    for tile_order in (True, False):
        with ditaccel.patch(case.pipe, method, schedule=schedule, cache=cache, tile_order=tile_order) as handle:
            outputs[tile_order] = case.pipe(**call, generator=torch.Generator().manual_seed(0)).frames
            order = handle.summary().token_order.get("WanTransformer3DModel", "")
        if tile_order:
            assert "tile order" in order, order
    torch.testing.assert_close(outputs[True], outputs[False], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["wan", "ltx"])
def test_cross_attention_reuse_with_its_own_period(family, cases):
    """Broadcast(cross_period=3): the text cross-attention layers reuse on their own period, per
    branch; self-attention keeps its period; unpatch gives the cross-attention its processors back."""
    case = get_case(cases, family)
    transformer = case.pipe.transformer
    cross = [m for name, m in transformer.named_modules() if name.endswith("attn2")]
    originals = [m.processor for m in cross]
    seen = {}
    cache = ditaccel.Broadcast(period=2, cross_period=3, window=(0.0, 1.0))
    with ditaccel.patch(case.pipe, cache=cache) as handle:
        state = handle.states[0]
        hooks = [m.register_forward_hook(lambda mod, a, out, i=i: seen.__setitem__((i, state.context.step, state.context.call_in_step), out))
                 for i, m in enumerate(cross)]
        try:
            generate(case, 6)
        finally:
            for hook in hooks:
                hook.remove()
        summary = handle.summary()
        rows = summary.rows
    calls = max(c for _, _, c in seen) + 1
    for i in range(len(cross)):
        for call in range(calls):
            for step, source in ((1, 0), (2, 0), (4, 3), (5, 3)):
                assert seen[(i, step, call)] is seen[(i, source, call)]
            assert seen[(i, 3, call)] is not seen[(i, 0, call)]
    assert all(row["reused_steps"] == [1, 3, 5] for row in rows)  # self-attention: period 2
    name = type(transformer).__name__
    assert summary.cross_attention[name] == {"computed": 2 * len(cross) * calls, "reused": 4 * len(cross) * calls}
    assert [m.processor for m in cross] == originals


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_broadcast_and_residual_reuse_run_in_every_family(family, cases):
    case = get_case(cases, family)
    for method, cache in ((None, ditaccel.Broadcast(window=(0.0, 1.0))),
                          (ditaccel.Radial(block_size=64), ditaccel.Broadcast(window=(0.0, 1.0), cross_period=3)),
                          (ditaccel.Radial(block_size=64), ditaccel.ResidualReuse(refresh_every=2))):
        with ditaccel.patch(case.pipe, method, schedule=ditaccel.Schedule(), cache=cache) as handle:
            out = getattr(generate(case, 2), case.output_attr)
            rows = handle.summary().rows
        assert torch.isfinite(out).all()
        if isinstance(cache, ditaccel.Broadcast):
            assert all(row["reused_steps"] == [1] for row in rows)
