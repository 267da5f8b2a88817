"""The ``ditaccel`` command line.

Each subcommand is one ``_add_<name>`` function that declares its arguments and sets
``handler``; ``main`` only dispatches. A new subcommand adds a function to
``_SUBCOMMANDS``.

  ditaccel generate --prompt "a red circle moving right"           # built-in tiny model, CPU ok
  ditaccel generate --prompt "a blue square moving up" --method "radial + broadcast" --compare
  ditaccel generate --model /models/Wan2.1-T2V-1.3B-Diffusers --method piecewise --frames 81 --compare
  ditaccel bench --model /models/Wan2.1-T2V-1.3B-Diffusers --method radial
  ditaccel eval --methods radial,neighborhood,"radial(decay=0.5)" --seeds 0,1 --out eval_out
  ditaccel demo [--model DIR] [--port 7860]
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:60] or "video"


def _write_strip(frames, path: Path, scale: int) -> Path:
    """The frames side by side as one PNG (``scale`` x nearest-neighbour upscaling)."""
    import imageio.v2 as imageio
    import numpy as np

    from ditaccel.eval.metrics import to_uint8

    video = to_uint8(frames)
    strip = np.concatenate(list(video), axis=1).repeat(scale, axis=0).repeat(scale, axis=1)
    imageio.imwrite(path, strip)
    return path


def _check_counts(args: argparse.Namespace) -> str | None:
    """The integer options' ranges, checked before anything loads: the message, or None."""
    for name, low in (("size", 1), ("fps", 1), ("threads", 0), ("repeats", 1), ("nproc", 1)):
        value = getattr(args, name, None)
        if value is not None and value < low:
            return f"--{name} must be >= {low}, got {value}"
    return None


VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi")  # containers imageio-ffmpeg writes H.264 into


def _check_out(args: argparse.Namespace) -> str | None:
    """generate's --out is the video file (the dense clip and the frame strip are written beside it)."""
    if args.out and Path(args.out).suffix.lower() not in VIDEO_SUFFIXES:
        return f"--out must be a video file ending in one of {', '.join(VIDEO_SUFFIXES)}, got {args.out!r}"
    return None


def _settings(args: argparse.Namespace):
    from ditaccel.generation import GenerateSettings

    height = args.height or args.size
    width = args.width or args.size
    return GenerateSettings(prompt=args.prompt, negative_prompt=args.negative_prompt, prompt_file=args.prompt_file,
                            method=args.method, cache=args.cache, schedule=args.schedule, steps=args.steps,
                            frames=args.frames, height=height, width=width, seed=args.seed, guidance=args.guidance,
                            compare=getattr(args, "compare", False))


def _session(args: argparse.Namespace, *, progress: bool):
    import torch

    from ditaccel.generation import Session

    if args.threads:
        torch.set_num_threads(args.threads)
    import os

    ranks = int(os.environ.get("WORLD_SIZE", "1")) if "DITACCEL_TORCHRUN" in os.environ else 1
    return Session(args.model, device=args.device, dtype=args.dtype, compile=args.compile, progress=progress,
                   parallel=ranks > 1)


def _torchrun(args: argparse.Namespace, argv: list[str]) -> int:
    """Start ``args.nproc`` ranks of this very command under torchrun (one machine)."""
    import os
    import subprocess

    # The ranks get the command without --nproc (torchrun's own parser would take it for --nproc-per-node);
    # DITACCEL_TORCHRUN tells them they are ranks.
    forwarded, skip = [], False
    for item in argv:
        if skip or item.startswith("--nproc="):
            skip = False
            continue
        if item == "--nproc":
            skip = True
            continue
        forwarded.append(item)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
               "-m", "ditaccel.cli", *forwarded]
    return subprocess.call(command, env={**os.environ, "DITACCEL_TORCHRUN": "1"})


