"""Pyramid's per-call layout on the GPU: the level of every (query block, key block) pair from the
block importance, and the level LUT the attention kernel walks. Data, built per call, no host
synchronisation; ``pyramid.pyramid_levels`` and ``pyramid_triton.pyramid_lut`` call these on the
Triton path (their torch forms are the reference twins the tests compare against).

Levels (``levels_from_sorted``). torch sorts each importance row (descending, stable: equal
importance goes to the lower block index first); one program per row then walks the sorted row:
``before`` = the mass of the blocks ahead (an exclusive prefix sum), the tier = how many of the
four bounds it reaches (mode "mass": cumulative mass against ``thresholds``, the first
``min_full`` blocks exact; mode "fraction": the rank against block-count bounds), level 1, 2, 4, 8
for tiers 0..3 and 0 (skipped) for tier 4, scattered back to the blocks' own columns. It replaces
a chain of torch passes over [B, H, blocks, blocks] int64 tensors (gather, cumsum, four compares,
where, shift, scatter).

LUT (``level_lut``). Per row the key blocks grouped by level (1, 2, 4, 8, skipped last), ascending
inside a group, and the start of each group: a block's slot is its group's start plus the number
of blocks of its group before it (one prefix sum per group), so no sort is needed; the torch form
was a stable argsort of the group ranks.

Measured (H200, Wan2.1-14B 720p, 40 heads x 591 blocks, probes/pyramid_overhead.py): the level
assignment after the importance kernel 0.82 ms with the torch sort (1.9 ms in torch alone), the
LUT 0.19 ms (0.99 ms by torch's stable argsort).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .block_sparse_triton import interpreting


@triton.jit
def _levels_from_sorted(
    SORTED,  # fp32 [rows, blocks]: each row's importance, descending
    ORDER,  # int64 [rows, blocks]: the block of each sorted position
    LEVELS,  # int32 [rows, blocks] (out)
    num_blocks, t0, t1, t2, t3, min_full,
    MASS: tl.constexpr, BLOCKS_POW2: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    r = tl.arange(0, BLOCKS_POW2)
    ok = r < num_blocks
    mass = tl.load(SORTED + row * num_blocks + r, mask=ok, other=0.0)
    if MASS:
        before = tl.cumsum(mass, 0) - mass  # mass of the blocks ranked ahead
        tier = (before >= t0).to(tl.int32) + (before >= t1).to(tl.int32) + (before >= t2).to(tl.int32) + (before >= t3).to(tl.int32)
        tier = tl.where(r < min_full, 0, tier)
    else:
        rank = r.to(tl.float32)  # the bounds are block counts
        tier = (rank >= t0).to(tl.int32) + (rank >= t1).to(tl.int32) + (rank >= t2).to(tl.int32) + (rank >= t3).to(tl.int32)
    level = tl.where(tier == 0, 1, tl.where(tier == 1, 2, tl.where(tier == 2, 4, tl.where(tier == 3, 8, 0))))
    block = tl.load(ORDER + row * num_blocks + r, mask=ok, other=0)
    tl.store(LEVELS + row * num_blocks + block, level, mask=ok)


def levels_from_sorted(sorted_importance: torch.Tensor, order: torch.Tensor, *, mass: bool,
                       bounds: tuple[float, float, float, float], min_full: int = 0) -> torch.Tensor:
    """int32 levels [..., blocks] of rows sorted by importance (``sorted_importance``, fp32, and the
    block ``order``, both [..., blocks]). ``mass``: ``bounds`` are cumulative mass thresholds and the
    first ``min_full`` ranks are exact; else ``bounds`` are rank bounds (block counts)."""
    return levels_op(sorted_importance, order, mass, [float(b) for b in bounds], int(min_full))


@torch.library.custom_op("ditaccel::pyramid_levels_from_sorted", mutates_args=())
def levels_op(sorted_importance: torch.Tensor, order: torch.Tensor, mass: bool, bounds: list[float],
              min_full: int) -> torch.Tensor:
    """``levels_from_sorted`` as a custom op (torch.compile sees one opaque call)."""
    shape = sorted_importance.shape
    nb = shape[-1]
    sorted_importance = sorted_importance.reshape(-1, nb).float().contiguous()
    order = order.reshape(-1, nb).to(torch.int64).contiguous()
    levels = torch.empty(sorted_importance.shape, dtype=torch.int32, device=sorted_importance.device)
    if levels.numel():
        pow2 = triton.next_power_of_2(nb)
        _levels_from_sorted[(levels.shape[0],)](
            sorted_importance, order, levels, nb, *bounds, min_full, MASS=mass,
            BLOCKS_POW2=pow2, num_warps=1 if interpreting() else max(1, min(8, pow2 // 256)),
        )
    return levels.view(shape)


@levels_op.register_fake
def _(sorted_importance, order, mass, bounds, min_full):
    return sorted_importance.new_empty(sorted_importance.shape, dtype=torch.int32)


@triton.jit
def _level_lut(
    LEVELS,  # int [rows, blocks]
    OFFSETS,  # int32 [rows, 5] (out)
    INDICES,  # int32 [rows, blocks] (out)
    num_blocks,
    BLOCKS_POW2: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    j = tl.arange(0, BLOCKS_POW2)
    ok = j < num_blocks
    level = tl.load(LEVELS + row * num_blocks + j, mask=ok, other=0)
    # Group 0..3 for levels 1, 2, 4, 8 (other values as the torch form: 3 counts as 2, ...), 4 skipped.
    group = (level >= 2).to(tl.int32) + (level >= 4).to(tl.int32) + (level >= 8).to(tl.int32)
    group = tl.where(level == 0, 4, group)
    group = tl.where(ok, group, 5)
    slot = tl.zeros([BLOCKS_POW2], dtype=tl.int32)
    start = 0
    for g in tl.static_range(5):
        member = (group == g).to(tl.int32)
        slot = tl.where(group == g, start + tl.cumsum(member, 0) - 1, slot)
        tl.store(OFFSETS + row * 5 + g, start)
        start += tl.sum(member, 0)
    tl.store(INDICES + row * num_blocks + slot, j, mask=ok)


@torch.library.custom_op("ditaccel::pyramid_level_lut", mutates_args=())
def level_lut(levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(offsets int32 [..., 5], indices int32 [..., blocks]) of an int level map [..., blocks]:
    the layout of ``pyramid_triton.PyramidLUT``."""
    shape = levels.shape
    nb = shape[-1]
    flat = levels.reshape(-1, nb).contiguous()
    offsets = torch.empty(flat.shape[0], 5, dtype=torch.int32, device=levels.device)
    indices = torch.empty(flat.shape, dtype=torch.int32, device=levels.device)
    if flat.shape[0] and nb:
        pow2 = triton.next_power_of_2(nb)
        _level_lut[(flat.shape[0],)](flat, offsets, indices, nb, BLOCKS_POW2=pow2,
                                     num_warps=1 if interpreting() else max(1, min(8, pow2 // 256)))
    return offsets.view(*shape[:-1], 5), indices.view(shape)


@level_lut.register_fake
def _(levels):
    return levels.new_empty(*levels.shape[:-1], 5, dtype=torch.int32), levels.new_empty(levels.shape, dtype=torch.int32)


__all__ = ["level_lut", "levels_from_sorted", "levels_op"]
