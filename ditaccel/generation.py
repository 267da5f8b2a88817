"""Generate on any supported pipeline with a method spec, compared with dense: what
``ditaccel generate``, ``ditaccel bench`` and the demo run.

    session = Session("built-in")                                   # or a local pipeline directory
    result = session.generate(GenerateSettings(prompt="a red circle moving right", method="radial",
                                               compare=True))
    result.speedup, result.scores["psnr"], result.summary, result.block_map.image()

A ``Session`` holds one loaded pipeline and generates with it as often as asked; every generation
patches on entry and unpatches on exit, also when it fails, so the pipeline is always left as it
was loaded. Errors a user can fix (a bad spec, a window larger than the grid, out of memory) come
out as ``GenerationError`` with one readable line.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .block_map import BlockMap, BlockMapRecorder
from .method_spec import MethodSpec, compose_spec
from .patching import Summary, patch, transformers_of
from .pipelines import adapter_for
from .pipelines.loading import (
    BUILT_IN, call_arguments, call_default, call_parameters, is_built_in, load_pipeline, output_videos,
)
from .schedule import Schedule

DEFAULT_PROMPT = "a red circle moving right"


class GenerationError(ValueError):
    """A generation the user can fix: the message is one line naming what to change."""


@dataclass
class GenerateSettings:
    prompt: str = DEFAULT_PROMPT
    negative_prompt: str = ""
    prompt_file: str | None = None  # .safetensors / .pt prompt embeddings (its first prompt) instead of text
    method: str = "radial"  # a method spec: dense, a preset, a config with arguments, + a cache
    cache: str | None = None  # a cache spec added to the method (broadcast(period=3), first_block_cache, ...)
    schedule: str | None = None  # Schedule fields over the method's default: "dense_steps=0.3, dense_layers=2"
    steps: int | None = None  # None: the pipeline's default
    frames: int | None = None
    height: int | None = None
    width: int | None = None
    seed: int = 0
    guidance: float | None = None
    compare: bool = False  # also generate dense with the same seed and score against it
    warm_up: bool | None = None  # an untimed short generation first; None: on CUDA only

    def spec(self) -> MethodSpec:
        """The parsed method spec, after checking every setting: cheap errors before any model loads."""
        for name in ("steps", "frames", "height", "width"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise GenerationError(f"--{name} must be a positive integer, got {value!r}")
        try:
            return compose_spec(self.method, self.cache, self.schedule)
        except (ValueError, TypeError) as error:
            raise GenerationError(str(error)) from None


@dataclass
class Generation:
    frames: np.ndarray  # (F, H, W, 3) floats in [0, 1]
    seconds: float  # the generation's wall time (CUDA-synchronised)
    spec: str
    steps: int | None
    device: str
    dense_frames: np.ndarray | None = None
    dense_seconds: float | None = None
    summary: Summary | None = None
    scores: dict = field(default_factory=dict)  # psnr, ssim, lpips against dense (with compare)
    block_map: BlockMap | None = None
    ranks: int = 1  # processes of a context-parallel run

    @property
    def speedup(self) -> float | None:
        return self.dense_seconds / self.seconds if self.dense_seconds and self.seconds else None

    def report(self, *, markdown: bool = False) -> str:
        """The closing summary: ``ditaccel generate`` prints it, the demo shows it (``markdown``,
        with the attention compute its table has no room for)."""
        def label(text: str) -> str:
            return f"**{text}**" if markdown else text

        ranks = f" x {self.ranks} ranks (Ulysses context parallelism)" if self.ranks > 1 else ""
        lines = [f"{label(self.spec)}: {self.seconds:.2f} s for {self.steps} steps on {self.device}{ranks}"]
        if self.dense_seconds is not None:
            lines.append(f"{label('dense')}: {self.dense_seconds:.2f} s, {label(f'speed-up {self.speedup:.2f}x')}"
                         + ("" if self.device.startswith("cuda") else
                            " (CPU: the exact reference backend, not a fast path: time the GPU you will use)"))
        if self.scores:
            lines.append(f"{label('vs dense')}: " + ", ".join(
                f"{name.upper()} {value:.2f} dB" if name == "psnr" else f"{name.upper()} {value:.4f}"
                for name, value in self.scores.items() if value is not None))
        from .patching import NO_COST_MODEL

        decisions = self.summary.decisions if self.summary is not None else {}
        lines += [f"{label('cost model')} ({name}, grid {grid}): {why}" for name, grids in decisions.items()
                  for grid, why in grids.items() if NO_COST_MODEL not in why]
        fraction = self.summary.compute_fraction if self.summary is not None else None
        if markdown and fraction is not None:
            lines.append(f"{label('attention compute')}: {fraction:.3f} of dense")
        return ("\n\n" if markdown else "\n").join(lines)


class Session:
    """One loaded pipeline (the built-in model or a local diffusers directory) on one device."""

    def __init__(self, model: str | Path = BUILT_IN, *, device: str | None = None, dtype: str | None = None,
                 compile: bool = False, progress: bool = True, parallel: bool = False):
        """``parallel``: this process is one rank of a torchrun launch: the transformer runs under
        diffusers' Ulysses context parallelism over all ranks (``ditaccel generate --nproc N``)."""
        self.rank, self.world = _distributed_rank(parallel, device)
        if device is None and self.world > 1 and torch.cuda.is_available():
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise GenerationError(f"--device {device}: no CUDA device here; use --device cpu")
        if dtype is not None and dtype not in ("float32", "bfloat16", "float16"):
            raise GenerationError(f"--dtype {dtype!r}: use float32, bfloat16 or float16")
        if not progress:
            from diffusers.utils import logging as diffusers_logging
            from transformers.utils import logging as transformers_logging

            diffusers_logging.disable_progress_bar()  # from_pretrained's loading bars
            transformers_logging.disable_progress_bar()
        try:
            self.pipe = load_pipeline(model, device=self.device, dtype=getattr(torch, dtype) if dtype else None)
        except (ValueError, OSError) as error:
            raise GenerationError(str(error).splitlines()[0]) from None
        self.model = str(model)
        self.built_in = is_built_in(model)
        self.transformers = transformers_of(self.pipe)
        self.family = adapter_for(self.transformers[0]).family
        self.accepted = call_parameters(self.pipe)
        self.pipe.set_progress_bar_config(disable=not progress or self.rank > 0, desc="denoising")
        if self.world > 1:
            _enable_ulysses(self.transformers, self.world, self.device)
        if compile:
            for transformer in self.transformers:
                transformer.compile_repeated_blocks(fullgraph=True)

    # -- inputs -----------------------------------------------------------------------------
    def arguments(self, settings: GenerateSettings, steps: int | None = None) -> dict:
        """``pipe(...)`` keyword arguments for ``settings`` (one prompt, the seed's generator)."""
        try:
            arguments = call_arguments(self.pipe, steps=steps or settings.steps, guidance=settings.guidance,
                                       frames=settings.frames, height=settings.height, width=settings.width)
        except ValueError as error:
            raise GenerationError(str(error)) from None
        arguments.update(self._prompt_arguments(settings))
        arguments["generator"] = torch.Generator().manual_seed(int(settings.seed))
        return arguments

    def _prompt_arguments(self, settings: GenerateSettings) -> dict:
        if settings.prompt_file:
            from .eval.prompts import batch_arguments, load_prompts

            try:
                prompts = load_prompts(settings.prompt_file)
                guided = (settings.guidance if settings.guidance is not None else call_default(self.pipe, "guidance_scale") or 0) > 1
                embeddings = batch_arguments(prompts[:1], self.accepted, guided=guided)
            except (ValueError, FileNotFoundError) as error:
                raise GenerationError(str(error).replace("--prompts", "--prompt-file")) from None
            return {k: v.to(self.device) for k, v in embeddings.items()}
        if not settings.prompt or not settings.prompt.strip():
            raise GenerationError("--prompt is empty: describe the video to generate")
        if getattr(self.pipe, "text_encoder", "absent") is None:
            raise GenerationError(f"--prompt: {type(self.pipe).__name__} was saved without a text encoder; pass "
                                  "--prompt-file with its prompt_embeds (.safetensors or .pt)")
        arguments = {"prompt": settings.prompt}
        if settings.negative_prompt and "negative_prompt" in self.accepted:
            arguments["negative_prompt"] = settings.negative_prompt
        return arguments

    # -- running ----------------------------------------------------------------------------
    def _run(self, arguments: dict) -> tuple[np.ndarray, float]:
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        try:
            output = self.pipe(**arguments)
        except torch.OutOfMemoryError:
            raise GenerationError(f"out of memory on {self.device}: use fewer frames, a smaller size or a sparser method") from None
        if cuda:
            torch.cuda.synchronize(self.device)
        return output_videos(output)[0], time.perf_counter() - start

    def _steps(self, settings: GenerateSettings) -> int | None:
        return settings.steps or call_default(self.pipe, "num_inference_steps")

    def _warm_up(self, settings: GenerateSettings, schedule) -> None:
        """A short untimed generation: kernels compile and layouts are built outside the timings
        (long enough for one sparse step of ``schedule``)."""
        total = self._steps(settings) or 2
        steps = min(2, total)
        while schedule is not None and steps < total and all(schedule.step_is_dense(i, steps) for i in range(steps)):
            steps += 1
        self._run(self.arguments(settings, steps=steps))

    def generate(self, settings: GenerateSettings) -> Generation:
        spec = settings.spec()
        self.arguments(settings)  # bad sizes or prompts fail before anything runs
        warm_up = self.device.type == "cuda" if settings.warm_up is None else settings.warm_up
        dense_frames = dense_seconds = None
        if settings.compare and not spec.is_dense:
            if warm_up:
                self._warm_up(settings, None)
            dense_frames, dense_seconds = self._run(self.arguments(settings))
        result = self._generate_patched(spec, settings, warm_up)
        result.dense_frames, result.dense_seconds = dense_frames, dense_seconds
        result.ranks = self.world
        if dense_frames is not None:
            result.scores = scores(result.frames, dense_frames, self.device)
        return result

    def _generate_patched(self, spec: MethodSpec, settings: GenerateSettings, warm_up: bool) -> Generation:
        steps = self._steps(settings)
        if spec.is_dense:
            if warm_up:
                self._warm_up(settings, None)
            frames, seconds = self._run(self.arguments(settings))
            return Generation(frames, seconds, spec.text, steps, str(self.device))
        try:
            handle = patch(self.pipe, **spec.patch_arguments(self.family))
        except (ValueError, TypeError, NotImplementedError) as error:
            raise GenerationError(f"{spec.text}: {_one_line(error)}") from None
        try:
            schedule = next((s.schedule for s in handle.states if s.runner is not None), None)
            # The recorder from the warm-up on: a compiled block traced without it would recompile in the timing.
            with BlockMapRecorder(handle) as recorder:
                if warm_up:
                    self._warm_up(settings, schedule)
                    handle.reset_summary()
                frames, seconds = self._run(self.arguments(settings))
            summary = handle.summary()
            block_map = recorder.block_map()
        except GenerationError:
            raise
        except (ValueError, TypeError, NotImplementedError) as error:  # e.g. a window larger than the grid
            raise GenerationError(f"{spec.text}: {_one_line(error)}") from None
        finally:
            handle.unpatch()
        return Generation(frames, seconds, spec.text, steps, str(self.device), summary=summary, block_map=block_map)

    # -- bench ------------------------------------------------------------------------------
    def bench(self, settings: GenerateSettings, *, repeats: int = 3) -> dict:
        """One denoising step (one transformer forward at the pipeline's own shapes, captured from
        its first call) dense and patched, each after a warm-up; the patched forward runs sparse
        (the method's dense layers stay dense, dense steps do not apply). Returns milliseconds,
        the ratio, and the attention layers' share of the dense forward."""
        from .eval.timing import attention_share, timed_call

        spec = settings.spec()
        if spec.method is None:
            raise GenerationError(f"bench: {spec.text!r} has no sparse method to time")
        if spec.cache is not None:
            raise GenerationError(f"bench times one step; a cache acts across steps: drop '{spec.text}' 's cache "
                                  "and compare whole generations with `ditaccel generate --compare`")
        captured = self._capture_forward(settings)
        transformer = self.transformers[0]

        def timed() -> float:
            best = float("inf")
            for _ in range(repeats + 1):  # the first is the warm-up
                _, speed = timed_call(transformer, None, **captured)
                best = min(best, speed["end_to_end_s"])
            return best * 1000.0

        with torch.no_grad():
            dense_ms = timed()
            layers = [layer.module for layer in adapter_for(transformer).attention_layers(transformer)]
            share = attention_share(transformer, layers, **captured)
            arguments = spec.patch_arguments(self.family)
            dense_layers = spec.schedule_for(self.family).dense_layers
            arguments["schedule"] = Schedule(dense_steps=0, dense_last_steps=0, dense_layers=dense_layers)
            try:
                # force_sparse: the question is what the sparse path costs, not what the cost model would run.
                handle = patch(transformer, **arguments, force_sparse=True)
            except (ValueError, TypeError, NotImplementedError) as error:
                raise GenerationError(f"{spec.text}: {_one_line(error)}") from None
            try:
                sparse_ms = timed()
                fraction = handle.summary().compute_fraction
            except (ValueError, TypeError, NotImplementedError) as error:
                raise GenerationError(f"{spec.text}: {_one_line(error)}") from None
            finally:
                handle.unpatch()
        return dict(model=self.model, device=str(self.device), spec=spec.text, dense_ms=dense_ms, patched_ms=sparse_ms,
                    speedup=dense_ms / sparse_ms, attention_share=share, attention_compute=fraction)

    def _capture_forward(self, settings: GenerateSettings) -> dict:
        """The keyword arguments of the transformer's first forward in a generation (then stopped)."""
        transformer = self.transformers[0]
        captured: dict = {}

        class _Stop(Exception):
            pass

        def hook(module, args, kwargs):
            if args:
                raise GenerationError(f"bench: {type(module).__name__} is called with positional arguments; "
                                      "time it with benchmarks/transformer.py instead")
            captured.update(kwargs)
            raise _Stop

        handle = transformer.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            with contextlib.suppress(_Stop):
                self.pipe(**self.arguments(settings, steps=1))
        finally:
            handle.remove()
        if not captured:
            raise GenerationError("bench: the pipeline never called its transformer")
        return captured


