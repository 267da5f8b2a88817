"""Runs a sparse method on one attention call: model token order in, model token order out.

The processors hand over q, k, v as [B, S, H, D] in the model's order (video tokens raster,
text first, last or absent). This object:
1. checks that the video part matches the latent grid,
2. moves video tokens into the method's canonical (tiled) order and appends the text tokens,
   valid ones first per sample, so padded text keys are cut off by a per-sample key length
   (skipped for raster-order layouts without text: the kernel takes the model's tensors as they
   are, the layout's end padding being treated as absent tokens),
3. runs the block-sparse kernel on the method's layout (built once per grid, text length and
   device, then cached),
4. puts the output back in the model's order.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch

from ..kernels import BlockLayout, block_sparse_attention, with_text
from ..kernels.tiling import Grid

TEXT_POSITIONS = ("none", "first", "last")


@functools.lru_cache(maxsize=32)
def shared_video_layout(method, grid: Grid) -> BlockLayout:
    """Layouts depend only on (method config, grid): share them between patches (two Wan 2.2
    experts, patch/unpatch cycles of an evaluation) instead of rebuilding. Built on the GPU when
    there is one (a CPU needs about a minute for a 75k-token radial layout)."""
    device = "cuda" if torch.cuda.is_available() else None
    return method.build_layout(grid, device=device)


@dataclass
class SparseAttention:
    method: object  # a method config with .build_layout(grid, device=None) and .block_size
    backend: str = "auto"
    _video_layouts: dict = field(default_factory=dict, repr=False)
    _layouts: dict = field(default_factory=dict, repr=False)

    def video_layout(self, grid: Grid) -> BlockLayout:
        """The method's layout over the video tokens of ``grid`` (on CPU), built once."""
        key = tuple(grid)
        if key not in self._video_layouts:
            self._video_layouts[key] = shared_video_layout(self.method, key)
        return self._video_layouts[key]

    def layout(self, grid: Grid, text_len: int, device: torch.device) -> BlockLayout:
        key = (tuple(grid), text_len, str(device))
        if key not in self._layouts:
            self._layouts[key] = with_text(self.video_layout(grid), text_len).to(device)
        return self._layouts[key]

    def __call__(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        grid: Grid,
        *,
        text_len: int = 0,
        text_position: str = "none",
        text_mask: torch.Tensor | None = None,
        scale: float | None = None,
    ) -> torch.Tensor:
        """q, k, v: [B, S, H, D] with S = text_len + T'*H'*W'. text_mask: bool [B, text_len],
        True for real text tokens (None = all real). Returns [B, S, H, D]."""
        if text_position not in TEXT_POSITIONS:
            raise ValueError(f"text_position must be one of {list(TEXT_POSITIONS)}, got {text_position!r}")
        B, S, H, D = q.shape
        n_video = grid[0] * grid[1] * grid[2]
        if S - text_len != n_video:
            raise ValueError(
                f"latent grid (T', H', W')={tuple(grid)} has {n_video} tokens but the attention call has "
                f"{S - text_len} video tokens (sequence {S}, text {text_len}); the grid does not match the sequence"
            )
        layout = self.layout(grid, text_len, q.device)
        tiling = layout.tiling
        if text_len == 0 and tiling.tile is None:
            # Raster order is canonical order up to the padding at the end, which the kernel
            # treats as absent when the sequence stops short of it: no copies in or out.
            return block_sparse_attention(q, k, v, layout, None, scale, self.backend)

        def split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
            if text_len == 0:
                return x, None
            if text_position == "first":
                return x[:, text_len:], x[:, :text_len]
            return x[:, :n_video], x[:, n_video:]

        text_order = kv_len = None
        if text_len and text_mask is not None:
            mask = text_mask.to(device=q.device, dtype=torch.bool)
            # Valid text first (stable), so padding is a suffix cut off by kv_len.
            text_order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)
            kv_len = (tiling.canon_len + mask.sum(1)).to(torch.int32)
        elif text_len:
            # Text is padded up to whole blocks: those padding keys must stay out.
            kv_len = torch.full((B,), tiling.canon_len + text_len, dtype=torch.int32, device=q.device)

        def canonical(x: torch.Tensor) -> torch.Tensor:
            video, text = split(x)
            video = tiling.to_canonical(video)
            if text is None:
                return video.contiguous()
            if text_order is not None:
                text = torch.gather(text, 1, text_order[:, :, None, None].expand_as(text))
            pad = layout.seq_len - tiling.canon_len - text_len
            parts = [video, text] + ([text.new_zeros(B, pad, H, D)] if pad else [])
            return torch.cat(parts, dim=1)

        out = block_sparse_attention(canonical(q), canonical(k), canonical(v), layout, kv_len, scale, self.backend)
        video_out = tiling.from_canonical(out[:, : tiling.canon_len])
        if text_len == 0:
            return video_out
        text_out = out[:, tiling.canon_len : tiling.canon_len + text_len]
        if text_order is not None:
            text_out = torch.empty_like(text_out).scatter_(1, text_order[:, :, None, None].expand_as(text_out), text_out)
        parts = [text_out, video_out] if text_position == "first" else [video_out, text_out]
        return torch.cat(parts, dim=1)
