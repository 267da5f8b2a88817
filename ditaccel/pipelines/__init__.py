"""Model adapters, one module per family, and the lookup from a transformer to its adapter."""

from __future__ import annotations

import torch

from .base import AttentionLayer, ModelAdapter

_ADAPTER_MODULES = {
    # family: (module, adapter class, the family's name in messages)
    "wan": ("wan", "WanAdapter", "Wan"),
    "hunyuan_video": ("hunyuan_video", "HunyuanVideoAdapter", "HunyuanVideo"),
    "cogvideox": ("cogvideox", "CogVideoXAdapter", "CogVideoX"),
    "ltx": ("ltx", "LTXAdapter", "LTX-Video"),
    "mochi": ("mochi", "MochiAdapter", "Mochi"),
    "flux": ("flux", "FluxAdapter", "FLUX"),
}


def available_adapters() -> list[ModelAdapter]:
    import importlib

    adapters = []
    for module_name, class_name, _ in _ADAPTER_MODULES.values():
        try:
            module = importlib.import_module(f"{__name__}.{module_name}")
        except ImportError:  # an adapter not written yet, or a diffusers version without the model
            continue
        adapters.append(getattr(module, class_name)())
    return adapters


def context_parallel_families() -> list[str]:
    """The families (their names in messages, in registry order) whose adapter declares
    ``context_parallel``: sparse attention under diffusers' context parallelism is tested there."""
    return [_ADAPTER_MODULES[adapter.family][2] for adapter in available_adapters() if adapter.context_parallel]


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
    "context_parallel_families",
    "load_tiny_video_pipeline",
    "supported_models",
]
