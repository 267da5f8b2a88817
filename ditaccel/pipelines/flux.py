"""FLUX.1 (dev, schnell, Fill, Canny/Depth): FluxTransformer2DModel.

Joint attention: 19 dual-stream blocks ``transformer_blocks.{i}.attn`` (text and image in
separate arguments) then 38 single-stream blocks ``single_transformer_blocks.{j}.attn`` (the
joint sequence arrives as ``hidden_states``, no ``encoder_hidden_states``); layer indices run on
from the dual into the single blocks. Text comes FIRST (no padding mask), then the image tokens,
which the pipeline packs 2x2 into a raster (row-major) sequence described by ``img_ids``
[S, 3] = (0, row, col). The grid is (1, H', W'); in the single-stream blocks the text length is
whatever precedes the H'*W' image tokens. RoPE covers the whole joint sequence (text ids are
zero: identity rotation). The pipeline passes the timestep divided by 1000.
"""

from __future__ import annotations

import weakref

import torch
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_flux import FluxAttnProcessor, _get_qkv_projections

from .base import ModelAdapter, SparseProcessorMixin, argument


class FluxSparseProcessor(SparseProcessorMixin, FluxAttnProcessor):
    """FluxAttnProcessor with the attention itself replaced by the patch's sparse method."""

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        dual_stream = encoder_hidden_states is not None
        if attention_mask is not None or (dual_stream and attn.added_kv_proj_dim is None):
            # A mask the sparse path cannot honour, or a layout this adapter does not know: stay exact.
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        query, key, value, text_query, text_key, text_value = _get_qkv_projections(attn, hidden_states, encoder_hidden_states)
        # Split heads by the fixed head_dim, as upstream does (tensor parallelism shards the heads).
        query, key, value = (x.unflatten(-1, (-1, attn.head_dim)) for x in (query, key, value))
        query = attn.norm_q(query)
        key = attn.norm_k(key)
        if dual_stream:
            text_query, text_key, text_value = (x.unflatten(-1, (-1, attn.head_dim)) for x in (text_query, text_key, text_value))
            query = torch.cat([attn.norm_added_q(text_query), query], dim=1)
            key = torch.cat([attn.norm_added_k(text_key), key], dim=1)
            value = torch.cat([text_value, value], dim=1)
            text_len = encoder_hidden_states.shape[1]
        else:
            T, H, W = self.patch_state.context.grid
            # This rank's tokens (under context parallelism its share of the grid). Never negative,
            # so a sequence shorter than the grid fails the runner's grid check.
            text_len = max(query.shape[1] - T * H * W // self.patch_state.ranks, 0)
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)

        out = self.patch_state.attend(self.layer, query, key, value, text_len=text_len)
        out = out.flatten(2, 3).to(query.dtype)
        if not dual_stream:
            return out
        text_out, image_out = out[:, :text_len], out[:, text_len:]
        image_out = attn.to_out[1](attn.to_out[0](image_out.contiguous()))
        text_out = attn.to_add_out(text_out.contiguous())
        return image_out, text_out


class FluxAdapter(ModelAdapter):
    family = "flux"
    transformer_classes = ("FluxTransformer2DModel",)
    text_position = "first"
    layer_groups = (("transformer_blocks", "attn"), ("single_transformer_blocks", "attn"))
    upstream_processors = (FluxAttnProcessor,)
    text_argument = ("encoder_hidden_states", 1)
    sparse_processor_class = FluxSparseProcessor
    timestep_scale = 1.0 / 1000.0
    tile_order_modules = ("x_embedder", "proj_out", "pos_embed")  # rope tables [text + N, D]
    context_parallel = True
    rotary_token_dim = 0

    def grid(self, transformer, args, kwargs):
        # forward(hidden_states, encoder_hidden_states, pooled_projections, timestep, img_ids, txt_ids, ...)
        img_ids = argument(args, kwargs, "img_ids", 4)
        if img_ids is None:
            raise ValueError("FluxTransformer2DModel was called without img_ids: ditaccel reads the image grid from them")
        # A pipeline passes the same ids every step: check them once (the check reads them on the host).
        checked = getattr(self, "_checked_ids", None)
        version = None if img_ids.is_inference() else img_ids._version  # inference tensors keep no version
        if checked is not None and version is not None and checked[0]() is img_ids and checked[1] == version:
            return checked[2]
        grid = self._grid_of(img_ids)
        self._checked_ids = (weakref.ref(img_ids), version, grid)
        return grid

    @staticmethod
    def _grid_of(img_ids: torch.Tensor):
        if img_ids.ndim == 3:  # deprecated batched ids, as the transformer itself accepts
            img_ids = img_ids[0]
        ids = img_ids.long()  # bf16 ids are exact integers, their raster index may not be
        height, width = (int(m) + 1 for m in ids[:, 1:].amax(0).tolist())
        # The sparse layout places token i at (i // W', i % W'): the ids must say exactly that.
        raster = torch.arange(ids.shape[0], device=ids.device)
        is_raster = ids.shape[0] == height * width and bool(
            ((ids[:, 0] == 0) & (ids[:, 1] * width + ids[:, 2] == raster)).all()
        )
        if not is_raster:
            raise ValueError(
                f"img_ids of shape {tuple(img_ids.shape)} do not describe one raster image grid (1, {height}, {width}) "
                "(reference-image tokens as in FLUX Kontext, or custom ids): the grid does not match the sequence, "
                "so ditaccel cannot place the image tokens; unpatch this pipeline"
            )
        return (1, height, width)

    def timestep(self, args, kwargs):
        return argument(args, kwargs, "timestep", 3)

    def tile_order_supported(self, transformer, args, kwargs, tiling):
        # ControlNet residuals are added to the image tokens in raster order.
        residuals = (("controlnet_block_samples", 8), ("controlnet_single_block_samples", 9))
        return all(argument(args, kwargs, name, position) is None for name, position in residuals)
