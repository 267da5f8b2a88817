"""patch() / unpatch() / summary(): install a sparse method into a diffusers pipeline or transformer.

Flow: patch() -> adapter (which model, where the grid and the attention layers are) -> method
config (what to compute) -> SparseAttention (layout cache + token order) -> kernel.

Per attention layer there are two processor objects: the original one (dense, untouched) and a
sparse subclass of it. A forward pre-hook on the transformer reads grid and timestep, decides
per layer which of the two runs this step and swaps the object. unpatch() puts the originals
back and removes the hook: the model is then exactly as it was, also after an exception in a
generation, because nothing else was changed.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .context import StepContext, timestep_value
from .context_parallel import Ulysses, all_ranks_min
from .cost_model import CallShape, CostModel, Decision, process_cost_model, time_pair
from .pipelines import adapter_for
from .pipelines.base import AttentionLayer, ModelAdapter, argument, context_parallel_unsupported
from .plugins.attention_cache import AttentionCache, keeping_processor, replay_processor
from .plugins.broadcast import Broadcast
from .plugins.residual_reuse import ResidualReuse, ResidualStore
from .plugins.neighborhood import Neighborhood
from .plugins.piecewise import Piecewise
from .plugins.pyramid import Pyramid
from .plugins.radial import Radial
from .plugins.sparse_attention import SparseAttention, dense_attention
from .plugins.topk import TopK
from .presets import PRESETS, default_schedule, preset, radial_defaults
from .schedule import Schedule
from .tile_order import TileOrderHooks, uses_tile_order

METHOD_TYPES = (Radial, Neighborhood, Piecewise, Pyramid, TopK)
CACHE_TYPES = (Broadcast, ResidualReuse)
# diffusers caches that, like Broadcast, return kept attention outputs: the two cannot share a layer.
ATTENTION_OUTPUT_CACHES = ("PyramidAttentionBroadcastConfig", "FasterCacheConfig")
_STATE_ATTR = "_ditaccel_patch"
NO_COST_MODEL = "no cost model on a CPU"
DEFERRED_STEPS = 64  # dense forwards whose timestep read may wait (PatchState.catch_up)


@dataclass
class LayerHistory:
    dense_steps: set[int] = field(default_factory=set)
    sparse_steps: set[int] = field(default_factory=set)
    reused_steps: set[int] = field(default_factory=set)  # the attention cache returned a kept output
    calls: int = 0  # transformer forwards through this layer
    reused_calls: int = 0  # of which reused (they compute nothing)
    sparse_calls: int = 0  # of which sparse
    cost_dense_steps: set[int] = field(default_factory=set)  # dense because sparse would not pay (cost_model.py)
    computed_blocks: float = 0.0  # sum over those forwards of the fraction of blocks computed (dense = 1)


class PatchState:
    """Everything one patched transformer holds; removing it restores the transformer."""

    def __init__(self, transformer: torch.nn.Module, adapter: ModelAdapter, method, schedule: Schedule, scheduler=None,
                 backend: str = "auto", tile_order: bool = True, cache=None, force_sparse: bool = False,
                 cost_model: CostModel | None = None):
        self.transformer = transformer
        self.adapter = adapter
        self.method = method  # None: dense attention (with a cache)
        self.schedule = schedule
        self.scheduler = scheduler
        self.layers: list[AttentionLayer] = adapter.attention_layers(transformer)
        self.originals = {layer.index: layer.module.processor for layer in self.layers}
        self.sparse = {}
        if method is not None:
            self.sparse = {layer.index: adapter.sparse_processor(self.originals[layer.index], layer, self) for layer in self.layers}
        self.runner = SparseAttention(method, backend=backend) if method is not None else None
        # A diffusers cache config: enabled on the transformer with diffusers' own enable_cache,
        # disabled again by restore(); it composes with the sparse processors (tests/test_diffusers_caches.py).
        self.diffusers_cache = cache is not None and is_diffusers_cache(cache)
        if self.diffusers_cache:
            transformer.enable_cache(cache)
            warn_if_nothing_hooked(transformer, cache)
        broadcast = isinstance(cache, Broadcast)
        self.cache = AttentionCache(cache, transformer, self.layers, adapter.cross_attention_layers(transformer)) if broadcast else None
        cached = self.cache.layers if broadcast else []
        self.replays = {layer.index: replay_processor(self.originals[layer.index]) for layer in cached}
        self.keepers = {layer.index: keeping_processor(self.originals[layer.index]) for layer in cached}
        self.residuals = self.reference_runner = None
        if isinstance(cache, ResidualReuse):
            self.residuals = ResidualStore(cache, transformer)
            if not isinstance(cache.reference, str):
                self.reference_runner = SparseAttention(_resolve_method(cache.reference, adapter.family)[0], backend=backend)
                # A tile-order forward hands attention the tokens in the main method's order, which
                # is not the reference method's: keep the model's order between the blocks.
                tile_order = False
        self.force_sparse, self.cost_model = force_sparse, cost_model
        self.ulysses: Ulysses | None = None  # diffusers' Ulysses group, when the transformer runs under it
        self.decisions: dict[tuple, Decision] = {}  # (grid, text length) -> dense or sparse, and why
        self.context = StepContext()
        self.history = {layer.index: LayerHistory() for layer in self.layers}
        # Forwards that ran dense whatever their step (below), their timesteps still on the device.
        self._deferred: list[tuple[torch.Tensor, object]] = []
        self._densities: dict = {}  # grid -> video block density of the method's layout
        # Dynamic methods: the sum of the computed fractions their sparse calls reported, kept on
        # the device (reading it back every call would synchronise; summary() reads it once). One
        # sum for all layers: indexing by layer would specialise a compiled block per layer.
        self._dynamic_computed: torch.Tensor | None = None
        self.tile_order_hooks = None
        self.token_order: str | None = None  # how the last sparse forward ordered its video tokens (summary)
        if tile_order and adapter.tile_order_modules is not None:
            self.tile_order_hooks = TileOrderHooks(transformer, adapter, self.context)
        self._hook = transformer.register_forward_pre_hook(self._pre_forward, with_kwargs=True)
        # always_call: also after an exception, so no module stays in tile order outside a forward.
        self._post_hook = transformer.register_forward_hook(self._post_forward, always_call=True)

    @property
    def ranks(self) -> int:
        """Ranks the token sequence is split over (context parallelism), 1 without."""
        return self.ulysses.degree if self.ulysses is not None else 1

    def _find_ulysses(self, module) -> None:
        config = getattr(getattr(module, "_parallel_config", None), "context_parallel_config", None)
        if config is None:
            self.ulysses = None
        elif self.ulysses is None or self.ulysses.config is not config:
            if not self.adapter.context_parallel:
                # Now, at the first forward: not after the dense warm-up steps have run.
                raise NotImplementedError(context_parallel_unsupported(self.adapter.family))
            self.ulysses = Ulysses.of(module)  # raises for ring attention and uneven shards
            lost = [layer.name for layer in self.layers if getattr(self.originals[layer.index], "_parallel_config", 0) is None]
            if lost:
                # A processor set after enable_parallelism: its dense calls would attend within one rank's shard.
                raise RuntimeError(f"{lost[0]}'s attention processor has no parallel config although "
                                   f"{type(module).__name__} runs under context parallelism (a processor set after "
                                   "enable_parallelism?): set processors before enable_parallelism")

    @torch.compiler.disable
    def _pre_forward(self, module, args, kwargs):
        ctx = self.context
        if self.runner is not None:
            self._find_ulysses(module)
        ctx.tiling = None
        ctx.grid = self.adapter.grid(module, args, kwargs)
        timestep = self.adapter.timestep(args, kwargs)
        timesteps = getattr(self.scheduler, "timesteps", None) if self.scheduler is not None else None
        if timesteps is not None and not isinstance(timesteps, torch.Tensor):
            timesteps = torch.as_tensor(timesteps)
        if self._dense_whatever_the_step(module, args, kwargs, timestep):
            return self._defer_dense_forward(timestep, timesteps)
        self.catch_up()
        ctx.advance(timestep_value(timestep), timesteps, self.adapter.timestep_scale)
        dense_step = self.runner is None or self.schedule.step_is_dense(ctx.step, ctx.num_steps, ctx.progress)
        # Where sparse attention would not pay on this shape, every layer runs dense (cost_model.py).
        # The call's text length, once per forward (the cost model and the layout both need it).
        text_len = None if dense_step else self.adapter.text_len(module, args, kwargs)
        # An output kept across forwards (ours, or a diffusers cache enabled before or after patch:
        # FirstBlockCache, TaylorSeer, ...) must be replayed in the token order it was made in, so
        # with one every forward of a sparse method takes the same order (tile order where it applies,
        # dense and reused forwards too).
        same_order = self.runner is not None and (self.cache is not None or getattr(module, "_cache_config", None) is not None)
        # Worked out once per forward: the cost model times the call in the order this forward runs it.
        plan = None
        if self.runner is not None and (same_order or not dense_step):
            plan = self._tile_order_plan(module, args, kwargs, ctx.grid)
        cost_dense = not dense_step and not self.decide(args, kwargs, ctx.grid, text_len or 0, plan[0] is not None).sparse
        replay = self.cache.begin_forward(ctx) if self.cache is not None else {}
        if self.residuals is not None:
            self.residuals.begin_forward(ctx, any_sparse=not (dense_step or cost_dense))
        any_sparse = False
        for layer in self.layers:
            history = self.history[layer.index]
            history.calls += 1
            if layer.index in replay:  # the cache hands back a kept output: nothing is computed
                processor = self.replays[layer.index]
                processor.output = replay[layer.index]
                history.reused_steps.add(ctx.step)
                history.reused_calls += 1
            else:
                scheduled_dense = dense_step or self.schedule.layer_is_dense(layer.index)
                dense = scheduled_dense or cost_dense
                self._count_computed(history, ctx.step, dense, scheduled_dense, ctx.grid)
                any_sparse = any_sparse or not dense
                processor = self.originals[layer.index] if dense else self.sparse[layer.index]
                if self.cache is not None and layer.index in self.cache.keeping:
                    keeper = self.keepers[layer.index]
                    keeper.inner, processor = processor, keeper
                if not dense and self.residuals is not None and self.residuals.refresh and self.residuals.config.applies_to(layer.index):
                    history.computed_blocks += self._reference_density(ctx.grid)  # the refresh's reference call
            if layer.module.processor is not processor:
                layer.module.processor = processor
        device = argument(args, kwargs, "hidden_states", 0).device
        text_len = text_len if any_sparse else None
        if text_len is not None or (any_sparse and self.runner.dynamic):  # a dynamic method needs no text length
            # Build (or look up) the layout here, outside any torch.compile region: traced inside
            # a compiled block, layout construction would become part of the graph.
            self.runner.prepare(ctx.grid, text_len or 0, device)
        data_dependent = any_sparse and self.runner.dynamic and self.block_density(ctx.grid) is None
        if data_dependent and (self._dynamic_computed is None or self._dynamic_computed.device != device):
            previous = self._dynamic_computed
            self._dynamic_computed = torch.zeros((), dtype=torch.float32, device=device)
            if previous is not None:
                self._dynamic_computed += previous.to(device)
        return self._enter_tile_order(plan, args, kwargs, device) if any_sparse or same_order else None

    def _count_computed(self, history: LayerHistory, step: int, dense: bool, scheduled_dense: bool, grid) -> None:
        """One computed (not reused) call of a layer in ``history``."""
        if dense and not scheduled_dense:
            history.cost_dense_steps.add(step)
        (history.dense_steps if dense else history.sparse_steps).add(step)
        history.sparse_calls += 0 if dense else 1
        # A data-dependent method's sparse calls count on the device instead (attend()).
        history.computed_blocks += 1.0 if dense else self.block_density(grid) or 0.0

    def _dense_whatever_the_step(self, module, args, kwargs, timestep) -> bool:
        """Whether this forward runs every layer dense at any step, so its step can wait: a sparse
        method the cost model already runs dense on this call's shape, no cache (ours or diffusers')
        and a timestep tensor. On a GPU reading it makes the host wait for the queued work; on a
        launch-bound forward the GPU then idles while the host catches up (~2% of an 8 ms forward,
        probes/prehook_overhead.py's profiler traces)."""
        if self.runner is None or self.cache is not None or self.residuals is not None or self.force_sparse:
            return False
        if not isinstance(timestep, torch.Tensor) or timestep.numel() == 0:
            return False
        if getattr(module, "_cache_config", None) is not None:
            return False
        if all(decision.sparse for decision in self.decisions.values()):
            return False  # no shape runs dense (yet): do not work out this forward's plan twice
        grid = self.context.grid
        tiled = self._tile_order_plan(module, args, kwargs, grid)[0] is not None
        decision = self.decisions.get((tuple(grid), self.adapter.text_len(module, args, kwargs) or 0, tiled))
        return decision is not None and not decision.sparse

    def _defer_dense_forward(self, timestep: torch.Tensor, timesteps) -> None:
        """Run this forward dense and keep its timestep on the device; ``catch_up`` reads it later."""
        for layer in self.layers:
            if layer.module.processor is not self.originals[layer.index]:
                layer.module.processor = self.originals[layer.index]
        # In the timestep's own dtype: the value must equal what timestep_value reads (same-step tests use ==).
        self._deferred.append((timestep.detach().flatten().max(), timesteps))
        if len(self._deferred) >= DEFERRED_STEPS:
            self.catch_up()
        return None

    def catch_up(self) -> None:
        """Advance the step through the deferred dense forwards (one host read for all of them) and
        count them in the history as the normal path would have."""
        if not self._deferred:
            return
        deferred, self._deferred = self._deferred, []
        values = torch.stack([t.to(deferred[0][0].device) for t, _ in deferred]).tolist()
        ctx = self.context
        for value, (_, timesteps) in zip(values, deferred):
            ctx.advance(value, timesteps, self.adapter.timestep_scale)
            dense_step = self.schedule.step_is_dense(ctx.step, ctx.num_steps, ctx.progress)
            for layer in self.layers:
                history = self.history[layer.index]
                history.calls += 1
                self._count_computed(history, ctx.step, True, dense_step or self.schedule.layer_is_dense(layer.index),
                                     ctx.grid)

    def decide(self, args, kwargs, grid, text_len: int, tiled: bool = False) -> Decision:
        """Sparse or dense on ``grid`` (and the call's text length), decided once per shape, on a GPU
        or with a given CostModel: a layout that computes every block runs dense, otherwise the
        cost model's calibration decides (timing the call in tile order when ``tiled``: the forward
        does not move tokens then). ``force_sparse``, and a CPU without a CostModel, run sparse."""
        key = (tuple(grid), text_len, tiled)
        if key not in self.decisions:
            try:
                decision, failure = self._decide(args, kwargs, grid, text_len, tiled), None
            except Exception as error:
                if self.ulysses is None:
                    raise
                decision, failure = None, error
            # Under context parallelism every rank must take the same path (each times its own calls),
            # and a rank whose calibration failed must not leave the others waiting in a collective:
            # one all-reduce of 0 (failed), 1 (dense) or 2 (sparse).
            if self.ulysses is not None:
                device = argument(args, kwargs, "hidden_states", 0).device
                verdict = all_ranks_min(self.ulysses, 0 if failure else 1 + decision.sparse, device)
                if failure is not None:
                    raise failure
                if verdict == 0:
                    raise RuntimeError("ditaccel: another rank failed while deciding dense or sparse (the cost model's "
                                       "calibration); its own error says why")
                if verdict == 1 and decision.sparse:
                    decision = Decision(False, "another rank's calibration found that sparse would not pay")
            self.decisions[key] = decision
            if not decision.sparse:
                warnings.warn(f"ditaccel: {self.method!r} runs dense on {type(self.transformer).__name__}'s grid "
                              f"{tuple(grid)}: {decision.reason}; patch(..., force_sparse=True) runs it sparse anyway",
                              RuntimeWarning, stacklevel=3)
        return self.decisions[key]

    def _decide(self, args, kwargs, grid, text_len: int, tiled: bool) -> Decision:
        hidden = argument(args, kwargs, "hidden_states", 0)
        if self.force_sparse:
            decision = Decision(True, "force_sparse=True")
        elif all(self.schedule.layer_is_dense(layer.index) for layer in self.layers):
            decision = Decision(True, "every layer is dense by the schedule: nothing to decide")
        elif self.cost_model is None and hidden.device.type != "cuda":
            decision = Decision(True, NO_COST_MODEL + " (the reference backend is a correctness path, not a fast one)")
        elif not self.runner.dynamic and self.block_density(grid) >= 1.0:
            decision = Decision(False, "the layout computes every block: dense attention gives the same result, faster")
        elif self.runner.dynamic and self.method.computed_fraction(tuple(grid)) is None:
            # What it computes depends on the data (pyramid): random inputs would misjudge it.
            decision = Decision(True, "compute depends on the data: not calibrated on random inputs")
        else:
            model = self.cost_model or process_cost_model()
            shape = self._call_shape(hidden, grid, text_len, tiled)
            decision = model.decide(shape, lambda: self._calibrate(shape, hidden.device))
        return decision

    def _call_shape(self, hidden: torch.Tensor, grid, text_len: int, tiled: bool = False) -> CallShape:
        module = next(layer.module for layer in self.layers if not self.schedule.layer_is_dense(layer.index))
        heads = int(module.heads)
        inner = getattr(module, "inner_dim", None) or module.to_q.out_features
        dtype = getattr(self.transformer, "dtype", hidden.dtype)  # diffusers' compute dtype (quantised weights aside)
        name = torch.cuda.get_device_name(hidden.device) if hidden.device.type == "cuda" else hidden.device.type
        return CallShape(name, str(dtype).removeprefix("torch."), int(hidden.shape[0]), heads // self.ranks, int(inner) // heads,
                         tuple(int(g) for g in grid), text_len, repr(self.method), tiled)

    def _calibrate(self, shape: CallShape, device: torch.device) -> tuple[float, float]:
        """Dense SDPA and the runner's call on random tensors of ``shape``, the call as the forward
        makes it (video tokens moved per call, or already tiled in a tile-order forward)."""
        n = shape.grid[0] * shape.grid[1] * shape.grid[2] + shape.text_len
        q, k, v = (torch.randn(shape.batch, n, shape.heads, shape.head_dim, device=device, dtype=getattr(torch, shape.dtype))
                   for _ in range(3))
        arguments = dict(text_len=shape.text_len, text_position=self.adapter.text_position if shape.text_len else "none",
                         video_tiled=shape.video_tiled)
        call = self.runner.attend_dynamic if self.runner.dynamic else self.runner
        if not self.runner.dynamic:
            self.runner.prepare(shape.grid, shape.text_len, device)
        with torch.no_grad():
            return time_pair(lambda: F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)),
                             lambda: call(q, k, v, shape.grid, **arguments), device=device)

    def _reference_density(self, grid) -> float:
        if self.reference_runner is None:
            return 1.0
        if self.reference_runner.dynamic:
            return self.reference_runner.method.computed_fraction(tuple(grid)) or 1.0
        return self.reference_runner.video_layout(grid).video_block_density()

    def block_density(self, grid) -> float | None:
        """Computed video block pairs / all on ``grid`` (cached per grid): of the method's layout, or
        what a dynamic method computes per call when that does not depend on the data (piecewise,
        top-k); None when it does (pyramid: counted on the device by attend())."""
        key = tuple(grid)
        if key not in self._densities:
            if self.runner.dynamic:
                self._densities[key] = self.method.computed_fraction(key)
            else:
                self._densities[key] = self.runner.video_layout(key).video_block_density()
        return self._densities[key]

    def _tile_order_plan(self, module, args, kwargs, grid):
        """(the tiling this forward runs in, or None; how its tokens are ordered, in words)."""
        tiling = self.runner.tiling(grid)
        if tiling.tile is None:
            return None, "raster (the layout needs no tiles)"
        if self.ulysses is not None:
            # diffusers splits the rotary tables and the hidden states before our reorders would run.
            return None, "model order, tokens moved in each attention call (context parallelism)"
        if self.tile_order_hooks is None:
            return None, "model order, tokens moved in each attention call (" + (
                "tile_order=False)" if self.adapter.tile_order_modules is not None else "no tile-order forward for this model)")
        if not uses_tile_order(tiling):
            return None, f"model order, tokens moved in each attention call (tile {tiling.tile} does not divide grid {tiling.grid})"
        if not self.adapter.tile_order_supported(module, args, kwargs, tiling):
            return None, "model order, tokens moved in each attention call (other per-token inputs in this call)"
        return tiling, f"tile order {tiling.tile}, reordered once per forward"

    def _enter_tile_order(self, plan, args, kwargs, device):
        """Run this forward's blocks in tile order when ``plan`` (``_tile_order_plan``) allows it (see
        tile_order.py); returns the forward arguments that had to be reordered, if any."""
        tiling, self.token_order = plan
        if tiling is None:
            return None
        tiling.cache_device_indices(device)  # now, not inside a compiled region
        self.context.tiling = tiling
        return self.adapter.arguments_to_tiles(args, kwargs, tiling)

    @torch.compiler.disable
    def _post_forward(self, module, args, output):
        self.context.tiling = None
        if self.cache is not None:
            kept = self.cache.cross_kept()
            for index in self.cache.keeping:
                if index in self.keepers:
                    keeper = self.keepers[index]
                    kept[index], keeper.kept = keeper.kept, None
            self.cache.end_forward(kept)
        return None

    def attend(self, layer: int, q, k, v, *, text_len: int = 0, text_mask=None, scale=None):
        """Called by the sparse processors with q, k, v in the model's [B, S, H, D] order (under
        context parallelism: this rank's tokens, ``text_len`` of them text)."""
        ulysses = self.ulysses
        if ulysses is None:
            return self._attend(layer, q, k, v, text_len, text_mask, scale)
        if text_mask is not None:
            raise NotImplementedError("ditaccel sparse attention under context parallelism takes no text padding mask yet")
        ulysses.check_heads(q.shape[2])
        q, k, v = (ulysses.seq_to_head(x) for x in (q, k, v))  # all tokens, this rank's heads
        text_len *= ulysses.degree
        index = ulysses.canonical_index(q.shape[1], text_len, self.adapter.text_position, q.device)
        if index is not None:  # rank-interleaved text and video -> the model's order
            q, k, v = (x.index_select(1, index) for x in (q, k, v))
        out = self._attend(layer, q, k, v, text_len, None, scale)
        if index is not None:
            out = torch.empty_like(out).index_copy_(1, index, out)
        return ulysses.head_to_seq(out)

    def _attend(self, layer: int, q, k, v, text_len: int, text_mask, scale):
        arguments = dict(text_len=text_len, text_position=self.adapter.text_position, text_mask=text_mask, scale=scale,
                         video_tiled=self.context.tile_order)
        out = self._run(self.runner, q, k, v, arguments)
        if self.residuals is not None:
            out = self.residuals.combine(layer, out, lambda: self._reference(q, k, v, arguments))
        return out

    def _reference(self, q, k, v, arguments: dict):
        """Residual reuse's reference output for this call: dense attention, or the reference method."""
        if self.reference_runner is None:
            # Dense over the tokens in whatever order they are in (a tile-order forward's included).
            return dense_attention(q, k, v, text_len=arguments["text_len"], text_position=arguments["text_position"],
                                   text_mask=arguments["text_mask"], scale=arguments["scale"])
        return self._run(self.reference_runner, q, k, v, arguments, count=False)

    def _run(self, runner: SparseAttention, q, k, v, arguments: dict, count: bool = True):
        if not runner.dynamic:
            return runner(q, k, v, self.context.grid, **arguments)
        out, fraction = runner.attend_dynamic(q, k, v, self.context.grid, **arguments)
        if not count:
            return out
        # A float is known ahead and was counted in the pre-hook; a tensor depends on the data. The
        # counter is None only for calls outside a patched forward.
        if isinstance(fraction, torch.Tensor) and self._dynamic_computed is not None:
            self._dynamic_computed += fraction
        return out

    def dynamic_mean_fraction(self) -> float | None:
        """The mean computed fraction over every sparse call of the dynamic method so far (reads the
        device once); None before the first."""
        calls = sum(h.sparse_calls for h in self.history.values())
        if not calls or self._dynamic_computed is None:
            return None
        return float(self._dynamic_computed) / calls

    def restore(self) -> None:
        for layer in self.layers:
            layer.module.processor = self.originals[layer.index]
        if self.cache is not None:
            self.cache.remove()
        if self.residuals is not None:
            self.residuals.remove()
        if self.diffusers_cache:
            self.transformer.disable_cache()
            self.diffusers_cache = False
        self._hook.remove()
        self._post_hook.remove()
        if self.tile_order_hooks is not None:
            self.tile_order_hooks.remove()
        self.context.tiling = None


