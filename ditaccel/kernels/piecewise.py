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

Only the reference backend exists so far; ``backend="auto"`` runs it, ``"triton"`` raises.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .. import checks
from .attention import BACKENDS, _check_qkv
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
    backend: str = "auto",
) -> torch.Tensor:
    """Exact attention on the selected key blocks, Taylor approximation (``order`` 0 or 1) of every
    other block, one softmax per row. Give exactly one of ``density`` (the method's own selection,
    see ``piecewise_selection``) or ``selected`` (bool ``[B|1, H|1, blocks, blocks]``).
    q, k, v: [B, N, H, D]; returns [B, N, H, D] in q's dtype (accumulated in fp32)."""
    checks.choice("order", order, (0, 1))
    selected = _resolve_selection(q, k, v, density, selected, block_size, scale)
    _run_reference(backend, "piecewise_attention")
    return _reference_piecewise(q, k, v, selected, block_size, scale, order)


def topk_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    density: float | None = None,
    selected: torch.Tensor | None = None,
    block_size: int = 64,
    scale: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Attention over the selected key blocks only (piecewise's selection; the other blocks are
    dropped). Arguments as for ``piecewise_attention``. A query row whose ``selected`` row is all
    False attends nothing: its output is zero."""
    selected = _resolve_selection(q, k, v, density, selected, block_size, scale)
    _run_reference(backend, "topk_attention")
    return _reference_piecewise(q, k, v, selected, block_size, scale, None)


def _reference_piecewise(q, k, v, selected, block_size: int, scale: float | None, order: int | None) -> torch.Tensor:
    """order 0/1: piecewise; None: unselected blocks dropped (top-k)."""
    B, N, H, D = q.shape
    dtype = _compute_dtype(q)
    tau = D**-0.5 if scale is None else scale
    qt, kt, vt = (x.transpose(1, 2).to(dtype) for x in (q, k, v))  # [B, H, N, D]
    key_block = torch.arange(N, device=q.device) // block_size
    nb = -(-N // block_size)
    if order is not None:
        stats = piecewise_statistics(k, v, block_size)
        log_n = stats.counts.log()
        vbar = stats.vsum / stats.counts[:, None]
        h_per_token = stats.h.sum(2) / N  # H / T: [B, H, D, D]
    out = torch.empty(B, H, N, D, dtype=dtype, device=q.device)
    for first, rows in query_block_chunks(N, block_size, B * H * (N + nb)):
        sel = selected[:, :, torch.arange(rows.start, rows.stop, device=q.device) // block_size]  # [., ., r, nb]
        qr = qt[:, :, rows]
        exact = (tau * qr @ kt.transpose(-1, -2)).masked_fill(~sel[..., key_block], -math.inf)
        if order is None:
            out[:, :, rows] = masked_softmax(exact) @ vt
            continue
        summary = (tau * qr @ stats.kbar.transpose(-1, -2) + log_n).masked_fill(sel, -math.inf)
        w = masked_softmax(torch.cat([exact, summary], dim=-1))
        w_exact, w_summary = w[..., :N], w[..., N:]
        o = w_exact @ vt + w_summary @ vbar
        if order == 1:
            # sum_{J not sel} e^{tau q.kbar_J} tau n_J (H/T)^T q, normalised: the summary mass times tau (H/T)^T q.
            o = o + w_summary.sum(-1, keepdim=True) * tau * (qr @ h_per_token)
        out[:, :, rows] = o
    return out.transpose(1, 2).to(q.dtype)


def _select(q, stats: PiecewiseStatistics, density: float, block_size: int, scale: float | None) -> torch.Tensor:
    D = q.shape[-1]
    tau = D**-0.5 if scale is None else scale
    qbar = blocked(q, block_size).sum(3) / stats.counts[:, None]
    bias = torch.log(torch.linalg.matrix_norm(stats.h) + NORM_EPS)  # [B, H, blocks]
    score = tau * qbar @ stats.kbar.transpose(-1, -2) + bias[:, :, None, :]
    nb = score.shape[-1]
    keep = max(1, math.floor(density * nb + 1e-9))  # the guard keeps e.g. 0.29 * 100 at 29
    top = score.topk(keep, dim=-1).indices
    return torch.zeros_like(score, dtype=torch.bool).scatter_(-1, top, True)


def _resolve_selection(q, k, v, density, selected, block_size: int, scale) -> torch.Tensor:
    _check_qkv(q, k, v)
    _check_block_size(block_size)
    if (density is None) == (selected is None):
        raise ValueError("give exactly one of density (the method's own selection) or selected (a bool block mask)")
    if density is not None:
        _check_density(density)
        return _select(q, piecewise_statistics(k, v, block_size), density, block_size, scale)
    B, N, H, _ = q.shape
    nb = -(-N // block_size)
    if not isinstance(selected, torch.Tensor) or selected.dtype != torch.bool:
        raise ValueError(f"selected must be a bool tensor [B|1, H|1, blocks, blocks], got {_describe(selected)}")
    if selected.dim() != 4 or selected.shape[0] not in (1, B) or selected.shape[1] not in (1, H) or tuple(selected.shape[2:]) != (nb, nb):
        raise ValueError(
            f"selected must have shape [{B} or 1, {H} or 1, {nb}, {nb}] ({N} tokens in blocks of {block_size}), "
            f"got {tuple(selected.shape)}"
        )
    return selected.to(q.device)


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


def _run_reference(backend: str, name: str) -> None:
    checks.choice("backend", backend, BACKENDS)
    if backend == "triton":
        raise NotImplementedError(f"the Triton backend of {name} is not written yet; use backend='auto' or 'reference'")


def _describe(x) -> str:
    return f"{x.dtype} tensor" if isinstance(x, torch.Tensor) else type(x).__name__
