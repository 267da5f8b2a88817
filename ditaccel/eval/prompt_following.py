"""Prompt following of the built-in model: is the object the prompted colour, does it move the
prompted way? (The metric of ``benchmarks/tiny_video_prompt_following.py``, shared with the harness.)

For a generated video (F, H, W, 3) in [0, 1]:

* object pixels are those with saturation (max - min over RGB) above 0.25: every training
  background is grayscale and every object colour saturated, so this needs no scene knowledge;
* dominant colour: majority vote of the object pixels' nearest palette colour;
* motion: a least-squares line through the per-frame centroids of the object pixels gives the
  displacement over the clip; it must be at least 4 px long and its nearest of the 8 compass
  directions (45-degree sectors) must be the prompt's.

Only prompts of the built-in model's vocabulary with one translating object can be scored
(``scorable``); the rest get None.
"""

from __future__ import annotations

import math

import numpy as np

from ..pipelines.procedural_clips import COLOURS, TRANSLATIONS, parse_prompt

SATURATION_THRESHOLD = 0.25
MIN_DISPLACEMENT_PX = 4.0


def analyse_video(frames: np.ndarray) -> dict:
    """Dominant colour and centroid motion of the saturated pixels of (F, H, W, 3) floats in [0, 1]."""
    frames = np.asarray(frames, dtype=np.float64)
    saturation = frames.max(axis=-1) - frames.min(axis=-1)
    mask = saturation > SATURATION_THRESHOLD  # (F, H, W)
    names = list(COLOURS)
    palette = np.array(list(COLOURS.values()))
    pixels = frames[mask]
    if len(pixels) == 0:
        return {"colour": None, "direction": None, "displacement": [0.0, 0.0], "object_pixels": 0}
    nearest = np.argmin(((pixels[:, None, :] - palette[None]) ** 2).sum(-1), axis=1)
    votes = np.bincount(nearest, minlength=len(names))
    colour = names[int(votes.argmax())]

    ys, xs = np.mgrid[0 : frames.shape[1], 0 : frames.shape[2]]
    t, cx, cy = [], [], []
    for f in range(frames.shape[0]):
        m = mask[f]
        if m.sum() >= 3:
            t.append(f)
            cx.append(xs[m].mean())
            cy.append(ys[m].mean())
    direction, displacement = None, [0.0, 0.0]
    if len(t) >= 2:
        span = t[-1] - t[0]
        slope_x = np.polyfit(t, cx, 1)[0]
        slope_y = np.polyfit(t, cy, 1)[0]
        displacement = [float(slope_x * (frames.shape[0] - 1)), float(slope_y * (frames.shape[0] - 1))]
        if span > 0 and math.hypot(*displacement) >= MIN_DISPLACEMENT_PX:
            direction = nearest_direction(*displacement)
    return {"colour": colour, "direction": direction, "displacement": displacement, "object_pixels": int(mask.sum()),
            "colour_votes": {n: int(v) for n, v in zip(names, votes)}}


def nearest_direction(dx: float, dy: float) -> str:
    angle = math.atan2(dy, dx)
    return min(TRANSLATIONS, key=lambda k: abs(math.remainder(angle - math.atan2(TRANSLATIONS[k][1], TRANSLATIONS[k][0]), 2 * math.pi)))


def scorable(prompt: str) -> bool:
    """One object of the built-in vocabulary moving in a straight line."""
    try:
        clip = parse_prompt(prompt)
    except (ValueError, KeyError):
        return False
    return len(clip.objects) == 1 and clip.objects[0].motion in TRANSLATIONS


def follow_prompt(prompt: str, video: np.ndarray) -> dict | None:
    """``colour_ok`` / ``motion_ok`` of one video against its prompt, None if the prompt is not scorable."""
    if not scorable(prompt):
        return None
    spec = parse_prompt(prompt).objects[0]
    found = analyse_video(video)
    return {"prompt": prompt, "want_colour": spec.colour, "want_direction": spec.motion, **found,
            "colour_ok": found["colour"] == spec.colour, "motion_ok": found["direction"] == spec.motion}


def score(prompts: list[str], videos: list[np.ndarray]) -> tuple[list[dict], dict]:
    """Per-video rows and the accuracies over the scorable prompts."""
    rows = [row for row in (follow_prompt(p, v) for p, v in zip(prompts, videos)) if row is not None]
    n = len(rows)
    summary = {
        "videos": n,
        "colour_accuracy": sum(r["colour_ok"] for r in rows) / n if n else None,
        "motion_accuracy": sum(r["motion_ok"] for r in rows) / n if n else None,
        "both_accuracy": sum(r["colour_ok"] and r["motion_ok"] for r in rows) / n if n else None,
    }
    return rows, summary
