"""The cost model: given a calibration table the dense/sparse decision is deterministic; a layout
that computes every block runs the original (dense) processor; summary() reports the decision;
force_sparse runs sparse anyway; tables persist on disk."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

import ditaccel
from ditaccel.cost_model import CallShape, CostModel

from tiny_pipelines import BUILDERS

METHOD = ditaccel.Radial(decay=0.2, sink=True, block_size=64)


@pytest.fixture(scope="module")
def wan():
    return BUILDERS["wan"]()


def wan_shape(method=METHOD) -> CallShape:
    # The tiny Wan: CFG as two calls of batch 1, 2 heads x 16, 17 frames x 80 x 144 -> grid (5, 5, 9).
    return CallShape("cpu", "float32", 1, 2, 16, (5, 5, 9), 0, repr(method))


def run(case, **patch_arguments):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        handle = ditaccel.patch(case.pipe, METHOD, schedule=ditaccel.Schedule(), **patch_arguments)
        try:
            out = case.generate()
            summary = handle.summary()
        finally:
            handle.unpatch()
    return out, summary, [str(w.message) for w in caught if "runs dense" in str(w.message)]


def test_a_table_that_says_sparse_loses_runs_every_layer_dense_and_says_why(wan):
    plain = wan.generate()
    out, summary, warned = run(wan, cost_model=CostModel({wan_shape(): (1.0, 2.0)}))
    assert torch.equal(out, plain)  # the original processors ran
    assert all(not row["sparse_steps"] for row in summary.rows)
    assert all(row["cost_dense_steps"] == [0, 1, 2] for row in summary.rows)
    (reason,) = summary.decisions["WanTransformer3DModel"].values()
    assert reason.startswith("dense: sparse would not pay: 2.000 ms sparse vs 1.000 ms dense")
    assert "would not pay" in str(summary)
    assert len(warned) == 1 and "force_sparse=True" in warned[0]


def test_forwards_dense_at_any_step_read_their_timestep_later_and_count_the_same(wan, monkeypatch):
    """Once the table has the shape's verdict (dense), a forward does not read its timestep (on a GPU
    the read waits for the queued work): the steps are worked out when summary() asks, and the
    history is the one the step-by-step path writes, dense warm-up steps told from cost-model ones."""
    import ditaccel.patching as patching

    reads = []
    real = patching.timestep_value
    monkeypatch.setattr(patching, "timestep_value", lambda t: reads.append(1) or real(t))
    table = {wan_shape(): (1.0, 2.0)}
    schedule = ditaccel.Schedule(dense_steps=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with ditaccel.patch(wan.pipe, METHOD, schedule=schedule, cost_model=CostModel(table)) as handle:
            wan.generate()
            deferred_reads = len(reads)
            deferred = handle.summary()
        monkeypatch.setattr(patching.PatchState, "_dense_whatever_the_step", lambda *a: False)
        with ditaccel.patch(wan.pipe, METHOD, schedule=schedule, cost_model=CostModel(table)) as handle:
            wan.generate()
            stepwise = handle.summary()
    # Three steps of two CFG calls: the two warm-up calls read theirs (no verdict is asked for then),
    # as does the first call after them (the verdict is looked up); the other three wait.
    assert deferred_reads == 3
    assert deferred.rows == stepwise.rows
    assert all(row["dense_steps"] == [0, 1, 2] and row["cost_dense_steps"] == [1, 2] for row in deferred.rows)


def test_a_schedule_that_is_dense_throughout_never_builds_the_layout(wan):
    """Dense at every step: the method's layout is never asked for, so a window the grid could not
    hold (8 frames on 5) is not an error (the deferred-timestep check must not build it either)."""
    plain = wan.generate()
    with ditaccel.patch(wan.pipe, ditaccel.Neighborhood(window=(8, 8, 8)), schedule=ditaccel.Schedule(dense_steps=3),
                        cost_model=CostModel()):
        out = wan.generate()
    assert torch.equal(out, plain)


def test_a_table_that_says_sparse_wins_runs_sparse(wan):
    _, summary, warned = run(wan, cost_model=CostModel({wan_shape(): (1.0, 0.5)}))
    assert all(row["sparse_steps"] == [0, 1, 2] and not row["cost_dense_steps"] for row in summary.rows)
    assert summary.decisions["WanTransformer3DModel"][(5, 5, 9)].startswith("sparse: sparse pays")
    assert not warned


def test_the_decision_is_a_pure_function_of_the_table_and_the_margin():
    model = CostModel({wan_shape(): (1.0, 0.99)})
    never = lambda: pytest.fail("a shape in the table is never measured")  # noqa: E731
    assert not model.decide(wan_shape(), never).sparse  # 0.99 > 0.98 x 1.0
    assert CostModel({wan_shape(): (1.0, 0.99)}, margin=1.0).decide(wan_shape(), never).sparse
    assert model.decide(wan_shape(), never) == model.decide(wan_shape(), never)
    with pytest.raises(ValueError, match="margin"):
        CostModel(margin=0.0)


def test_force_sparse_runs_sparse_where_the_table_says_dense(wan):
    _, summary, warned = run(wan, cost_model=CostModel({wan_shape(): (1.0, 2.0)}), force_sparse=True)
    assert all(row["sparse_steps"] == [0, 1, 2] for row in summary.rows)
    assert summary.decisions["WanTransformer3DModel"][(5, 5, 9)] == "sparse: force_sparse=True"
    assert not warned


def test_a_full_window_layout_runs_the_dense_processor(wan):
    full = ditaccel.Neighborhood(window=(1.0, 1.0, 1.0))
    plain = wan.generate()
    seen = []

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        handle = ditaccel.patch(wan.pipe, full, schedule=ditaccel.Schedule(), cost_model=CostModel())
        originals = {layer.index: layer.module.processor for layer in handle.states[0].layers}
        hook = wan.pipe.transformer.blocks[1].attn1.register_forward_pre_hook(
            lambda module, *_: seen.append(module.processor))
        try:
            out = wan.generate()
            summary = handle.summary()
        finally:
            hook.remove()
            handle.unpatch()
    assert torch.equal(out, plain)
    assert seen and all(p is originals[1] for p in seen)
    assert "computes every block" in summary.decisions["WanTransformer3DModel"][(5, 5, 9)]
    assert any("runs dense" in str(w.message) for w in caught)
    with ditaccel.patch(wan.pipe, full, schedule=ditaccel.Schedule(), cost_model=CostModel(), force_sparse=True) as handle:
        wan.generate()
        assert all(row["sparse_steps"] for row in handle.summary().rows)


def test_a_table_on_disk_is_filled_once_and_read_back(tmp_path):
    path = tmp_path / "costs.json"
    calls = []

    def measure():
        calls.append(1)
        return 2.0, 1.0

    assert CostModel(path=path).decide(wan_shape(), measure).sparse
    assert calls == [1] and json.loads(path.read_text())[wan_shape().key()] == [2.0, 1.0]
    assert CostModel(path=path).decide(wan_shape(), lambda: pytest.fail("read from the file")).sparse


def test_without_a_cost_model_a_cpu_runs_sparse_and_says_so(wan):
    with ditaccel.patch(wan.pipe, METHOD, schedule=ditaccel.Schedule()) as handle:
        wan.generate()
        summary = handle.summary()
    assert all(row["sparse_steps"] == [0, 1, 2] for row in summary.rows)
    assert "no cost model on a CPU" in summary.decisions["WanTransformer3DModel"][(5, 5, 9)]


def test_bad_arguments_are_refused(wan):
    with pytest.raises(TypeError, match="force_sparse must be True or False"):
        ditaccel.patch(wan.pipe, METHOD, force_sparse="yes")
    with pytest.raises(TypeError, match="cost_model must be a ditaccel.CostModel"):
        ditaccel.patch(wan.pipe, METHOD, cost_model={"a": 1})
    assert not ditaccel.is_patched(wan.pipe)


@pytest.mark.parametrize("family", ["wan", "flux"])
def test_an_empty_cost_model_calibrates_each_shape_once(family):
    """The calibration itself runs (here on the CPU): dense SDPA and the sparse call timed on random
    inputs of the call's shape (FLUX: with its text first), one table entry per shape."""
    case = BUILDERS[family]()
    model = CostModel()
    method = ditaccel.Neighborhood(window=(1, 3, 3), block_size=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with ditaccel.patch(case.pipe, method, schedule=ditaccel.Schedule(), cost_model=model) as handle:
            case.generate()
            reasons = list(next(iter(handle.summary().decisions.values())).values())
    assert len(model.table) == 1
    (dense_ms, sparse_ms), = model.table.values()
    assert dense_ms > 0 and sparse_ms > 0
    assert len(reasons) == 1 and "(calibrated" in reasons[0]


@pytest.mark.parametrize("tile_order", [True, False])
def test_calibration_times_the_call_as_the_forward_makes_it(tile_order):
    """In a tile-order forward the call gets the video tokens tiled (nothing moves): the calibration
    times that call, and the per-call path (tokens moved) where the forward is not in tile order."""
    case = BUILDERS["wan"]()
    inputs = case.transformer_inputs((4, 8, 16))  # a grid the (2, 4, 8) tile divides
    model = CostModel()
    method = ditaccel.Neighborhood(window=(1, 3, 3), tile=(2, 4, 8), block_size=64)
    assert method.build_layout((4, 8, 16)).video_block_density() < 1.0  # so the cost model is asked
    calls = []
    from ditaccel.plugins.sparse_attention import SparseAttention
    original = SparseAttention.__call__

    def spy(self, *args, **kwargs):
        calls.append(kwargs.get("video_tiled"))
        return original(self, *args, **kwargs)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.MonkeyPatch.context() as mp, torch.no_grad():
            mp.setattr(SparseAttention, "__call__", spy)
            with ditaccel.patch(case.pipe.transformer, method, schedule=ditaccel.Schedule(), cost_model=model,
                                tile_order=tile_order):
                case.pipe.transformer(**inputs)
    (key,) = model.table
    assert json.loads(key)["video_tiled"] is tile_order
    assert calls and all(c is tile_order for c in calls)  # calibration and the forward's own calls alike


def test_a_forward_that_cannot_run_in_tile_order_is_decided_on_its_own_timing():
    # The same shape, first in a tile-order forward, then in one the adapter keeps in model order
    # (ControlNet residuals, per-token timesteps): each path gets its own calibration and decision.
    case = BUILDERS["wan"]()
    inputs = case.transformer_inputs((4, 8, 16))
    model = CostModel()
    method = ditaccel.Neighborhood(window=(1, 3, 3), tile=(2, 4, 8), block_size=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad(), ditaccel.patch(case.pipe.transformer, method, schedule=ditaccel.Schedule(),
                                             cost_model=model) as handle:
            case.pipe.transformer(**inputs)
            adapter = handle.states[0].adapter
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(adapter, "tile_order_supported", lambda *args: False)
                case.pipe.transformer(**inputs)
            reasons = handle.summary().decisions
    assert sorted(json.loads(key)["video_tiled"] for key in model.table) == [False, True]
    assert len(handle.states[0].decisions) == 2
    assert reasons  # summary() still lists the grid's decision
