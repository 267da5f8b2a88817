"""Pyramid (PSA) attention: the functional layer and its PyTorch reference.

Each (query block, key block) pair gets a level l in {1, 2, 4, 8} or 0 (skipped). At level l the
queries of block I attend the keys and values of block J averaged over groups of l consecutive
tokens inside the block, each pooled key's logit raised by log(count), so its softmax weight is
count * e^{tau q.kbar} and the normaliser still counts the tokens it stands for (SPEC 4.4, notes
section 3). A short last group (end of a short block) is the mean of the tokens present and
carries log of their count. All levels share one softmax per query row.

``pyramid_levels`` assigns the levels per call from an importance estimate (the paper's sampled
tokens, or piecewise's block score with ``importance="score"``), by cumulative importance mass
(mode "mass") or by fixed fractions of blocks per level (mode "fraction").

q, k, v are ``[B, N, H, D]`` in canonical order; blocks are consecutive runs of ``block_size``
tokens, the last one may be short.

Extra keys (``extra_kv=(k_extra, v_extra, kv_len)``): keys and values ``[B, M, H, D]`` that every
query row attends exactly (level 1), in the same softmax as the pyramid levels: a joint-attention
model's text tokens, which never enter level assignment. ``kv_len`` (int ``[B]`` or None) ends
sample b's extra keys at ``kv_len[b]`` (padded text; values are clamped to [0, M]). The text
queries themselves are not handled here: the caller attends them (densely) on its own.

Backends: ``"triton"`` (pyramid_triton.py: pooled levels in one buffer, a LUT grouped by level,
one pipelined loop per level; CUDA tensors, or CPU ones under TRITON_INTERPRET=1), ``"reference"``
(plain PyTorch, below), ``"auto"`` (Triton on CUDA when importable and the block size and head dim
suit it, else the reference). ``pyramid_attention`` validates its arguments (the level values cost
one host synchronisation); ``pyramid_forward`` is the runtime's entry: no validation, and with the
Triton backend no host synchronisation at all.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import torch

from .. import checks
from .attention import BACKENDS, _check_qkv, _check_triton_inputs, _triton_usable
from .piecewise import _check_block_size, _compute_dtype, block_scores, piecewise_statistics
from .piecewise import _use_triton as _piecewise_use_triton
from .reference import masked_softmax, query_block_chunks

LEVELS = (0, 1, 2, 4, 8)  # 0 = skip
# How a call estimates the (query block, key block) importance the levels are assigned from:
# "sampled" (the paper's: max logits of sampled tokens) or "score" (piecewise's block score
# tau qbar.kbar + log ||H_J||, softmax over key blocks; no samples, one statistics pass).
IMPORTANCE = ("sampled", "score")

# Presets of the PSA repository (ziplab/Pyramid-Sparse-Attention, configs/attention_config.yaml,
# as summarised in /work/shared/notes/sparse_methods.md section 3.2 and SPEC 4.4).
# Mode "mass" ("thresholdbound"), Wan2.1-14B psa_balanced: with the blocks sorted by importance,
# those carrying the first 40% of the mass are exact, the next 10% at level 2, the next 10% at
# level 4, the next 20% at level 8, the last 20% skipped. Upper bounds for levels 1, 2, 4, 8:
MASS_THRESHOLDS = (0.4, 0.5, 0.6, 0.8)
# ... and at least this fraction of each row's blocks exact (min_full_attn_ratio).
MIN_FULL_FRACTION = 0.06
# Mode "fraction" ("topk"), the PSAConfig default and the CogVideoX1.5-5B preset: 10% of the blocks
# exact, 5% at level 2, none at level 4, 20% at level 8, 65% skipped -> about 15% of dense compute.
BLOCK_FRACTIONS = (0.10, 0.05, 0.0, 0.20)
MODES = ("mass", "fraction")


class PooledKV(NamedTuple):
    """Keys and values pooled inside key blocks, in fp32 (fp64 for fp64 inputs)."""

    k: torch.Tensor  # [B, groups, H, D] mean key of each group
    v: torch.Tensor  # [B, groups, H, D] mean value of each group
    log_count: torch.Tensor  # [groups] log of the tokens in the group (log level for a full group)
    block: torch.Tensor  # long [groups] the key block each group belongs to


def pyramid_pool(k: torch.Tensor, v: torch.Tensor, level: int, block_size: int) -> PooledKV:
    """K and V of each key block averaged over groups of ``level`` consecutive tokens inside the
    block (groups never straddle blocks); groups are listed in sequence order."""
    _check_block_size(block_size)
    if isinstance(level, bool) or not isinstance(level, int) or level < 1:
        raise ValueError(f"level must be a positive int, got {level!r}")
    if k.dim() != 4 or v.shape != k.shape:
        raise ValueError(f"k and v must both be [batch, seq, heads, head_dim]; got {tuple(k.shape)}, {tuple(v.shape)}")
    B, N, H, D = k.shape
    per_block = -(-block_size // level)
    tok = torch.arange(N, device=k.device)
    # Group ids run 0, 1, ... without gaps: every block but the last is full, and the last one's
    # groups are its first ceil(tokens / level). Their number is a Python int (no torch.unique,
    # whose data-dependent size torch.compile cannot trace).
    group = (tok // block_size) * per_block + (tok % block_size) // level
    full, n_last = divmod(N, block_size)
    groups = full * per_block + -(-n_last // level)
    dtype = _compute_dtype(k)
    counts = torch.zeros(groups, dtype=dtype, device=k.device).index_add_(0, group, torch.ones(N, dtype=dtype, device=k.device))

    def mean(x):
        sums = x.new_zeros(B, groups, H, D, dtype=dtype).index_add_(1, group, x.to(dtype))
        return sums / counts[None, :, None, None]

    return PooledKV(mean(k), mean(v), counts.log(), torch.arange(groups, device=k.device) // per_block)


def pyramid_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    levels: torch.Tensor,
    block_size: int = 128,
    scale: float | None = None,
    extra_kv: tuple | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Attention where query block I sees key block J pooled at level ``levels[b, h, I, J]``.

    levels: int ``[B|1, H|1, blocks, blocks]`` with values in {0, 1, 2, 4, 8} (0 = skip).
    q, k, v: [B, N, H, D]; returns [B, N, H, D] in q's dtype (accumulated in fp32). A query block
    whose levels are all 0 (and no extra keys) attends nothing: its output is zero.
    extra_kv: optional ``(k_extra, v_extra, kv_len)``, keys and values [B, M, H, D] every query row
    attends exactly, the first ``kv_len[b]`` of them for sample b (kv_len: int [B] or None = all M).
    backend: "auto", "triton" or "reference" (module docstring)."""
    _check_qkv(q, k, v)
    _check_block_size(block_size)
    levels = _check_levels(levels, q, block_size)
    extra_kv = checks.extra_kv(extra_kv, q)
    checks.choice("backend", backend, BACKENDS)
    return pyramid_forward(q, k, v, levels=levels, block_size=block_size, scale=scale, extra_kv=extra_kv, backend=backend)