@dataclass
class Summary:
    """Per attention layer: method, block density on the last grid (a dynamic method's: its mean
    computed fraction over every sparse call so far), which steps ran dense, sparse, or reused a
    kept output (attention cache)."""

    rows: list[dict]
    token_order: dict[str, str] = field(default_factory=dict)  # transformer -> video token order of its last sparse forward
    cache_bytes: dict[str, int] = field(default_factory=dict)  # transformer -> peak memory of the attention cache
    # transformer -> {"computed": n, "reused": n}: calls of the cross-attention layers Broadcast(cross_period=) caches
    cross_attention: dict[str, dict[str, int]] = field(default_factory=dict)
    # transformer -> {grid: why it ran sparse or dense there} (cost_model.py)
    decisions: dict[str, dict[tuple, str]] = field(default_factory=dict)
    # transformer -> the diffusers cache config enabled on it (FirstBlockCache, TaylorSeer, ...): the
    # blocks and steps it skips are counted here as run (its hooks skip them behind ours).
    diffusers_caches: dict[str, str] = field(default_factory=dict)

    @property
    def compute_fraction(self) -> float | None:
        """Attention compute actually spent: computed video-video blocks over all (the always-dense
        text rows and columns of joint attention are not counted), averaged over every patched
        attention call since the patch (or ``reset_summary``), dense calls counting 1, calls that
        reused a kept output 0. None before the first call."""
        calls = sum(r["calls"] for r in self.rows)
        return sum(r["computed_blocks"] for r in self.rows) / calls if calls else None

    def __str__(self) -> str:
        cached = any(r["reused_calls"] for r in self.rows) or bool(self.cache_bytes)
        lines = [f"{'layer':>5}  {'module':<36} {'method':<13} {'density':>8}  dense steps / sparse steps"
                 + (" / reused steps" if cached else "")]
        for r in self.rows:
            density = "-" if r["block_density"] is None else f"{r['block_density']:.3f}"
            lines.append(
                f"{r['layer']:>5}  {r['module']:<36} {r['method']:<13} {density:>8}  "
                f"{step_ranges(r['dense_steps'])} / {step_ranges(r['sparse_steps'])}"
                + (f" / {step_ranges(r['reused_steps'])}" if cached else "")
            )
        if self.compute_fraction is not None:
            lines.append(f"attention compute: {self.compute_fraction:.3f} of dense (computed video blocks over all, every call)")
        lines += [f"{name}: video tokens in {order}" for name, order in self.token_order.items()]
        lines += [f"{name}: attention cache peak {size / 2**20:.1f} MiB" for name, size in self.cache_bytes.items()]
        lines += [f"{name}: cross-attention calls computed {c['computed']}, reused {c['reused']}"
                  for name, c in self.cross_attention.items()]
        # A CPU without a cost model decides nothing: only decisions the cost model made are news.
        lines += [f"{name} on grid {grid}: {why}" for name, grids in self.decisions.items() for grid, why in grids.items()
                  if NO_COST_MODEL not in why]
        lines += [f"{name}: diffusers' {config} is enabled; the steps and blocks it skips count above as run "
                  "(ditaccel does not see them), so the compute overstates its work" for name, config in self.diffusers_caches.items()]
        return "\n".join(lines)


