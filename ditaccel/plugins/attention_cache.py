"""The runtime of attention caching on one patched transformer: which CFG branch a call is, the
kept attention outputs, and the replay processors that hand them back.

- Branch: pipelines wrap each denoiser call in ``transformer.cache_context("cond" | "uncond" |
  "cond_uncond")``; the transformer's ``cache_context`` is wrapped to record the name (an instance
  attribute shadowing the method, deleted on unpatch). A call outside any context is named by its
  place in the step ("call 0", "call 1"), so cond and uncond never share an output either way.
- Keeping: a forward hook on each cached attention module keeps its output (a reference, no copy)
  on the steps that compute inside the window, per (layer, branch).
- Reusing: the patch's forward pre-hook decides per layer before the forward runs and swaps in a
  replay processor holding the kept output, which computes nothing (QKV, attention and output
  projection all skipped). Its ``__call__`` carries the original processor's signature, because
  diffusers drops keyword arguments a processor's signature does not name (with a warning).
- A new generation (step 0, first call) drops every kept output; so does leaving the window.
"""

from __future__ import annotations

import contextlib
import functools

import torch


class BranchTracker:
    """Records the name of the diffusers cache context the transformer's calls run in."""

    def __init__(self, transformer: torch.nn.Module) -> None:
        self.transformer = transformer
        self.name: str | None = None
        original = getattr(transformer, "cache_context", None)
        self._installed = original is not None
        if not self._installed:
            return

        @contextlib.contextmanager
        def cache_context(name, *args, **kwargs):
            previous, self.name = self.name, name
            try:
                with original(name, *args, **kwargs):
                    yield
            finally:
                self.name = previous

        transformer.cache_context = cache_context  # shadows the class's method on this instance only

    def remove(self) -> None:
        if self._installed:
            self.transformer.__dict__.pop("cache_context", None)
            self._installed = False


class ReplayProcessor:
    """Returns ``output`` (set by the pre-hook) and computes nothing."""

    def __init__(self, original) -> None:
        self.original = original
        self.output = None

    def __call__(self, attn, *args, **kwargs):
        return self.output

    @property
    def _attention_backend(self):
        return self.original._attention_backend

    @_attention_backend.setter
    def _attention_backend(self, backend) -> None:
        self.original._attention_backend = backend


@functools.lru_cache(maxsize=None)
def _replay_class(processor_class: type) -> type:
    def __call__(self, attn, *args, **kwargs):
        return self.output

    signed = functools.wraps(processor_class.__call__)(__call__)  # inspect.signature follows __wrapped__
    return type(f"Replay{processor_class.__name__}", (ReplayProcessor,), {"__call__": signed})


def replay_processor(original) -> ReplayProcessor:
    return _replay_class(type(original))(original)


def output_bytes(output) -> int:
    tensors = output if isinstance(output, (tuple, list)) else (output,)
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


class AttentionCache:
    """Kept outputs and counters of one cache config over the patched attention layers."""

    def __init__(self, config, transformer: torch.nn.Module, layers) -> None:
        self.config = config
        self.tracker = BranchTracker(transformer)
        self.layers = [layer for layer in layers if config.applies_to(layer.index)]
        self.outputs: dict[tuple[int, str], object] = {}
        self.bytes = 0
        self.peak_bytes = 0  # most memory the kept outputs held at once
        self.over_cap: set[int] = set()  # layers refused by max_cache_bytes: they compute every step
        self.computed = {layer.index: 0 for layer in self.layers}
        self.reused = {layer.index: 0 for layer in self.layers}
        self.branch: str | None = None
        self._keeping: set[int] = set()
        self._hooks = [layer.module.register_forward_hook(functools.partial(self._keep, layer.index)) for layer in self.layers]

    def begin_forward(self, ctx) -> dict[int, object]:
        """Decide this forward: returns {layer: kept output} for the layers that reuse."""
        if ctx.step == 0 and ctx.call_in_step == 0:
            self.clear()  # a new generation
        self.branch = self.tracker.name if self.tracker.name is not None else f"call {ctx.call_in_step}"
        phase = self.config.phase(ctx.step, ctx.num_steps, ctx.progress)
        if phase == "outside" and self.outputs:
            self.clear()
        replay, self._keeping = {}, set()
        for layer in self.layers:
            index = layer.index
            kept = self.outputs.get((index, self.branch))
            if phase == "reuse" and kept is not None:
                replay[index] = kept
                self.reused[index] += 1
                continue
            self.computed[index] += 1
            if phase != "outside" and index not in self.over_cap:
                self._keeping.add(index)
        return replay

    def _keep(self, index: int, module, args, output) -> None:
        if index not in self._keeping:
            return
        key = (index, self.branch)
        size = output_bytes(output)
        previous = self.outputs.get(key)
        growth = size - (output_bytes(previous) if previous is not None else 0)
        cap = self.config.max_cache_bytes
        if cap is not None and self.bytes + growth > cap:
            self.over_cap.add(index)
            if previous is not None:
                self.bytes -= output_bytes(previous)
                del self.outputs[key]
            return
        self.outputs[key] = output
        self.bytes += growth
        self.peak_bytes = max(self.peak_bytes, self.bytes)

    def clear(self) -> None:
        self.outputs.clear()
        self.bytes = 0

    def reset_counts(self) -> None:
        for index in self.computed:
            self.computed[index] = self.reused[index] = 0

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        self.tracker.remove()
        self.clear()
