"""The one entry point the attention processors call: block-sparse attention over a layout.

Chooses the backend: the Triton kernel when the tensors are on a CUDA device and Triton is
importable, otherwise the PyTorch reference (one warning per process). Shapes and dtypes are
checked here, at the boundary, not inside the kernels.
"""

from __future__ import annotations

import warnings

import torch

from .layout import BlockLayout
from .reference import reference_block_sparse_attention

BACKENDS = ("auto", "triton", "reference")
_warned_fallback = False


def block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: BlockLayout,
    kv_len: torch.Tensor | None = None,
    scale: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Attention of canonical-order q, k, v ([B, N, H, D]) over ``layout``.

    N is ``layout.seq_len``, or less by under one block: a raster-order sequence need not be
    padded, the tokens from N on are treated as absent (not attended, not returned).
    kv_len: optional int [B]; keys at positions >= kv_len[b] are ignored (padded text tokens).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    _check_qkv(q, k, v)
    if not layout.seq_len - layout.block_size < q.shape[1] <= layout.seq_len:
        raise ValueError(
            f"sequence length {q.shape[1]} does not match the layout's {layout.seq_len} tokens (it may be shorter "
            f"by less than one block of {layout.block_size}: the missing tail counts as padding)"
        )
    if backend == "reference" or (backend == "auto" and not _triton_usable(q)):
        if backend == "auto":
            _warn_once(
                "Triton is not available: ditaccel runs sparse attention on the (slower) PyTorch reference backend."
                if q.is_cuda
                else "no CUDA device: ditaccel computes sparse attention with the exact PyTorch reference backend "
                "(a correctness fallback, not a fast path)"
            )
        return reference_block_sparse_attention(q, k, v, layout, kv_len, scale)
    _check_triton_inputs(q)
    from .ops import triton_block_sparse_attention  # imported lazily: Triton is optional

    return triton_block_sparse_attention(q, k, v, layout, kv_len, scale)


def block_sparse_attention_model_order(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: BlockLayout,
    *,
    video_start: int = 0,
    text_start: int = 0,
    text_len: int = 0,
    text_order: torch.Tensor | None = None,
    kv_len: torch.Tensor | None = None,
    scale: float | None = None,
    backend: str = "auto",
    video_tiled: bool = False,
) -> torch.Tensor:
    """Attention over ``layout`` of q, k, v in the model's token order, output in that order.

    q, k, v: [B, S, H, D]; the latent grid's tokens (``layout.tiling.grid``, raster order) start at
    ``video_start``, ``text_len`` text tokens at ``text_start`` (``layout`` must have been extended
    by ``with_text`` to that length). ``text_order`` (int [B, text_len]) lists each sample's text
    tokens valid first, ``kv_len`` (int [B]) then ends the keys at canonical position
    ``layout.tiling.canon_len + valid text``. The Triton backend reads the tokens where they are
    (raster rows, or tiles as 3-D boxes of the grid) and copies only what cannot be read in place;
    the reference backend builds the canonical sequence explicitly.

    ``video_tiled``: the video tokens are in the layout's canonical order already (a tiling with
    no padding: ``canon_len`` equals the grid's token count), so none are moved."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    tiling = layout.tiling
    n_video = tiling.num_tokens
    if video_tiled and tiling.canon_len != n_video:
        raise ValueError(
            f"video_tiled=True needs a tiling without padding, but grid {tiling.grid} with tile {tiling.tile} has "
            f"{tiling.canon_len} canonical positions for {n_video} tokens"
        )
    if backend == "triton" or (backend == "auto" and _triton_usable(q)):
        _check_qkv(q, k, v)
        _check_triton_inputs(q)
        from .ops import triton_model_order_attention

        return triton_model_order_attention(q, k, v, layout, video_start=video_start, text_start=text_start,
                                            text_len=text_len, text_order=text_order, kv_len=kv_len, scale=scale,
                                            video_tiled=video_tiled)
    # Reference: canonical order explicitly (tiled video, then text valid-first, padded to blocks).
    B, S, H, D = q.shape
    video = slice(video_start, video_start + n_video)
    text = slice(text_start, text_start + text_len)
    if text_len and kv_len is None:
        kv_len = torch.full((B,), tiling.canon_len + text_len, dtype=torch.int32, device=q.device)
    qc, kc, vc = (canonical_sequence(x, layout, video_start, text_start, text_len, text_order, video_tiled) for x in (q, k, v))
    out_c = block_sparse_attention(qc, kc, vc, layout, kv_len, scale, backend)
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    video_out = out_c[:, : tiling.canon_len]
    out[:, video] = video_out if video_tiled else tiling.from_canonical(video_out)
    if text_len:
        text_out = out_c[:, tiling.canon_len : tiling.canon_len + text_len]
        if text_order is not None:
            index = text_order[:, :, None, None].expand_as(text_out)
            text_out = torch.empty_like(text_out).scatter_(1, index, text_out)
        out[:, text] = text_out
    return out


def canonical_sequence(
    x: torch.Tensor,
    layout: BlockLayout,
    video_start: int,
    text_start: int = 0,
    text_len: int = 0,
    text_order: torch.Tensor | None = None,
    video_tiled: bool = False,
) -> torch.Tensor:
    """x ([B, S, ...] in the model's token order) as the canonical sequence ``layout`` indexes:
    the tiled video tokens, then the text (valid first when ``text_order`` is given), zero-padded
    to whole blocks. ``video_tiled``: x's video tokens are in tile order already."""
    tiling = layout.tiling
    video = x[:, video_start : video_start + tiling.num_tokens]
    parts = [video if video_tiled else tiling.to_canonical(video)]
    if text_len:
        text = x[:, text_start : text_start + text_len]
        if text_order is not None:
            text = torch.gather(text, 1, text_order[:, :, None, None].expand_as(text))
        parts += [text, x.new_zeros(x.shape[0], layout.seq_len - tiling.canon_len - text_len, *x.shape[2:])]
    return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.dim() != 4 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k, v must all be [batch, seq, heads, head_dim]; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")


def _check_triton_inputs(q: torch.Tensor) -> None:
    if not q.is_cuda and not _interpreting():
        raise ValueError(
            "backend='triton' needs CUDA tensors, or CPU tensors with TRITON_INTERPRET=1 set before Triton is "
            "imported (tests); use backend='auto' or 'reference' on CPU"
        )
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"q, k, v must be float16, bfloat16 or float32 for the Triton kernel, got {q.dtype}")


def _interpreting() -> bool:
    import os

    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _triton_usable(q: torch.Tensor) -> bool:
    if not q.is_cuda:
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    try:
        from . import ops  # noqa: F401
    except ImportError:
        return False
    return True


def _warn_once(message: str) -> None:
    global _warned_fallback
    if not _warned_fallback:
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        _warned_fallback = True