class PatchHandle:
    """Returned by patch(): unpatch(), summary(), and a context manager that unpatches on exit."""

    def __init__(self, target, states: list[PatchState]):
        self.target = target
        self.states = states

    def unpatch(self) -> None:
        unpatch(self.target)

    def summary(self) -> Summary:
        return summary(self.target)

    def reset_summary(self) -> None:
        """Forget which steps ran dense or sparse so far (e.g. after a warm-up generation)."""
        for state in self.states:
            state.catch_up()  # the step count goes on; the counts start again
            state.history = {layer.index: LayerHistory() for layer in state.layers}
            state._dynamic_computed = None
            if state.cache is not None:
                state.cache.reset_counts()

    def __enter__(self) -> "PatchHandle":
        return self

    def __exit__(self, *exc) -> None:
        if any(getattr(t, _STATE_ATTR, None) is not None for t in transformers_of(self.target)):
            self.unpatch()


def patch(target, method=None, *, schedule: Schedule | None = None, cache=None, backend: str = "auto",
          tile_order: bool = True, force_sparse: bool = False, cost_model: CostModel | None = None) -> PatchHandle:
    """Replace the self/joint attention of ``target`` (a diffusers pipeline or transformer) with
    a sparse method, attention caching, or both.

    Args:
        target: a diffusers pipeline (its ``transformer`` and, for Wan 2.2, ``transformer_2``) or
            a transformer model.
        method: a preset name ("radial", "neighborhood", "piecewise", "pyramid", "topk") or a
            config (``ditaccel.Radial(...)``, ``Neighborhood``, ``Piecewise``, ``Pyramid``, ``TopK``);
            None: dense attention (then ``cache`` is required).
        schedule: which steps and layers stay dense; None = the preset's / model's default.
        cache: attention caching across steps, kept separately per CFG branch. None = no caching.
            ``ditaccel.Broadcast(...)``: a layer's output is kept on the steps it computes (dense
            or sparse, as the schedule says) and returned on the steps it reuses.
            ``ditaccel.ResidualReuse(...)`` (needs a method): every few sparse steps a layer also
            computes the reference (dense) output A and keeps A - S; the other sparse steps output
            S + (A - S). A diffusers cache config (``FirstBlockCacheConfig(...)``, ...): enabled
            with the transformer's ``enable_cache`` and disabled again by ``unpatch``.
        backend: "auto" (Triton on CUDA, else the PyTorch reference), "triton" or "reference".
        tile_order: for tiled layouts (neighbourhood windows) on grids the tile divides, put the video
            tokens into tile order once per forward (after the patch embedding, with the rotary
            tables; back before unpatchify) instead of in every attention call. Same results; False
            keeps the model's token order between the blocks (e.g. for hooks of your own on them).
        force_sparse: run the method wherever the schedule says sparse, also where it would not pay
            (experiments). Otherwise, on a GPU, a layout that computes every block runs dense, and
            the first forward of each shape times sparse against dense (``cost_model.py``) and runs
            dense where sparse is not at least 2% faster; ``summary()`` says which and why.
        cost_model: a ``ditaccel.CostModel`` (its table, its file, its margin) instead of the
            process-wide one; given, it decides on a CPU too (there is none on a CPU otherwise).
    """
    if cache is not None and not isinstance(cache, CACHE_TYPES) and not is_diffusers_cache(cache):
        raise TypeError(f"cache must be None, {' or '.join('ditaccel.' + t.__name__ for t in CACHE_TYPES)}, or a "
                        f"diffusers cache config (FirstBlockCacheConfig, TaylorSeerCacheConfig, ...), got {type(cache).__name__}")
    if method is None and cache is None:
        raise ValueError("patch() needs a method, a cache, or both; got method=None and cache=None")
    if method is None and isinstance(cache, ResidualReuse):
        raise ValueError("cache=ditaccel.ResidualReuse(...) keeps the dense-minus-sparse residual of a sparse "
                         "method: give a method too (e.g. patch(pipe, 'radial', cache=...))")
    if not isinstance(tile_order, bool):
        raise TypeError(f"tile_order must be True or False, got {tile_order!r}")
    if not isinstance(force_sparse, bool):
        raise TypeError(f"force_sparse must be True or False, got {force_sparse!r}")
    if cost_model is not None and not isinstance(cost_model, CostModel):
        raise TypeError(f"cost_model must be a ditaccel.CostModel or None, got {type(cost_model).__name__}")
    if schedule is not None and not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a ditaccel.Schedule or None, got {type(schedule).__name__}")
    transformers = transformers_of(target)
    for transformer in transformers:
        if getattr(transformer, _STATE_ATTR, None) is not None:
            raise ValueError(f"{type(transformer).__name__} is already patched; call ditaccel.unpatch() first")
    adapters = [adapter_for(t) for t in transformers]  # raises on unsupported models before any change
    if isinstance(cache, Broadcast):
        for transformer in transformers:
            enabled = type(getattr(transformer, "_cache_config", None)).__name__
            if enabled in ATTENTION_OUTPUT_CACHES:
                raise ValueError(f"ditaccel.Broadcast and diffusers' {enabled} (enabled on {type(transformer).__name__}) "
                                 "both reuse attention outputs; use one of them (transformer.disable_cache() drops diffusers')")
    scheduler = getattr(target, "scheduler", None) if not isinstance(target, torch.nn.Module) else None
    states = []
    try:
        for transformer, adapter in zip(transformers, adapters):
            config, default = _resolve_method(method, adapter.family) if method is not None else (None, Schedule())
            state = PatchState(transformer, adapter, config, schedule or default, scheduler, backend, tile_order, cache,
                               force_sparse, cost_model)
            setattr(transformer, _STATE_ATTR, state)
            states.append(state)
    except BaseException:
        for state in states:
            state.restore()
            delattr(state.transformer, _STATE_ATTR)
        raise
    return PatchHandle(target, states)


