"""When to stay dense: early denoising steps, last steps, and chosen layers.

Quality collapses without a dense warm-up (the papers measure 12-20 dB PSNR vs dense when every
step is sparse), so every preset keeps the first ~quarter of the steps and the first layer dense.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    """Which (step, layer) pairs run dense attention; all others run the sparse method.

    Args:
        dense_steps: the first steps that stay dense. An int counts steps; a float in [0, 1) is a
            fraction of the generation's steps (0.24 = 12 of 50), rounded to the nearest step.
        dense_last_steps: the last steps that stay dense (int count or fraction, as above).
        dense_layers: an int N keeps layers 0..N-1 dense; a tuple lists dense layer indices.
    """

    dense_steps: int | float = 0
    dense_last_steps: int | float = 0
    dense_layers: int | tuple[int, ...] = 0

    def __post_init__(self) -> None:
        for name in ("dense_steps", "dense_last_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be an int >= 0 (steps) or a float in [0, 1) (fraction of steps), got {value!r}")
            if isinstance(value, float) and not 0.0 <= value < 1.0:
                raise ValueError(f"{name} as a fraction must be in [0, 1), got {value!r} (use an int to count steps)")
            if isinstance(value, int) and value < 0:
                raise ValueError(f"{name} must be an int >= 0 (steps) or a float in [0, 1) (fraction of steps), got {value!r}")
        layers = self.dense_layers
        if isinstance(layers, bool) or not isinstance(layers, (int, Sequence)) or isinstance(layers, str):
            raise TypeError(f"dense_layers must be an int >= 0 (first N layers) or a tuple of layer indices, got {layers!r}")
        if isinstance(layers, int):
            if layers < 0:
                raise ValueError(f"dense_layers must be an int >= 0 (first N layers) or a tuple of layer indices, got {layers!r}")
        else:
            if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in layers):
                raise ValueError(f"dense_layers entries must be layer indices (ints >= 0), got {layers!r}")
            object.__setattr__(self, "dense_layers", tuple(sorted(set(layers))))

    def layer_is_dense(self, layer: int) -> bool:
        if isinstance(self.dense_layers, int):
            return layer < self.dense_layers
        return layer in self.dense_layers

    def step_is_dense(self, step: int, num_steps: int | None, progress: float | None = None) -> bool:
        """``progress`` in [0, 1] (0 = pure noise) stands in for step / num_steps when the number
        of steps is unknown (a transformer called outside a diffusers pipeline)."""
        first, last = self.dense_steps, self.dense_last_steps
        if num_steps is None:
            if isinstance(first, float) or isinstance(last, float):
                p = progress if progress is not None else 0.0
                return (isinstance(first, float) and p < first) or (isinstance(last, float) and p >= 1.0 - last)
            return step < first
        n_first = round(first * num_steps) if isinstance(first, float) else first
        n_last = round(last * num_steps) if isinstance(last, float) else last
        return step < n_first or step >= num_steps - n_last
