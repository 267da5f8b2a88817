"""Attention broadcast (Pyramid Attention Broadcast, "Real-Time Video Generation with Pyramid
Attention Broadcast"): in the middle of denoising, attention outputs change little from step to
step, so an attention layer recomputes its output only every ``period`` steps and reuses it in
between.

Differences from diffusers' ``PyramidAttentionBroadcastConfig``: the window is a fraction of the
generation's steps (a timestep window in 0-1000 units covers only 42-54% of the steps of a
flow-shifted schedule), each CFG branch keeps its own output (cond and uncond never share one,
also when the pipeline runs them as two calls), and it composes with the sparse methods: a
computed step runs whatever the schedule says (dense or sparse), a reused step runs nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .. import checks


@dataclass(frozen=True)
class Broadcast:
    """Reuse each attention layer's output between recomputations.

    Args:
        period: recompute every ``period`` steps inside the window (1 = never reuse).
        window: (start, end) fractions of the steps where reuse may happen: steps with
            start <= step / steps < end (the first step of the window always computes).
        layers: indices of the patched attention layers that may reuse (None = all).
        max_cache_bytes: cap on the memory of the kept outputs (all layers and branches); layers
            that would pass it compute every step. None = no cap.
        cross_period: the period of the text cross-attention layers, in families that have them
            (Wan, LTX; the paper reuses cross-attention longest, e.g. 5-6); None leaves them alone.
    """

    period: int = 2
    window: tuple[float, float] = (0.25, 0.85)
    layers: tuple[int, ...] | None = None
    max_cache_bytes: int | None = None
    cross_period: int | None = None

    name = "broadcast"

    def __post_init__(self) -> None:
        for name in ("period", "cross_period"):
            value = getattr(self, name)
            if name == "cross_period" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1 (recompute every {name} steps), got {value!r}")
        window = self.window
        if (not isinstance(window, (tuple, list)) or len(window) != 2
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in window)
                or not 0.0 <= window[0] <= window[1] <= 1.0):
            raise ValueError(f"window must be (start, end) fractions of the steps with 0 <= start <= end <= 1, got {window!r}")
        object.__setattr__(self, "window", (float(window[0]), float(window[1])))
        object.__setattr__(self, "layers", checks.layer_indices("layers", self.layers))
        object.__setattr__(self, "max_cache_bytes", checks.byte_cap("max_cache_bytes", self.max_cache_bytes))

    def applies_to(self, layer: int) -> bool:
        return self.layers is None or layer in self.layers

    def phase(self, step: int, num_steps: int | None, progress: float | None, period: int | None = None) -> str:
        """"outside" the window (compute, keep nothing), "compute" (compute and keep the output) or
        "reuse" (return the kept output) for ``step``: inside the window every ``period``-th step
        counted from the window's first step computes."""
        start, end = self.window
        if num_steps:
            first = math.ceil(start * num_steps - 1e-9)
            if not first <= step < end * num_steps - 1e-9:
                return "outside"
            offset = step - first
        else:
            # Steps unknown (a transformer called on its own): the window in progress, the step count.
            p = 0.0 if progress is None else progress
            if not start <= p < end:
                return "outside"
            offset = step
        period = self.period if period is None else period
        return "compute" if period == 1 or offset % period == 0 else "reuse"
