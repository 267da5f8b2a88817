"""Quality against speed: metrics on videos and the ``ditaccel eval`` harness.

    from ditaccel.eval import evaluate, metrics
    evaluate(out="eval_out", methods="radial,neighborhood", seeds=(0, 1))
    metrics.psnr(video_a, video_b)
"""

from . import metrics
from .harness import EvalResult, EvalSettings, evaluate

__all__ = ["EvalResult", "EvalSettings", "evaluate", "metrics"]
