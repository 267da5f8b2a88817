"""Prompt following of the built-in tiny video model on 30 held-out prompts.

The 30 prompts (``procedural_clips.held_out_prompts``) are colour x shape x direction
combinations that never occur in training. For each generated video:

* object pixels are those with saturation (max - min over RGB) above 0.25: every training
  background is grayscale and every object colour saturated, so this needs no scene knowledge;
* dominant colour: majority vote of the object pixels' nearest palette colour;
* motion: a least-squares line through the per-frame centroids of the object pixels gives the
  displacement over the clip; it must be at least 4 px long and its nearest of the 8 compass
  directions (45-degree sectors) must be the prompt's.

The same measurement runs on the procedurally rendered clips of the same prompts as a check of
the metric itself (it should score 100% there).

  python benchmarks/tiny_video_prompt_following.py                       # shipped weights, auto device
  python benchmarks/tiny_video_prompt_following.py --weights DIR --device cuda
Writes prompt_following.json, prompt_following.md and prompt_following.png to --out-dir
(``--split seen``: prompt_following_seen.*). 30 videos take seconds on a GPU and about 20 minutes
on 2 idle CPU cores (``--num-prompts`` takes the first N).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ditaccel.pipelines.procedural_clips import (  # noqa: E402
    COLOURS,
    TRANSLATIONS,
    generate_batch,
    held_out_prompts,
    seen_prompts,
    parse_prompt,
    render_clips,
    specs_from_clip_specs,
)
from ditaccel.pipelines.tiny_video import DEFAULT_GUIDANCE, DEFAULT_NUM_STEPS, load_tiny_video_pipeline  # noqa: E402

SATURATION_THRESHOLD = 0.25
MIN_DISPLACEMENT_PX = 4.0
RESULTS_DIR = Path(__file__).resolve().parent / "results" / "tiny_video"


def analyse_video(frames: np.ndarray) -> dict:
    """Dominant colour and centroid motion of the saturated pixels of (F, H, W, 3) floats in [0, 1]."""
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
    best = min(TRANSLATIONS, key=lambda k: abs(math.remainder(angle - math.atan2(TRANSLATIONS[k][1], TRANSLATIONS[k][0]), 2 * math.pi)))
    return best


def score(prompts: list[str], videos: list[np.ndarray]) -> tuple[list[dict], dict]:
    rows = []
    for prompt, video in zip(prompts, videos):
        spec = parse_prompt(prompt).objects[0]
        found = analyse_video(video)
        rows.append({"prompt": prompt, "want_colour": spec.colour, "want_direction": spec.motion, **found,
                     "colour_ok": found["colour"] == spec.colour, "motion_ok": found["direction"] == spec.motion})
    n = len(rows)
    summary = {
        "videos": n,
        "colour_accuracy": sum(r["colour_ok"] for r in rows) / n,
        "motion_accuracy": sum(r["motion_ok"] for r in rows) / n,
        "both_accuracy": sum(r["colour_ok"] and r["motion_ok"] for r in rows) / n,
    }
    return rows, summary


def rendered_reference(prompts: list[str], seed: int = 0) -> list[np.ndarray]:
    """The procedural clips of the prompts themselves: the metric's own check."""
    clips = [parse_prompt(p) for p in prompts]
    gen = torch.Generator().manual_seed(seed)
    video = render_clips(specs_from_clip_specs(clips), gen)  # (B, 3, F, H, W) in [-1, 1]
    return list(((video + 1) / 2).permute(0, 2, 3, 4, 1).numpy())


