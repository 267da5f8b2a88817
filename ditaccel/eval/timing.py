"""Timing a generation: end to end, per denoising step, and the attention layers' share.

On CUDA every interval is a pair of CUDA events recorded on the current stream, read after one
synchronize at the end, so timing adds no host synchronisation inside the generation. On a CPU
the wall clock is exact (everything runs synchronously).

- end to end: the whole ``pipe(...)`` call (text encoding, denoising, decoding);
- per step: the transformer forwards of the generation (every CFG call included) divided by the
  number of denoising steps;
- attention share (``AttentionProfile``): time inside the patched self/joint attention modules
  (projections, norms and rotary included; cross-attention excluded) over the transformer time.
  It puts two events around every attention call, so the harness runs it in a separate
  generation and never in a timed one.
"""

from __future__ import annotations

import contextlib
import platform
import time

import torch

from ..patching import transformers_of


class _Intervals:
    """Start/stop marks on the device's clock; ``seconds()`` after the work is done."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self._marks: list[tuple[object, object]] = []
        self._open: list[object] = []

    def _mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def start(self) -> None:
        self._open.append(self._mark())

    def stop(self) -> None:
        self._marks.append((self._open.pop(), self._mark()))

    def seconds(self) -> list[float]:
        if self.cuda:
            torch.cuda.synchronize()
            return [a.elapsed_time(b) / 1000.0 for a, b in self._marks]
        return [b - a for a, b in self._marks]


@contextlib.contextmanager
def _timed_modules(modules, intervals: _Intervals):
    handles = []
    for module in modules:
        # prepend: the start mark comes before ditaccel's own pre-hook, whose work is part of the cost.
        handles.append(module.register_forward_pre_hook(lambda *_: intervals.start(), prepend=True))
        handles.append(module.register_forward_hook(lambda *_: intervals.stop(), always_call=True))
    try:
        yield intervals
    finally:
        for handle in handles:
            handle.remove()


def is_cuda(pipe) -> bool:
    return transformers_of(pipe)[0].device.type == "cuda"


def timed_call(pipe, steps: int | None, **kwargs):
    """Run ``pipe(**kwargs)``; returns (output, {"end_to_end_s", "transformer_s", "step_ms", "forwards"})."""
    cuda = is_cuda(pipe)
    total, forwards = _Intervals(cuda), _Intervals(cuda)
    with _timed_modules(transformers_of(pipe), forwards):
        if cuda:
            torch.cuda.synchronize()
        total.start()
        output = pipe(**kwargs)
        total.stop()
    end_to_end = total.seconds()[0]
    per_forward = forwards.seconds()
    transformer_s = sum(per_forward)
    return output, {
        "end_to_end_s": end_to_end,
        "transformer_s": transformer_s,
        "step_ms": 1000.0 * transformer_s / steps if steps else None,
        "forwards": len(per_forward),
    }


def attention_share(pipe, attention_modules: list[torch.nn.Module], **kwargs) -> float:
    """Fraction of the transformer time spent in ``attention_modules`` during one ``pipe(**kwargs)``."""
    cuda = is_cuda(pipe)
    forwards, attention = _Intervals(cuda), _Intervals(cuda)
    with _timed_modules(transformers_of(pipe), forwards), _timed_modules(attention_modules, attention):
        pipe(**kwargs)
    total = sum(forwards.seconds())
    return sum(attention.seconds()) / total if total > 0 else float("nan")


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> int | None:
    """Peak GPU memory allocated by torch since the last reset; None on a CPU (not measured)."""
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def environment(device: torch.device, dtype: torch.dtype) -> dict:
    """Device name and the versions that decide the numbers."""
    import diffusers

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return {
        "device": name,
        "device_type": device.type,
        "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "triton": triton_version,
        "diffusers": diffusers.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "date": time.strftime("%Y-%m-%d"),
    }
