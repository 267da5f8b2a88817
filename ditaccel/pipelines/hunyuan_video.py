"""HunyuanVideo (text-to-video and the I2V variants): HunyuanVideoTransformer3DModel.

Joint attention everywhere: 20 dual-stream blocks ``transformer_blocks.{i}.attn`` (separate
video and text projections) then 40 single-stream blocks ``single_transformer_blocks.{j}.attn``
(one projection over [video, text]); layer indices run on from the dual into the single blocks.
The token refiner in ``context_embedder`` is text-only attention and stays dense.

Sequence: video tokens (patchified latent, t-major) then the text tokens, LAST. The transformer
pads text to a fixed length and hands every block a key-padding mask [B, 1, 1, S] (bool, True =
attend) that keeps the first ``encoder_attention_mask.sum()`` text tokens of each sample; padded
text queries still attend the valid keys. RoPE rotates the video part of q/k only.
"""

from __future__ import annotations

import torch
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_hunyuan_video import HunyuanVideoAttnProcessor2_0

from .base import ModelAdapter, SparseProcessorMixin, argument, reject_context_parallel


def key_padding_text_mask(attention_mask: torch.Tensor | None, batch: int, n_video: int, text_len: int):
    """The text part of HunyuanVideo's key-padding mask as bool [B, text_len] (True = real token).

    None when there is no mask (all text attended); False when the mask is not the model's
    [B, 1, 1, S] bool key-padding mask, which the sparse path cannot reproduce exactly. The video
    part of that mask is all True by construction (the transformer only masks text padding).
    """
    if attention_mask is None:
        return None
    if attention_mask.dtype != torch.bool or tuple(attention_mask.shape) != (batch, 1, 1, n_video + text_len):
        return False
    return attention_mask[:, 0, 0, n_video:]


class HunyuanVideoSparseProcessor(SparseProcessorMixin, HunyuanVideoAttnProcessor2_0):
    """HunyuanVideoAttnProcessor2_0 with the attention itself replaced by the patch's sparse method."""

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        text_len = 0 if encoder_hidden_states is None else encoder_hidden_states.shape[1]
        batch, n_video = hidden_states.shape[:2]
        text_mask = key_padding_text_mask(attention_mask, batch, n_video, text_len)
        if encoder_hidden_states is None or text_mask is False:
            # Not the joint video+text attention this adapter knows: stay exact.
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        reject_context_parallel(self)

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.unflatten(2, (attn.heads, -1))

        single_stream = attn.add_q_proj is None
        if single_stream:
            # One projection over the joint sequence [video, text].
            hidden_states = torch.cat([hidden_states, encoder_hidden_states], dim=1)
        query, key, value = heads(attn.to_q(hidden_states)), heads(attn.to_k(hidden_states)), heads(attn.to_v(hidden_states))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if image_rotary_emb is not None:
            # Rotary positions exist for the video tokens only; text stays unrotated.
            query = torch.cat([apply_rotary_emb(query[:, :n_video], image_rotary_emb, sequence_dim=1), query[:, n_video:]], dim=1)
            key = torch.cat([apply_rotary_emb(key[:, :n_video], image_rotary_emb, sequence_dim=1), key[:, n_video:]], dim=1)
        if not single_stream:
            text_query = heads(attn.add_q_proj(encoder_hidden_states))
            text_key = heads(attn.add_k_proj(encoder_hidden_states))
            text_value = heads(attn.add_v_proj(encoder_hidden_states))
            if attn.norm_added_q is not None:
                text_query = attn.norm_added_q(text_query)
            if attn.norm_added_k is not None:
                text_key = attn.norm_added_k(text_key)
            query = torch.cat([query, text_query], dim=1)
            key = torch.cat([key, text_key], dim=1)
            value = torch.cat([value, text_value], dim=1)

        out = self.patch_state.attend(self.layer, query, key, value, text_len=text_len, text_mask=text_mask)
        out = out.flatten(2, 3).to(query.dtype)
        video_out, text_out = out[:, :n_video], out[:, n_video:]
        if getattr(attn, "to_out", None) is not None:
            video_out = attn.to_out[1](attn.to_out[0](video_out))
        if getattr(attn, "to_add_out", None) is not None:
            text_out = attn.to_add_out(text_out)
        return video_out, text_out


class HunyuanVideoAdapter(ModelAdapter):
    family = "hunyuan_video"
    transformer_classes = ("HunyuanVideoTransformer3DModel",)
    text_position = "last"
    # The refined prompt keeps its (padded) length; padding is masked in the call, not dropped.
    text_argument = ("encoder_hidden_states", 2)
    layer_groups = (("transformer_blocks", "attn"), ("single_transformer_blocks", "attn"))
    upstream_processors = (HunyuanVideoAttnProcessor2_0,)
    sparse_processor_class = HunyuanVideoSparseProcessor
    tile_order_modules = ("x_embedder", "proj_out", "rope")  # rope tables [N, D]
    rotary_token_dim = 0

    def grid(self, transformer, args, kwargs):
        hidden_states = argument(args, kwargs, "hidden_states", 0)  # [B, C, F, H, W]
        _, _, frames, height, width = hidden_states.shape
        p, p_t = transformer.config.patch_size, transformer.config.patch_size_t
        return (frames // p_t, height // p, width // p)

    def timestep(self, args, kwargs):
        return argument(args, kwargs, "timestep", 1)

    def tile_order_supported(self, transformer, args, kwargs, tiling):
        # I2V "token_replace" modulates the first frame's tokens differently (by position).
        return getattr(transformer.config, "image_condition_type", None) != "token_replace"
