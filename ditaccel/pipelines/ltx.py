"""LTX-Video 0.9.x (text-to-video, image-to-video): LTXVideoTransformer3DModel.

Self-attention ``transformer_blocks.{i}.attn1`` is video-only; text comes in through the
cross-attention ``attn2`` (with its own padding mask), which stays dense. The pipeline packs the
latent [B, C, F, H, W] into tokens t-major (patch sizes 1 in every released checkpoint) and
passes the grid as the ``num_frames``, ``height`` and ``width`` arguments, which the transformer's
RoPE reads as the token grid too. RoPE is applied to q/k on [B, S, H*D] after the RMS norm taken
across all heads, before the head unflatten.
"""

from __future__ import annotations

import torch
from diffusers.models.transformers.transformer_ltx import LTXVideoAttnProcessor, apply_rotary_emb

from .base import (
    ModelAdapter,
    SparseProcessorMixin,
    argument,
    per_token_timestep_to_tiles,
    reject_context_parallel,
    timestep_fits_tile_order,
)


class LTXSparseProcessor(SparseProcessorMixin, LTXVideoAttnProcessor):
    """LTXVideoAttnProcessor with the attention itself replaced by the patch's sparse method."""

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None:
            # Not plain video self-attention (a mask we cannot honour sparsely): stay exact.
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        reject_context_parallel(self)
        query = attn.norm_q(attn.to_q(hidden_states))
        key = attn.norm_k(attn.to_k(hidden_states))
        value = attn.to_v(hidden_states)
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb)
            key = apply_rotary_emb(key, image_rotary_emb)
        query, key, value = (x.unflatten(2, (attn.heads, -1)) for x in (query, key, value))
        out = self.patch_state.attend(self.layer, query, key, value)
        out = out.flatten(2, 3).to(query.dtype)
        return attn.to_out[1](attn.to_out[0](out))


class LTXAdapter(ModelAdapter):
    family = "ltx"
    transformer_classes = ("LTXVideoTransformer3DModel",)
    text_position = "none"
    layer_groups = (("transformer_blocks", "attn1"),)
    cross_attention_groups = (("transformer_blocks", "attn2"),)
    upstream_processors = (LTXVideoAttnProcessor,)
    sparse_processor_class = LTXSparseProcessor
    tile_order_modules = ("proj_in", "proj_out", "rope")  # rope tables [B, N, D]

    def grid(self, transformer, args, kwargs):
        # forward(hidden_states, encoder_hidden_states, timestep, encoder_attention_mask, num_frames, height, width, ...)
        sizes = [argument(args, kwargs, name, position) for position, name in ((4, "num_frames"), (5, "height"), (6, "width"))]
        if any(size is None for size in sizes):
            raise ValueError(
                "LTXVideoTransformer3DModel was called without num_frames, height and width (e.g. with video_coords, as "
                "LTXConditionPipeline does): ditaccel cannot place its tokens on a latent grid; use LTXPipeline or "
                "LTXImageToVideoPipeline, or unpatch"
            )
        # The transformer reads these as the token grid (its RoPE is built on arange(num_frames) x ...).
        return tuple(int(size) for size in sizes)

    def timestep(self, args, kwargs):
        return argument(args, kwargs, "timestep", 2)

    def tile_order_supported(self, transformer, args, kwargs, tiling):
        return timestep_fits_tile_order(args, kwargs, 2, tiling)

    def arguments_to_tiles(self, args, kwargs, tiling):
        return per_token_timestep_to_tiles(args, kwargs, 2, tiling)
