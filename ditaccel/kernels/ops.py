"""The Triton kernels as torch custom ops, so ``torch.compile`` (also diffusers'
``compile_repeated_blocks``) keeps them in the graph as opaque calls with no graph break.

The op takes the layout's tensors, not the BlockLayout object: custom ops only accept tensors and
scalars, and a layout is just a bundle of them (its LUT is built once per grid and reused).
"""

from __future__ import annotations

import math
import weakref

import torch

from .block_sparse_triton import (
    SUPPORTED_HEAD_DIMS,
    block_sparse_attention_fwd,
    block_sparse_attention_placed,
    box_readable,
    tma_usable,
)
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
    partial_dims: int,
    text_blocks: int = 0,
) -> torch.Tensor:
    """Block-sparse attention of [B, N, H, D] q, k, v over a LUT (its last ``text_blocks`` blocks
    joint attention's text); returns a new contiguous [B, N, H, D] tensor."""
    return block_sparse_attention_fwd(
        q, k, v, kv_counts, kv_indices, kv_partial, q_lo, q_hi, k_coord, kv_len, scale, block_size, has_partial=partial_dims,
        text_blocks=text_blocks,
    )


@block_sparse_attention_op.register_fake
def _(q, k, v, kv_counts, kv_indices, kv_partial, q_lo, q_hi, k_coord, kv_len, scale, block_size, partial_dims, text_blocks=0):
    return q.new_empty(q.shape)


