"""``ditaccel eval``: quality against speed for every method, paired with dense runs.

    from ditaccel.eval import evaluate
    result = evaluate(out="eval_out", methods=["radial", "neighborhood", "radial(decay=0.5)"],
                      seeds=(0, 1), steps=20)

For every prompt x seed there is one dense run (the reference: the pipeline's own attention as
configured, ``dense_backend`` picks another diffusers attention backend) and one run per method
with the same seed, scheduler and settings; a second dense run through another SDPA backend gives
the noise floor, the score "identical" reaches on this device and dtype. Decoded frames are scored
in memory (an mp4 round trip alone costs ~36 dB), quantised to uint8 by rounding. Dense frames are
kept losslessly (uint8 .npy under ``frames/``) so ``resume`` can score methods added later.

Methods are specs (``ditaccel.method_spec``) resolved through ``ditaccel.patch``. Speed per method:
one warm-up generation, then every generation timed (CUDA events on GPU), the attention share
profiled in one extra generation, the peak memory, and the attention compute fraction (computed
blocks over all, every call). A run that fails is recorded with its error; the others go on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..method_spec import MethodSpec, parse_method_spec, parse_method_specs
from ..patching import transformers_of
from ..pipelines.loading import (
    BUILT_IN,
    call_arguments,
    call_default,
    call_parameters,
    is_built_in,
    load_pipeline,
    output_videos,
    required_call_parameters,
)
from . import metrics, prompt_following
from .lpips import find_lpips_weights, lpips
from .prompts import HELD_OUT, Prompt, batch_arguments, load_prompts
from .report import strip_name, write_strip
from .timing import attention_share, environment, peak_memory_bytes, reset_peak_memory, timed_call

REFERENCE = "dense"
FLOOR = "noise floor"
RESULTS_FILE = "results.json"


@dataclass
class EvalSettings:
    """What one evaluation runs. None = the pipeline's own default."""

    methods: list[str]
    model: str = BUILT_IN
    prompts: str = HELD_OUT
    num_prompts: int | None = None
    seeds: tuple[int, ...] = (0,)
    steps: int | None = None
    frames: int | None = None
    height: int | None = None
    width: int | None = None
    guidance: float | None = None
    device: str | None = None
    dtype: str | None = None
    dense_backend: str | None = None
    floor_backend: str | None = "auto"  # None: no noise floor
    batch_size: int | None = None
    lpips_weights: str | None = None
    profile_attention: bool = True
    plot_x: str = "auto"  # pareto.png's x axis: "compute", "speedup" or auto (compute on the built-in model or a CPU)

    def __post_init__(self) -> None:
        if isinstance(self.methods, str):
            self.methods = [s.text for s in parse_method_specs(self.methods)]
        self.seeds = tuple(int(s) for s in self.seeds)
        if not self.seeds:
            raise ValueError("seeds: give at least one seed")
        for name in ("num_prompts", "steps", "frames", "height", "width", "batch_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive int or None, got {value!r}")
        if self.plot_x not in ("auto", "compute", "speedup"):
            raise ValueError(f"plot_x must be auto, compute or speedup, got {self.plot_x!r}")
        if self.dtype not in (None, "float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}")


@dataclass
class EvalResult:
    settings: dict
    environment: dict
    runs: list[dict] = field(default_factory=list)
    methods: dict = field(default_factory=dict)  # spec -> per-method facts (config, speed profile, errors)

    def to_json(self) -> dict:
        return {"settings": self.settings, "environment": self.environment, "methods": self.methods, "runs": self.runs}


