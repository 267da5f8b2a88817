"""Token permutation on the GPU: raster <-> tiled (canonical) order as one gather kernel.

Both directions are gathers along the token axis of a [B, N, C] tensor (C = heads * head_dim,
contiguous): ``out[b, i] = src[b, index[i]]``, and ``index[i] < 0`` writes zeros (padding tokens
of the canonical order). Each program copies a tile of whole rows with wide vector accesses, so
the permutation runs near memory bandwidth: it reads and writes each element once.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .tiling import inverse_index  # noqa: F401  (canon_to_raster, used with gather_tokens)


@triton.jit
def _gather_rows(
    src, out, index, n_out, C, stride_sb, stride_sn, stride_ob, stride_on,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    pid_r = tl.program_id(0)
    pid_c = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    row_ok = rows < n_out
    src_rows = tl.load(index + rows, mask=row_ok, other=-1).to(tl.int64)
    col_ok = cols < C
    vals = tl.load(
        src + b * stride_sb + src_rows[:, None] * stride_sn + cols[None, :],
        mask=(src_rows[:, None] >= 0) & col_ok[None, :],
        other=0.0,
    )
    tl.store(out + b * stride_ob + rows.to(tl.int64)[:, None] * stride_on + cols[None, :], vals, mask=row_ok[:, None] & col_ok[None, :])


def gather_tokens(src: torch.Tensor, index: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """out[:, i] = src[:, index[i]] (zeros where index[i] < 0). src: [B, N, ...] with the trailing
    dims contiguous; index: int [n_out] on src's device. Returns [B, n_out, ...], written into
    ``out`` when given (any [B, n_out, ...] tensor whose trailing dims are contiguous)."""
    B, N = src.shape[:2]
    tail = src.shape[2:]
    x = src.reshape(B, N, -1)
    if x.stride(-1) != 1:
        x = x.contiguous()
    C = x.shape[-1]
    n_out = index.shape[0]
    if out is not None:
        result = out
        out = out.view(B, n_out, C)  # a view: raises if the trailing dims are not contiguous
    else:
        out = result = torch.empty((B, n_out, C), dtype=src.dtype, device=src.device).view(B, n_out, *tail)
        out = out.view(B, n_out, C)
    if B * n_out * C == 0:
        return result
    block_c = min(triton.next_power_of_2(C), 1024)
    block_r = max(1, 4096 // block_c)
    grid = (triton.cdiv(n_out, block_r), triton.cdiv(C, block_c), B)
    _gather_rows[grid](x, out, index, n_out, C, x.stride(0), x.stride(1), out.stride(0), out.stride(1),
                       BLOCK_R=block_r, BLOCK_C=block_c, num_warps=4)
    return result


def gather_tokens_reference(src: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The same gather in plain PyTorch (the oracle, and the path inside torch.compile)."""
    B, N = src.shape[:2]
    padded = torch.cat([src, src.new_zeros((B, 1, *src.shape[2:]))], dim=1)
    return padded.index_select(1, torch.where(index < 0, N, index).long())