@torch.library.custom_op("ditaccel::block_sparse_attention_model_order", mutates_args=())
def model_order_attention_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_counts: torch.Tensor,
    kv_counts_video: torch.Tensor,
    kv_indices: torch.Tensor,
    kv_partial: torch.Tensor,
    q_lo: torch.Tensor,
    q_hi: torch.Tensor,
    k_coord: torch.Tensor,
    kv_len: torch.Tensor | None,
    text_order: torch.Tensor | None,
    canon_to_raster: torch.Tensor | None,
    raster_to_canon: torch.Tensor | None,
    scale: float,
    block_size: int,
    partial_dims: int,
    grid: list[int],
    tile: list[int],
    video_start: int,
    video_blocks: int,
    text_start: int,
    text_len: int,
) -> torch.Tensor:
    """Block-sparse attention of q, k, v in the model's token order ([B, S, H, D]: the latent grid's
    raster tokens from ``video_start``, ``text_len`` text tokens from ``text_start``); returns the
    output in the same order. How the kernel gets at the canonical order: raster layouts (no
    permutation given) are read as they are. Tiled layouts take one of two paths: "box" reads keys
    and values tile by tile as 3-D boxes of the grid, in place, gathers only the queries and writes
    the output back row by row (``tile`` given, tensor descriptors available); "gather" copies q, k,
    v into canonical order and the output back (``canon_to_raster`` / ``raster_to_canon``), the
    only path for dilated windows. Neither wins everywhere on an H100 (see TOKEN_PATH), so on a GPU
    the first call of each shape times both and keeps the faster. ``text_order`` (int [B,
    text_len]) puts valid text first; ``kv_len`` then cuts the padding off (canonical positions)."""
    B, S, H, D = q.shape
    n_video = math.prod(grid)
    lut = (kv_counts, kv_counts_video, kv_indices, kv_partial, q_lo, q_hi, k_coord)

    video = slice(video_start, video_start + n_video)

    def run(path: str) -> torch.Tensor:
        out = torch.empty((B, S, H, D), dtype=q.dtype, device=q.device)
        common = dict(video_blocks=video_blocks, has_partial=partial_dims, kv_len_covers_video=True)  # kv_len = video + valid text
        text = text_index = None
        if text_len:
            if text_order is None:
                text = (q, k, v, out, text_start, text_len)
            else:
                text_index = text_order[:, :, None, None].expand(B, text_len, H, D)
                qt, kt, vt = (torch.gather(x[:, text_start : text_start + text_len], 1, text_index) for x in (q, k, v))
                text = (qt, kt, vt, torch.empty_like(qt), 0, text_len)

        def canonical(i: int) -> torch.Tensor:
            """q, k or v (i = 0, 1, 2) as one buffer in canonical order: the tiled video, then the
            text (valid first); the text's padding to whole blocks is the buffer's absent tail."""
            x = (q, k, v)[i]
            canon_len = canon_to_raster.shape[0]
            buf = x.new_empty(B, canon_len + text_len, H, D)
            _gather(x[:, video], canon_to_raster, out=buf[:, :canon_len])
            if text:
                buf[:, canon_len:] = text[i][:, text[4] : text[4] + text_len]
            return buf

        if path == "rows":  # raster order: canonical up to the absent end padding
            block_sparse_attention_placed(q, k, v, out, lut, kv_len, scale, block_size, video_start=video_start,
                                          video_len=n_video, box=None, text=text, **common)
        elif path == "box":
            # Text queries follow the video's in the same copy, so every program loads its queries
            # the same way.
            block_sparse_attention_placed(q, k, v, out, lut, kv_len, scale, block_size, video_start=video_start,
                                          video_len=n_video, box=(tuple(grid), tuple(tile), canonical(0)), text=text, **common)
        else:
            # One canonical buffer per tensor, text included, read as rows: every block is then one
            # kind of load, as on tensors tiled beforehand.
            qc, kc, vc = (canonical(i) for i in range(3))
            oc = torch.empty_like(qc)
            canon_len = canon_to_raster.shape[0]
            rows_lut = (kv_counts, kv_counts, *lut[2:])
            block_sparse_attention_placed(qc, kc, vc, oc, rows_lut, kv_len, scale, block_size, video_start=0,
                                          video_len=qc.shape[1], video_blocks=kv_counts.shape[-1], box=None, text=None,
                                          has_partial=partial_dims, kv_len_covers_video=True,
                                          text_blocks=kv_counts.shape[-1] - video_blocks)
            out[:, video] = _gather(oc[:, :canon_len], raster_to_canon)
            if text:
                text[3][:, text[4] : text[4] + text_len] = oc[:, canon_len:]
        if text_index is not None:
            out[:, text_start : text_start + text_len].scatter_(1, text_index, text[3])
        return out

    if canon_to_raster is None:
        return run("rows")
    if not (tile and tma_usable(q) and all(box_readable(x, video_start) for x in (k, v))):
        return run("gather")
    if TOKEN_PATH != "auto":
        return run(TOKEN_PATH)
    key = (tuple(grid), tuple(tile), video_start, text_start, text_len, text_order is None, tuple(q.shape), q.dtype,
           str(q.device), tuple(k.stride()), tuple(v.stride()))
    if key not in _chosen_paths:
        _chosen_paths[key] = _faster(run, ("box", "gather")) if q.is_cuda else "box"
    return run(_chosen_paths[key])


# Token path for tiled layouts: "auto" (time both on the first call of each shape), "box" or
# "gather". On an H100 (benchmarks/results/attention_h100.json, session 4) the runtime chose the box
# path for Wan, NATTEN's case, HunyuanVideo's blocked window and FLUX, the gather path for CogVideoX
# and HunyuanVideo's stride-1 window. They were 0-4% apart on the video cases, while on FLUX 1024^2
# the box path was ~28% faster (benchmarks/results/logs/probe_box_{constexpr,store}_h100.log).
TOKEN_PATH = "auto"
_chosen_paths: dict = {}


def _faster(run, paths: tuple[str, ...], reps: int = 3) -> str:
    """The path whose best of ``reps`` timed calls is shortest (after one untimed call each,
    which also runs the kernel autotuner)."""
    best, best_ms = paths[0], float("inf")
    for path in paths:
        run(path)
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run(path)
            end.record()
            end.synchronize()
            ms = start.elapsed_time(end)
            if ms < best_ms:
                best, best_ms = path, ms
    return best


@model_order_attention_op.register_fake
def _(q, k, v, kv_counts, kv_counts_video, kv_indices, kv_partial, q_lo, q_hi, k_coord, kv_len, text_order,
      canon_to_raster, raster_to_canon, scale, block_size, partial_dims, grid, tile, video_start, video_blocks,
      text_start, text_len):
    return torch.empty(q.shape, dtype=q.dtype, device=q.device)


