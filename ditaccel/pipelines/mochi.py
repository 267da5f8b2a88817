"""Mochi 1: MochiTransformer3DModel.

Joint attention ``transformer_blocks.{i}.attn1`` (``MochiAttention``: no ``set_processor``, the
``processor`` attribute is assigned directly). Video tokens come first (each frame patched with
p = 2, no temporal patching, t-major), the text LAST. Upstream loops over the batch and appends
only the valid text tokens of each sample (``encoder_attention_mask`` nonzero), so padded text is
neither key nor query; the text outputs come back packed (valid tokens first, in order) and
zero-filled behind them. The sparse path runs the whole batch in one call with the valid text
moved to the front and the padding masked, then restores that packed, zero-filled output.
RoPE: learned frequencies, interleaved (even, odd) pairs, on the video q/k only.
"""

from __future__ import annotations

import torch
from diffusers.models.attention_processor import MochiAttnProcessor2_0

from .base import ModelAdapter, SparseProcessorMixin, argument, reject_context_parallel


def apply_pairwise_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (even, odd) channel pairs of x [B, S, H, D] by angle tables [S, H, D/2], in fp32."""
    even, odd = x[..., 0::2].float(), x[..., 1::2].float()
    rotated = torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1)
    return rotated.flatten(-2).to(x.dtype)


class MochiSparseProcessor(SparseProcessorMixin, MochiAttnProcessor2_0):
    """MochiAttnProcessor2_0 with the attention itself replaced by the patch's sparse method."""

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor,
        image_rotary_emb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        batch, text_len = encoder_hidden_states.shape[:2]
        if attention_mask is None or tuple(attention_mask.shape) != (batch, text_len):
            # Not the per-sample text mask upstream expects: let upstream handle (or reject) it.
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        reject_context_parallel(self)

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.unflatten(2, (attn.heads, -1))

        query, key, value = heads(attn.to_q(hidden_states)), heads(attn.to_k(hidden_states)), heads(attn.to_v(hidden_states))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        text_query = heads(attn.add_q_proj(encoder_hidden_states))
        text_key = heads(attn.add_k_proj(encoder_hidden_states))
        text_value = heads(attn.add_v_proj(encoder_hidden_states))
        if attn.norm_added_q is not None:
            text_query = attn.norm_added_q(text_query)
        if attn.norm_added_k is not None:
            text_key = attn.norm_added_k(text_key)
        if image_rotary_emb is not None:
            query = apply_pairwise_rotary(query, *image_rotary_emb)
            key = apply_pairwise_rotary(key, *image_rotary_emb)

        # Pack each sample's valid text to the front, in order, as upstream does; the rest is padding.
        valid = attention_mask != 0
        order = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)
        packed_valid = torch.gather(valid, 1, order)

        def pack(x: torch.Tensor) -> torch.Tensor:
            return torch.gather(x, 1, order[:, :, None, None].expand_as(x))

        n_video = query.shape[1]
        out = self.patch_state.attend(
            self.layer,
            torch.cat([query, pack(text_query)], dim=1),
            torch.cat([key, pack(text_key)], dim=1),
            torch.cat([value, pack(text_value)], dim=1),
            text_len=text_len,
            text_mask=packed_valid,
        )
        out = out.flatten(2, 3)
        video_out, text_out = out[:, :n_video], out[:, n_video:]
        # Upstream has no output for padded text (it never was a query): zeros behind the valid tokens.
        text_out = torch.where(packed_valid[:, :, None], text_out, torch.zeros_like(text_out))

        video_out = attn.to_out[1](attn.to_out[0](video_out))
        if hasattr(attn, "to_add_out"):
            text_out = attn.to_add_out(text_out)
        return video_out, text_out


class MochiAdapter(ModelAdapter):
    family = "mochi"
    transformer_classes = ("MochiTransformer3DModel",)
    text_position = "last"
    layer_groups = (("transformer_blocks", "attn1"),)
    upstream_processors = (MochiAttnProcessor2_0,)
    sparse_processor_class = MochiSparseProcessor

    def grid(self, transformer, args, kwargs):
        hidden_states = argument(args, kwargs, "hidden_states", 0)  # [B, C, F, H, W]
        _, _, frames, height, width = hidden_states.shape
        p = transformer.config.patch_size
        return (frames, height // p, width // p)

    def timestep(self, args, kwargs):
        return argument(args, kwargs, "timestep", 2)
