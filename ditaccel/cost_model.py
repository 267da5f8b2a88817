"""Does a sparse attention call pay? Measured, not guessed: on the first forward of a shape the
runtime times the sparse call as the forward will make it (in a tile-order forward the video
tokens arrive tiled; otherwise the call moves them, and that is timed too) against dense SDPA on
random inputs of that exact shape, keeps the answer per process (and in a JSON file when asked), and runs dense
where sparse would not be at least ``margin`` faster. Small, launch-bound shapes (the built-in
model's 4,096 tokens) and layouts that compute nearly every block are where sparse loses.

    ditaccel.patch(pipe, "neighborhood")                                   # CUDA: calibrated per shape
    ditaccel.patch(pipe, "neighborhood", cost_model=CostModel(path="costs.json"))   # kept on disk
    ditaccel.patch(pipe, "neighborhood", force_sparse=True)               # experiments: always sparse

The decision is a pure function of the calibration table: given the same table, the same shapes
run dense or sparse (tests/test_cost_model.py). On a CPU the runtime calibrates nothing unless a
CostModel is passed: the CPU path is the exact reference backend, a correctness fallback whose
speed says nothing about a GPU.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

MARGIN = 0.98  # sparse runs where it takes at most 98% of dense's time
ENV_PATH = "DITACCEL_COST_TABLE"  # a JSON file the process-wide model reads and extends


@dataclass(frozen=True)
class CallShape:
    """What an attention call's time depends on."""

    device: str  # the GPU's name (or "cpu")
    dtype: str
    batch: int
    heads: int
    head_dim: int
    grid: tuple[int, int, int]
    text_len: int
    method: str  # the config's repr: its layout (or its selection rule) and block size
    video_tiled: bool = False  # a tile-order forward: the call gets the video tokens tiled, nothing moves

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class Decision:
    sparse: bool
    reason: str
    dense_ms: float | None = None
    sparse_ms: float | None = None


class CostModel:
    """A calibration table {shape: (dense ms, sparse ms)} and the rule that reads it."""

    def __init__(self, table: dict[CallShape, tuple[float, float]] | None = None, *, path: str | os.PathLike | None = None,
                 margin: float = MARGIN):
        if not 0.0 < margin <= 1.0:
            raise ValueError(f"margin must be in (0, 1], got {margin!r}")
        self.margin = margin
        self.path = Path(path) if path is not None else None
        self.table: dict[str, tuple[float, float]] = {}
        if self.path is not None and self.path.is_file():
            try:
                self.table.update({k: tuple(v) for k, v in json.loads(self.path.read_text()).items()})
            except (ValueError, AttributeError, TypeError) as error:
                raise ValueError(f"cost table {self.path} (CostModel path or ${ENV_PATH}) is not a table this version "
                                 f"wrote: {error}; delete it to calibrate again") from None
        for shape, times in (table or {}).items():
            self.table[shape.key()] = (float(times[0]), float(times[1]))

    def decide(self, shape: CallShape, measure: Callable[[], tuple[float, float]]) -> Decision:
        """Dense or sparse for ``shape``: from the table, after ``measure()`` (dense ms, sparse ms)
        fills it the first time."""
        key = shape.key()
        if key not in self.table:
            self.table[key] = tuple(float(t) for t in measure())
            if self.path is not None and _writes_files():
                # A whole new file replaces the old one: a reader never sees half a table.
                partial = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
                partial.write_text(json.dumps(self.table, indent=1))
                os.replace(partial, self.path)
        dense_ms, sparse_ms = self.table[key]
        sparse = sparse_ms <= self.margin * dense_ms
        verdict = "sparse pays" if sparse else "sparse would not pay"
        how = "calibrated in tile order" if shape.video_tiled else "calibrated"
        return Decision(sparse, f"{verdict}: {sparse_ms:.3f} ms sparse vs {dense_ms:.3f} ms dense per call ({how})",
                        dense_ms, sparse_ms)


def _writes_files() -> bool:
    """Rank 0 writes the table (all ranks of a torchrun launch calibrate the same shapes)."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


_PROCESS_MODEL: CostModel | None = None


def process_cost_model() -> CostModel:
    """The model every patch on a GPU shares unless given its own (file: $DITACCEL_COST_TABLE)."""
    global _PROCESS_MODEL
    if _PROCESS_MODEL is None:
        _PROCESS_MODEL = CostModel(path=os.environ.get(ENV_PATH) or None)
    return _PROCESS_MODEL


def time_pair(dense: Callable[[], object], sparse: Callable[[], object], *, device=None, rounds: int = 5) -> tuple[float, float]:
    """Median milliseconds of ``dense()`` and ``sparse()`` running on ``device``, each warmed up once
    (kernels compile and autotune there), then timed in interleaved rounds (CUDA events on that GPU's
    stream, the wall clock on a CPU; the two swap places every round, so neither always runs first)."""
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        with torch.cuda.device(device):
            return _time_pair(dense, sparse, rounds, cuda=True)
    return _time_pair(dense, sparse, rounds, cuda=False)


def _time_pair(dense, sparse, rounds: int, *, cuda: bool) -> tuple[float, float]:
    dense(), sparse()
    times: dict[str, list[float]] = {"dense": [], "sparse": []}
    for i in range(rounds):
        pair = (("dense", dense), ("sparse", sparse))
        for name, fn in pair if i % 2 == 0 else pair[::-1]:
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times[name].append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times["dense"]), statistics.median(times["sparse"])