def _gather(x: torch.Tensor, index: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    from .permute_triton import gather_tokens, gather_tokens_reference

    if x.is_cuda:
        return gather_tokens(x, index, out=out)
    y = gather_tokens_reference(x, index)
    return y if out is None else out.copy_(y)


# Layouts are built once per grid; keep one copy per device.
_device_layouts: "weakref.WeakKeyDictionary[BlockLayout, dict]" = weakref.WeakKeyDictionary()


def _prepared(layout: BlockLayout, device: torch.device) -> tuple[BlockLayout, int]:
    """The layout on ``device`` and the coordinates its partial blocks test (``partial_dims``, kept
    on the layout as a Python int: asking the GPU tensor every call would synchronise the stream)."""
    if torch.compiler.is_compiling():
        # Traced: no Python-side caches. Processors hand in layouts already on the device.
        return layout.to(device) if layout.kv_counts.device != device else layout, layout.partial_dims
    entry = _device_layouts.setdefault(layout, {})
    key = str(device)
    if key not in entry:  # None: the layout itself (a value holding its key would keep it alive forever)
        entry[key] = None if layout.kv_counts.device == device else layout.to(device)
    return layout if entry[key] is None else entry[key], layout.partial_dims


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
    scale = D**-0.5 if scale is None else scale
    q, k, v = _pad_head_dim(q, k, v)
    lay, partial_dims = _prepared(layout, q.device)
    if kv_len is not None:
        kv_len = kv_len.to(device=q.device, dtype=torch.int32)
    out = block_sparse_attention_op(
        q, k, v, lay.kv_counts, lay.kv_indices, lay.kv_partial, lay.q_lo, lay.q_hi, lay.k_coord,
        kv_len, float(scale), lay.block_size, partial_dims, lay.num_text_blocks,
    )
    return out[..., :D]


def _pad_head_dim(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """q, k, v with head_dim zero-padded up to the next size the kernel supports (q.k and the
    kept output columns are unchanged; callers keep the real head dim's scale)."""
    D = q.shape[-1]
    target = next((d for d in SUPPORTED_HEAD_DIMS if d >= D), None)
    if target is None:
        raise ValueError(f"head_dim must be <= {SUPPORTED_HEAD_DIMS[-1]} for the Triton kernel, got {D}")
    if target == D:
        return q, k, v
    return tuple(torch.nn.functional.pad(x, (0, target - D)) for x in (q, k, v))


def triton_model_order_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: BlockLayout,
    *,
    video_start: int,
    text_start: int,
    text_len: int,
    text_order: torch.Tensor | None,
    kv_len: torch.Tensor | None,
    scale: float | None,
    video_tiled: bool = False,
) -> torch.Tensor:
    """Triton backend of ``block_sparse_attention_model_order`` (see there). Video tokens in tile
    order already (``video_tiled``) are read as rows, like a raster layout's."""
    D = q.shape[-1]
    scale = D**-0.5 if scale is None else scale
    q, k, v = _pad_head_dim(q, k, v)
    lay, partial_dims = _prepared(layout, q.device)
    tiling = lay.tiling
    tiled = not tiling.is_identity and tiling.tile is not None and not video_tiled
    boxable = tiled and tiling.dilation == (1, 1, 1)
    c2r = tiling.device_index(q.device, "canon_to_raster") if tiled else None
    r2c = tiling.device_index(q.device, "raster_to_canon") if tiled else None
    counts_video = lay.kv_counts if lay.kv_counts_video is None else lay.kv_counts_video
    out = model_order_attention_op(
        q, k, v, lay.kv_counts, counts_video, lay.kv_indices, lay.kv_partial, lay.q_lo, lay.q_hi, lay.k_coord,
        None if kv_len is None else kv_len.to(device=q.device, dtype=torch.int32),
        None if text_order is None else text_order.to(q.device),
        c2r, r2c, float(scale), lay.block_size, partial_dims, list(tiling.grid),
        list(tiling.tile) if boxable else [], video_start, lay.num_blocks - lay.num_text_blocks, text_start, text_len,
    )
    return out[..., :D]
