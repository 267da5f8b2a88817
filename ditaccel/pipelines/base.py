"""What a model adapter tells the rest of ditaccel about one family of diffusers transformers."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..tile_order import reorder_tokens

Grid = tuple[int, int, int]


@dataclass(frozen=True)
class AttentionLayer:
    index: int  # layer index used by Schedule.dense_layers (blocks in forward order)
    name: str  # module path inside the transformer
    module: torch.nn.Module


class ModelAdapter:
    """Subclasses describe one model family.

    family: short name used by presets ("wan", "hunyuan_video", ...).
    transformer_class: the diffusers class name(s) this adapter handles.
    text_position: where text tokens sit in the self/joint attention sequence: "none" (video-only
        self-attention, text through cross-attention), "first" or "last".
    timestep_scale: what the pipeline multiplies scheduler timesteps by before the transformer
        sees them (FLUX passes t / 1000).
    """

    family: str = ""
    transformer_classes: tuple[str, ...] = ()
    text_position: str = "none"
    timestep_scale: float = 1.0
    # (block list attribute, attention attribute) in forward order; layer indices run across groups.
    layer_groups: tuple[tuple[str, str], ...] = ()
    upstream_processors: tuple[type, ...] = ()  # the processors the sparse twin knows how to replace
    sparse_processor_class: type | None = None
    # (name, position) of the forward argument whose dim 1 is the joint-attention text length, when
    # the adapter can tell it before the attention call (see text_len).
    text_argument: tuple[str, int] | None = None
    # Tile-order forward (tile_order.py): module paths (entry, exit, rotary). The entry module's
    # output carries the video tokens into the blocks (the last tokens along dim 1: text may come
    # first), the exit module's output carries them out (dim 1), the rotary module's output is the
    # blocks' rotary tables (token dim ``rotary_token_dim``; None: no such module). None = the
    # family runs in the model's token order only (attention calls then copy tokens per call).
    tile_order_modules: tuple[str, str, str | None] | None = None
    # (block list attribute, attention attribute) of the text cross-attention, for families that have
    # one (video self-attention + cross-attention): what Broadcast(cross_period=...) may reuse.
    cross_attention_groups: tuple[tuple[str, str], ...] = ()
    rotary_token_dim: int = 1
    # Sparse attention under diffusers' context parallelism (Ulysses), tested for this family.
    context_parallel: bool = False

    def matches(self, transformer: torch.nn.Module) -> bool:
        return type(transformer).__name__ in self.transformer_classes

    def grid(self, transformer: torch.nn.Module, args: tuple, kwargs: dict) -> Grid:
        raise NotImplementedError

    def timestep(self, args: tuple, kwargs: dict):
        return kwargs["timestep"] if "timestep" in kwargs else args[1]

    def text_len(self, transformer: torch.nn.Module, args: tuple, kwargs: dict) -> int | None:
        """Text tokens in the self/joint attention sequence this forward will have, or None when the
        adapter cannot tell before the attention call. Lets the forward pre-hook build the layout
        eagerly, so that a compiled transformer never traces layout construction."""
        if self.text_position == "none":
            return 0
        if self.text_argument is None:
            return None
        text = argument(args, kwargs, *self.text_argument)
        return None if text is None else text.shape[1]

    def tile_order_supported(self, transformer: torch.nn.Module, args: tuple, kwargs: dict, tiling) -> bool:
        """Whether this forward can run in tile order: nothing in it is positional but the tokens,
        the rotary tables and what ``arguments_to_tiles`` reorders (subclasses refuse ControlNet
        residuals, first-frame token replacement and the like)."""
        return self.tile_order_modules is not None

    def video_tokens_to_tiles(self, output: torch.Tensor, tiling) -> torch.Tensor:
        """The entry module's output with its video tokens in tile order."""
        return reorder_tokens(output, 1, tiling, to_tiles=True)

    def rotary_to_tiles(self, tables, tiling):
        """The rotary module's output (a tuple of tables) in tile order."""
        return tuple(reorder_tokens(t, self.rotary_token_dim, tiling, to_tiles=True) for t in tables)

    def arguments_to_tiles(self, args: tuple, kwargs: dict, tiling) -> tuple[tuple, dict] | None:
        """Forward arguments given per video token, put into tile order (None: none to change)."""
        return None

    def attention_layers(self, transformer: torch.nn.Module) -> list[AttentionLayer]:
        return _layers(transformer, self.layer_groups)

    def cross_attention_layers(self, transformer: torch.nn.Module) -> list[AttentionLayer]:
        """The text cross-attention modules (indices of their own, from 0), if the family has them."""
        return _layers(transformer, self.cross_attention_groups)

    def sparse_processor(self, original, layer: AttentionLayer, patch_state) -> object:
        """A processor for ``layer`` that runs the sparse path; ``original`` is the upstream one."""
        require_processor(original, layer, *self.upstream_processors)
        return self.sparse_processor_class(layer.index, patch_state, original)


