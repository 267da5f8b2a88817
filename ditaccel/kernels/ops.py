"""The Triton kernels as torch custom ops, so ``torch.compile`` (also diffusers'
``compile_repeated_blocks``) keeps them in the graph as opaque calls with no graph break.

The op takes the layout's tensors, not the BlockLayout object: custom ops only accept tensors and
scalars, and a layout is just a bundle of them (its LUT is built once per grid and reused).
"""

from __future__ import annotations

import weakref

import torch

from .block_sparse_triton import SUPPORTED_HEAD_DIMS, block_sparse_attention_fwd
from .layout import BlockLayout


@torch.library.custom_op("ditaccel::block_sparse_attention", mutates_args=())
def block_sparse_attention_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_counts: torch.Tensor,
    kv_indices: torch.Tensor,
    kv_partial: torch.Tensor,
    q_lo: torch.Tensor,
    q_hi: torch.Tensor,
    k_coord: torch.Tensor,
    kv_len: torch.Tensor | None,
    scale: float | None,
    block_size: int,
    has_partial: bool,
) -> torch.Tensor:
    """Block-sparse attention of [B, N, H, D] q, k, v over a LUT; returns a new contiguous
    [B, N, H, D] tensor."""
    return block_sparse_attention_fwd(
        q, k, v, kv_counts, kv_indices, kv_partial, q_lo, q_hi, k_coord, kv_len, scale, block_size, has_partial=has_partial
    )


@block_sparse_attention_op.register_fake
def _(q, k, v, kv_counts, kv_indices, kv_partial, q_lo, q_hi, k_coord, kv_len, scale, block_size, has_partial):
    return q.new_empty(q.shape)


# Layouts are built once per grid; keep one copy per device and remember whether any block is
# partial (asking the GPU tensor every call would synchronise the stream).
_device_layouts: "weakref.WeakKeyDictionary[BlockLayout, dict]" = weakref.WeakKeyDictionary()


def _prepared(layout: BlockLayout, device: torch.device) -> tuple[BlockLayout, bool]:
    if torch.compiler.is_compiling():
        # Traced: no Python-side caches. Processors hand in layouts already on the device.
        return layout.to(device) if layout.kv_counts.device != device else layout, True
    entry = _device_layouts.setdefault(layout, {})
    key = str(device)
    if key not in entry:
        on_dev = layout if layout.kv_counts.device == device else layout.to(device)
        entry[key] = (on_dev, bool(layout.kv_partial.any()))
    return entry[key]


def triton_block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: BlockLayout,
    kv_len: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Triton backend of ``block_sparse_attention``: [B, N, H, D] in, [B, N, H, D] out.

    Head dims other than 64 and 128 are zero-padded up to the next supported size (q.k and the
    kept output columns are unchanged; the scale stays that of the real head dim)."""
    D = q.shape[-1]
    if scale is None:
        scale = D**-0.5
    target = next((d for d in SUPPORTED_HEAD_DIMS if d >= D), None)
    if target is None:
        raise ValueError(f"head_dim must be <= {SUPPORTED_HEAD_DIMS[-1]} for the Triton kernel, got {D}")
    if target != D:
        pad = lambda x: torch.nn.functional.pad(x, (0, target - D))  # noqa: E731
        q, k, v = pad(q), pad(k), pad(v)
    lay, has_partial = _prepared(layout, q.device)
    if kv_len is not None:
        kv_len = kv_len.to(device=q.device, dtype=torch.int32)
    out = block_sparse_attention_op(
        q, k, v, lay.kv_counts, lay.kv_indices, lay.kv_partial, lay.q_lo, lay.q_hi, lay.k_coord,
        kv_len, float(scale), lay.block_size, has_partial,
    )
    return out[..., :D] if target != D else out
