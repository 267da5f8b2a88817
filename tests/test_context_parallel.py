"""Sparse attention under diffusers' Ulysses context parallelism, on 2 CPU processes (gloo, fp32):
each case equals the same model and patch in one process (tests/cp_worker.py runs them all in one
launch: starting the processes costs more than the cases)."""

from __future__ import annotations

import json
import socket

import pytest
import torch.multiprocessing as mp

import cp_worker

pytest.importorskip("diffusers")
pytest.importorskip("transformers")
WORLD = 2


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("cp")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(cp_worker.main, args=(WORLD, port, str(out)), nprocs=WORLD, join=True)
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]
    assert ranks[0].keys() == ranks[1].keys()
    return ranks


@pytest.mark.parametrize("case", ["wan dense", "wan radial", "wan neighborhood", "wan piecewise", "wan radial, patch first",
                                  "flux neighborhood", "flux piecewise", "wan unpatch",
                                  "wan radial + broadcast"])
def test_ulysses_2_equals_one_process(results, case):
    """Dense, static layouts built for the global grid, a dynamic method choosing per (global) head,
    joint text + image attention (rank-interleaved tokens put back in order), both orders of
    enable_parallelism and patch, unpatch under parallelism, and attention caching (reuse decided by
    the step, alike on every rank): equal to one process."""
    for rank in results:
        assert isinstance(rank[case], float), rank[case]
        assert rank[case] <= 1e-5, (case, rank[case])


def test_the_sparse_cases_are_not_dense(results):
    assert all(rank["wan radial differs from dense"] > 1e-3 for rank in results)
    assert all(rank["flux neighborhood differs from dense"] > 1e-3 for rank in results)


def test_ring_attention_with_a_sparse_method_is_refused_in_one_line(results):
    for rank in results:
        assert rank["wan ring"].startswith("NotImplementedError: ditaccel sparse attention supports Ulysses context "
                                           "parallelism only, got ring_degree=2")


def test_a_calibration_that_fails_on_one_rank_stops_every_rank(results):
    rank0, rank1 = results
    assert rank1["wan calibration fails on rank 1"] == "RuntimeError: calibration ran out of memory (test)"
    assert rank0["wan calibration fails on rank 1"].startswith("RuntimeError: ditaccel: another rank failed while deciding")


def test_a_processor_that_lost_its_parallel_config_is_named(results):
    for rank in results:
        assert rank["wan lost config"].startswith("RuntimeError: blocks.1.attn1's attention processor has no parallel config")


def test_heads_the_degree_does_not_divide_are_refused_in_one_line():
    from ditaccel.context_parallel import Ulysses

    with pytest.raises(ValueError, match="splits the heads over 2 ranks, but this layer has 5 heads"):
        Ulysses(group=None, config=None, degree=2, rank=0).check_heads(5)


@pytest.mark.parametrize("position", ["first", "last"])
def test_canonical_index_puts_rank_interleaved_text_and_video_back_in_order(position):
    """Ranks hold [text_r, video_r] (or [video_r, text_r]) chunks; gathered rank-major, the index
    lists the model's order: every text token, then every video token (or the reverse)."""
    from ditaccel.context_parallel import Ulysses

    n, text, video = 2, 4, 6
    chunks = []
    for r in range(n):
        t = [f"t{r * text // n + j}" for j in range(text // n)]
        v = [f"v{r * video // n + j}" for j in range(video // n)]
        chunks += t + v if position == "first" else v + t
    index = Ulysses(group=None, config=None, degree=n, rank=0).canonical_index(text + video, text, position, "cpu")
    ordered = [chunks[i] for i in index.tolist()]
    texts, videos = [f"t{i}" for i in range(text)], [f"v{i}" for i in range(video)]
    assert ordered == (texts + videos if position == "first" else videos + texts)
    with pytest.raises(ValueError, match="split evenly"):
        Ulysses(group=None, config=None, degree=n, rank=0).canonical_index(11, 4, position, "cpu")
