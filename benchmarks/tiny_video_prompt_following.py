"""Prompt following of the built-in tiny video model on 30 held-out prompts.

The 30 prompts (``procedural_clips.held_out_prompts``) are colour x shape x direction
combinations that never occur in training. Each generated video is scored by
``ditaccel.eval.prompt_following`` (the harness uses the same code): dominant colour of the
saturated pixels, and the direction of their centroid's least-squares track (>= 4 px, nearest of
8 compass directions).

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
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ditaccel.eval.prompt_following import MIN_DISPLACEMENT_PX, SATURATION_THRESHOLD, score  # noqa: E402
from ditaccel.pipelines.procedural_clips import (  # noqa: E402
    generate_batch,
    held_out_prompts,
    parse_prompt,
    render_clips,
    seen_prompts,
    specs_from_clip_specs,
)
from ditaccel.pipelines.tiny_video import DEFAULT_GUIDANCE, DEFAULT_NUM_STEPS, load_tiny_video_pipeline  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results" / "tiny_video"


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