def pyramid_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    levels: torch.Tensor,
    block_size: int,
    scale: float | None,
    extra_kv: tuple | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """``pyramid_attention`` without argument validation, for the runtime: the caller guarantees
    the shapes and the level values. With the Triton backend (and ``levels``, ``kv_len`` on q's
    device) it never synchronises with the host, so it can run inside CUDA graphs and
    torch.compile(fullgraph=True)."""
    if _use_triton(backend, q, block_size):
        from .pyramid_triton import triton_pyramid_attention  # imported lazily: Triton is optional

        return triton_pyramid_attention(q, k, v, levels, block_size, scale, extra_kv)
    return _reference_pyramid(q, k, v, levels, block_size, scale, extra_kv)


def _use_triton(backend: str, q: torch.Tensor, block_size: int) -> bool:
    if backend == "reference":
        return False
    if backend == "auto":
        return (_triton_usable(q) and _triton_block_size_ok(block_size) and q.shape[-1] <= 128
                and q.dtype in (torch.float16, torch.bfloat16, torch.float32))
    if backend != "triton":
        checks.choice("backend", backend, BACKENDS)
    _check_triton_inputs(q)
    if not _triton_block_size_ok(block_size):
        raise ValueError(f"block_size must be a power of two >= 16 for the Triton backend, got {block_size}")
    if q.shape[-1] > 128:
        raise ValueError(f"head_dim must be <= 128 for the Triton backend, got {q.shape[-1]}")
    return True


def _triton_block_size_ok(block_size: int) -> bool:
    return block_size >= 16 and block_size & (block_size - 1) == 0


