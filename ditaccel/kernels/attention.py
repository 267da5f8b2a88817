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
    if q.dim() != 4 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k, v must all be [batch, seq, heads, head_dim]; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
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
    if not q.is_cuda and not _interpreting():
        raise ValueError(
            "backend='triton' needs CUDA tensors, or CPU tensors with TRITON_INTERPRET=1 set before Triton is "
            "imported (tests); use backend='auto' or 'reference' on CPU"
        )
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"q, k, v must be float16, bfloat16 or float32 for the Triton kernel, got {q.dtype}")
    from .ops import triton_block_sparse_attention  # imported lazily: Triton is optional

    return triton_block_sparse_attention(q, k, v, layout, kv_len, scale)


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
