"""Named presets: a method config plus a dense schedule, per model family.

Radial defaults come from the authors' scripts (Wan2.1: decay 0.2, 12 of 50 steps dense, first
layer dense, attention sink; HunyuanVideo: decay 0.95, 12 of 50 steps dense, no dense layer, no
sink). Families the papers did not tune get the Wan schedule with decay 1.0 (our choice).
"""

from __future__ import annotations

from .plugins.neighborhood import Neighborhood
from .plugins.piecewise import Piecewise
from .plugins.pyramid import Pyramid
from .plugins.radial import Radial
from .plugins.topk import TopK
from .schedule import Schedule

WARMUP = 0.24  # 12 of 50 steps

_RADIAL = {
    "wan": (Radial(decay=0.2, sink=True), Schedule(dense_steps=WARMUP, dense_layers=1)),
    "hunyuan_video": (Radial(decay=0.95, sink=False), Schedule(dense_steps=WARMUP, dense_layers=0)),
    "default": (Radial(decay=1.0, sink=False), Schedule(dense_steps=WARMUP, dense_layers=1)),
}
_NEIGHBORHOOD = {
    # 3/8 of the frames and 3/4 of each frame's height and width (the reach chosen with `ditaccel eval`
    # on the built-in model: spatial reach matters far more than temporal reach there), one window per
    # query tile (stride="tile"), rounded to whole tiles so windows start on tile boundaries: blocks
    # are partial only at the padded edges of grids the tile does not divide (one coordinate tested),
    # and where the default tile is longer than a dimension the window takes the whole dimension.
    # Chosen per family from benchmarks/results/neighborhood_presets_h200.json (the candidates'
    # attention calls at each family's real shapes, H200): 1.4-3.2x dense SDPA per
    # call on Wan, HunyuanVideo and CogVideoX where the earlier stride-2 windows ran 0.94-1.8x (their
    # windows cut most blocks), as fast or faster on every family but HunyuanVideo 544p and Mochi.
    # Quality on the built-in model (benchmarks/results/eval_tiny_video_neighborhood, H200, 30
    # held-out prompts x 2 seeds): 23.9 dB PSNR against dense at 0.51 of dense compute, where the
    # stride-2 window scored 25.1 dB at 0.58 (on that 16^3 grid the (4, 4, 8) tile rounds the window
    # to (4, 12, 16) tokens; on Wan 720p it is (9, 40, 48), stride (1, 8, 16)).
    "default": (Neighborhood(window=(0.375, 0.75, 0.75), stride="tile"), Schedule(dense_steps=WARMUP, dense_layers=1)),
}
# Piecewise (PISA): density 0.15 in blocks of 64 (the paper's setting). PISA published only a
# FLUX script (first 4 attention layers dense, no dense steps); its Wan and HunyuanVideo
# schedules are not public, so video families get the radial presets' warm-up (our choice), and
# the zeroth-order approximation: on the built-in video model the first-order term (PISA's default,
# kept for FLUX) costs quality at equal compute, end to end (benchmarks/results/
# eval_tiny_video_dynamic, H200: 25.5 dB PSNR / SSIM 0.857 with order 0 against 23.5 dB / 0.731
# with order 1, both 0.49 of dense compute; top-k 22.4 dB / 0.859) and per call on captured q, k, v
# (benchmarks/results/fidelity_tiled).
_PIECEWISE = {
    "flux": (Piecewise(), Schedule(dense_steps=0, dense_layers=4)),
    "default": (Piecewise(order=0), Schedule(dense_steps=WARMUP, dense_layers=1)),
}
# Top-k: the keep-or-drop baseline, on piecewise's blocks and schedules.
_TOPK = {family: (TopK(density=m.density, block_size=m.block_size), s) for family, (m, s) in _PIECEWISE.items()}
# Pyramid (PSA): the authors' presets (configs/attention_config.yaml) are Wan2.1 by cumulative mass
# (0.4 / 0.5 / 0.6 / 0.8, at least 6% exact; `Pyramid(mode="mass")`) and CogVideoX by block fractions
# (10% / 5% / 0 / 20%, about 15% of dense compute), 15 of 50 steps dense, no dense layer. Ours, for
# every family: the fractions, with the blocks ranked by piecewise's block score (importance="score")
# instead of the paper's sampled max logits. Evidence, on the built-in (Wan) model's full held-out
# suite (H200, 30 prompts x 2 seeds, the preset's schedule):
# - against the Wan mass preset at equal compute (benchmarks/results/eval_tiny_video_pyramid_wan_preset):
#   fractions (0.25, 0.1, 0.1, 0.2) with the score 28.17 dB / SSIM 0.946 / LPIPS 0.040 at 0.543 of dense
#   compute against mass 26.09 / 0.905 / 0.032 at 0.553 (PSNR and SSIM intervals apart, LPIPS's
#   overlapping); the default fractions 24.67 / 0.905 / 0.080 at 0.404, mass at lower thresholds 25.07 /
#   0.885 / 0.040 at 0.489 and 23.53 / 0.857 / 0.058 at 0.429;
# - against the sampled estimate in fraction mode (eval_tiny_video_pyramid_importance, piecewise's
#   schedule): 24.08 / 0.902 / 0.087 against 23.08 / 0.807 / 0.100, both at 0.489 (top-k 22.38 / 0.859 /
#   0.077 at 0.484); at richer splits the sampled estimate does better (29.67 / 0.955 / 0.014 at 0.543
#   above), but its importance pass is ~3% of dense compute;
# - speed (attention.py, H200, benchmarks/results/attention_h200_dynamic.json): the score's pass is one
#   statistics read: Wan2.1-14B 720p 46.7 ms, 4.49x cuDNN, 8.7% overhead; HunyuanVideo 720p 68.1 ms,
#   4.60x, 5.9%; against the mass preset's 39% at Wan and the sampled fractions' 22% at HunyuanVideo;
# - per call on captured q, k, v (benchmarks/results/fidelity_tiled, top-k at every block count): beats
#   top-k at 26 of 30 points (sampled: 21); the four it loses, by 4-26%, are step 2 layer 1 at 15-30%
#   and step 18 layer 1 at 5%. In mass mode the score is a poor ranking: its softmax is flat, so the
#   thresholds keep ~40% of the blocks at Wan 720p.
_PYRAMID_WARMUP = 0.3
_PYRAMID = {
    "default": (Pyramid(mode="fraction", importance="score"), Schedule(dense_steps=_PYRAMID_WARMUP)),
}
PRESETS = {"radial": _RADIAL, "neighborhood": _NEIGHBORHOOD, "piecewise": _PIECEWISE, "pyramid": _PYRAMID, "topk": _TOPK}



def preset(name: str, family: str):
    """(method config, schedule) for preset ``name`` on model ``family``."""
    if not isinstance(name, str) or name not in PRESETS:
        raise ValueError(f"unknown method or preset {name!r}; choose one of {sorted(PRESETS)} or pass a config object (ditaccel.Radial, Neighborhood, Piecewise, Pyramid, TopK)")
    table = PRESETS[name]
    return table.get(family, table["default"])


def radial_defaults(family: str) -> dict:
    """The radial preset's values for the fields a user leaves as None in a Radial config."""
    config = _RADIAL.get(family, _RADIAL["default"])[0]
    return {"decay": config.decay, "sink": config.sink}


def default_schedule(family: str, method=None) -> Schedule:
    """The schedule used with a config object: a dynamic method's (piecewise, top-k, pyramid) is its
    preset's for the family (the papers' warm-ups differ), the static methods' the radial preset's."""
    if getattr(method, "dynamic", False):
        return preset(method.name, family)[1]
    return _RADIAL.get(family, _RADIAL["default"])[1]