def _reference_pyramid(q, k, v, levels, block_size: int, scale: float | None, extra_kv) -> torch.Tensor:
    B, N, H, D = q.shape
    dtype = _compute_dtype(q)
    tau = D**-0.5 if scale is None else scale
    levels = levels.to(q.device)
    qt = q.transpose(1, 2).to(dtype)
    out = torch.zeros(B, H, N, D, dtype=dtype, device=q.device)
    # Skip the levels no block uses (a host sync; traced graphs keep them all).
    tracing = torch.compiler.is_compiling()
    pools = [(lv, pyramid_pool(k, v, lv, block_size)) for lv in LEVELS[1:] if tracing or bool((levels == lv).any())]
    extra = None
    if extra_kv is not None and extra_kv[0].shape[1] > 0:
        kx, vx, kv_len = extra_kv
        M = kx.shape[1]
        extra_bias = torch.zeros(B, 1, 1, M, dtype=dtype, device=q.device)
        if kv_len is not None:  # padded extra keys: -inf
            pad = torch.arange(M, device=q.device)[None, :] >= kv_len.to(q.device)[:, None]
            extra_bias = extra_bias.masked_fill(pad[:, None, None, :], -math.inf)
        extra = (kx.permute(0, 2, 3, 1).to(dtype), vx.transpose(1, 2).to(dtype), extra_bias)
    if not pools and extra is None:
        return out.transpose(1, 2).to(q.dtype)
    values = [p.v.transpose(1, 2) for _, p in pools] + ([extra[1]] if extra else [])
    values = torch.cat(values, dim=2)  # every level's pooled values, then the extra ones: [B, H, keys, D]
    for _, rows in query_block_chunks(N, block_size, B * H * values.shape[2]):
        lv_rows = levels[:, :, torch.arange(rows.start, rows.stop, device=q.device) // block_size]  # [., ., r, blocks]
        logits = [
            (tau * qt[:, :, rows] @ p.k.permute(0, 2, 3, 1) + p.log_count).masked_fill(lv_rows[..., p.block] != lv, -math.inf)
            for lv, p in pools
        ]
        if extra is not None:
            logits.append(tau * qt[:, :, rows] @ extra[0] + extra[2])
        out[:, :, rows] = masked_softmax(torch.cat(logits, dim=-1)) @ values
    return out.transpose(1, 2).to(q.dtype)


def pyramid_levels(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor | None = None,
    *,
    block_size: int = 128,
    mode: str = "mass",
    thresholds: tuple[float, float, float, float] = MASS_THRESHOLDS,
    min_full_fraction: float = MIN_FULL_FRACTION,
    fractions: tuple[float, float, float, float] = BLOCK_FRACTIONS,
    samples: int | None = None,
    scale: float | None = None,
    generator: torch.Generator | None = None,
    importance: str = "sampled",
) -> torch.Tensor:
    """int32 ``[B, H, blocks, blocks]`` levels in {0, 1, 2, 4, 8} for ``pyramid_attention``.

    Importance, ``importance="sampled"`` (PSA): ``samples`` query tokens per query block and key
    tokens per key block (default block_size // 4, the same positions in every block: evenly
    spaced, or random when a ``generator`` is given, as in the paper); per sampled query row the max
    logit inside each key block, ``exp(max - row max)``, the max over the block's sampled rows,
    normalised to sum 1 per query block. ``importance="score"`` (needs ``v``): the softmax over key
    blocks of piecewise's selection score ``tau * qbar_I . kbar_J + log(||H_J||_F + 1e-5)``, from
    block means and one statistics pass instead of sampled logits (benchmarks/fidelity.py compares
    the two). Then per query block, key blocks sorted by importance:

    - mode "mass": a block takes the level of the interval its preceding cumulative mass falls in,
      ``thresholds`` being the upper bounds for levels 1, 2, 4, 8 (beyond the last: skipped), and at
      least ``ceil(min_full_fraction * blocks)`` blocks exact. The block holding the most mass is
      always exact.
    - mode "fraction": the first ``fractions[0]`` of the blocks exact (at least one), the next
      ``fractions[1]`` at level 2, then 4, then 8, the rest skipped (rounded on cumulative counts).
    """
    if q.dim() != 4 or k.shape != q.shape:
        raise ValueError(f"q and k must both be [batch, seq, heads, head_dim]; got {tuple(q.shape)}, {tuple(k.shape)}")
    _check_block_size(block_size)
    checks.choice("mode", mode, MODES)
    check_importance(importance, samples, block_size, generator)
    thresholds = check_level_fractions("thresholds", thresholds, cumulative=True)
    fractions = check_level_fractions("fractions", fractions, cumulative=False)
    checks.number_in("min_full_fraction", min_full_fraction, 0.0, 1.0)
    if importance == "score":
        if v is None or v.shape != q.shape:
            raise ValueError("importance='score' needs v, shaped as q ([batch, seq, heads, head_dim]): "
                             f"got {None if v is None else tuple(v.shape)}")
        weights = score_importance(q, k, v, block_size, scale)
    else:
        samples = max(1, block_size // 4) if samples is None else samples
        weights = _block_importance(q, k, block_size, samples, scale, generator)  # [B, H, nb, nb]
    return _assign_levels(weights, mode, thresholds, min_full_fraction, fractions, use_triton=_triton_usable(q))


def check_importance(importance: str, samples, block_size: int, generator=None) -> None:
    """The importance estimate and its sampling arguments (``pyramid_levels``, ``Pyramid``): samples
    an int in [1, block_size] or None (block_size // 4), and only with importance="sampled"."""
    checks.choice("importance", importance, IMPORTANCE)
    if importance == "score" and (samples is not None or generator is not None):
        raise ValueError("samples and generator apply to importance='sampled' only; importance='score' samples nothing")
    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int) or not 1 <= samples <= block_size):
        raise ValueError(f"samples must be None or an int in [1, block_size={block_size}], got {samples!r}")