def _layers(transformer: torch.nn.Module, groups) -> list[AttentionLayer]:
    named = [
        (f"{blocks}.{i}.{attention}", getattr(block, attention))
        for blocks, attention in groups
        for i, block in enumerate(getattr(transformer, blocks))
    ]
    return [AttentionLayer(index, name, module) for index, (name, module) in enumerate(named)]


def argument(args: tuple, kwargs: dict, name: str, position: int):
    """A forward argument given by keyword or by position."""
    if name in kwargs:
        return kwargs[name]
    if len(args) > position:
        return args[position]
    return None


def replace_argument(args: tuple, kwargs: dict, name: str, position: int, value) -> tuple[tuple, dict]:
    """(args, kwargs) with the forward argument ``name`` (keyword or positional) set to ``value``."""
    if name in kwargs or len(args) <= position:
        return args, {**kwargs, name: value}
    return args[:position] + (value,) + args[position + 1 :], kwargs


def timestep_fits_tile_order(args: tuple, kwargs: dict, position: int, tiling) -> bool:
    """A timestep per sample, or one per video token ([B, N]: Wan 2.2 TI2V, LTX conditioning)."""
    timestep = argument(args, kwargs, "timestep", position)
    return not isinstance(timestep, torch.Tensor) or timestep.ndim < 2 or tuple(timestep.shape[1:]) == (tiling.num_tokens,)


def per_token_timestep_to_tiles(args: tuple, kwargs: dict, position: int, tiling) -> tuple[tuple, dict] | None:
    """Timesteps given per video token ([B, N]) in tile order; None for one timestep per sample."""
    timestep = argument(args, kwargs, "timestep", position)
    if not isinstance(timestep, torch.Tensor) or timestep.ndim != 2:
        return None
    return replace_argument(args, kwargs, "timestep", position, reorder_tokens(timestep, 1, tiling, to_tiles=True))


class StandsInFor:
    """A processor that stands in for the layer's ``original`` one, whose per-layer settings stay on
    the original so that both objects see them, whichever the layer holds when they are set:

    - ``_attention_backend``: one set before patch() (``set_attention_backend("xformers")``) reaches
      the stand-in's exact fallback, one set while patched reaches the dense steps, and unpatch()
      leaves it as last set. AttributeError when the original has none (processors calling SDPA
      directly): then set_attention_backend skips the stand-in as it skips the original.
    - ``_parallel_config``: diffusers' ``enable_parallelism`` sets it on the processor the layer
      holds at that moment; without it a dense call would attend only within its rank's shard.
    """

    original: object

    @property
    def _attention_backend(self):
        return self.original._attention_backend

    @_attention_backend.setter
    def _attention_backend(self, backend) -> None:
        self.original._attention_backend = backend

    @property
    def _parallel_config(self):
        return getattr(self.original, "_parallel_config", None)

    @_parallel_config.setter
    def _parallel_config(self, config) -> None:
        self.original._parallel_config = config


class SparseProcessorMixin(StandsInFor):
    """Put first in a sparse processor's bases, before the upstream processor class.

    ``layer`` is the index Schedule.dense_layers uses; ``patch_state.attend`` runs the method;
    ``original`` is the layer's upstream processor, which the dense steps run (and which keeps the
    layer's attention backend and parallel config: ``StandsInFor``).
    """

    def __init__(self, layer: int, patch_state, original) -> None:
        self.original = original  # first: the upstream __init__ may touch _attention_backend
        super().__init__()
        self.layer = layer
        self.patch_state = patch_state


def reject_context_parallel(processor) -> None:
    """For the families whose token split under context parallelism ditaccel has not tested yet
    (text padding masks, their own split plans): refuse instead of guessing. The transformer's
    pre-hook refuses first (PatchState._find_ulysses); this guards a processor called on its own."""
    if getattr(processor, "_parallel_config", None) is not None:
        raise NotImplementedError(context_parallel_unsupported(processor.patch_state.adapter.family))


def context_parallel_unsupported(family: str) -> str:
    # Imported here, not at the top: the package imports this module (and every adapter module
    # imports it) before the registry that lists the adapters exists.
    from . import context_parallel_families

    names = context_parallel_families()
    if len(names) > 1:
        supported = f"{', '.join(names[:-1])} and {names[-1]}"
    else:
        supported = names[0] if names else "no family"
    return (f"ditaccel sparse attention under context parallelism is supported on {supported} so far, not on "
            f"{family}; disable parallelism or unpatch")


def require_processor(original, layer: AttentionLayer, *expected: type) -> None:
    """Refuse to swap out a processor the adapter does not know (an IP-adapter's, a third
    party's): its sparse twin would silently drop whatever that processor adds."""
    if type(original) not in expected:
        raise NotImplementedError(
            f"{layer.name} runs {type(original).__name__}, which ditaccel cannot make sparse (expected "
            f"{' or '.join(cls.__name__ for cls in expected)}); restore the default processor or leave this model unpatched"
        )