def evaluate(out: str | Path, methods, *, resume: bool = False, progress: bool = True, **settings) -> EvalResult:
    """Run the evaluation and write ``out``/results.json, results.csv, pareto.png, report.md and
    frame strips. ``methods``: specs (list, or one comma-separated string); ``settings``: the
    fields of ``EvalSettings``. ``resume``: keep the finished runs of ``out``/results.json."""
    from .report import write_report

    settings = EvalSettings(methods=methods, **settings)
    specs = [parse_method_spec(m) for m in settings.methods]
    specs = [s for s in specs if not s.is_dense]  # dense is always run: it is the reference
    if len({s.text for s in specs}) != len(specs):
        raise ValueError("methods: a method is listed twice")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = _Evaluation(settings, specs, out, resume, progress).run()
    write_report(result, out)
    return result


class _Evaluation:
    def __init__(self, settings: EvalSettings, specs: list[MethodSpec], out: Path, resume: bool, progress: bool):
        self.settings, self.specs, self.out, self.progress = settings, specs, out, progress
        device = settings.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {device}: no CUDA device here; use --device cpu")
        self.dtype = getattr(torch, settings.dtype) if settings.dtype else None
        # Cheap inputs first: a typo in a prompt file should not wait for a 14B model to load.
        prompts = load_prompts(settings.prompts)
        self.prompts: list[Prompt] = prompts[: settings.num_prompts] if settings.num_prompts else prompts
        self.lpips_info = find_lpips_weights(settings.lpips_weights)
        self.pipe = load_pipeline(settings.model, device=self.device, dtype=self.dtype)
        self.pipe.set_progress_bar_config(disable=True)
        self.dtype = transformers_of(self.pipe)[0].dtype
        self.built_in = is_built_in(settings.model)
        self.call = call_arguments(self.pipe, steps=settings.steps, guidance=settings.guidance,
                                   frames=settings.frames, height=settings.height, width=settings.width)
        self.steps = self.call.get("num_inference_steps") or call_default(self.pipe, "num_inference_steps")
        guidance = self.call.get("guidance_scale", call_default(self.pipe, "guidance_scale"))
        self.accepted = call_parameters(self.pipe)
        # FLUX and HunyuanVideo embed a distilled guidance_scale; their classifier-free guidance
        # (which needs negative prompts) is true_cfg_scale.
        cfg = call_default(self.pipe, "true_cfg_scale") if "true_cfg_scale" in self.accepted else guidance
        self.guided = cfg is not None and cfg > 1.0
        _check_pipeline_inputs(self.pipe, self.prompts, self.accepted)
        batch = settings.batch_size or (min(len(self.prompts), 32) if self.built_in else 1)
        self.batches = [list(range(i, min(i + batch, len(self.prompts)))) for i in range(0, len(self.prompts), batch)]
        if settings.dense_backend:
            try:
                for transformer in transformers_of(self.pipe):
                    transformer.set_attention_backend(settings.dense_backend)
            except (RuntimeError, ImportError) as error:
                raise ValueError(f"--dense-backend {settings.dense_backend}: {_one_line(error)}") from None
        self.floor_backend = _floor_backend(settings.floor_backend, settings.dense_backend, self.device)
        self.result = EvalResult(
            settings={**dataclasses.asdict(settings), "steps": self.steps, "guidance": guidance, "batch_size": batch,
                      "prompt_texts": [p.text for p in self.prompts], "prompt_hash": _prompt_hash(self.prompts),
                      "floor_backend": self.floor_backend,
                      "frames_scored": "in memory, rounded to uint8",
                      "lpips_weights": None if self.lpips_info is None else self.lpips_info.as_dict()},
            environment=environment(self.device, self.dtype),
        )
        self.done: set[tuple[str, int, int]] = set()
        if resume and (out / RESULTS_FILE).is_file():
            previous = json.loads((out / RESULTS_FILE).read_text())
            _check_resumable(previous, self.result)
            self.result.methods = previous.get("methods", {})
            wanted = {REFERENCE, FLOOR} | {spec.text for spec in specs}
            for run in previous.get("runs", []):
                if (run["status"] == "ok" and run["prompt_index"] < len(self.prompts) and run["seed"] in settings.seeds
                        and run["method"] in wanted):
                    self.result.runs.append(run)
                    self.done.add((run["method"], run["prompt_index"], run["seed"]))
        self.dense: dict[tuple[int, int], np.ndarray] = {}

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> EvalResult:
        from tqdm.auto import tqdm

        labels = [REFERENCE] + ([FLOOR] if self.floor_backend else []) + [s.text for s in self.specs]
        videos = len(self.prompts) * len(self.settings.seeds)
        todo = sum(videos - sum(1 for p in range(len(self.prompts)) for s in self.settings.seeds
                                if (label, p, s) in self.done) for label in labels)
        self.bar = tqdm(total=todo, desc="eval", unit="video", disable=not self.progress)
        try:
            self._run_reference()
            if self.floor_backend:
                self._run_floor()
            for spec in self.specs:
                self._run_method(spec)
        finally:
            self.bar.close()
        self._save()
        return self.result

    def _pending(self, label: str):
        """(seed, prompt indices) batches with a video not yet done for ``label``; batches whose
        dense reference failed are recorded as failed here."""
        for seed in self.settings.seeds:
            for batch in self.batches:
                if all((label, p, seed) in self.done for p in batch):
                    continue
                if label != REFERENCE and any((p, seed) not in self.dense for p in batch):
                    role = "floor" if label == FLOOR else "method"
                    self._fail_all(label, role, [(seed, batch)], RuntimeError("no dense reference: the dense run failed"))
                    continue
                yield seed, batch

    def _run_reference(self) -> None:
        frames_dir = self.out / "frames" / "dense"
        frames_dir.mkdir(parents=True, exist_ok=True)
        # Dense frames of finished runs come from disk; a batch with a missing file runs again.
        pending = []
        for seed in self.settings.seeds:
            for batch in self.batches:
                missing = False
                for p in batch:
                    path = frames_dir / _frames_name(p, seed)
                    if (REFERENCE, p, seed) in self.done and path.is_file():
                        self.dense[(p, seed)] = np.load(path)
                    else:
                        self.done.discard((REFERENCE, p, seed))
                        missing = True
                if missing:
                    pending.append((seed, batch))
        info = self.result.methods.setdefault(REFERENCE, {"role": "reference", "backend": self.settings.dense_backend or "diffusers default (native SDPA)"})
        if not pending:
            return
        try:
            self._warm_up(pending[0])
        except Exception as error:  # noqa: BLE001  (recorded; nothing can be compared without dense)
            self._fail_all(REFERENCE, "reference", pending, error)
            return
        for seed, batch in pending:
            try:
                videos, speed = self._generate(batch, seed)
            except Exception as error:  # noqa: BLE001  (these prompts get no method runs either)
                self._fail_all(REFERENCE, "reference", [(seed, batch)], error)
                continue
            for p, video in zip(batch, videos):
                frames = self._record(REFERENCE, "reference", p, seed, video, None, speed, compute_fraction=1.0)
                np.save(frames_dir / _frames_name(p, seed), frames)
                self.dense[(p, seed)] = frames
            self._save()
        info["peak_memory_bytes"] = self._peak(REFERENCE)
        if self.settings.profile_attention:
            info["attention_share"] = self._attention_share(pending[0])

    def _run_floor(self) -> None:
        pending = list(self._pending(FLOOR))
        self.result.methods.setdefault(FLOOR, {"role": "floor", "backend": self.floor_backend,
                                               "what": f"dense through {self.floor_backend} against dense"})
        if not pending:
            return
        with _attention_backend(self.pipe, self.floor_backend):
            for seed, batch in pending:
                try:
                    videos, speed = self._generate(batch, seed)
                except Exception as error:  # noqa: BLE001  (recorded; the evaluation goes on)
                    self._fail_all(FLOOR, "floor", [(seed, batch)], error)
                    continue
                for p, video in zip(batch, videos):
                    self._record(FLOOR, "floor", p, seed, video, self.dense[(p, seed)], speed, compute_fraction=1.0)
                self._save()

    def _run_method(self, spec: MethodSpec) -> None:
        import ditaccel

        from ..pipelines import adapter_for

        info = self.result.methods.setdefault(spec.text, {"role": "method"})
        if all((spec.text, p, seed) in self.done for p in range(len(self.prompts)) for seed in self.settings.seeds):
            return
        info.pop("error", None)
        try:
            family = adapter_for(transformers_of(self.pipe)[0]).family
            # force_sparse: the study scores the method as configured. patch()'s default would run dense
            # on shapes where the GPU cost model finds that sparse does not pay (the built-in model's
            # 4,096 tokens among them), and the rows would score dense attention under the method's name.
            handle = ditaccel.patch(self.pipe, **spec.patch_arguments(family), force_sparse=True)
        except Exception as error:  # noqa: BLE001
            info["error"] = _one_line(error)
            self._fail_all(spec.text, "method", list(self._pending(spec.text)), error)
            return
        try:
            # What the spec resolved to on this model (a preset's config and schedule). Runs kept by
            # --resume that another config made (a preset changed since) are made again.
            resolved = {"config": repr(handle.states[0].method), "schedule": repr(handle.states[0].schedule),
                        "cache": repr(spec.cache)}
            if any(info.get(k) not in (None, v) for k, v in resolved.items()):
                self.result.runs = [r for r in self.result.runs if r["method"] != spec.text]
                self.done = {key for key in self.done if key[0] != spec.text}
            info.update(resolved)
            pending = list(self._pending(spec.text))
            if not pending:
                return
            self._warm_up(pending[0], handle.states[0].schedule)
            summary = None  # of the last generation: the report's per-layer table
            for seed, batch in pending:
                try:
                    handle.reset_summary()
                    videos, speed = self._generate(batch, seed)
                    summary = handle.summary()
                    fraction = summary.compute_fraction
                except Exception as error:  # noqa: BLE001
                    self._fail_all(spec.text, "method", [(seed, batch)], error)
                    continue
                for p, video in zip(batch, videos):
                    self._record(spec.text, "method", p, seed, video, self.dense[(p, seed)], speed, fraction)
                self._save()
            info["peak_memory_bytes"] = self._peak(spec.text)
            if self.settings.profile_attention:
                handle.reset_summary()
                info["attention_share"] = self._attention_share(pending[0])
                summary = handle.summary()
            info["summary"] = str(summary if summary is not None else handle.summary())
        except Exception as error:  # noqa: BLE001  (warm-up or profiling failed)
            info["error"] = _one_line(error)
            self._fail_all(spec.text, "method", list(self._pending(spec.text)), error)
        finally:
            handle.unpatch()

    def _peak(self, label: str) -> int | None:
        peaks = [r["speed"].get("peak_memory_bytes") for r in self.result.runs if r["method"] == label and r["status"] == "ok"]
        peaks = [p for p in peaks if p is not None]
        return max(peaks) if peaks else None

    # -- one generation ---------------------------------------------------------------------
    def _arguments(self, batch: list[int], seed: int, steps: int | None = None) -> dict:
        prompts = [self.prompts[p] for p in batch]
        prompt_arguments = batch_arguments(prompts, self.accepted, guided=self.guided)
        arguments = {**self.call, **{k: v.to(self.device) if isinstance(v, torch.Tensor) else v
                                     for k, v in prompt_arguments.items()}}
        if steps is not None:
            arguments["num_inference_steps"] = steps
        # One generator per video, seeded alike: a video's noise does not depend on its batch.
        arguments["generator"] = [torch.Generator().manual_seed(seed) for _ in batch]
        return arguments

    def _generate(self, batch: list[int], seed: int):
        reset_peak_memory(self.device)  # the generation alone: scoring (LPIPS) runs on the GPU too
        output, speed = timed_call(self.pipe, self.steps, **self._arguments(batch, seed))
        videos = output_videos(output)
        speed.update(batch_size=len(batch), seconds_per_video=speed["end_to_end_s"] / len(batch),
                     peak_memory_bytes=peak_memory_bytes(self.device))
        return videos, speed

    def _warm_up(self, first: tuple[int, list[int]], schedule=None) -> None:
        """One short generation, long enough for one sparse step of ``schedule``: kernels compile
        and layouts are built outside the timed runs."""
        seed, batch = first
        total = self.steps or 2
        steps = min(2, total)
        if schedule is not None:
            while steps < total and all(schedule.step_is_dense(i, steps) for i in range(steps)):
                steps += 1
        self.pipe(**self._arguments(batch, seed, steps=steps))

    def _attention_share(self, first: tuple[int, list[int]]) -> float | None:
        from ..pipelines import adapter_for

        seed, batch = first
        modules = [layer.module for t in transformers_of(self.pipe) for layer in adapter_for(t).attention_layers(t)]
        try:
            return attention_share(self.pipe, modules, **self._arguments(batch, seed))
        except Exception:  # noqa: BLE001  (a profile is optional; the timed runs stand)
            logging.getLogger(__name__).warning("attention profile failed:\n%s", traceback.format_exc())
            return None

    # -- records ----------------------------------------------------------------------------
    def _record(self, label, role, p, seed, video, reference, speed, compute_fraction) -> np.ndarray:
        """Score one video (and against ``reference``, dense uint8 frames, when given), keep the run
        and return the video's uint8 frames."""
        frames = metrics.to_uint8(video)
        scored = frames.astype(np.float32) / 255.0  # exactly the uint8 frames, as the metrics take them
        moving = len(frames) > 1
        motion = metrics.dynamic_degree_details(scored) if moving else None
        quality = {
            "temporal_flickering": metrics.temporal_flickering(scored) if moving else None,
            "dynamic_degree": motion.motion if moving else None,
            "dynamic": motion.is_dynamic if moving else None,
            "motion_smoothness": metrics.motion_smoothness(scored) if len(frames) > 2 else None,
        }
        if reference is not None:
            dense = reference.astype(np.float32) / 255.0
            quality.update(
                psnr=metrics.psnr(scored, dense), ssim=metrics.ssim(scored, dense),
                lpips=lpips(scored, dense, weights=self.settings.lpips_weights, device=self.device)
                if self.lpips_info is not None else None,
            )
        if self.built_in and self.prompts[p].is_text:
            followed = prompt_following.follow_prompt(self.prompts[p].text, video)
            if followed is not None:
                quality.update(colour_ok=followed["colour_ok"], motion_ok=followed["motion_ok"])
        if role == "method" and (p, seed) == (0, self.settings.seeds[0]):
            write_strip(self.out / strip_name(label), reference, frames)
        self._keep(label, role, p, seed, status="ok", error=None, quality=quality, speed=speed,
                   compute_fraction=compute_fraction)
        self.done.add((label, p, seed))
        return frames

    def _fail_all(self, label, role, batches, error) -> None:
        message = _one_line(error)
        logging.getLogger(__name__).warning("%s failed: %s", label, message)
        for seed, batch in batches:
            for p in batch:
                if (label, p, seed) not in self.done:
                    self._keep(label, role, p, seed, status="failed", error=message, quality={}, speed={},
                               compute_fraction=None)
        self._save()

    def _keep(self, label, role, p, seed, **fields) -> None:
        """The run record of (label, prompt, seed), replacing an earlier one (a failed run retried)."""
        self.result.runs = [r for r in self.result.runs if (r["method"], r["prompt_index"], r["seed"]) != (label, p, seed)]
        self.result.runs.append({"method": label, "role": role, "prompt_index": p, "prompt": self.prompts[p].text,
                                 "seed": seed, **fields})
        self.bar.update(1)

    def _save(self) -> None:
        path = self.out / RESULTS_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.result.to_json(), indent=1, default=_json_default))
        tmp.replace(path)


