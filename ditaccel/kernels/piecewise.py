"""Piecewise (PISA) and top-k block attention: the functional layer and its PyTorch reference.

Per query block, a few key blocks are computed exactly; piecewise attention approximates every
other key block by a Taylor expansion of exp around the block's mean key (SPEC 4.3, notes section
2), top-k attention drops them (the keep-or-drop baseline). Both pick the exact blocks with the
same score, ``tau * qbar_I . kbar_J + log(||H_J||_F + 1e-5)``.

q, k, v are ``[B, N, H, D]`` in canonical order; blocks are consecutive runs of ``block_size``
tokens, the last one may be short. For query row i, scale tau, key block J with n_J tokens, mean
key kbar_J, value sum V_J, H = sum over all blocks of H_J and T = N keys::

    numerator   = sum_{J sel} sum_{t in J} e^{tau q.k_t} v_t + sum_{J not sel} e^{tau q.kbar_J} (V_J + tau n_J (H/T)^T q)
    denominator = sum_{J sel} sum_{t in J} e^{tau q.k_t}     + sum_{J not sel} n_J e^{tau q.kbar_J}

(the first-order term of the denominator vanishes because the keys are centred; ``order=0`` drops
the H term). The reference writes each unselected block as one summary key with logit
``tau q.kbar_J + log n_J`` and value ``V_J / n_J`` (the same numerator and denominator), so a
single softmax with one max per row covers exact and summary logits alike: the approximate mass
is rescaled with the running max by construction (the PISA kernel forgets that rescaling).

``extra_kv=(k_extra, v_extra, kv_len)`` adds keys every query row attends exactly (joint
attention's text tokens, [B, M, H, D]; keys at index >= kv_len[b] are padding and ignored). They
join the exact logits of the one softmax and never enter the statistics or the selection; text
queries are the caller's business.

Backends: ``"reference"`` (below, PyTorch), ``"triton"`` (``piecewise_triton``: a statistics
kernel, the scores by one batched matmul, a top-blocks kernel writing the LUT, one fused attention
kernel; three custom ops, so ``torch.compile(fullgraph=True)`` traces it, and no host
synchronisation once the autotuner has seen the shape), ``"auto"`` (Triton on CUDA tensors when
Triton is importable and the kernels take the shapes, else the reference).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .. import checks
from .attention import BACKENDS, _check_qkv, _check_triton_inputs
from .reference import masked_softmax, query_block_chunks

# Added to ||H_J||_F before the log in the selection score, as in the paper.
NORM_EPS = 1e-5


class PiecewiseStatistics(NamedTuple):
    """Per-key-block statistics, in fp32 (fp64 for fp64 inputs)."""

    counts: torch.Tensor  # [blocks] tokens per block (the same for every batch and head)
    kbar: torch.Tensor  # [B, H, blocks, D] mean key
    vsum: torch.Tensor  # [B, H, blocks, D] value sum V_J
    h: torch.Tensor  # [B, H, blocks, D, D] H_J = sum_{t in J} (k_t - kbar_J) v_t^T


def piecewise_statistics(k: torch.Tensor, v: torch.Tensor, block_size: int) -> PiecewiseStatistics:
    """Token counts, mean keys, value sums and centred key-value products H_J of the key blocks of
    k, v ([B, N, H, D])."""
    _check_block_size(block_size)
    if k.dim() != 4 or v.shape != k.shape:
        raise ValueError(f"k and v must both be [batch, seq, heads, head_dim]; got {tuple(k.shape)}, {tuple(v.shape)}")
    counts = block_counts(k.shape[1], block_size, k.device, _compute_dtype(k))
    kb, vb = blocked(k, block_size), blocked(v, block_size)
    kbar = kb.sum(3) / counts[:, None]
    # The zero padding of a short last block has v = 0, so it adds nothing to H_J.
    h = torch.einsum("bhntd,bhnte->bhnde", kb - kbar[:, :, :, None], vb)
    return PiecewiseStatistics(counts, kbar, vb.sum(3), h)


def piecewise_selection(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    density: float,
    block_size: int = 64,
    scale: float | None = None,
) -> torch.Tensor:
    """bool [B, H, blocks, blocks]: per (batch, head, query block), the ``max(1, floor(density *
    blocks))`` key blocks of highest score ``tau * qbar_I . kbar_J + log(||H_J||_F + 1e-5)``
    (qbar_I: mean query of block I; tau: ``scale``, default 1/sqrt(D))."""
    _check_qkv(q, k, v)
    _check_block_size(block_size)
    _check_density(density)
    return _select(q, piecewise_statistics(k, v, block_size), density, block_size, scale)


def piecewise_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    density: float | None = None,
    selected: torch.Tensor | None = None,
    block_size: int = 64,
    order: int = 1,
    scale: float | None = None,
    extra_kv: tuple | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Exact attention on the selected key blocks, Taylor approximation (``order`` 0 or 1) of every
    other block, one softmax per row. Give exactly one of ``density`` (the method's own selection,
    see ``piecewise_selection``) or ``selected`` (bool ``[B|1, H|1, blocks, blocks]``).
    q, k, v: [B, N, H, D]; returns [B, N, H, D] in q's dtype (accumulated in fp32).

    ``extra_kv``: optional ``(k_extra, v_extra, kv_len)``, k_extra and v_extra ``[B, M, H, D]``
    keys and values every query row attends exactly besides its blocks (joint attention's text),
    kv_len None or an integer tensor ``[B]``: keys at index >= kv_len[b] are ignored (padded text;
    values outside [0, M] are clipped). They are not part of the statistics or the selection.

    The Triton backend (fp16/bf16/fp32; block_size 16, 32, 64 or 128; head_dim up to 128, padded
    to a power of two) makes no host synchronisation on either selection path."""
    checks.choice("order", order, (0, 1))
    return _attention(q, k, v, density, selected, block_size, order, scale, extra_kv, backend)


