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
    # Half of every grid dimension: a sliding 3-D window that fits any resolution.
    "default": (Neighborhood(window=(0.5, 0.5, 0.5)), Schedule(dense_steps=WARMUP, dense_layers=1)),
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
