"""What a model adapter tells the rest of ditaccel about one family of diffusers transformers."""

from __future__ import annotations

from dataclasses import dataclass

import torch

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

    def attention_layers(self, transformer: torch.nn.Module) -> list[AttentionLayer]:
        named = [
            (f"{blocks}.{i}.{attention}", getattr(block, attention))
            for blocks, attention in self.layer_groups
            for i, block in enumerate(getattr(transformer, blocks))
        ]
        return [AttentionLayer(index, name, module) for index, (name, module) in enumerate(named)]

    def sparse_processor(self, original, layer: AttentionLayer, patch_state) -> object:
        """A processor for ``layer`` that runs the sparse path; ``original`` is the upstream one."""
        require_processor(original, layer, *self.upstream_processors)
        return self.sparse_processor_class(layer.index, patch_state)


def argument(args: tuple, kwargs: dict, name: str, position: int):
    """A forward argument given by keyword or by position."""
    if name in kwargs:
        return kwargs[name]
    if len(args) > position:
        return args[position]
    return None


class SparseProcessorMixin:
    """Put first in a sparse processor's bases, before the upstream processor class.

    The class attributes must exist: diffusers' ``set_attention_backend`` and ``enable_parallelism``
    only reach processors that have them (without them context parallelism silently skips the
    layer). ``layer`` is the index Schedule.dense_layers uses; ``patch_state.attend`` runs the method.
    """

    _attention_backend = None
    _parallel_config = None

    def __init__(self, layer: int, patch_state) -> None:
        super().__init__()
        self.layer = layer
        self.patch_state = patch_state


def reject_context_parallel(processor) -> None:
    if getattr(processor, "_parallel_config", None) is not None:
        raise NotImplementedError(
            "ditaccel sparse attention does not support diffusers context parallelism yet; "
            "disable parallelism or unpatch"
        )


def require_processor(original, layer: AttentionLayer, *expected: type) -> None:
    """Refuse to swap out a processor the adapter does not know (an IP-adapter's, a third
    party's): its sparse twin would silently drop whatever that processor adds."""
    if type(original) not in expected:
        raise NotImplementedError(
            f"{layer.name} runs {type(original).__name__}, which ditaccel cannot make sparse (expected "
            f"{' or '.join(cls.__name__ for cls in expected)}); restore the default processor or leave this model unpatched"
        )
