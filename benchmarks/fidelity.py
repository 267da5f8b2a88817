"""Fidelity of the block methods: relative L2 error of the attention output against dense attention
as a function of the computed fraction, for TopK, Piecewise (orders 0 and 1) and Pyramid (modes
"mass" and "fraction"), all with blocks of 64 consecutive tokens (canonical = raster order).

Two kinds of inputs:

- ``synthetic``: q, k, v from smooth random fields over a T x H x W video grid (Gaussian-filtered
  noise per channel; q and k share a common field, each adds its own; v an independent field),
  RMS-normalised, then q and k rotated by Wan's 3-D rotary embedding over (t, h, w).
- ``captured``: q, k, v of the built-in tiny model's self-attention (``blocks.{i}.attn1``) as
  diffusers' dispatch receives them (after norm_q/norm_k and rotary), cond branch of a seeded
  generation, at a few denoising steps and layers.

Computed fraction (all FLOP-proportional shares of dense attention):

- TopK, Piecewise: selected key blocks / all key blocks (the same selection for the three). The
  Taylor part of Piecewise is one summary key per unselected block, reported apart as
  ``approx_overhead`` = unselected blocks / (block_size * blocks) per query block, not added (the
  order-1 term adds one D x D matvec per query, D / (2 N) of dense, also not added).
- Pyramid: sum over (query block, key block) pairs of 1/level for level > 0, over all pairs.
- Not counted for any method: the selection / importance pre-pass.

Pyramid runs with each importance estimate of ``pyramid_levels``: the paper's sampled max logits
(variants "mode=mass", "mode=fraction") and piecewise's block score ("...,importance=score").

Runs on a CPU with the PyTorch reference backends (quality, not speed).

    python benchmarks/fidelity.py [--out benchmarks/results/fidelity] [--steps 2 10 18] [--layers 1 3]

Writes fidelity.json and fidelity.png to --out and prints a summary table and, per input kind,
whether Piecewise and Pyramid beat TopK at every setting (density or target computed fraction) <=
0.30. TopK runs at the densities and also at every whole number of blocks per row up to half of
them, so that its log error, interpolated linearly in the fraction at the other method's computed
fractions, is never more than one block away from a measured point (below TopK's smallest
fraction its error there is used, which favours TopK).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ditaccel.plugins.dynamic import dynamic_tiling  # noqa: E402
from ditaccel.kernels.piecewise import piecewise_attention, piecewise_selection, topk_attention  # noqa: E402
from ditaccel.kernels.pyramid import (  # noqa: E402
    BLOCK_FRACTIONS,
    MASS_THRESHOLDS,
    MIN_FULL_FRACTION,
    pyramid_attention,
    pyramid_levels,
)

RESULTS = Path(__file__).resolve().parent / "results" / "fidelity"
BLOCK_SIZE = 64
DENSITIES = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)
# Pyramid is swept to the same computed fractions: "fraction" mode scales the preset's block
# fractions analytically; "mass" mode scales the preset's thresholds, the scale picked per input
# from a grid as the one whose computed fraction is closest to each target.
TARGET_FRACTIONS = DENSITIES
MASS_SCALES = tuple(float(s) for s in np.geomspace(0.01, 1.0 / MASS_THRESHOLDS[-1], 48))
COMPARE_UP_TO = 0.30
PROMPT = "a red circle moving right"

METHODS = (  # (method, variant): the lines of the plot
    ("topk", "-"),
    ("piecewise", "order=0"),
    ("piecewise", "order=1"),
    ("pyramid", "mode=mass"),
    ("pyramid", "mode=fraction"),
    ("pyramid", "mode=mass,importance=score"),
    ("pyramid", "mode=fraction,importance=score"),
)
COLORS = {"topk": "black", "piecewise/order=0": "tab:orange", "piecewise/order=1": "tab:red",
          "pyramid/mode=mass": "tab:blue", "pyramid/mode=fraction": "tab:cyan",
          "pyramid/mode=mass,importance=score": "tab:purple", "pyramid/mode=fraction,importance=score": "tab:green"}
IMPORTANCES = ("sampled", "score")  # pyramid_levels' importance estimates (the variant names "importance=score")


# ---------------------------------------------------------------------------------------- inputs


def _smooth_field(shape: tuple[int, int, int], channels: int, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Gaussian-filtered white noise: [T*H*W, channels] in raster order, unit RMS per channel, on
    the generator's device."""
    radius = max(1, math.ceil(3 * sigma))
    device = generator.device
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float64, device=device) / sigma) ** 2)
    taps = (taps / taps.sum()).float()
    x = torch.randn(1, channels, *shape, generator=generator, device=device)
    for axis in range(3):  # separable filter; circular padding keeps the field stationary
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        kernel = taps.view(1, 1, *[-1 if a == axis else 1 for a in range(3)]).repeat(channels, 1, 1, 1, 1)
        x = F.conv3d(F.pad(x, pad, mode="circular"), kernel, groups=channels)
    x = x[0].flatten(1).T
    return x / x.pow(2).mean(0, keepdim=True).sqrt()


