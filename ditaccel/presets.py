"""Named presets: a method config plus a dense schedule, per model family.

Radial defaults come from the authors' scripts (Wan2.1: decay 0.2, 12 of 50 steps dense, first
layer dense, attention sink; HunyuanVideo: decay 0.95, 12 of 50 steps dense, no dense layer, no
sink). Families the papers did not tune get the Wan schedule with decay 1.0 (our choice).
"""

from __future__ import annotations

from .plugins.neighborhood import Neighborhood
from .plugins.radial import Radial
from .schedule import Schedule

WARMUP = 0.24  # 12 of 50 steps

_RADIAL = {
    "wan": (Radial(decay=0.2, sink=True), Schedule(dense_steps=WARMUP, dense_layers=1)),
    "hunyuan_video": (Radial(decay=0.95, sink=False), Schedule(dense_steps=WARMUP, dense_layers=0)),
    "default": (Radial(decay=1.0, sink=False), Schedule(dense_steps=WARMUP, dense_layers=1)),
}
_NEIGHBORHOOD = {
    # 3/8 of the frames and 3/4 of each frame's height and width, one window per 2 x 2 x 2 query
    # group: fits any resolution. Chosen with `ditaccel eval` on the built-in model
    # (benchmarks/results/eval_tiny_video, H200, 30 held-out prompts x 2 seeds), the Pareto point
    # below the earlier preset's compute: 25.1 dB PSNR against dense where the earlier half-of-every-
    # dimension window (0.5, 0.5, 0.5), stride 1, scored 20.8 dB and moved the object the prompted
    # way in 57% of clips (dense 90%, this 90%), at less attention compute on that model (0.576 vs
    # 0.634 of dense). Spatial reach matters far more than temporal reach there. On large grids its
    # token density is 0.21 (the earlier window's 0.125): per-family windows are issue 15's work.
    "default": (Neighborhood(window=(0.375, 0.75, 0.75), stride=2), Schedule(dense_steps=WARMUP, dense_layers=1)),
}
PRESETS = {"radial": _RADIAL, "neighborhood": _NEIGHBORHOOD}



def preset(name: str, family: str):
    """(method config, schedule) for preset ``name`` on model ``family``."""
    if not isinstance(name, str) or name not in PRESETS:
        raise ValueError(f"unknown method or preset {name!r}; choose one of {sorted(PRESETS)} or pass a config object (ditaccel.Radial, ditaccel.Neighborhood)")
    table = PRESETS[name]
    return table.get(family, table["default"])


def radial_defaults(family: str) -> dict:
    """The radial preset's values for the fields a user leaves as None in a Radial config."""
    config = _RADIAL.get(family, _RADIAL["default"])[0]
    return {"decay": config.decay, "sink": config.sink}


def default_schedule(family: str) -> Schedule:
    """The schedule used with a config object: the radial preset's schedule for the family."""
    return _RADIAL.get(family, _RADIAL["default"])[1]