def is_diffusers_cache(cache) -> bool:
    """Is ``cache`` one of diffusers' cache configs (what ``ModelMixin.enable_cache`` takes)?"""
    module = type(cache).__module__ or ""
    return module.startswith("diffusers.hooks") and type(cache).__name__.endswith("Config")


def warn_if_nothing_hooked(transformer, cache) -> None:
    """diffusers' caches hook the submodules their name patterns match; a pattern matching none
    (diffusers 0.42's TaylorSeer default, ``^blocks.*attn`` under fullmatch, misses Wan's ``attn1``)
    leaves the cache a silent no-op: say so."""
    hooked = [name for name, module in transformer.named_modules()
              if name and getattr(getattr(module, "_diffusers_hook", None), "hooks", None)]
    if not hooked:
        example = next((name for name, _ in transformer.named_modules() if "attn" in name.rsplit(".", 1)[-1]), "")
        warnings.warn(f"{type(cache).__name__} hooked no module of {type(transformer).__name__}: its module name patterns "
                      f"match none of the model's (e.g. {example!r}), so it caches nothing; pass its identifiers "
                      "(e.g. TaylorSeerCacheConfig(cache_identifiers=[...]))", RuntimeWarning, stacklevel=4)


def unpatch(target) -> None:
    """Restore the original attention processors and remove ditaccel's hook."""
    found = False
    for transformer in transformers_of(target):
        state = getattr(transformer, _STATE_ATTR, None)
        if state is None:
            continue
        state.restore()
        delattr(transformer, _STATE_ATTR)
        found = True
    if not found:
        raise ValueError(f"{type(target).__name__} is not patched by ditaccel")


