"""Model adapters, one module per family, and the lookup from a transformer to its adapter."""

from __future__ import annotations

import torch

from .base import AttentionLayer, ModelAdapter

_ADAPTER_MODULES = {
    # family: (module, adapter class)
    "wan": ("wan", "WanAdapter"),
    "hunyuan_video": ("hunyuan_video", "HunyuanVideoAdapter"),
    "cogvideox": ("cogvideox", "CogVideoXAdapter"),
    "ltx": ("ltx", "LTXAdapter"),
    "mochi": ("mochi", "MochiAdapter"),
    "flux": ("flux", "FluxAdapter"),
}


def available_adapters() -> list[ModelAdapter]:
    import importlib

    adapters = []
    for module_name, class_name in _ADAPTER_MODULES.values():
        try:
            module = importlib.import_module(f"{__name__}.{module_name}")
        except ImportError:  # an adapter not written yet, or a diffusers version without the model
            continue
        adapters.append(getattr(module, class_name)())
    return adapters


def supported_models() -> list[str]:
    return [name for adapter in available_adapters() for name in adapter.transformer_classes]


def adapter_for(transformer: torch.nn.Module) -> ModelAdapter:
    for adapter in available_adapters():
        if adapter.matches(transformer):
            return adapter
    raise TypeError(
        f"unsupported model {type(transformer).__name__}; ditaccel supports these transformers: "
        f"{', '.join(supported_models())}"
    )


_LAZY = {"TinyVideoPipeline", "load_tiny_video_pipeline", "DEFAULT_WEIGHTS_DIR"}


def __getattr__(name: str):
    # The built-in model pulls in transformers (~2 s): load it only when asked for.
    if name in _LAZY:
        from . import tiny_video

        return getattr(tiny_video, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AttentionLayer",
    "DEFAULT_WEIGHTS_DIR",
    "ModelAdapter",
    "TinyVideoPipeline",
    "adapter_for",
    "available_adapters",
    "load_tiny_video_pipeline",
    "supported_models",
]
