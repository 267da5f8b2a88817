"""Kernels and the data they consume. Nothing here knows about diffusers."""

from .attention import block_sparse_attention, block_sparse_attention_model_order
from .layout import BlockLayout, layout_from_block_mask, layout_from_boxes, with_text
from .piecewise import piecewise_attention, piecewise_selection, piecewise_statistics, topk_attention
from .pyramid import pyramid_attention, pyramid_levels, pyramid_pool
from .reference import reference_block_sparse_attention
from .tiling import TokenTiling, build_tiling

__all__ = [
    "BlockLayout",
    "TokenTiling",
    "block_sparse_attention",
    "block_sparse_attention_model_order",
    "build_tiling",
    "layout_from_block_mask",
    "layout_from_boxes",
    "piecewise_attention",
    "piecewise_selection",
    "piecewise_statistics",
    "pyramid_attention",
    "pyramid_levels",
    "pyramid_pool",
    "reference_block_sparse_attention",
    "topk_attention",
    "with_text",
]