def summary(target) -> Summary:
    rows, token_order, cache_bytes, cross_attention, decisions, diffusers_caches = [], {}, {}, {}, {}, {}
    transformers = transformers_of(target)
    for i, transformer in enumerate(transformers):
        state = getattr(transformer, _STATE_ATTR, None)
        if state is None:
            raise ValueError(f"{type(transformer).__name__} is not patched by ditaccel")
        state.catch_up()
        grid = state.context.grid
        sparse = state.runner is not None
        density = state.block_density(grid) if grid is not None and sparse else None
        # A data-dependent method's per-call fraction, counted on the device over all layers.
        counted = sparse and state.runner.dynamic and density is None and grid is not None
        if counted:
            density = state.dynamic_mean_fraction()
        cache = state.cache
        for layer in state.layers:
            h = state.history[layer.index]
            always_dense = not sparse or state.schedule.layer_is_dense(layer.index)
            computed = h.computed_blocks
            if counted and density is not None:
                computed += h.sparse_calls * density
            rows.append(
                {
                    "transformer": type(transformer).__name__,
                    "layer": layer.index,
                    "module": layer.name,
                    "method": "dense" if always_dense else state.method.name,
                    "block_density": 1.0 if always_dense else density,
                    "grid": grid,
                    "dense_steps": sorted(h.dense_steps),
                    "sparse_steps": sorted(h.sparse_steps),
                    "reused_steps": sorted(h.reused_steps),
                    "cost_dense_steps": sorted(h.cost_dense_steps),
                    "calls": h.calls,
                    "reused_calls": h.reused_calls,
                    "computed_blocks": computed,
                }
            )
        kept = cache if cache is not None else state.residuals
        label = type(transformer).__name__ + (f" #{i + 1}" if len(transformers) > 1 else "")
        if kept is not None:
            cache_bytes[label] = kept.peak_bytes
        if cache is not None and cache.cross:
            cross_attention[label] = {"computed": sum(cache.computed[k] for k in cache.cross),
                                      "reused": sum(cache.reused[k] for k in cache.cross)}
        if state.token_order is not None:
            token_order[label] = state.token_order
        if getattr(transformer, "_cache_config", None) is not None:
            diffusers_caches[label] = type(transformer._cache_config).__name__
        if state.decisions:
            decisions[label] = {(grid, text_len) if text_len else grid: ("sparse: " if d.sparse else "dense: ") + d.reason
                                for (grid, text_len, _), d in state.decisions.items()}
    return Summary(rows, token_order, cache_bytes, cross_attention, decisions, diffusers_caches)


