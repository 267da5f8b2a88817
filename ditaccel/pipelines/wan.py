"""Wan 2.1 / 2.2 (text-to-video and image-to-video): WanTransformer3DModel.

Self-attention ``blocks.{i}.attn1`` is video-only (text and the I2V image tokens come in through
the cross-attention ``attn2``, which stays dense). Tokens are the patchified latent, t-major.
Rotary embeddings are applied to q/k after the RMS norm, interleaved pairs (even, odd).
"""

from __future__ import annotations

import torch
from diffusers.models.transformers.transformer_wan import WanAttnProcessor, _get_qkv_projections

from ..tile_order import reorder_tokens
from .base import (
    ModelAdapter,
    SparseProcessorMixin,
    argument,
    per_token_timestep_to_tiles,
    timestep_fits_tile_order,
)


def apply_interleaved_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (even, odd) channel pairs of x [B, S, H, D] by tables given per channel ([1, S, 1, D])."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    c, s = cos[..., 0::2], sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * c - x2 * s
    out[..., 1::2] = x1 * s + x2 * c
    return out.type_as(x)


class WanSparseProcessor(SparseProcessorMixin, WanAttnProcessor):
    """WanAttnProcessor with the attention itself replaced by the patch's sparse method."""

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None:
            # Not plain video self-attention (a mask we cannot honour sparsely): stay exact.
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        query, key, value = _get_qkv_projections(attn, hidden_states, None)
        query = attn.norm_q(query).unflatten(2, (attn.heads, -1))
        key = attn.norm_k(key).unflatten(2, (attn.heads, -1))
        value = value.unflatten(2, (attn.heads, -1))
        if rotary_emb is not None:
            query = apply_interleaved_rotary(query, *rotary_emb)
            key = apply_interleaved_rotary(key, *rotary_emb)
        out = self.patch_state.attend(self.layer, query, key, value)
        out = out.flatten(2, 3).type_as(query)
        out = attn.to_out[0](out)
        return attn.to_out[1](out)


class WanAdapter(ModelAdapter):
    family = "wan"
    transformer_classes = ("WanTransformer3DModel",)
    text_position = "none"
    layer_groups = (("blocks", "attn1"),)
    cross_attention_groups = (("blocks", "attn2"),)
    upstream_processors = (WanAttnProcessor,)
    sparse_processor_class = WanSparseProcessor
    tile_order_modules = ("patch_embedding", "proj_out", "rope")  # rope tables [1, N, 1, D]
    context_parallel = True

    def grid(self, transformer, args, kwargs):
        hidden_states = argument(args, kwargs, "hidden_states", 0)
        _, _, frames, height, width = hidden_states.shape
        pt, ph, pw = transformer.config.patch_size
        return (frames // pt, height // ph, width // pw)

    def tile_order_supported(self, transformer, args, kwargs, tiling):
        return timestep_fits_tile_order(args, kwargs, 1, tiling)

    def video_tokens_to_tiles(self, output, tiling):
        # The patch embedding is a Conv3d: [B, C, T', H', W'], flattened to tokens right after.
        return reorder_tokens(output.flatten(2), 2, tiling, to_tiles=True).view_as(output)

    def arguments_to_tiles(self, args, kwargs, tiling):
        return per_token_timestep_to_tiles(args, kwargs, 1, tiling)