def _rope_3d(x: torch.Tensor, shape: tuple[int, int, int], theta: float = 10000.0) -> torch.Tensor:
    """Wan's 3-D rotary embedding on x [B, N, H, D] (raster order over ``shape``): head_dim split
    into D - 4 (D // 6) channels for t and 2 (D // 6) each for h and w, interleaved pairs rotated by
    position * theta^(-2j / part)."""
    D = x.shape[-1]
    parts = (D - 4 * (D // 6), 2 * (D // 6), 2 * (D // 6))
    grid = torch.stack(torch.meshgrid(*[torch.arange(n, device=x.device) for n in shape], indexing="ij"), -1).reshape(-1, 3).double()
    angles = torch.cat(
        [grid[:, a, None] * theta ** (-torch.arange(0, p, 2, dtype=torch.float64, device=x.device) / p) for a, p in enumerate(parts)],
        dim=-1,
    ).float()  # [N, D/2]
    cos, sin = angles.cos()[None, :, None], angles.sin()[None, :, None]
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)


def synthetic_inputs(grid: tuple[int, int, int], heads: int, head_dim: int, sigma: float, seed: int,
                     own: float, device: str = "cpu") -> tuple[torch.Tensor, ...]:
    """q, k, v [1, N, heads, head_dim] (fp32, on ``device``): q and k = shared smooth field + ``own``
    x their own smooth field, RMS-normalised per token (as Wan's RMS norm), then 3-D rotary; v an
    independent field."""
    g = torch.Generator(device=device).manual_seed(seed)
    C = heads * head_dim

    def field():
        return _smooth_field(grid, C, sigma, g).view(1, -1, heads, head_dim)

    shared = field()
    q, k, v = shared + own * field(), shared + own * field(), field()
    q, k = (x / x.pow(2).mean(-1, keepdim=True).sqrt() for x in (q, k))
    return _rope_3d(q, grid), _rope_3d(k, grid), v


@contextlib.contextmanager
def _recording_self_attention(transformer, layers: list[int], keep):
    """While active, ``keep(layer, q, k, v)`` receives what diffusers' dispatch gets from the
    self-attention of ``blocks.{layer}.attn1`` (q, k, v [B, N, heads, D] after norm and rotary)."""
    import diffusers.models.transformers.transformer_wan as wan_module

    original = wan_module.dispatch_attention_fn
    current: list[int | None] = [None]

    def dispatch(query, key, value, *args, **kwargs):
        if current[0] is not None:
            keep(current[0], query, key, value)
        return original(query, key, value, *args, **kwargs)

    def enter(layer):
        return lambda module, args, kwargs=None: current.__setitem__(0, layer)

    hooks = []
    for layer in layers:
        attn = transformer.blocks[layer].attn1
        hooks.append(attn.register_forward_pre_hook(enter(layer)))
        hooks.append(attn.register_forward_hook(lambda *a: current.__setitem__(0, None)))
    wan_module.dispatch_attention_fn = dispatch
    try:
        yield
    finally:
        wan_module.dispatch_attention_fn = original
        for h in hooks:
            h.remove()


def captured_inputs(steps: list[int], layers: list[int], num_steps: int, guidance: float, seed: int) -> dict:
    """{(step, layer): (q, k, v)} from the built-in model's cond branch at the given 0-based steps."""
    from ditaccel.pipelines.tiny_video import load_tiny_video_pipeline

    pipe = load_tiny_video_pipeline("cpu", torch.float32)
    pipe.set_progress_bar_config(disable=True)
    calls = [0]  # transformer calls: 2 i is step i's cond branch, 2 i + 1 its uncond branch
    captured = {}

    def keep(layer, q, k, v):
        step, branch = divmod(calls[0], 2) if guidance > 1.0 else (calls[0], 0)
        if branch == 0 and step in steps:
            captured[(step, layer)] = tuple(x.detach().float().clone() for x in (q, k, v))

    count = pipe.transformer.register_forward_hook(lambda *a: calls.__setitem__(0, calls[0] + 1))
    try:
        with _recording_self_attention(pipe.transformer, layers, keep):
            pipe(PROMPT, num_inference_steps=num_steps, guidance_scale=guidance,
                 generator=torch.Generator().manual_seed(seed))
    finally:
        count.remove()
    missing = [(s, l) for s in steps for l in layers if (s, l) not in captured]
    if missing:
        raise RuntimeError(f"nothing captured at (step, layer) {missing}")
    return captured


# ------------------------------------------------------------------------------------ the sweep


def relative_l2(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double() - ref.double()).norm() / ref.double().norm())


