"""Tile-order forward: a patched transformer runs its blocks on video tokens already in the
layout's tile order, so attention calls copy no tokens.

A tiled layout (neighbourhood windows) is whole-block only in canonical (tile) order. Moving q, k
and v into that order and the output back on every attention call costs a few percent of the
call (H100, benchmarks/results/logs/attention_h100_{g,h}.json: NATTEN's case 6.6%, FLUX 1024^2
9%). Everything between a DiT's token embedding and its output projection except attention works
token by token (norms, modulation, MLPs, cross-attention queries), and attention does not care
about the order of its tokens as long as their rotary tables move with them. So the permutation
is done once per forward instead:

- the entry module's output (the patch embedding: video tokens) is put into tile order,
- the rotary tables the blocks receive are put into the same order,
- the exit module's output (the final projection, before unpatchify) goes back to raster order.

Dense layers of the schedule run unchanged in that order; sparse layers tell the runner the
video is already tiled. Used only when the tiling is a pure permutation of the grid (the tile
divides it: no padding tokens, which dense layers would attend to) and the adapter says this
call has nothing else positional (FLUX ControlNet residuals, HunyuanVideo's first-frame token
replacement, ...). Hooks are plain torch module hooks; removing them restores the modules.
"""

from __future__ import annotations

import torch

from .kernels.tiling import TokenTiling


def uses_tile_order(tiling: TokenTiling | None) -> bool:
    """Whether ``tiling`` can be applied once per forward: tiled, and every canonical position a
    real token (a grid the tile and dilation divide)."""
    return tiling is not None and tiling.tile is not None and tiling.canon_len == tiling.num_tokens


def reorder_tokens(x: torch.Tensor, dim: int, tiling: TokenTiling, to_tiles: bool) -> torch.Tensor:
    """The last ``tiling.num_tokens`` entries of ``x`` along ``dim`` (the video tokens; text may
    come before them) from raster into tile order (``to_tiles``) or back."""
    n_video = tiling.num_tokens
    n_text = x.shape[dim] - n_video
    if n_text < 0:
        raise ValueError(f"expected at least {n_video} video tokens along dim {dim}, got {x.shape[dim]} (shape {tuple(x.shape)})")
    video = x.narrow(dim, n_text, n_video)
    video = tiling.to_canonical(video, dim) if to_tiles else tiling.from_canonical(video, dim)
    return video if n_text == 0 else torch.cat([x.narrow(dim, 0, n_text), video], dim)


class TileOrderHooks:
    """The hooks of one patched transformer: entry, exit and rotary modules named by the adapter.
    They act only in forwards where ``context.tiling`` is set (by the patch's pre-hook)."""

    def __init__(self, transformer: torch.nn.Module, adapter, context) -> None:
        self.adapter = adapter
        self.context = context
        entry, exit_, rotary = adapter.tile_order_modules
        self._handles = [
            transformer.get_submodule(entry).register_forward_hook(self._entry),
            transformer.get_submodule(exit_).register_forward_hook(self._exit),
        ]
        if rotary is not None:
            self._handles.append(transformer.get_submodule(rotary).register_forward_hook(self._rotary))

    def _entry(self, module, args, output):
        tiling = self.context.tiling
        return None if tiling is None else self.adapter.video_tokens_to_tiles(output, tiling)

    def _exit(self, module, args, output):
        tiling = self.context.tiling
        return None if tiling is None else reorder_tokens(output, 1, tiling, to_tiles=False)

    def _rotary(self, module, args, output):
        tiling = self.context.tiling
        return None if tiling is None else self.adapter.rotary_to_tiles(output, tiling)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