def _assign_levels(importance: torch.Tensor, mode: str, thresholds, min_full_fraction: float, fractions,
                   use_triton: bool) -> torch.Tensor:
    """int32 levels of an importance map [..., blocks] (pyramid_levels' rules). Rows are sorted
    stably (equal importance: the lower block index ranks first); ``use_triton``: the tiers and
    the scatter back in one kernel (pyramid_layout_triton.py), else the torch reference."""
    nb = importance.shape[-1]
    if mode == "mass":
        bounds, min_full = thresholds, max(1, math.ceil(min_full_fraction * nb))
    else:
        counts = [round(c * nb) for c in itertools.accumulate(fractions)]
        counts[0] = max(1, counts[0])
        bounds, min_full = tuple(max(c, counts[0]) for c in counts), 0
    ranked, order = importance.sort(dim=-1, descending=True, stable=True)
    if use_triton:
        from .pyramid_layout_triton import levels_from_sorted

        return levels_from_sorted(ranked, order, mass=mode == "mass", bounds=bounds, min_full=min_full)
    rank = torch.arange(nb, device=importance.device)
    if mode == "mass":
        before = ranked.cumsum(-1) - ranked  # the mass of the blocks ranked ahead
        tier = sum((before >= t).long() for t in bounds)  # 0..4 -> levels 1, 2, 4, 8, skip
        tier = torch.where(rank < min_full, 0, tier)
    else:
        tier = sum((rank >= b).long() for b in bounds).expand_as(order)
    # Levels 1, 2, 4, 8 for tiers 0..3, 0 for tier 4 (arithmetic: no host-made tensor, no sync).
    level = torch.where(tier < 4, torch.bitwise_left_shift(torch.ones_like(tier), tier.clamp(max=3)), 0).to(torch.int32)
    return torch.empty_like(order, dtype=torch.int32).scatter_(-1, order, level)


