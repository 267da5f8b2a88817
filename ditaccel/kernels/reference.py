"""Reference backend: exactly the attention a BlockLayout defines, in plain PyTorch.

It expands the layout into a token mask one chunk of query blocks at a time and calls SDPA on
that chunk against all keys, so a large layout never needs a sequence x sequence matrix (a
75k-token call on a GPU needs a few hundred MB); small layouts keep their expanded mask. It is
the oracle for the Triton kernels and the CPU fallback.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F

from .layout import BlockLayout


def layout_token_mask(layout: BlockLayout, q_blocks: slice, group: int | None = None) -> torch.Tensor:
    """bool [G, rows, seq_len]: which keys each query row of ``q_blocks`` attends (before the
    per-batch key length). ``group`` selects one LUT row group."""
    bs = layout.block_size
    idx = layout.kv_indices[:, q_blocks].long()
    flags = layout.kv_partial[:, q_blocks]
    if group is not None:
        idx, flags = idx[group : group + 1], flags[group : group + 1]
    G, c, _ = idx.shape
    valid = idx >= 0
    nb = layout.num_blocks
    col = torch.where(valid, idx, nb)  # unused LUT slots land in a spare column
    block_on = torch.zeros(G, c, nb + 1, dtype=torch.bool, device=idx.device).scatter_(2, col, True)[..., :nb]
    partial = torch.zeros(G, c, nb + 1, dtype=torch.bool, device=idx.device)
    partial = partial.scatter_(2, torch.where(valid & (flags > 0), idx, nb), True)[..., :nb]
    rows = torch.arange(q_blocks.start * bs, q_blocks.start * bs + c * bs, device=idx.device)
    lo, hi, kc = layout.q_lo[rows].long(), layout.q_hi[rows].long(), layout.k_coord.long()
    box = ((lo[:, None, :] <= kc[None]) & (kc[None] <= hi[:, None, :])).all(-1)  # [rows, n]
    on = block_on.repeat_interleave(bs, dim=1).repeat_interleave(bs, dim=2)
    part = partial.repeat_interleave(bs, dim=1).repeat_interleave(bs, dim=2)
    return on & (~part | box[None])


# Expanded token masks of small layouts (the built-in model's 4,096 tokens: 16 MB), kept for the
# layout's lifetime: as the CPU fallback this runs in every sparse layer of every step, and
# expanding the LUT each time cost about as much as the attention itself.
_SMALL_MASK_ELEMS = 2**26
_small_masks: "weakref.WeakKeyDictionary[BlockLayout, torch.Tensor]" = weakref.WeakKeyDictionary()


def _small_layout_mask(layout: BlockLayout) -> torch.Tensor | None:
    if layout.kv_indices.shape[0] * layout.seq_len**2 > _SMALL_MASK_ELEMS:
        return None
    if torch.compiler.is_compiling():
        return None  # dynamo cannot trace the weak-keyed cache; inside a graph the mask is built per chunk
    if layout not in _small_masks:
        _small_masks[layout] = layout_token_mask(layout, slice(0, layout.num_blocks))
    return _small_masks[layout]


def reference_block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: BlockLayout,
    kv_len: torch.Tensor | None = None,
    scale: float | None = None,
    max_chunk_elems: int = 2**27,
) -> torch.Tensor:
    """q, k, v: [B, N, H, D] in canonical order. kv_len: int [B], keys at positions >= kv_len[b]
    are ignored (padded text). Returns [B, N, H, D].

    N is the layout's seq_len, or less by under one block: the missing tail tokens are absent
    (zero-padded here, masked as keys and dropped from the output), as in the Triton kernel."""
    B, N, H, D = q.shape
    L = layout.seq_len
    if not L - layout.block_size < N <= L:
        raise ValueError(f"sequence length {N} must be the layout's {L} tokens, or less by under one block ({layout.block_size})")
    if N < L:
        pad = lambda x: torch.cat([x, x.new_zeros(B, L - N, H, D)], dim=1)  # noqa: E731
        tail_len = torch.full((B,), N, dtype=torch.long, device=q.device)
        kv_len = tail_len if kv_len is None else torch.minimum(kv_len.to(q.device).long(), tail_len)
        return reference_block_sparse_attention(pad(q), pad(k), pad(v), layout, kv_len, scale, max_chunk_elems)[:, :N]
    G = layout.kv_indices.shape[0]
    bs = layout.block_size
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))  # [B, H, N, D]
    out = torch.empty_like(qt)
    key_ok = None
    if kv_len is not None:
        key_ok = torch.arange(N, device=q.device)[None, :] < kv_len.to(q.device).long()[:, None]  # [B, N]
    blocks_per_chunk = max(1, max_chunk_elems // (bs * N * max(B * H, G)))
    whole_mask = _small_layout_mask(layout)
    for start in range(0, layout.num_blocks, blocks_per_chunk):
        sl = slice(start, min(start + blocks_per_chunk, layout.num_blocks))
        rows = slice(sl.start * bs, sl.stop * bs)
        mask = whole_mask[:, rows] if whole_mask is not None else layout_token_mask(layout, sl)  # [G, rows, N]
        if G == 1:
            mask = mask[None]  # [1, 1, rows, N]
        elif G == H:
            mask = mask[None]  # [1, H, rows, N]
        elif G == B * H:
            mask = mask.view(B, H, *mask.shape[1:])
        else:
            raise ValueError(f"layout has {G} LUT groups; expected 1, heads ({H}) or batch*heads ({B * H})")
        if key_ok is not None:
            mask = mask & key_ok[:, None, None, :]
        o = F.scaled_dot_product_attention(qt[:, :, rows], kt, vt, attn_mask=mask, scale=scale)
        out[:, :, rows] = torch.nan_to_num(o, nan=0.0)
    return out.transpose(1, 2)


# Helpers shared by the reference backends of the dynamic methods (piecewise, top-k, pyramid).


def query_block_chunks(num_tokens: int, block_size: int, row_elems: int, max_chunk_elems: int = 2**27):
    """Yield (first query block, row slice) chunks of whole query blocks, each holding at most
    about ``max_chunk_elems`` logits when one query row costs ``row_elems``."""
    num_blocks = -(-num_tokens // block_size)
    per_chunk = max(1, max_chunk_elems // max(1, block_size * row_elems))
    for start in range(0, num_blocks, per_chunk):
        stop = min(start + per_chunk, num_blocks)
        yield start, slice(start * block_size, min(stop * block_size, num_tokens))


def masked_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension, ``-inf`` entries excluded. One max per row over every
    entry the row attends keeps exp() in range whatever mixture of exact and summary logits the row
    holds; a row that attends nothing gets all-zero weights (so a zero output), not NaN."""
    m = logits.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(logits - m)
    total = p.sum(dim=-1, keepdim=True)
    return p / torch.where(total > 0, total, torch.ones_like(total))