def _distributed_rank(parallel: bool, device: str | None) -> tuple[int, int]:
    """(rank, world size) of this process; joins torchrun's process group when ``parallel``."""
    if not parallel:
        return 0, 1
    import torch.distributed as dist

    if "RANK" not in os.environ:
        raise GenerationError("--nproc: run through torchrun (ditaccel generate --nproc N starts it)")
    if not dist.is_initialized():
        cuda = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
        backend = "nccl" if cuda else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def _enable_ulysses(transformers, world: int, device: torch.device) -> None:
    from diffusers import ContextParallelConfig

    if device.type == "cpu" and torch.accelerator.device_count() == 0:
        # diffusers 0.42 picks the rank's device as rank % device_count(), which is 0 on a CPU host.
        torch.accelerator.device_count = lambda: 1
    for transformer in transformers:
        heads = transformer.config.get("num_attention_heads")
        if heads is not None and heads % world:
            raise GenerationError(f"--nproc {world}: {type(transformer).__name__} has {heads} attention heads, which "
                                  f"Ulysses context parallelism cannot split over {world} ranks; use a divisor of {heads}")
        transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=world))


def scores(frames: np.ndarray, dense: np.ndarray, device: torch.device) -> dict:
    """PSNR, SSIM (and LPIPS when its weights are found offline) of ``frames`` against ``dense``,
    on the uint8-rounded frames, as ``ditaccel eval`` scores them."""
    from .eval import metrics
    from .eval.lpips import find_lpips_weights, lpips

    a, b = (metrics.to_uint8(x).astype(np.float32) / 255.0 for x in (frames, dense))
    result = {"psnr": metrics.psnr(a, b), "ssim": metrics.ssim(a, b)}
    if find_lpips_weights() is not None:
        result["lpips"] = lpips(a, b, device=device)
    return result


def write_video(frames: np.ndarray, out: str | Path, *, fps: int = 8, scale: int = 1) -> Path:
    """Write (F, H, W, 3) floats in [0, 1] as an H.264 mp4 (``scale`` x nearest-neighbour upscaling;
    sizes padded to even numbers, which H.264 players need)."""
    import imageio.v2 as imageio

    from .eval.metrics import to_uint8

    video = to_uint8(frames)
    if scale > 1:
        video = video.repeat(scale, axis=1).repeat(scale, axis=2)
    pad_h, pad_w = video.shape[1] % 2, video.shape[2] % 2
    if pad_h or pad_w:
        video = np.pad(video, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimwrite(out, list(video), fps=fps, codec="libx264", quality=8, macro_block_size=1)
    return out


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
