"""Radial's two spatial rules on the built-in model: the paper's raster distance vs a square
window on 2-D tiles. Same prompts, seeds and schedule; PSNR of each against the dense video.

Runs on a CPU (reference backend: the numbers are quality, not speed). Writes JSON + Markdown to
benchmarks/results/radial_spatial_tiny_video.{json,md}.

    python benchmarks/radial_spatial_quality.py [--steps 20] [--prompts 4]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

import ditaccel
from ditaccel.pipelines.procedural_clips import HELD_OUT_COMBOS
from ditaccel.pipelines.tiny_video import load_tiny_video_pipeline

RESULTS = Path(__file__).parent / "results"


def psnr_per_frame(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over frames of the per-frame PSNR, frames in [0, 1] (the papers' recipe)."""
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(a.shape[0], -1).mean(1)
    return float(np.mean(10 * np.log10(1.0 / np.maximum(mse, 1e-12))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--prompts", type=int, default=4)
    args = parser.parse_args()

    pipe = load_tiny_video_pipeline("cpu")
    pipe.set_progress_bar_config(disable=True)
    prompts = [f"a {c} {s} moving {d} on a gray background" for c, s, d in list(HELD_OUT_COMBOS)[: args.prompts]]
    variants = {
        "raster": ditaccel.Radial(decay=0.2, sink=True, spatial="raster"),
        "tiled": ditaccel.Radial(decay=0.2, sink=True, spatial="tiled"),
        # On this small grid the window floor (one block) dominates; a larger decay brings the tiled
        # rule's block density close to raster's, for a comparison at (almost) equal compute.
        "tiled, decay 2.5": ditaccel.Radial(decay=2.5, sink=True, spatial="tiled"),
    }
    schedule = ditaccel.Schedule(dense_steps=0.24, dense_layers=1)  # the Wan preset's schedule
    records = []
    for seed, prompt in enumerate(prompts):
        def run():
            return pipe(prompt, num_inference_steps=args.steps, generator=torch.Generator().manual_seed(seed)).frames[0]

        dense = run()
        for name, method in variants.items():
            with ditaccel.patch(pipe, method, schedule=schedule) as handle:
                frames = run()
                density = handle.summary().rows[1]["block_density"]
            records.append({"prompt": prompt, "seed": seed, "spatial": name, "block_density": density, "psnr_db": psnr_per_frame(frames, dense)})
            print(f"{prompt!r} {name}: density {density:.3f}, PSNR {records[-1]['psnr_db']:.2f} dB", flush=True)

    summary = {
        name: {
            "block_density": records[[r["spatial"] for r in records].index(name)]["block_density"],
            "mean_psnr_db": float(np.mean([r["psnr_db"] for r in records if r["spatial"] == name])),
        }
        for name in variants
    }
    meta = {
        "model": "ditaccel built-in tiny video model (16x16x16 token grid, 5 layers)",
        "device": f"cpu ({platform.processor() or platform.machine()}), float32, reference backend",
        "date": datetime.date.today().isoformat(),
        "steps": args.steps,
        "schedule": "first 24% of steps and layer 0 dense",
        "decay": {name: m.decay for name, m in variants.items()},
        "sink": True,
        "baseline": "dense generation with the same prompt and seed, same run",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "radial_spatial_tiny_video.json").write_text(json.dumps({"meta": meta, "summary": summary, "records": records}, indent=1))
    lines = [
        "# Radial: raster vs tiled spatial window on the built-in model",
        "",
        f"{meta['date']}, {meta['device']}, {args.steps} steps, attention sink, {meta['schedule']}. "
        "PSNR per frame against the dense video of the same prompt and seed (same run), averaged over frames, then prompts.",
        "",
        "| spatial rule | block density | mean PSNR vs dense (dB) |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {s['block_density']:.3f} | {s['mean_psnr_db']:.2f} |" for name, s in summary.items()]
    lines += ["", "decay 0.2 unless named. Per prompt:", "", "| prompt | spatial | PSNR (dB) |", "|---|---|---|"]
    lines += [f"| {r['prompt']} | {r['spatial']} | {r['psnr_db']:.2f} |" for r in records]
    (RESULTS / "radial_spatial_tiny_video.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:8]))


if __name__ == "__main__":
    main()