def dense_attention(q, k, v) -> torch.Tensor:
    return F.scaled_dot_product_attention(*(x.transpose(1, 2) for x in (q, k, v))).transpose(1, 2)


def pyramid_fraction(levels: torch.Tensor) -> float:
    """Share of dense compute: a pair at level l costs 1/l of a full block pair, level 0 nothing."""
    lv = levels.double()
    return float(torch.where(lv > 0, 1.0 / lv.clamp(min=1), 0.0).mean())


def scaled_fractions(target: float) -> tuple[float, float, float, float]:
    """The preset BLOCK_FRACTIONS scaled to a computed fraction of ``target``; past the point where
    they would cover every block, the level-8 share is cut so that they sum to 1."""
    preset = sum(f / lv for f, lv in zip(BLOCK_FRACTIONS, (1, 2, 4, 8)))
    scaled = [f * target / preset for f in BLOCK_FRACTIONS]
    scaled[3] = max(0.0, min(scaled[3], 1.0 - sum(scaled[:3])))
    return tuple(scaled)


def sweep(q, k, v, tag: dict) -> list[dict]:
    """Every method at every setting on one input; one record each."""
    B, N, H, D = q.shape
    nb = -(-N // BLOCK_SIZE)
    ref = dense_attention(q, k, v)
    records = []

    def add(method, variant, parameter, fraction, overhead, out):
        records.append(dict(tag, method=method, variant=variant, parameter=parameter, computed_fraction=fraction,
                            approx_overhead=overhead, rel_l2=relative_l2(out, ref)))

    for density in DENSITIES:
        selected = piecewise_selection(q, k, v, density=density, block_size=BLOCK_SIZE)
        fraction = float(selected.double().mean())
        overhead = float((~selected).double().sum(-1).mean()) / (BLOCK_SIZE * nb)
        param = {"density": density}
        add("topk", "-", param, fraction, 0.0, topk_attention(q, k, v, selected=selected, block_size=BLOCK_SIZE))
        for order in (0, 1):
            out = piecewise_attention(q, k, v, selected=selected, block_size=BLOCK_SIZE, order=order)
            add("piecewise", f"order={order}", param, fraction, overhead, out)
    # TopK at every whole number of blocks per row up to half of them: the baseline's curve between
    # the densities (a selection of floor(density x blocks) blocks: density (n + 0.5) / blocks keeps n).
    at_densities = {round(max(1, int(d * nb)) / nb, 9) for d in DENSITIES}
    for n in range(1, -(-nb // 2) + 1):
        if round(n / nb, 9) in at_densities:
            continue
        density = (n + 0.5) / nb
        selected = piecewise_selection(q, k, v, density=density, block_size=BLOCK_SIZE)
        add("topk", "-", {"density": density, "blocks": n}, float(selected.double().mean()), 0.0,
            topk_attention(q, k, v, selected=selected, block_size=BLOCK_SIZE))

    for importance in IMPORTANCES:
        suffix = "" if importance == "sampled" else f",importance={importance}"
        for target in TARGET_FRACTIONS:
            fractions = scaled_fractions(target)
            levels = pyramid_levels(q, k, v, block_size=BLOCK_SIZE, mode="fraction", fractions=fractions, importance=importance)
            param = {"target": target, "fractions": [round(f, 5) for f in fractions]}
            add("pyramid", "mode=fraction" + suffix, param, pyramid_fraction(levels), None,
                pyramid_attention(q, k, v, levels=levels, block_size=BLOCK_SIZE))

        by_scale = {}
        for s in MASS_SCALES:
            thresholds = tuple(min(1.0, t * s) for t in MASS_THRESHOLDS)
            levels = pyramid_levels(q, k, v, block_size=BLOCK_SIZE, mode="mass", thresholds=thresholds, importance=importance)
            by_scale[s] = (thresholds, pyramid_fraction(levels), levels)
        chosen = []
        for target in TARGET_FRACTIONS:
            s = min(by_scale, key=lambda s: abs(by_scale[s][1] - target))
            if s not in chosen:
                chosen.append(s)
        for s in chosen:
            thresholds, fraction, levels = by_scale[s]
            param = {"target": min(TARGET_FRACTIONS, key=lambda t: abs(fraction - t)), "threshold_scale": round(s, 5),
                     "thresholds": [round(t, 5) for t in thresholds], "min_full_fraction": MIN_FULL_FRACTION}
            add("pyramid", "mode=mass" + suffix, param, fraction, None,
                pyramid_attention(q, k, v, levels=levels, block_size=BLOCK_SIZE))
    return records


# ------------------------------------------------------------------------------------- reporting


def _line(records: list[dict], method: str, variant: str) -> tuple[np.ndarray, np.ndarray]:
    rows = sorted((r["computed_fraction"], r["rel_l2"]) for r in records if (r["method"], r["variant"]) == (method, variant))
    return np.array([f for f, _ in rows]), np.array([e for _, e in rows])


def beats_topk(records: list[dict], method: str, variant: str) -> dict:
    """Does (method, variant) have a lower error than TopK at each of its settings (density or target
    computed fraction) <= 0.30, at the computed fraction it reached? TopK's log error is interpolated
    linearly in the fraction (held constant outside its range)."""
    tf, te = _line(records, "topk", "-")
    rows = sorted((r["computed_fraction"], r["rel_l2"]) for r in records
                  if (r["method"], r["variant"]) == (method, variant) and _setting(r) <= COMPARE_UP_TO + 1e-9)
    points = []
    for fi, ei in rows:
        topk = float(np.exp(np.interp(fi, tf, np.log(te))))
        points.append({"computed_fraction": float(fi), "rel_l2": float(ei), "topk_rel_l2": topk, "beats": bool(ei < topk)})
    return {"beats_everywhere": bool(points) and all(p["beats"] for p in points), "points": points}


def _setting(r: dict) -> float:
    return r["parameter"].get("density", r["parameter"].get("target"))


def _input_name(r: dict) -> str:
    return "synthetic" if r["input"] == "synthetic" else f"step {r['step']} layer {r['layer']}"


def verdicts(records: list[dict]) -> dict:
    """Per input kind, per method: beats TopK on every input of that kind at every fraction <= 0.30."""
    out = {}
    for kind in sorted({r["input"] for r in records}):
        inputs = sorted({_input_name(r) for r in records if r["input"] == kind})
        out[kind] = {}
        for method, variant in METHODS[1:]:
            per_input = {name: beats_topk([r for r in records if _input_name(r) == name], method, variant) for name in inputs}
            out[kind][f"{method}/{variant}"] = {
                "beats_everywhere": all(p["beats_everywhere"] for p in per_input.values()),
                "per_input": per_input,
            }
    return out


def summary_table(records: list[dict]) -> str:
    width = max(len(f"{m}/{v}") for m, v in METHODS)
    lines = [f"{'input':<22} {'method':<{width}} {'computed fraction -> rel L2'}"]
    for name in sorted({_input_name(r) for r in records}, key=lambda n: (n != "synthetic", n)):
        rs = [r for r in records if _input_name(r) == name]
        for method, variant in METHODS:
            f, e = _line(rs, method, variant)
            cells = "  ".join(f"{fi:.3f}:{ei:.4f}" for fi, ei in zip(f, e))
            lines.append(f"{name:<22} {method + ('/' + variant if variant != '-' else ''):<{width}} {cells}")
    return "\n".join(lines)


def plot(records: list[dict], path: Path, meta: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [k for k in ("synthetic", "captured") if any(r["input"] == k for r in records)]
    fig, axes = plt.subplots(1, len(kinds), figsize=(6.5 * len(kinds), 5.2), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        rs = [r for r in records if r["input"] == kind]
        names = sorted({_input_name(r) for r in rs})
        for method, variant in METHODS:
            key = method if variant == "-" else f"{method}/{variant}"
            mine = [r for r in rs if (r["method"], r["variant"]) == (method, variant)]
            if len(names) > 1:
                for n in names:
                    f, e = _line([r for r in mine if _input_name(r) == n], method, variant)
                    ax.plot(f, e, color=COLORS[key], alpha=0.2, lw=0.8)
                # Mean fraction and geometric-mean error over the inputs, per setting (density or
                # target fraction) present on every input.
                by_setting = {}
                for r in mine:
                    by_setting.setdefault(_setting(r), []).append(r)
                rows = sorted(
                    (np.mean([r["computed_fraction"] for r in group]), np.exp(np.mean([np.log(r["rel_l2"]) for r in group])))
                    for group in by_setting.values() if len(group) == len(names)
                )
                f, e = np.array([x for x, _ in rows]), np.array([y for _, y in rows])
            else:
                f, e = _line(mine, method, variant)
            ax.plot(f, e, marker="o", ms=3.5, color=COLORS[key], label=key)
        ax.axvline(COMPARE_UP_TO, color="gray", ls="--", lw=1)
        ax.text(COMPARE_UP_TO, 0.98, " 30%", transform=ax.get_xaxis_transform(),
                va="top", fontsize=8, color="gray")
        ax.set_yscale("log")
        ax.set_xlabel("computed fraction of dense attention")
        ax.set_ylabel("relative L2 error vs dense")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(meta["panels"][kind], fontsize=9)
        ax.legend(fontsize=8)
    fig.text(
        0.01, 0.01,
        "Computed fraction: TopK / Piecewise = selected key blocks / all blocks (Piecewise's summary keys, "
        "1/block_size of a block per unselected block, not added); Pyramid = mean over block pairs of 1/level "
        "(0 for skipped). Selection / importance pre-passes not counted. Block size 64.",
        fontsize=7, wrap=True,
    )
    fig.suptitle(f"Attention fidelity vs compute ({meta['date']}, {meta['device']}, torch {meta['torch']})", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--grid", type=int, nargs=3, default=(8, 16, 16), metavar=("T", "H", "W"))
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--sigma", type=float, default=2.0, help="Gaussian filter width of the synthetic fields, in tokens")
    parser.add_argument("--own", type=float, default=0.5, help="weight of q's and k's own field against the shared one")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, nargs="*", default=(2, 10, 18), help="0-based denoising steps to capture")
    parser.add_argument("--layers", type=int, nargs="*", default=(1, 3))
    parser.add_argument("--num-steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=4.0)
    parser.add_argument("--heads-per-capture", type=int, default=1,
                        help="heads evaluated per captured input, rotating over the model's heads from one input to "
                             "the next (the reference backends are slow on a CPU)")
    parser.add_argument("--synthetic", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--token-order", choices=("raster", "tiled"), default="raster",
                        help="blocks cut from raster order, or from the dynamic methods' 3-D tile order (their default)")
    parser.add_argument("--captured-grid", type=int, nargs=3, default=(16, 16, 16), metavar=("T", "H", "W"),
                        help="the built-in model's latent grid at its default size")
    args = parser.parse_args()
    started = time.perf_counter()
    cpu_started = time.process_time()

    records = []
    grid = tuple(args.grid)

    def ordered(tensors, grid):
        """q, k, v in the token order the blocks are cut from (dense attention does not change)."""
        if args.token_order == "raster":
            return tensors
        tiling = dynamic_tiling(tuple(grid), BLOCK_SIZE, "tiled")
        assert tiling.num_tokens == tensors[0].shape[1], (grid, tensors[0].shape)
        return tuple(tiling.to_canonical(x) for x in tensors)

    if args.synthetic:
        q, k, v = ordered(synthetic_inputs(grid, args.heads, args.head_dim, args.sigma, args.seed, args.own), grid)
        records += sweep(q, k, v, {"input": "synthetic", "step": None, "layer": None, "heads": list(range(args.heads))})
        print(f"synthetic done ({time.perf_counter() - started:.0f} s)", flush=True)
    if args.steps and args.layers:
        captured = captured_inputs(list(args.steps), list(args.layers), args.num_steps, args.guidance, args.seed)
        print(f"captured {len(captured)} inputs ({time.perf_counter() - started:.0f} s)", flush=True)
        for i, ((step, layer), (q, k, v)) in enumerate(sorted(captured.items())):
            model_heads = q.shape[2]
            heads = sorted({(i * args.heads_per_capture + j) % model_heads for j in range(args.heads_per_capture)})
            q, k, v = ordered(tuple(x[:, :, heads] for x in (q, k, v)), args.captured_grid)
            records += sweep(q, k, v, {"input": "captured", "step": step, "layer": layer, "heads": heads})
        print(f"captured done ({time.perf_counter() - started:.0f} s)", flush=True)
        captured_shape = list(next(iter(captured.values()))[0].shape)
    else:
        captured_shape = None

    verdict = verdicts(records)
    meta = {
        "date": datetime.date.today().isoformat(),
        "device": "cpu",
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "dtype": "float32 (errors accumulated in float64)",
        "baseline": "dense attention, torch scaled_dot_product_attention in float32, same run",
        "backend": "PyTorch reference (ditaccel.kernels.piecewise / pyramid)",
        "block_size": BLOCK_SIZE,
        "computed_fraction": {
            "topk": "selected key blocks / all key blocks (mean over batch, heads, query blocks)",
            "piecewise": "same as topk (same selection); approx_overhead = unselected blocks x 1 summary key / "
                         "(block_size x blocks) per query block, reported apart, not added; the order-1 term "
                         "(one D x D matvec per query, D / 2N of dense) is not added either",
            "pyramid": "mean over (query block, key block) pairs of 1/level for level > 0, 0 for skipped pairs",
            "not_counted": "piecewise selection statistics and pyramid's importance pre-pass (sampled or score)",
        },
        "rel_l2": "||out - dense||_2 / ||dense||_2 over the whole [B, N, H, D] output",
        "densities": list(DENSITIES),
        "topk_fine": "TopK also at every whole number of blocks per row up to half of them (parameter 'blocks')",
        "verdict": "points with a setting (density, or target computed fraction) <= compare_up_to, each against TopK "
                   "interpolated (log error, linear in the fraction) at the computed fraction it reached",
        "pyramid_fraction_mode": "preset BLOCK_FRACTIONS scaled to each target computed fraction (level-8 share cut "
                                 "so they sum to <= 1)",
        "pyramid_mass_mode": "preset MASS_THRESHOLDS scaled by s (clipped at 1) from a 48-point grid; per input, the s "
                             "whose computed fraction is closest to each target (duplicates dropped); min_full_fraction "
                             "and, for the sampled estimate, samples (block_size // 4, evenly spaced) at their defaults",
        "pyramid_importance": "sampled: the paper's max logits of sampled tokens (the variants without a suffix); "
                              "score: softmax over key blocks of tau qbar.kbar + log(||H_J||_F + 1e-5) (',importance=score')",
        "targets": list(TARGET_FRACTIONS),
        "synthetic": {"grid_thw": list(grid), "tokens": math.prod(grid), "heads": args.heads, "head_dim": args.head_dim,
                      "sigma": args.sigma, "own": args.own, "seed": args.seed, "token_order": args.token_order,
                      "q_k": "shared + own x private smooth field, RMS-normalised per token, Wan 3-D rotary (theta 1e4)",
                      "v": "independent smooth field"},
        "captured": {"model": "built-in tiny video model (diffusers WanTransformer3DModel), self-attention attn1",
                     "shape_bnhd": captured_shape, "prompt": PROMPT, "seed": args.seed, "num_steps": args.num_steps,
                     "guidance": args.guidance, "branch": "cond", "heads_per_capture": args.heads_per_capture,
                     "heads_rule": "input i (in (step, layer) order) evaluates heads (i * n + j) mod heads, j < n", "steps_0_based": list(args.steps),
                     "layers": list(args.layers), "grid_thw": list(args.captured_grid),
                     "token_order": args.token_order + (" (frame, row, column)" if args.token_order == "raster" else
                                                        " (3-D tiles of 64 tokens, ditaccel.plugins.dynamic.dynamic_tiling)")},
        "compare_up_to": COMPARE_UP_TO,
        "panels": {
            "synthetic": f"synthetic {'x'.join(map(str, grid))} = {math.prod(grid)} tokens, {args.heads} heads",
            "captured": f"tiny model attn1, steps {list(args.steps)} x layers {list(args.layers)}, "
                        f"{args.heads_per_capture} head(s) each\n(thin: each input; bold: mean fraction, geo-mean error)",
        },
    }
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    meta["runtime_s"] = round(elapsed, 1)
    meta["cpu_time_s"] = round(cpu, 1)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fidelity.json").write_text(json.dumps({"meta": meta, "verdict": verdict, "records": records}, indent=1))
    plot(records, args.out / "fidelity.png", meta)

    print(summary_table(records))
    print(f"\nbeats TopK at every setting <= {COMPARE_UP_TO:.2f} (TopK interpolated at the fraction reached):")
    for kind, methods in verdict.items():
        for name, v in methods.items():
            losses = [f"{inp} @ {p['computed_fraction']:.3f}: {p['rel_l2']:.4f} vs {p['topk_rel_l2']:.4f}"
                      for inp, res in v["per_input"].items() for p in res["points"] if not p["beats"]]
            print(f"  {kind:<10} {name:<24} {'yes' if v['beats_everywhere'] else 'NO'}"
                  + (f"  (loses: {'; '.join(losses)})" if losses else ""))
    print(f"\nwrote {args.out / 'fidelity.json'} and {args.out / 'fidelity.png'}; "
          f"{elapsed:.0f} s wall, {cpu:.0f} s CPU")


if __name__ == "__main__":
    main()
