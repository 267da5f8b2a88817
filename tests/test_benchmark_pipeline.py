"""benchmarks/pipeline.py's step kinds: the TaylorSeer rule it reads from a config against diffusers'
own hook, and the kinds of a schedule counted by hand."""

from __future__ import annotations

import importlib.util
import os

import pytest

diffusers = pytest.importorskip("diffusers")

_PATH = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "pipeline.py")
_spec = importlib.util.spec_from_file_location("benchmark_pipeline", _PATH)
pipeline = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pipeline)


@pytest.mark.parametrize("interval, before, after", [(3, 12, None), (2, 3, None), (1, 0, None), (4, 2, 9), (1000, 1, None)])
def test_taylorseer_rule_matches_diffusers_hook(interval, before, after):
    from diffusers.hooks.hooks import CacheContext, StateManager
    from diffusers.hooks.taylorseer_cache import TaylorSeerCacheHook, TaylorSeerState

    config = diffusers.TaylorSeerCacheConfig(use_lite_mode=True, cache_interval=interval,
                                             disable_cache_before_step=before, disable_cache_after_step=after)
    manager = StateManager(TaylorSeerState)
    manager.set_context(CacheContext("cond"))
    hook = TaylorSeerCacheHook(interval, before, config.taylor_factors_dtype, manager, disable_cache_after_step=after)
    hooked = [hook._measure_should_compute()[0] for _ in range(30)]
    assert hooked == [pipeline.taylorseer_computes(config, step) for step in range(30)]


def test_step_kinds_of_radial_with_taylorseer():
    # Radial preset on Wan: steps 0-11 dense (24% of 50). TaylorSeer (interval 3, after 12): computes
    # 0-11 and 13, 16, ..., 49 (13 steps), predicts the other 25.
    kinds = pipeline.step_kinds("radial + " + pipeline.TAYLORSEER, 50)
    assert kinds[:12] == ["dense"] * 12
    assert [s for s, k in enumerate(kinds) if k == "sparse"] == list(range(13, 50, 3))
    assert kinds.count("predicted") == 25
    assert pipeline.step_kinds(pipeline.TAYLORSEER, 50).count("dense") == 25


def test_step_kinds_refuses_what_it_cannot_model():
    with pytest.raises(ValueError, match="use_lite_mode"):
        pipeline.step_kinds("radial + taylorseer_cache(cache_interval=3)", 50)
    with pytest.raises(ValueError, match="decides from the data"):
        pipeline.step_kinds("radial + first_block_cache", 50)