def sample_rows(num_tokens: int, block_size: int, samples: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
    """long [blocks, samples]: the token rows the importance pass samples in each block, the same
    positions in every block (centres of equal strata, or random ones drawn with ``generator``)."""
    if generator is None:
        pos = (torch.arange(samples, device=device) * block_size + block_size // 2) // samples
    else:
        pos = torch.randperm(block_size, generator=generator)[:samples].sort().values.to(device)  # one small copy
    nb = -(-num_tokens // block_size)
    counts = torch.clamp(num_tokens - torch.arange(nb, device=device) * block_size, max=block_size)
    # A short last block samples the same relative positions, squeezed into the tokens it has.
    return (torch.arange(nb, device=device) * block_size)[:, None] + pos[None, :] * counts[:, None] // block_size


def _block_importance(q, k, block_size: int, samples: int, scale, generator, use_triton: bool | None = None) -> torch.Tensor:
    """[B, H, blocks, blocks] importance (pyramid_levels' docstring). ``use_triton``: None picks the
    Triton kernel on CUDA when usable (one pass, a few launches); False the chunked torch version."""
    B, N, H, D = q.shape
    tau = D**-0.5 if scale is None else scale
    index = sample_rows(N, block_size, samples, q.device, generator)
    nb = index.shape[0]
    if use_triton is None:
        use_triton = (_triton_usable(q) and q.dtype in (torch.float16, torch.bfloat16, torch.float32) and D <= 128
                      and samples <= 128 and tau > 0)
    if use_triton:
        from .pyramid_triton import triton_block_importance

        return triton_block_importance(q, k, index, tau)
    dtype = _compute_dtype(q)
    qs = q.transpose(1, 2).to(dtype)[:, :, index]  # [B, H, nb, samples, D]
    ks = k.transpose(1, 2).to(dtype)[:, :, index]
    importance = torch.empty(B, H, nb, nb, dtype=dtype, device=q.device)
    per_chunk = max(1, 2**26 // (B * H * samples * samples * nb))
    for start in range(0, nb, per_chunk):
        sl = slice(start, min(start + per_chunk, nb))
        logits = tau * torch.einsum("bhisd,bhjtd->bhisjt", qs[:, :, sl], ks)
        block_max = logits.amax(-1)  # [B, H, i, samples, nb]
        rel = torch.exp(block_max - block_max.amax(-1, keepdim=True)).amax(3)  # [B, H, i, nb]
        importance[:, :, sl] = rel / rel.sum(-1, keepdim=True)
    return importance


def score_importance(q, k, v, block_size: int, scale, use_triton: bool | None = None) -> torch.Tensor:
    """[B, H, blocks, blocks] softmax over key blocks of ``tau * qbar_I . kbar_J + log(||H_J||_F +
    1e-5)`` (pyramid_levels' importance="score"). ``use_triton``: None takes piecewise's statistics
    kernel on CUDA when usable (no host synchronisation); False the PyTorch statistics."""
    B, N, H, D = q.shape
    tau = D**-0.5 if scale is None else scale
    if use_triton is None:
        use_triton = _piecewise_use_triton("auto", q, block_size)
    if use_triton:
        from .piecewise_triton import _kernel_inputs, block_scores as kernel_block_scores, piecewise_statistics_op

        qbar, kbar, hnorm, *_ = piecewise_statistics_op(*_kernel_inputs(q, k, v), block_size, False)
        score = kernel_block_scores(qbar, kbar, hnorm, tau)
        return torch.softmax(score, dim=-1).view(B, H, *score.shape[1:])
    return torch.softmax(block_scores(q, piecewise_statistics(k, v, block_size), block_size, tau), dim=-1)


def _check_levels(levels, q: torch.Tensor, block_size: int) -> torch.Tensor:
    B, N, H, _ = q.shape
    nb = -(-N // block_size)
    if not isinstance(levels, torch.Tensor) or levels.dtype.is_floating_point or levels.dtype.is_complex or levels.dtype == torch.bool:
        kind = f"{levels.dtype} tensor" if isinstance(levels, torch.Tensor) else type(levels).__name__
        raise ValueError(f"levels must be an integer tensor [B|1, H|1, blocks, blocks] with values in {list(LEVELS)}, got {kind}")
    if levels.dim() != 4 or levels.shape[0] not in (1, B) or levels.shape[1] not in (1, H) or tuple(levels.shape[2:]) != (nb, nb):
        raise ValueError(
            f"levels must have shape [{B} or 1, {H} or 1, {nb}, {nb}] ({N} tokens in blocks of {block_size}), "
            f"got {tuple(levels.shape)}"
        )
    levels = levels.to(q.device)
    if torch.compiler.is_compiling():
        return levels  # a traced graph cannot raise on tensor values (and the check would sync)
    bad = ~torch.isin(levels, torch.tensor(LEVELS, dtype=levels.dtype, device=levels.device))
    if bool(bad.any()):
        raise ValueError(f"levels must take values in {list(LEVELS)} (0 = skip), got {sorted(set(levels[bad].tolist()))}")
    return levels


def check_level_fractions(name: str, value, *, cumulative: bool) -> tuple[float, ...]:
    """The 4 per-level values (levels 1, 2, 4, 8) of ``thresholds`` (cumulative: non-decreasing mass
    bounds) or ``fractions`` (block shares summing to at most 1), as floats; else a ValueError."""
    ok = isinstance(value, (tuple, list)) and len(value) == 4
    ok = ok and all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0.0 <= x <= 1.0 for x in value)
    if ok and cumulative:
        ok = all(a <= b for a, b in zip(value, value[1:]))
    if ok and not cumulative:
        ok = sum(value) <= 1.0 + 1e-9
    if not ok:
        rule = "non-decreasing cumulative mass bounds in [0, 1]" if cumulative else "block fractions in [0, 1] summing to at most 1"
        raise ValueError(f"{name} must be 4 {rule}, one per level (1, 2, 4, 8), got {value!r}")
    return tuple(float(x) for x in value)
