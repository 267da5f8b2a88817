"""The ``ditaccel`` command line.

Each subcommand is one ``_add_<name>`` function that declares its arguments and sets
``handler``; ``main`` only dispatches. New subcommands (eval, bench, demo) add a function to
``_SUBCOMMANDS``.

  ditaccel generate --prompt "a red circle moving right"           # built-in tiny model, CPU ok
  ditaccel generate --prompt "a blue square moving up" --method radial --out outputs/blue.mp4
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:60] or "video"


def _write_video_and_strip(frames, out: Path, fps: int, scale: int) -> tuple[Path, Path]:
    """Write (F, H, W, 3) floats in [0, 1] as an mp4 (upscaled ``scale`` x) and a PNG frame strip."""
    import imageio.v2 as imageio
    import numpy as np

    video = (np.asarray(frames) * 255.0).round().clip(0, 255).astype(np.uint8)
    big = video.repeat(scale, axis=1).repeat(scale, axis=2)  # nearest neighbour keeps edges crisp
    out.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimwrite(out, list(big), fps=fps, codec="libx264", quality=8, macro_block_size=1)
    strip_scale = max(1, scale // 2)
    strip = np.concatenate(list(video), axis=1).repeat(strip_scale, axis=0).repeat(strip_scale, axis=1)
    strip_path = out.with_name(out.stem + "_frames.png")
    imageio.imwrite(strip_path, strip)
    return out, strip_path


def _generate(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    import ditaccel
    from ditaccel.pipelines.tiny_video import load_tiny_video_pipeline

    t0 = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.compare and args.method == "none":
        raise SystemExit("--compare runs dense and --method side by side: pass --method (e.g. radial)")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = load_tiny_video_pipeline(device=device, weights_dir=args.weights)
    pipe.set_progress_bar_config(disable=args.quiet, desc="denoising")

    def run(steps: int = args.steps):
        generator = torch.Generator().manual_seed(args.seed)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = pipe(
            args.prompt,
            negative_prompt=args.negative_prompt,
            num_inference_steps=steps,
            guidance_scale=args.guidance,
            num_frames=args.frames,
            height=args.size,
            width=args.size,
            generator=generator,
        )
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return result.frames[0], time.perf_counter() - start

    out = Path(args.out) if args.out else Path("outputs") / f"{_slug(args.prompt)}_seed{args.seed}.mp4"
    dense = None
    if args.compare:
        run(1)  # warm-up: one-off costs stay out of the timings
        dense, dense_s = run()
        paths = _write_video_and_strip(dense, out.with_name(out.stem + "_dense.mp4"), args.fps, args.scale)
        print(f"dense: {dense_s:.1f} s for {args.steps} steps -> {paths[0]}")
    handle = ditaccel.patch(pipe, args.method) if args.method != "none" else None
    try:
        if args.compare:
            run(1)  # builds the method's layout for this grid once
            handle.reset_summary()
        frames, seconds = run()
        label = args.method if handle is not None else "dense"
        video_path, strip_path = _write_video_and_strip(frames, out, args.fps, args.scale)
        print(f"{label}: {seconds:.1f} s for {args.steps} steps -> {video_path} and {strip_path}")
        if handle is not None:
            print(handle.summary())
    finally:
        if handle is not None:
            handle.unpatch()
    if dense is not None:
        mse = float(np.mean((np.asarray(frames, dtype=np.float64) - np.asarray(dense, dtype=np.float64)) ** 2))
        psnr = float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)
        backend = "Triton kernel" if device.startswith("cuda") else "CPU reference backend (exact, not fast)"
        print(f"{args.method} vs dense: {dense_s / seconds:.2f}x time ratio on {device} ({backend}), PSNR {psnr:.1f} dB")
    print(f"total {time.perf_counter() - t0:.1f} s")
    return 0


def _add_generate(subparsers) -> None:
    from ditaccel.pipelines.tiny_video import DEFAULT_GUIDANCE, DEFAULT_NUM_STEPS

    p = subparsers.add_parser(
        "generate",
        help="generate a video with the built-in tiny model",
        description="Generate a video (mp4 + PNG frame strip) with the built-in tiny text-to-video model. "
        "It knows template prompts: '<colour> <shape> <motion> [on a <background> background]', colours "
        "red/green/blue/yellow/purple/orange, shapes circle/square/triangle, motions moving right/left/up/"
        "down/up and right/..., bouncing, growing, shrinking; backgrounds gray/black/white/checkered/"
        "striped/noisy; two objects joined by 'and'.",
    )
    p.add_argument("--prompt", default="a red circle moving right", help="text prompt (default: %(default)r)")
    p.add_argument("--negative-prompt", default="", help="negative prompt for classifier-free guidance")
    p.add_argument("--steps", type=int, default=DEFAULT_NUM_STEPS, help="denoising steps (default: %(default)s)")
    p.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE, help="CFG scale; <= 1 disables (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames", type=int, default=16, help="number of frames (default: %(default)s, as trained)")
    p.add_argument("--size", type=int, default=64, help="height = width in pixels, multiple of 4 (default: %(default)s)")
    p.add_argument("--method", default="none", help="sparse attention preset passed to ditaccel.patch: radial, neighborhood (default: none = dense)")
    p.add_argument("--compare", action="store_true", help="also generate dense with the same seed; print both times, the per-layer table and PSNR vs dense")
    p.add_argument("--out", default=None, help="output .mp4 path (default: outputs/<prompt>_seed<seed>.mp4)")
    p.add_argument("--fps", type=int, default=8)
    p.add_argument("--scale", type=int, default=4, help="nearest-neighbour upscale of the mp4 (default: %(default)s)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--weights", default=None, help="a saved TinyVideoPipeline directory (default: the shipped one)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_generate)


_SUBCOMMANDS = [_add_generate]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ditaccel", description="Sparse attention for diffusers video DiTs.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