def _generate(args: argparse.Namespace) -> int:
    import os

    from ditaccel.generation import GenerationError, write_video

    t0 = time.perf_counter()
    if problem := _check_counts(args) or _check_out(args):
        return _fail(problem)
    settings = _settings(args)
    try:
        spec = settings.spec()  # a typo fails before any model loads
        if args.compare and spec.is_dense:
            return _fail("--compare runs dense and --method side by side: pass a --method (e.g. radial)")
        if args.nproc > 1 and "DITACCEL_TORCHRUN" not in os.environ:
            return _torchrun(args, args.argv)
        session = _session(args, progress=not args.quiet)
        result = session.generate(settings)
    except GenerationError as error:
        return _fail(error)
    if session.rank > 0:
        return 0  # every rank generated the same video; rank 0 writes and reports it
    name = _slug(settings.prompt if not settings.prompt_file else Path(settings.prompt_file).stem)
    out = Path(args.out) if args.out else Path("outputs") / f"{name}_seed{settings.seed}.mp4"
    scale = args.scale or (4 if session.built_in else 1)
    video = write_video(result.frames, out, fps=args.fps, scale=scale)
    strip = _write_strip(result.frames, out.with_name(out.stem + "_frames.png"), max(1, scale // 2))
    written = [video, strip]
    if result.dense_frames is not None:
        written.append(write_video(result.dense_frames, out.with_name(out.stem + "_dense.mp4"), fps=args.fps, scale=scale))
    if result.summary is not None:
        print(result.summary)
    print(result.report())
    print("wrote " + ", ".join(str(p) for p in written))
    print(f"total {time.perf_counter() - t0:.1f} s")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from ditaccel.generation import GenerationError

    if problem := _check_counts(args):
        return _fail(problem)
    settings = _settings(args)
    try:
        settings.spec()
        result = _session(args, progress=False).bench(settings, repeats=args.repeats)
    except GenerationError as error:
        return _fail(error)
    print(f"{result['model']} on {result['device']}, one denoising step (one transformer forward at the pipeline's shapes):")
    print(f"  dense   {result['dense_ms']:10.1f} ms   (attention layers: {100 * result['attention_share']:.0f}% of it)")
    print(f"  {result['spec']:<7} {result['patched_ms']:10.1f} ms   (attention compute {result['attention_compute']:.3f} of dense)")
    print(f"  ratio   {result['speedup']:10.2f}x" + ("" if result["device"].startswith("cuda") else
          "   (CPU: the exact reference backend, not a fast path: run this on the GPU you will use)"))
    return 0


def _demo(args: argparse.Namespace) -> int:
    import importlib.util

    if importlib.util.find_spec("gradio") is None:
        return _fail("ditaccel demo needs gradio: pip install 'ditaccel[demo]'")
    from ditaccel.demo import launch

    launch(model=args.model, device=args.device, port=args.port, share=False)
    return 0


def _add_model_arguments(p) -> None:
    p.add_argument("--model", default="built-in", help="'built-in' (default: the shipped tiny text-to-video model) or a "
                   "local diffusers pipeline directory (loaded offline)")
    p.add_argument("--method", default="radial", help="method spec: dense, a preset (radial, neighborhood, piecewise, "
                   "pyramid, topk) or a config with arguments, e.g. 'radial(decay=0.5)', optionally '+ a cache' "
                   "(default: %(default)s)")
    p.add_argument("--cache", default=None, help="attention cache added to the method: broadcast(period=3), "
                   "residual_reuse, first_block_cache(threshold=0.05), taylorseer_cache, ...")
    p.add_argument("--schedule", default=None, help="dense steps and layers over the method's default, e.g. "
                   "'dense_steps=0.3, dense_layers=2'")
    p.add_argument("--prompt", default="a red circle moving right", help="text prompt (default: %(default)r)")
    p.add_argument("--negative-prompt", default="", help="negative prompt for classifier-free guidance")
    p.add_argument("--prompt-file", default=None, help="prompt embeddings (.safetensors / .pt with prompt_embeds, ...) "
                   "for pipelines saved without a text encoder; its first prompt is used")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the pipeline's)")
    p.add_argument("--frames", type=int, default=None, help="number of frames (default: the pipeline's)")
    p.add_argument("--height", type=int, default=None, help="height in pixels (default: the pipeline's)")
    p.add_argument("--width", type=int, default=None, help="width in pixels (default: the pipeline's)")
    p.add_argument("--size", type=int, default=None, help="height and width at once")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--guidance", type=float, default=None, help="CFG scale (default: the pipeline's); <= 1 disables")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"),
                   help="default: float32 on CPU, bfloat16 on GPU")
    p.add_argument("--compile", action="store_true", help="regional torch.compile of the transformer blocks")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: torch's choice)")


def _add_generate(subparsers) -> None:
    p = subparsers.add_parser(
        "generate",
        help="generate a video with a sparse method (and dense, to compare)",
        description="Generate a video with a method spec on the built-in model or a local diffusers pipeline, offline. "
        "Writes an mp4 and a PNG frame strip; --compare also generates dense with the same seed and prints the time "
        "ratio, PSNR/SSIM (and LPIPS when its weights are found) against dense and the per-layer summary.",
    )
    _add_model_arguments(p)
    p.add_argument("--compare", action="store_true", help="also generate dense with the same seed and score against it")
    p.add_argument("--nproc", type=int, default=1, help="ranks of diffusers' Ulysses context parallelism (torchrun on "
                   "this machine, one GPU each; same seed everywhere, rank 0 writes the files)")
    p.add_argument("--out", default=None, help="output .mp4 path (default: outputs/<prompt>_seed<seed>.mp4)")
    p.add_argument("--fps", type=int, default=8)
    p.add_argument("--scale", type=int, default=None, help="nearest-neighbour upscale of the mp4 (default: 4 for the "
                   "built-in model's 64-pixel frames, else 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_generate)


def _add_bench(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="is it worth it on this GPU? one denoising step, dense vs patched",
        description="Time one denoising step (one transformer forward at the pipeline's own shapes) dense and with "
        "the method (its sparse path; dense layers stay dense), each after a warm-up, and print the ratio and the "
        "attention layers' share of the step.",
    )
    _add_model_arguments(p)
    p.add_argument("--repeats", type=int, default=3, help="timed forwards each, the fastest kept (default: %(default)s)")
    p.set_defaults(handler=_bench)


def _add_demo(subparsers) -> None:
    p = subparsers.add_parser("demo", help="the Gradio app: generate, compare with dense, see the block layout",
                              description="Start the Gradio demo on localhost (pip install 'ditaccel[demo]').")
    p.add_argument("--model", default="built-in", help="the model selected at start (default: %(default)s)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--port", type=int, default=7860)
    p.set_defaults(handler=_demo)


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


_SUBCOMMANDS = [_add_generate, _add_eval, _add_bench, _add_demo]


class _Parser(argparse.ArgumentParser):
    """Bad arguments: one line naming the argument, exit status 2 (no usage dump)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ditaccel", description="Sparse attention for diffusers video DiTs.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
