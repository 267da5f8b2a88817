"""CogVideoX 1.0 / 1.5 (2B, 5B, I2V): CogVideoXTransformer3DModel.

Joint attention ``transformer_blocks.{i}.attn1``: the text tokens FIRST (226 for the released
models, no padding mask: every text token is attended), then the video tokens, t-major. The
transformer input is [B, F, C, H, W] (frames before channels); 1.0 patches each frame (p = 2),
1.5 also packs p_t = 2 frames. The upstream processor calls SDPA itself in the [B, H, S, D]
layout. RoPE (5B models; the pipeline computes the tables) rotates the video part only; the 2B
models use absolute positions and pass no rotary tables.
"""

from __future__ import annotations

import torch
from diffusers.models.attention_processor import CogVideoXAttnProcessor2_0, FusedCogVideoXAttnProcessor2_0
from diffusers.models.embeddings import apply_rotary_emb

from ..tile_order import reorder_tokens
from .base import ModelAdapter, SparseProcessorMixin, argument, reject_context_parallel, replace_argument


class CogVideoXSparseProcessor(SparseProcessorMixin, CogVideoXAttnProcessor2_0):
    """CogVideoXAttnProcessor2_0 with the attention itself replaced by the patch's sparse method."""

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if attention_mask is not None or attn.is_cross_attention:
            # A mask the sparse path cannot honour, or not the joint self-attention: stay exact.
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        reject_context_parallel(self)
        text_len = encoder_hidden_states.shape[1]
        hidden_states = torch.cat([encoder_hidden_states, hidden_states], dim=1)
        batch = hidden_states.shape[0]

        if getattr(attn, "fused_projections", False) and hasattr(attn, "to_qkv"):
            # fuse_qkv_projections() was called: one matmul, as FusedCogVideoXAttnProcessor2_0 does.
            query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
        else:
            query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        head_dim = key.shape[-1] // attn.heads
        # Upstream works in [B, H, S, D]: its norms and rotary tables expect that layout.
        query, key, value = (x.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for x in (query, key, value))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if image_rotary_emb is not None:
            query = torch.cat([query[:, :, :text_len], apply_rotary_emb(query[:, :, text_len:], image_rotary_emb)], dim=2)
            key = torch.cat([key[:, :, :text_len], apply_rotary_emb(key[:, :, text_len:], image_rotary_emb)], dim=2)

        out = self.patch_state.attend(
            self.layer, query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), text_len=text_len
        )
        out = out.reshape(batch, -1, attn.heads * head_dim)
        out = attn.to_out[1](attn.to_out[0](out))
        text_out, video_out = out.split([text_len, out.shape[1] - text_len], dim=1)
        return video_out, text_out


class CogVideoXAdapter(ModelAdapter):
    family = "cogvideox"
    transformer_classes = ("CogVideoXTransformer3DModel",)
    text_position = "first"
    layer_groups = (("transformer_blocks", "attn1"),)
    upstream_processors = (CogVideoXAttnProcessor2_0, FusedCogVideoXAttnProcessor2_0,)
    text_argument = ("encoder_hidden_states", 1)
    sparse_processor_class = CogVideoXSparseProcessor
    # The patch embedding returns [text, video] tokens (absolute positions already added, 2B); the
    # 5B models' rotary tables come from the pipeline as a forward argument.
    tile_order_modules = ("patch_embed", "proj_out", None)

    def grid(self, transformer, args, kwargs):
        hidden_states = argument(args, kwargs, "hidden_states", 0)  # [B, F, C, H, W]
        _, frames, _, height, width = hidden_states.shape
        p, p_t = transformer.config.patch_size, transformer.config.patch_size_t or 1
        return (frames // p_t, height // p, width // p)

    def timestep(self, args, kwargs):
        return argument(args, kwargs, "timestep", 2)

    def arguments_to_tiles(self, args, kwargs, tiling):
        rotary = argument(args, kwargs, "image_rotary_emb", 5)
        if rotary is None:
            return None
        tables = tuple(reorder_tokens(t, 0, tiling, to_tiles=True) for t in rotary)  # [N, D] each
        return replace_argument(args, kwargs, "image_rotary_emb", 5, tables)