def topk_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    density: float | None = None,
    selected: torch.Tensor | None = None,
    block_size: int = 64,
    scale: float | None = None,
    extra_kv: tuple | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Attention over the selected key blocks only (piecewise's selection; the other blocks are
    dropped), plus the ``extra_kv`` keys. Arguments as for ``piecewise_attention``. A query row
    whose ``selected`` row is all False and that has no extra key attends nothing: its output is
    zero."""
    return _attention(q, k, v, density, selected, block_size, None, scale, extra_kv, backend)


def _attention(q, k, v, density, selected, block_size: int, order: int | None, scale, extra_kv, backend: str) -> torch.Tensor:
    """order 0/1: piecewise; None: top-k. Checks at the boundary, then one backend."""
    _check_qkv(q, k, v)
    _check_block_size(block_size)
    selected = _check_selection(q, density, selected, block_size)
    extra_kv = checks.extra_kv(extra_kv, q)
    if _use_triton(backend, q, block_size):
        from .piecewise_triton import triton_piecewise_attention

        return triton_piecewise_attention(q, k, v, density=density, selected=selected, block_size=block_size, order=order,
                                          scale=scale, extra_kv=extra_kv)
    if density is not None:
        selected = _select(q, piecewise_statistics(k, v, block_size), density, block_size, scale)
    return _reference_piecewise(q, k, v, selected, block_size, scale, order, extra_kv)


def _reference_piecewise(q, k, v, selected, block_size: int, scale: float | None, order: int | None,
                         extra_kv: tuple | None = None) -> torch.Tensor:
    """order 0/1: piecewise; None: unselected blocks dropped (top-k). Extra keys join the exact logits."""
    B, N, H, D = q.shape
    dtype = _compute_dtype(q)
    tau = D**-0.5 if scale is None else scale
    qt, kt, vt = (x.transpose(1, 2).to(dtype) for x in (q, k, v))  # [B, H, N, D]
    key_block = torch.arange(N, device=q.device) // block_size
    nb = -(-N // block_size)
    M = 0
    if extra_kv is not None:
        k_extra, v_extra, kv_len = extra_kv
        M = k_extra.shape[1]
        ket, vet = (x.transpose(1, 2).to(device=q.device, dtype=dtype) for x in (k_extra, v_extra))  # [B, H, M, D]
        extra_ok = torch.ones(B, M, dtype=torch.bool, device=q.device)
        if kv_len is not None:
            extra_ok = torch.arange(M, device=q.device)[None, :] < kv_len.to(q.device)[:, None]
        extra_ok = extra_ok[:, None, None, :]  # [B, 1, 1, M]
    if order is not None:
        stats = piecewise_statistics(k, v, block_size)
        log_n = stats.counts.log()
        vbar = stats.vsum / stats.counts[:, None]
        h_per_token = stats.h.sum(2) / N  # H / T: [B, H, D, D]
    out = torch.empty(B, H, N, D, dtype=dtype, device=q.device)
    for first, rows in query_block_chunks(N, block_size, B * H * (N + M + nb)):
        sel = selected[:, :, torch.arange(rows.start, rows.stop, device=q.device) // block_size]  # [., ., r, nb]
        qr = qt[:, :, rows]
        logits = [(tau * qr @ kt.transpose(-1, -2)).masked_fill(~sel[..., key_block], -math.inf)]
        if M:
            logits.append((tau * qr @ ket.transpose(-1, -2)).masked_fill(~extra_ok, -math.inf))
        if order is not None:
            logits.append((tau * qr @ stats.kbar.transpose(-1, -2) + log_n).masked_fill(sel, -math.inf))
        w = masked_softmax(torch.cat(logits, dim=-1))
        o = w[..., :N] @ vt
        if M:
            o = o + w[..., N : N + M] @ vet
        if order is not None:
            w_summary = w[..., N + M :]
            o = o + w_summary @ vbar
            if order == 1:
                # sum_{J not sel} e^{tau q.kbar_J} tau n_J (H/T)^T q, normalised: the summary mass times tau (H/T)^T q.
                o = o + w_summary.sum(-1, keepdim=True) * tau * (qr @ h_per_token)
        out[:, :, rows] = o
    return out.transpose(1, 2).to(q.dtype)


def block_scores(q, stats: PiecewiseStatistics, block_size: int, scale: float | None) -> torch.Tensor:
    """[B, H, blocks, blocks] selection score ``tau * qbar_I . kbar_J + log(||H_J||_F + 1e-5)`` of
    every (query block, key block) pair (piecewise's and top-k's selection, pyramid's
    importance="score"); ``piecewise_triton.block_scores`` is the same on the statistics kernel's output."""
    D = q.shape[-1]
    tau = D**-0.5 if scale is None else scale
    qbar = blocked(q, block_size).sum(3) / stats.counts[:, None]
    bias = torch.log(torch.linalg.matrix_norm(stats.h) + NORM_EPS)  # [B, H, blocks]
    return tau * qbar @ stats.kbar.transpose(-1, -2) + bias[:, :, None, :]


