"""The runtime of attention caching on one patched transformer: which CFG branch a call is, the
kept attention outputs, and the replay processors that hand them back.

- Branch: pipelines wrap each denoiser call in ``transformer.cache_context("cond" | "uncond" |
  "cond_uncond")``; the transformer's ``cache_context`` is wrapped to record the name (an instance
  attribute shadowing the method, deleted on unpatch). A call outside any context is named by its
  place in the step ("call 0", "call 1"), so cond and uncond never share an output either way.
- Decisions: the patch's forward pre-hook decides per layer before the forward runs and swaps in
  processor objects; a compiled block sees fixed objects and no Python counters, so reuse never
  recompiles it.
- Keeping: on the steps that compute inside the window a keeping processor runs the processor
  the schedule chose (dense or sparse) and holds its output (a reference, no copy); the
  transformer's post-forward hook, outside any compiled region, files it per (layer, branch).
- Reusing: a replay processor returns the kept output and computes nothing (QKV, attention and
  output projection all skipped).
Both carry the original processor's ``__call__`` signature, because diffusers drops keyword
arguments a processor's signature does not name (with a warning).
- Cross-attention (``cross_period``, families with a text cross-attention): the same keeping and
  replay processors, swapped on those modules by this object itself (they are not patched
  otherwise), keyed "cross {i}", with their own period.
- A new generation (step 0, first call) drops every kept output; so does leaving the window.
"""

from __future__ import annotations

import contextlib
import functools

import torch

from ..pipelines.base import StandsInFor


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


class _CacheProcessor(StandsInFor):
    """Base of the cache's processors: they stand in for ``original`` (its settings too)."""

    def __init__(self, original) -> None:
        self.original = original


class ReplayProcessor(_CacheProcessor):
    """Returns ``output`` (set by the pre-hook) and computes nothing."""

    output = None

    def _call(self, attn, *args, **kwargs):
        return self.output


class KeepingProcessor(_CacheProcessor):
    """Runs ``inner`` (set by the pre-hook: the dense or the sparse processor) and holds its output
    in ``kept`` until the post-forward hook files it."""

    inner = None
    kept = None

    def _call(self, attn, *args, **kwargs):
        out = self.inner(attn, *args, **kwargs)
        self.kept = out
        return out


@functools.lru_cache(maxsize=None)
def _signed_class(role: type, processor_class: type) -> type:
    """``role`` with a ``__call__`` whose signature is ``processor_class.__call__``'s."""

    def __call__(self, attn, *args, **kwargs):
        return role._call(self, attn, *args, **kwargs)

    signed = functools.wraps(processor_class.__call__)(__call__)  # inspect.signature follows __wrapped__
    return type(f"{role.__name__[:-len('Processor')]}{processor_class.__name__}", (role,), {"__call__": signed})


def replay_processor(original) -> ReplayProcessor:
    return _signed_class(ReplayProcessor, type(original))(original)


def keeping_processor(original) -> KeepingProcessor:
    return _signed_class(KeepingProcessor, type(original))(original)


def output_bytes(output) -> int:
    tensors = output if isinstance(output, (tuple, list)) else (output,)
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


class AttentionCache:
    """Kept outputs and counters of one cache config over the patched attention layers."""

    def __init__(self, config, transformer: torch.nn.Module, layers, cross_layers=()) -> None:
        self.config = config
        self.tracker = BranchTracker(transformer)
        self.layers = [layer for layer in layers if config.applies_to(layer.index)]
        # Cross-attention sites: key -> (module, its own processor, keeping twin, replay twin).
        self.cross = {}
        if config.cross_period is not None:
            for layer in cross_layers:
                original = layer.module.processor
                self.cross[f"cross {layer.index}"] = (layer.module, original, keeping_processor(original), replay_processor(original))
        self.outputs: dict[tuple[int, str], object] = {}
        self.bytes = 0
        self.peak_bytes = 0  # most memory the kept outputs held at once
        self.over_cap: set[int] = set()  # layers refused by max_cache_bytes: they compute every step
        self.computed = {key: 0 for key in [layer.index for layer in self.layers] + list(self.cross)}
        self.reused = dict.fromkeys(self.computed, 0)
        self.branch: str | None = None
        self.keeping: set[int] = set()  # layers whose output this forward keeps

    def begin_forward(self, ctx) -> dict[int, object]:
        """Decide this forward: returns {layer: kept output} for the layers that reuse; the layers
        to keep are in ``keeping``."""
        if ctx.step == 0 and ctx.call_in_step == 0:
            self.clear()  # a new generation
        self.branch = self.tracker.name if self.tracker.name is not None else f"call {ctx.call_in_step}"
        phase = self.config.phase(ctx.step, ctx.num_steps, ctx.progress)
        if phase == "outside" and self.outputs:
            self.clear()
        replay, self.keeping = {}, set()
        for layer in self.layers:
            index = layer.index
            kept = self.outputs.get((index, self.branch))
            if phase == "reuse" and kept is not None:
                replay[index] = kept
                self.reused[index] += 1
                continue
            self.computed[index] += 1
            if phase != "outside" and index not in self.over_cap:
                self.keeping.add(index)
        self._swap_cross(ctx)
        return replay

    def _swap_cross(self, ctx) -> None:
        """Cross-attention sites: this object swaps their processors itself."""
        if not self.cross:
            return
        phase = self.config.phase(ctx.step, ctx.num_steps, ctx.progress, self.config.cross_period)
        for key, (module, original, keeper, replayer) in self.cross.items():
            kept = self.outputs.get((key, self.branch))
            if phase == "reuse" and kept is not None:
                replayer.output, processor = kept, replayer
                self.reused[key] += 1
            else:
                self.computed[key] += 1
                processor = original
                if phase != "outside" and key not in self.over_cap:
                    keeper.inner, processor = original, keeper
                    self.keeping.add(key)
            if module.processor is not processor:
                module.processor = processor

    def cross_kept(self) -> dict:
        """{key: output} the cross-attention keeping processors held this forward (cleared)."""
        kept = {}
        for key, (_, _, keeper, _) in self.cross.items():
            if key in self.keeping:
                kept[key], keeper.kept = keeper.kept, None
        return kept

    def end_forward(self, outputs: dict[int, object]) -> None:
        """File the outputs the keeping processors held this forward ({layer: output})."""
        for index, output in outputs.items():
            if index in self.keeping and output is not None:
                self._keep(index, output)
        self.keeping = set()

    def _keep(self, index: int, output) -> None:
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
        for module, original, _, _ in self.cross.values():
            module.processor = original
        self.tracker.remove()
        self.clear()
