"""Residual reuse with sparse attention (DiTFastAttn's window-residual sharing, SPEC 5): a sparse
layer's output S misses what the dense attention A would add, and that difference changes slowly
from step to step. On a refresh step the layer computes both and keeps R = A - S (and outputs A);
on the following sparse steps it outputs S + R. Cheap steps come close to dense quality at the
sparse cost plus one dense call every ``refresh_every`` sparse steps.

Works at the attention call (q, k, v in, output before the output projection) of every sparse
method, static or dynamic; R is kept per (layer, CFG branch), as Broadcast keeps its outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import checks
from .attention_cache import BranchTracker, output_bytes


@dataclass(frozen=True)
class ResidualReuse:
    """Keep the dense-minus-sparse residual of each sparse layer and add it on the next steps.

    Args:
        refresh_every: every ``refresh_every``-th sparse step of a branch (its first included)
            computes the reference and refreshes the residual; the others add the kept one.
        reference: "dense" (the residual is dense attention minus sparse), or a method config (a
            richer sparse method as the reference).
        layers: indices of the patched attention layers that keep a residual (None = all sparse).
        max_cache_bytes: cap on the residuals' memory; layers that would pass it run plain sparse.
    """

    refresh_every: int = 5
    reference: object = "dense"
    layers: tuple[int, ...] | None = None
    max_cache_bytes: int | None = None

    name = "residual_reuse"

    def __post_init__(self) -> None:
        if isinstance(self.refresh_every, bool) or not isinstance(self.refresh_every, int) or self.refresh_every < 1:
            raise ValueError(f"refresh_every must be an int >= 1, got {self.refresh_every!r}")
        if isinstance(self.reference, str) and self.reference != "dense":
            raise ValueError(f"reference must be 'dense' or a method config (e.g. ditaccel.Radial(decay=2.0)), "
                             f"got {self.reference!r}")
        if not isinstance(self.reference, str) and not hasattr(self.reference, "block_size"):
            raise TypeError(f"reference must be 'dense' or a method config, got {type(self.reference).__name__}")
        object.__setattr__(self, "layers", checks.layer_indices("layers", self.layers))
        object.__setattr__(self, "max_cache_bytes", checks.byte_cap("max_cache_bytes", self.max_cache_bytes))

    def applies_to(self, layer: int) -> bool:
        return self.layers is None or layer in self.layers


class ResidualStore:
    """The residuals of one patched transformer and the refresh decision of each forward."""

    def __init__(self, config: ResidualReuse, transformer: torch.nn.Module) -> None:
        self.config = config
        self.tracker = BranchTracker(transformer)
        self.residuals: dict[tuple[int, str], torch.Tensor] = {}
        self.bytes = 0
        self.peak_bytes = 0
        self.over_cap: set[int] = set()
        self.refreshed: dict[int, int] = {}  # layer -> sparse calls that computed the reference
        self.applied: dict[int, int] = {}  # layer -> sparse calls that added a kept residual
        self.branch: str | None = None
        self.refresh = True
        self._sparse_steps: dict[str, int] = {}  # branch -> sparse forwards so far in this generation

    def begin_forward(self, ctx, any_sparse: bool) -> None:
        if ctx.step == 0 and ctx.call_in_step == 0:
            self.clear()  # a new generation
        self.branch = self.tracker.name if self.tracker.name is not None else f"call {ctx.call_in_step}"
        if not any_sparse:
            return
        count = self._sparse_steps.get(self.branch, 0)
        self.refresh = count % self.config.refresh_every == 0
        self._sparse_steps[self.branch] = count + 1

    def combine(self, layer: int, sparse: torch.Tensor, reference) -> torch.Tensor:
        """The layer's output for this call: on a refresh the reference (``reference()``), keeping
        reference - sparse; otherwise sparse + the kept residual."""
        if not self.config.applies_to(layer) or layer in self.over_cap:
            return sparse
        key = (layer, self.branch)
        kept = self.residuals.get(key)
        if not self.refresh and kept is not None:
            self.applied[layer] = self.applied.get(layer, 0) + 1
            return sparse + kept
        full = reference()
        residual = full - sparse
        growth = output_bytes(residual) - (output_bytes(kept) if kept is not None else 0)
        cap = self.config.max_cache_bytes
        if cap is not None and self.bytes + growth > cap:
            self.over_cap.add(layer)
            if kept is not None:
                self.bytes -= output_bytes(kept)
                del self.residuals[key]
            return sparse
        self.residuals[key] = residual
        self.bytes += growth
        self.peak_bytes = max(self.peak_bytes, self.bytes)
        self.refreshed[layer] = self.refreshed.get(layer, 0) + 1
        return full

    def clear(self) -> None:
        self.residuals.clear()
        self._sparse_steps.clear()
        self.bytes = 0

    def remove(self) -> None:
        self.tracker.remove()
        self.clear()