def _select(q, stats: PiecewiseStatistics, density: float, block_size: int, scale: float | None) -> torch.Tensor:
    score = block_scores(q, stats, block_size, scale)
    nb = score.shape[-1]
    keep = max(1, math.floor(density * nb + 1e-9))  # the guard keeps e.g. 0.29 * 100 at 29
    top = score.topk(keep, dim=-1).indices
    return torch.zeros_like(score, dtype=torch.bool).scatter_(-1, top, True)


def _check_selection(q, density, selected, block_size: int) -> torch.Tensor | None:
    """Exactly one of density / selected; selected checked and moved to q's device."""
    if (density is None) == (selected is None):
        raise ValueError("give exactly one of density (the method's own selection) or selected (a bool block mask)")
    if density is not None:
        _check_density(density)
        return None
    B, N, H, _ = q.shape
    nb = -(-N // block_size)
    if not isinstance(selected, torch.Tensor) or selected.dtype != torch.bool:
        raise ValueError(f"selected must be a bool tensor [B|1, H|1, blocks, blocks], got {checks.describe(selected)}")
    if selected.dim() != 4 or selected.shape[0] not in (1, B) or selected.shape[1] not in (1, H) or tuple(selected.shape[2:]) != (nb, nb):
        raise ValueError(
            f"selected must have shape [{B} or 1, {H} or 1, {nb}, {nb}] ({N} tokens in blocks of {block_size}), "
            f"got {tuple(selected.shape)}"
        )
    return selected.to(q.device)


def _use_triton(backend: str, q: torch.Tensor, block_size: int) -> bool:
    """Does this call run the Triton path? "triton" insists (and checks what the kernels take),
    "auto" takes it on CUDA tensors when Triton is importable and the shapes are supported."""
    checks.choice("backend", backend, BACKENDS)
    if backend == "reference":
        return False
    supported = block_size in TRITON_BLOCK_SIZES and q.shape[-1] <= TRITON_MAX_HEAD_DIM
    if backend == "auto":
        return q.is_cuda and q.dtype in (torch.float16, torch.bfloat16, torch.float32) and supported and _triton_importable()
    _check_triton_inputs(q)
    if block_size not in TRITON_BLOCK_SIZES:
        raise ValueError(f"block_size must be one of {TRITON_BLOCK_SIZES} for the Triton backend, got {block_size}")
    if q.shape[-1] > TRITON_MAX_HEAD_DIM:
        raise ValueError(f"head_dim must be at most {TRITON_MAX_HEAD_DIM} for the Triton backend, got {q.shape[-1]}")
    if not _triton_importable():
        raise ValueError("backend='triton' needs Triton (pip install triton); use backend='auto' or 'reference'")
    return True


# What the Triton kernels take: tl.dot needs tiles of >= 16, and the statistics kernel keeps two
# block x block fp32 Gram matrices in registers, so blocks stop at 128; head dims up to 128 are
# zero-padded to the next power of two.
TRITON_BLOCK_SIZES = (16, 32, 64, 128)
TRITON_MAX_HEAD_DIM = 128


def _triton_importable() -> bool:
    try:
        from . import piecewise_triton  # noqa: F401
    except ImportError:
        return False
    return True


def blocked(x: torch.Tensor, block_size: int) -> torch.Tensor:
    """x [B, N, H, D] as [B, H, blocks, block_size, D] in the compute dtype, the short last block
    zero-padded."""
    B, N, H, D = x.shape
    nb = -(-N // block_size)
    x = x.transpose(1, 2).to(_compute_dtype(x))
    if nb * block_size != N:
        x = torch.cat([x, x.new_zeros(B, H, nb * block_size - N, D)], dim=2)
    return x.reshape(B, H, nb, block_size, D)


def block_counts(num_tokens: int, block_size: int, device, dtype) -> torch.Tensor:
    """Tokens in each block of a sequence of ``num_tokens``: [blocks]."""
    starts = torch.arange(0, num_tokens, block_size, device=device)
    return (torch.clamp(num_tokens - starts, max=block_size)).to(dtype)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def _check_block_size(block_size) -> None:
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")


def _check_density(density) -> None:
    if isinstance(density, bool) or not isinstance(density, (int, float)) or not 0.0 < density <= 1.0:
        raise ValueError(f"density must be a number in (0, 1], got {density!r}")


