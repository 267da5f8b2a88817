"""The per-transformer context hook: latent grid, timestep and denoising step of each call.

Processors see only hidden states, never the grid or the step, so one forward pre-hook on the
transformer records them. It is a plain torch hook (not a diffusers HookRegistry hook, whose
removal was seen to drop accelerate's CPU-offload wrapper) and it runs eagerly, outside
torch.compile. Dense/sparse switching happens here, by swapping processor objects, so a compiled
block sees one of two fixed processors and never branches on a Python step counter.

Step index, in order of preference: the pipeline's scheduler (position of the current timestep
in ``scheduler.timesteps``: exact, stateless, survives an aborted generation), else counting
timestep changes (a new step when the timestep changes, a new generation when it increases).
Several calls in one step (CFG cond/uncond) share the step; ``call_in_step`` tells them apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

Grid = tuple[int, int, int]


@dataclass
class StepContext:
    grid: Grid | None = None
    timestep: float | None = None
    step: int = 0
    num_steps: int | None = None
    progress: float | None = None  # 0 = first step (pure noise) .. 1 = last step
    call_in_step: int = 0
    calls: int = 0
    # Tile-order forward (tile_order.py): the tiling the blocks' video tokens are in during this
    # forward, None while they are in the model's order.
    tiling: object = None
    _last_timestep: float | None = field(default=None, repr=False)
    _timesteps_source: torch.Tensor | None = field(default=None, repr=False)
    _timesteps: torch.Tensor | None = field(default=None, repr=False)

    def advance(self, timestep: float, scheduler_timesteps: torch.Tensor | None, timestep_scale: float) -> None:
        """Update the step from this call's timestep."""
        same_step = self._last_timestep is not None and timestep == self._last_timestep
        if scheduler_timesteps is not None and len(scheduler_timesteps) > 0:
            if scheduler_timesteps is not self._timesteps_source:
                # One host copy per generation (set_timesteps makes a new tensor), not per call.
                self._timesteps_source = scheduler_timesteps
                self._timesteps = scheduler_timesteps.detach().float().cpu() * timestep_scale
            self.step = int((self._timesteps - timestep).abs().argmin())
            self.num_steps = len(self._timesteps)
        elif self._last_timestep is None or timestep > self._last_timestep:
            self.step, self.num_steps = 0, None
        elif not same_step:
            self.step += 1
        self.call_in_step = self.call_in_step + 1 if same_step else 0
        if self.num_steps:
            self.progress = self.step / max(self.num_steps - 1, 1)
        else:
            # No schedule known: the timestep itself (1000 -> 0, after undoing the model's scale).
            self.progress = 1.0 - min(max(timestep / (1000.0 * timestep_scale), 0.0), 1.0)
        self._last_timestep = timestep
        self.timestep = timestep
        self.calls += 1

    @property
    def tile_order(self) -> bool:
        return self.tiling is not None

    def reset(self) -> None:
        self.__init__()


def timestep_value(t) -> float:
    """One float from a timestep given as a number, [B], [B, S] (Wan 2.2 TI2V) or [B,1,1,1,1]."""
    if isinstance(t, torch.Tensor):
        return float(t.detach().flatten().max()) if t.numel() else 0.0
    return float(t)