# Settings that change what a run produces: resuming with other values would mix two evaluations.
_RESUME_KEYS = ("model", "steps", "frames", "height", "width", "guidance", "dense_backend", "floor_backend",
                "batch_size", "prompt_hash")


def _prompt_hash(prompts: list[Prompt]) -> str:
    """Of the prompt texts and embedding values, in order: resume must not pair other prompts."""
    import hashlib

    digest = hashlib.sha256()
    for prompt in prompts:
        digest.update(prompt.text.encode() + b"\0")
        for name in sorted(prompt.embeddings):
            digest.update(name.encode() + prompt.embeddings[name].detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def _check_pipeline_inputs(pipe, prompts: list[Prompt], accepted: set[str]) -> None:
    """Refuse, before any generation, what the harness cannot feed this pipeline."""
    supplied = {"prompt", "negative_prompt", "num_inference_steps", "guidance_scale", "num_frames", "height", "width",
                "generator", "output_type"} | set(prompts[0].embeddings)
    required = [name for name in required_call_parameters(pipe) if name not in supplied]
    if required:
        raise ValueError(f"--model: {type(pipe).__name__} needs {', '.join(required)}, which ditaccel eval does not "
                         "supply (text-to-video and text-to-image pipelines only)")
    if prompts[0].is_text and getattr(pipe, "text_encoder", "absent") is None:
        raise ValueError(f"--prompts: {type(pipe).__name__} was saved without a text encoder; give a .safetensors/.pt "
                         "file of prompt embeddings")


def _check_resumable(previous: dict, current: EvalResult) -> None:
    before, now = previous.get("settings", {}), current.settings
    differ = [f"{k} {before.get(k)!r} -> {now.get(k)!r}" for k in _RESUME_KEYS if before.get(k) != now.get(k)]
    old_env, new_env = previous.get("environment", {}), current.environment
    for key in ("device_type", "dtype") + (("device",) if new_env.get("device_type") == "cuda" else ()):
        if old_env.get(key) != new_env.get(key):
            differ.append(f"{key} {old_env.get(key)!r} -> {new_env.get(key)!r}")
    shared = min(len(before.get("prompt_texts", [])), len(now["prompt_texts"]))
    if before.get("prompt_texts", [])[:shared] != now["prompt_texts"][:shared]:
        differ.append("the prompts")
    if differ:
        raise ValueError(f"--resume: the results in this --out were made with other settings ({'; '.join(differ)}); "
                         "use another --out or the same settings")


def _frames_name(prompt_index: int, seed: int) -> str:
    return f"p{prompt_index:03d}_s{seed}.npy"


def _floor_backend(choice: str | None, dense_backend: str | None, device: torch.device) -> str | None:
    """Another SDPA path than the reference's: on a GPU the memory-efficient kernel (or math when
    that is the reference), on a CPU the math path."""
    if choice != "auto":
        return choice
    if device.type != "cuda":
        return "_native_math"
    return "_native_math" if dense_backend == "_native_efficient" else "_native_efficient"


@contextlib.contextmanager
def _attention_backend(pipe, backend: str):
    """Every attention processor of the pipeline's transformers on ``backend`` for a while.
    diffusers' set_attention_backend also changes its process-wide default backend (which
    processors without one of their own use): both are put back afterwards."""
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    active = _AttentionBackendRegistry._active_backend
    saved = [(processor, processor._attention_backend) for transformer in transformers_of(pipe)
             for module in transformer.modules()
             if (processor := getattr(module, "processor", None)) is not None and hasattr(processor, "_attention_backend")]
    try:
        for transformer in transformers_of(pipe):
            transformer.set_attention_backend(backend)
        yield
    finally:
        for processor, previous in saved:
            processor._attention_backend = previous
        _AttentionBackendRegistry._active_backend = active


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (tuple, set, Path)):
        return list(value) if not isinstance(value, Path) else str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
