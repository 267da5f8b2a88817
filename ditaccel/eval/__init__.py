"""Quality against speed: metrics on videos and the ``ditaccel eval`` harness.

    from ditaccel.eval import evaluate, metrics
    evaluate(out="eval_out", methods="radial,neighborhood", seeds=(0, 1))
    metrics.psnr(video_a, video_b)
"""

import importlib

# Loaded on first use: the submodules import OpenCV and matplotlib, and `python -m
# ditaccel.eval.lpips` must not find its own module imported already.
_LAZY = {"EvalResult": "harness", "EvalSettings": "harness", "evaluate": "harness", "metrics": None}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _LAZY[name] is None:
        return importlib.import_module(f"{__name__}.{name}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)


__all__ = ["EvalResult", "EvalSettings", "evaluate", "metrics"]