def _strip_grid(prompts, videos, path: Path) -> None:
    from PIL import Image, ImageDraw

    tiles = []
    for p, v in zip(prompts, videos):
        row = np.concatenate([v[f] for f in (0, 5, 10, 15)], axis=1)
        img = Image.fromarray((row * 255).round().astype(np.uint8)).resize((row.shape[1] * 2, row.shape[0] * 2), Image.NEAREST)
        canvas = Image.new("RGB", (img.width + 330, img.height), "white")
        canvas.paste(img, (0, 0))
        ImageDraw.Draw(canvas).text((img.width + 6, img.height // 2 - 6), p.replace(" background", ""), fill="black")
        tiles.append(np.asarray(canvas))
    grid = Image.fromarray(np.concatenate(tiles, axis=0))
    grid.convert("P", palette=Image.ADAPTIVE, colors=128).save(path, optimize=True)  # keeps the repo small


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=None, help="saved TinyVideoPipeline (default: the shipped weights)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="transformer dtype (float32 matches CPU runs)")
    p.add_argument("--steps", type=int, default=DEFAULT_NUM_STEPS)
    p.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE)
    p.add_argument("--num-prompts", type=int, default=30)
    p.add_argument("--split", default="held-out", choices=("held-out", "seen"),
                   help="held-out combinations (the benchmark) or the same scenes with seen directions (control)")
    p.add_argument("--batch-size", type=int, default=None, help="videos per pipeline call (default: 30 on GPU, 1 on CPU)")
    p.add_argument("--out-dir", default=str(RESULTS_DIR))
    args = p.parse_args(argv)

    prompts = (held_out_prompts() if args.split == "held-out" else seen_prompts())[: args.num_prompts]
    pipe = load_tiny_video_pipeline(device=args.device, dtype=getattr(torch, args.dtype), weights_dir=args.weights)
    pipe.set_progress_bar_config(disable=True)
    batch = args.batch_size or (30 if pipe.device.type == "cuda" else 1)
    t0 = time.perf_counter()
    videos = []
    for start in range(0, len(prompts), batch):
        chunk = prompts[start : start + batch]
        gens = [torch.Generator().manual_seed(start + i) for i in range(len(chunk))]  # video i: seed i
        videos.extend(pipe(chunk, num_inference_steps=args.steps, guidance_scale=args.guidance, generator=gens).frames)
    seconds = time.perf_counter() - t0

    rows, summary = score(prompts, videos)
    _, reference = score(prompts, rendered_reference(prompts))
    # Held-out check: no training batch may contain a held-out prompt (as its whole single-object text).
    _, train_prompts = generate_batch(2048, seed=12345)
    held_in_training = sorted(set(prompts) & set(train_prompts))

    device_name = torch.cuda.get_device_name() if pipe.device.type == "cuda" else "cpu"
    result = {
        "summary": summary,
        "metric_check_on_rendered_clips": reference,
        "split": args.split,
        "settings": {"steps": args.steps, "guidance": args.guidance, "dtype": args.dtype, "seeds": "video i uses seed i",
                     "saturation_threshold": SATURATION_THRESHOLD, "min_displacement_px": MIN_DISPLACEMENT_PX,
                     "weights": args.weights or "shipped (ditaccel/pipelines/tiny_video_weights)"},
        "device": device_name, "date": time.strftime("%Y-%m-%d"), "generation_seconds": round(seconds, 2),
        "prompts_found_in_2048_training_clips": held_in_training,
        "videos": rows,
    }
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = "prompt_following" if args.split == "held-out" else "prompt_following_seen"
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"# Tiny video model: prompt following on {len(prompts)} held-out prompts",
        "",
        f"Device {device_name}, {time.strftime('%Y-%m-%d')}, {args.steps} steps, guidance {args.guidance}, video i with seed i.",
        "Colour x shape x direction combinations of these prompts never occur in training.",
        "",
        "| | colour | motion direction | both |",
        "|---|---|---|---|",
        f"| generated | {summary['colour_accuracy']:.0%} | {summary['motion_accuracy']:.0%} | {summary['both_accuracy']:.0%} |",
        f"| rendered clips (metric check) | {reference['colour_accuracy']:.0%} | {reference['motion_accuracy']:.0%} | {reference['both_accuracy']:.0%} |",
        "",
        "| prompt | colour found | direction found | displacement (px) | ok |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        ok = ("colour " if r["colour_ok"] else "") + ("motion" if r["motion_ok"] else "")
        dx, dy = r["displacement"]
        lines.append(f"| {r['prompt']} | {r['colour']} | {r['direction']} | ({dx:+.1f}, {dy:+.1f}) | {ok.strip() or '-'} |")
    if args.split == "seen":
        lines[0] = f"# Tiny video model: prompt following on {len(prompts)} seen combinations (control for the held-out set)"
        lines[3] = "Same colours, shapes and backgrounds as the held-out prompts, with a direction seen in training."
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    _strip_grid(prompts, videos, out / f"{stem}.png")
    print(json.dumps({"summary": summary, "metric_check": reference, "seconds": round(seconds, 1)}, indent=2))
    return result


if __name__ == "__main__":
    main()
