"""Load a pipeline to evaluate or generate with: the built-in model, or a local diffusers directory.

    pipe = load_pipeline("built-in")                       # the shipped tiny text-to-video model
    pipe = load_pipeline("/models/Wan2.1-T2V-1.3B-Diffusers", device="cuda", dtype=torch.bfloat16)

Nothing is downloaded (``local_files_only``). A directory whose transformer ditaccel cannot patch
is refused before any weight is loaded, with one line naming the supported transformers.
``call_arguments`` maps generic settings (frames, size, steps, guidance) onto the keyword
arguments the pipeline's ``__call__`` actually has.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import torch

BUILT_IN = "built-in"


class UnsupportedPipelineError(ValueError):
    """The directory is not a diffusers pipeline ditaccel can patch."""


def is_built_in(model: str | Path | None) -> bool:
    if model is None or str(model) == BUILT_IN:
        return True
    index = Path(model) / "model_index.json"
    return index.is_file() and json.loads(index.read_text()).get("_class_name") == "TinyVideoPipeline"


def default_dtype(device: torch.device | str) -> torch.dtype:
    return torch.float32 if torch.device(device).type == "cpu" else torch.bfloat16


def load_pipeline(model: str | Path | None = BUILT_IN, *, device: str | torch.device = "cpu",
                  dtype: torch.dtype | None = None):
    """The built-in model (``"built-in"`` or a saved TinyVideoPipeline directory) or a local
    diffusers pipeline directory of a supported family, on ``device`` in ``dtype``."""
    from . import supported_models

    device = torch.device(device)
    dtype = dtype or default_dtype(device)
    if is_built_in(model):
        from .tiny_video import load_tiny_video_pipeline

        return load_tiny_video_pipeline(device=device, dtype=dtype,
                                        weights_dir=None if model in (None, BUILT_IN) else model)
    path = Path(model)
    index_file = path / "model_index.json"
    if not index_file.is_file():
        raise UnsupportedPipelineError(f"--model {path}: not a diffusers pipeline directory (no model_index.json); "
                                       f"pass '{BUILT_IN}' or a directory saved with save_pretrained")
    index = json.loads(index_file.read_text())
    transformer_class = (index.get("transformer") or [None, None])[1]
    if transformer_class not in supported_models():
        raise UnsupportedPipelineError(
            f"--model {path}: its transformer {transformer_class or '(none)'} is not supported; "
            f"ditaccel supports {', '.join(supported_models())}")
    from diffusers import DiffusionPipeline

    # Components saved as None (a pipeline without a text encoder, used with prompt embeddings)
    # must be passed as None again.
    absent = {name: None for name, value in index.items() if isinstance(value, list) and value[:2] == [None, None]}
    pipe = DiffusionPipeline.from_pretrained(path, local_files_only=True, **dtype_argument(dtype), **absent)
    return pipe.to(device)


def dtype_argument(dtype: torch.dtype) -> dict:
    """``from_pretrained``'s dtype keyword: diffusers renamed ``torch_dtype`` to ``dtype`` (and
    deprecated the old name)."""
    from diffusers.pipelines import pipeline_utils

    return {"dtype" if hasattr(pipeline_utils, "_resolve_dtype") else "torch_dtype": dtype}


def call_parameters(pipe) -> set[str]:
    return set(inspect.signature(type(pipe).__call__).parameters)


def call_default(pipe, name: str):
    """The default of ``pipe.__call__``'s parameter ``name`` (None if it has none)."""
    parameter = inspect.signature(type(pipe).__call__).parameters.get(name)
    return None if parameter is None or parameter.default is inspect.Parameter.empty else parameter.default


def required_call_parameters(pipe) -> list[str]:
    """Parameters of ``pipe.__call__`` without a default (an I2V pipeline's ``image``)."""
    return [name for name, p in inspect.signature(type(pipe).__call__).parameters.items()
            if name != "self" and p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def call_arguments(pipe, *, steps: int | None = None, guidance: float | None = None, frames: int | None = None,
                   height: int | None = None, width: int | None = None) -> dict:
    """Keyword arguments for ``pipe(...)`` from generic settings; None leaves the pipeline's
    default. Frames come back as floats in [0, 1] (``output_type="np"``)."""
    accepted = call_parameters(pipe)
    wanted = {"num_inference_steps": steps, "guidance_scale": guidance, "num_frames": frames, "height": height,
              "width": width, "output_type": "np"}
    if frames is not None and frames != 1 and "num_frames" not in accepted:
        raise ValueError(f"--frames: {type(pipe).__name__} makes images, not videos; leave --frames unset")
    return {k: v for k, v in wanted.items() if v is not None and k in accepted}


def output_videos(output) -> list:
    """(F, H, W, 3) float arrays in [0, 1], one per generated sample (an image is one frame)."""
    import numpy as np

    if hasattr(output, "frames"):
        frames = output.frames
        return [np.asarray(v, dtype=np.float32) for v in frames]
    images = np.asarray(output.images, dtype=np.float32)  # (B, H, W, 3)
    return [image[None] for image in images]
