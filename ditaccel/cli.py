"""The ``ditaccel`` command line.

Each subcommand is one ``_add_<name>`` function that declares its arguments and sets
``handler``; ``main`` only dispatches. New subcommands (eval, bench, demo) add a function to
``_SUBCOMMANDS``.

  ditaccel generate --prompt "a red circle moving right"           # built-in tiny model, CPU ok
  ditaccel generate --prompt "a blue square moving up" --method radial --out outputs/blue.mp4
  ditaccel eval --methods radial,neighborhood,"radial(decay=0.5)" --seeds 0,1 --out eval_out
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
    p.add_argument("--method", default="none", help="sparse attention preset passed to ditaccel.patch: radial, neighborhood, piecewise, pyramid, topk (default: none = dense)")
    p.add_argument("--compare", action="store_true", help="also generate dense with the same seed; print both times, the per-layer table and PSNR vs dense")
    p.add_argument("--out", default=None, help="output .mp4 path (default: outputs/<prompt>_seed<seed>.mp4)")
    p.add_argument("--fps", type=int, default=8)
    p.add_argument("--scale", type=int, default=4, help="nearest-neighbour upscale of the mp4 (default: %(default)s)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--weights", default=None, help="a saved TinyVideoPipeline directory (default: the shipped one)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_generate)


def _eval(args: argparse.Namespace) -> int:
    import importlib.util

    import torch

    missing = [name for name in ("cv2", "torchmetrics", "matplotlib") if importlib.util.find_spec(name) is None]
    if missing:
        return _fail(f"ditaccel eval needs {', '.join(missing)}: pip install 'ditaccel[eval]'")
    from ditaccel.eval import evaluate
    from ditaccel.eval.report import aggregate, load_result
    from ditaccel.method_spec import parse_method_specs
    from ditaccel.pipelines.loading import UnsupportedPipelineError

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        specs = parse_method_specs(args.methods)
    except ValueError as error:
        return _fail(f"--methods: {error}")
    try:
        seeds = tuple(int(s) for s in args.seeds.split(",") if s.strip())
    except ValueError:
        return _fail(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    try:
        evaluate(
            args.out, [s.text for s in specs], resume=args.resume, progress=not args.quiet, model=args.model,
            prompts=args.prompts, num_prompts=args.num_prompts, seeds=seeds, steps=args.steps, frames=args.frames,
            height=args.height, width=args.width, guidance=args.guidance, device=args.device, dtype=args.dtype,
            dense_backend=args.dense_backend, floor_backend=None if args.no_floor else args.floor_backend,
            batch_size=args.batch_size, lpips_weights=args.lpips_weights, profile_attention=not args.no_profile,
            plot_x=args.plot_x,
        )
    except (UnsupportedPipelineError, FileNotFoundError, ValueError) as error:
        return _fail(error)
    except (OSError, RuntimeError) as error:  # loading a model directory, a backend that is not installed
        return _fail(f"{type(error).__name__}: {error}")
    table = aggregate(load_result(args.out))
    for label, row in table.items():
        psnr = row["psnr"]["mean"] if row["psnr"] else None
        compute = row["compute_fraction"]["mean"] if row["compute_fraction"] else None
        speedup = row["speedup"] if row["role"] == "method" else None  # the floor's kernel is slower on purpose
        print(f"{label:>28}: " + ", ".join(filter(None, [
            None if psnr is None else f"PSNR {psnr:.2f} dB",
            None if compute is None else f"compute {compute:.3f}",
            None if speedup is None else f"speed-up {speedup:.2f}x",
            f"{row['failed']} failed" if row["failed"] else None,
        ])))
    print(f"report: {Path(args.out) / 'report.md'}")
    failed = sum(row["failed"] for row in table.values())
    if failed:
        print(f"ditaccel eval: {failed} run(s) failed; their errors are in the report", file=sys.stderr)
    return 1 if failed else 0


def _fail(error: BaseException | str) -> int:
    """One line on stderr, exit status 2 (argparse's convention for bad arguments)."""
    print(f"ditaccel: error: {str(error).splitlines()[0]}", file=sys.stderr)
    return 2


def _add_eval(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="quality vs speed of sparse methods against dense, offline",
        description="For every prompt x seed: a dense run, a dense run through another SDPA backend (the noise floor) "
        "and one run per method with the same seed; scores (PSNR, SSIM, LPIPS when weights are found, temporal "
        "flickering, dynamic degree, motion smoothness, prompt following on the built-in model) and speed (end to "
        "end, per step, attention share, peak memory, compute fraction). Writes results.json, results.csv, "
        "pareto.png, frame strips and report.md to --out.",
    )
    p.add_argument("--model", default="built-in", help="'built-in' (default) or a local diffusers pipeline directory")
    p.add_argument("--methods", required=True,
                   help="comma-separated method specs: presets (radial, neighborhood) or configs with arguments, "
                   "e.g. 'radial,neighborhood,radial(decay=0.5),neighborhood(window=(8,8,8))'; dense always runs")
    p.add_argument("--prompts", default="held-out",
                   help="'held-out' (the built-in model's 30 held-out prompts), a .txt/.json prompt file, or a "
                   ".safetensors/.pt file of prompt embeddings (default: %(default)s)")
    p.add_argument("--num-prompts", type=int, default=None, help="use the first N prompts")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default: %(default)s)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the pipeline's)")
    p.add_argument("--frames", type=int, default=None, help="frames (default: the pipeline's)")
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--guidance", type=float, default=None, help="CFG scale (default: the pipeline's)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"),
                   help="default: float32 on CPU, bfloat16 on GPU")
    p.add_argument("--dense-backend", default=None,
                   help="diffusers attention backend of the dense reference (e.g. flash, xformers, _native_cudnn); "
                   "default: the pipeline's own (native SDPA)")
    p.add_argument("--floor-backend", default="auto",
                   help="backend of the second dense run (noise floor); auto: _native_efficient on GPU, _native_math on CPU")
    p.add_argument("--no-floor", action="store_true", help="skip the noise-floor run")
    p.add_argument("--batch-size", type=int, default=None, help="prompts per pipeline call (default: 32 built-in, 1 otherwise)")
    p.add_argument("--lpips-weights", default=None, help="converted LPIPS weights (.safetensors); default: searched offline")
    p.add_argument("--no-profile", action="store_true", help="skip the attention-share profile (one extra generation per method)")
    p.add_argument("--plot-x", default="auto", choices=("auto", "compute", "speedup"), help="x axis of pareto.png")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--resume", action="store_true", help="keep finished runs of --out/results.json and run the rest")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_eval)


_SUBCOMMANDS = [_add_generate, _add_eval]


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