def is_patched(target) -> bool:
    return any(getattr(t, _STATE_ATTR, None) is not None for t in transformers_of(target))


def transformers_of(target) -> list[torch.nn.Module]:
    """The transformer(s) of a pipeline (``transformer`` and, for Wan 2.2, ``transformer_2``), or
    ``[target]`` for a transformer model."""
    if isinstance(target, torch.nn.Module):
        return [target]
    found = [getattr(target, name, None) for name in ("transformer", "transformer_2")]
    found = [t for t in found if isinstance(t, torch.nn.Module)]
    if not found:
        raise TypeError(f"expected a diffusers pipeline with a transformer or a transformer model, got {type(target).__name__}")
    return found


def _resolve_method(method, family: str):
    if isinstance(method, str):
        return preset(method, family)
    if isinstance(method, Radial):
        filled = {k: v for k, v in radial_defaults(family).items() if getattr(method, k) is None}
        return dataclasses.replace(method, **filled), default_schedule(family)
    if isinstance(method, (Neighborhood, Piecewise, Pyramid, TopK)):
        return method, default_schedule(family, method)
    raise TypeError(
        f"method must be a preset name ({', '.join(repr(p) for p in sorted(PRESETS))}) or a config object "
        f"({', '.join(t.__name__ for t in METHOD_TYPES)}), got {type(method).__name__}"
    )


def step_ranges(steps: list[int]) -> str:
    """Sorted step indices as ranges: [0, 1, 2, 5] -> "0-2,5" ("-" for none)."""
    if not steps:
        return "-"
    parts, start, prev = [], steps[0], steps[0]
    for s in steps[1:] + [None]:
        if s is not None and s == prev + 1:
            prev = s
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if s is not None:
            start = prev = s
    return ",".join(parts)
