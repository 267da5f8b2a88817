"""Runs a sparse method on one attention call: model token order in, model token order out.

The processors hand over q, k, v as [B, S, H, D] in the model's order (video tokens raster,
text first, last or absent). This object:
1. checks that the video part matches the latent grid,
2. gets the method's layout for the grid (built once per grid, text length and device, then
   cached; the transformer's pre-hook builds it before the first attention call),
3. orders each sample's text valid first when there is a text mask (padded text keys are then
   cut off by a per-sample key length),
4. runs block-sparse attention in the model's token order: the Triton kernel reads the video
   tokens where they are (raster rows, or whole tiles as 3-D boxes of the latent grid) and the
   reference backend builds the canonical (tiled) sequence explicitly (kernels/attention.py).
   In a tile-order forward (tile_order.py) the video tokens arrive tiled and nothing is moved.

Dynamic methods (piecewise, top-k, pyramid) have no layout: they choose their blocks from q and k
in every call. For them (``attend_dynamic``) the video tokens go into the method's token order
(a pure permutation, nothing to move in a tile-order forward), the method attends them with the
text keys as extra keys every video query sees exactly (valid text first, padding cut off by a
per-sample key count), and text queries attend every key densely, as for the static methods.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..kernels import BlockLayout, with_text
from ..kernels.attention import block_sparse_attention_model_order
from ..kernels.tiling import Grid, TokenTiling

TEXT_POSITIONS = ("none", "first", "last")


def _check_call(grid: Grid, seq_len: int, text_len: int, text_position: str) -> int:
    """The grid's video token count, after checking it against the call's sequence."""
    if text_position not in TEXT_POSITIONS:
        raise ValueError(f"text_position must be one of {list(TEXT_POSITIONS)}, got {text_position!r}")
    n_video = grid[0] * grid[1] * grid[2]
    if seq_len - text_len != n_video:
        raise ValueError(
            f"latent grid (T', H', W')={tuple(grid)} has {n_video} tokens but the attention call has "
            f"{seq_len - text_len} video tokens (sequence {seq_len}, text {text_len}); the grid does not match the sequence"
        )
    return n_video


def shared_video_layout(method, grid: Grid) -> BlockLayout:
    """Layouts depend only on (method config, grid): share them between patches (two Wan 2.2
    experts, patch/unpatch cycles of an evaluation) instead of rebuilding. Built on the GPU when
    there is one (a CPU needs about a minute for a 75k-token radial layout). Keyed on the config's
    repr too: configs compare equal where their values do, and a window of 1.0 (the whole
    dimension) equals a window of 1 (one token)."""
    return _shared_video_layout(repr(method), tuple(grid), method)


@functools.lru_cache(maxsize=32)
def _shared_video_layout(text: str, grid: Grid, method) -> BlockLayout:
    device = "cuda" if torch.cuda.is_available() else None
    return method.build_layout(grid, device=device)


@dataclass
class SparseAttention:
    method: object  # static: .build_layout(grid, device=None); dynamic (.dynamic True): .tiling(grid), .attend(...)
    backend: str = "auto"
    # Called as observer(q, k, v, scale) with a dynamic method's video q, k, v (its token order) on
    # every call, when set: how the demo draws the blocks a call chose. None in normal runs.
    observer: object = None
    _video_layouts: dict = field(default_factory=dict, repr=False)
    _layouts: dict = field(default_factory=dict, repr=False)
    _tilings: dict = field(default_factory=dict, repr=False)

    @property
    def dynamic(self) -> bool:
        return bool(getattr(self.method, "dynamic", False))

    def tiling(self, grid: Grid) -> TokenTiling:
        """The order the method's blocks are cut from on ``grid`` (a dynamic method's: built once
        per grid, then a dict lookup, which a compiled region traces as a constant)."""
        if not self.dynamic:
            return self.video_layout(grid).tiling
        key = tuple(grid)
        if key not in self._tilings:
            self._tilings[key] = self.method.tiling(key)
        return self._tilings[key]

    def prepare(self, grid: Grid, text_len: int, device: torch.device) -> None:
        """Build (or look up) what the calls on ``grid`` need, outside any compiled region."""
        if self.dynamic:
            tiling = self.tiling(grid)
            if not tiling.is_identity:
                tiling.cache_device_indices(device)
        else:
            self.layout(grid, text_len, device)

    def video_layout(self, grid: Grid) -> BlockLayout:
        """The method's layout over the video tokens of ``grid`` (on CPU), built once."""
        key = tuple(grid)
        if key not in self._video_layouts:
            self._video_layouts[key] = shared_video_layout(self.method, key)
        return self._video_layouts[key]

    def layout(self, grid: Grid, text_len: int, device: torch.device) -> BlockLayout:
        key = (tuple(grid), text_len, str(device))
        if key not in self._layouts:
            layout = with_text(self.video_layout(grid), text_len).to(device)
            tiling = layout.tiling
            if tiling.tile is not None:  # the permutations too, now: not inside a compiled region
                tiling.cache_device_indices(device)
            self._layouts[key] = layout
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
        video_tiled: bool = False,
    ) -> torch.Tensor:
        """q, k, v: [B, S, H, D] with S = text_len + T'*H'*W'. text_mask: bool [B, text_len],
        True for real text tokens (None = all real). ``video_tiled``: the video tokens are in the
        layout's tile order already (a tile-order forward), not raster. Returns [B, S, H, D]."""
        B, S, H, D = q.shape
        n_video = _check_call(grid, S, text_len, text_position)
        layout = self.layout(grid, text_len, q.device)
        text_order = kv_len = None
        if text_len and text_mask is not None:
            mask = text_mask.to(device=q.device, dtype=torch.bool)
            text_order = valid_text_first(mask)
            kv_len = (layout.tiling.canon_len + mask.sum(1)).to(torch.int32)
        first = text_position == "first"
        return block_sparse_attention_model_order(
            q, k, v, layout, video_start=text_len if first else 0, text_start=0 if first else n_video,
            text_len=text_len, text_order=text_order, kv_len=kv_len, scale=scale, backend=self.backend,
            video_tiled=video_tiled,
        )

    def attend_dynamic(
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
        video_tiled: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | float]:
        """A dynamic method's call: arguments as for ``__call__``. Returns the output in the model's
        order and the computed fraction of the video-video attention the method reports."""
        B, S, H, D = q.shape
        n_video = _check_call(grid, S, text_len, text_position)
        first = text_position == "first"
        video = slice(text_len, S) if first else slice(0, n_video)
        text = slice(0, text_len) if first else slice(n_video, S)
        tiling = self.tiling(grid)
        move = not video_tiled and not tiling.is_identity
        qv, kv, vv = (tiling.to_canonical(x[:, video]) if move else x[:, video] for x in (q, k, v))
        extra = None
        if text_len:
            kt, vt, kv_len = k[:, text], v[:, text], None
            if text_mask is not None:
                mask = text_mask.to(device=q.device, dtype=torch.bool)
                index = valid_text_first(mask)[:, :, None, None].expand_as(kt)
                kt, vt, kv_len = kt.gather(1, index), vt.gather(1, index), mask.sum(1).to(torch.int32)
            extra = (kt, vt, kv_len)
        if self.observer is not None:
            self.observer(qv, kv, vv, scale)
        out_video, fraction = self.method.attend(qv, kv, vv, extra_kv=extra, scale=scale, backend=self.backend)
        out_video = tiling.from_canonical(out_video) if move else out_video
        if not text_len:
            return out_video, fraction  # no copy into a new buffer: the video is the whole sequence
        out = torch.empty_like(q)
        out[:, video] = out_video
        # Text queries see every key, as in the static methods' layouts (padded text masked).
        out[:, text] = dense_attention(q, k, v, text_len=text_len, text_position=text_position, text_mask=text_mask,
                                       scale=scale, rows=text)
        return out, fraction


def valid_text_first(mask: torch.Tensor) -> torch.Tensor:
    """Per sample, the text positions with the valid ones first (stable): the padding becomes a
    suffix a per-sample key count cuts off. mask: bool [B, text_len]."""
    return torch.argsort((~mask).to(torch.int8), dim=1, stable=True)


def dense_attention(q, k, v, *, text_len: int, text_position: str, text_mask, scale, rows: slice = slice(None)) -> torch.Tensor:
    """Dense attention of the query ``rows`` of [B, S, H, D] q, k, v (model order) over every key,
    padded text keys masked: what the model's own processor computes."""
    mask = None
    if text_len and text_mask is not None:
        B, S = q.shape[:2]
        keys = torch.ones(B, S, dtype=torch.bool, device=q.device)
        text = slice(0, text_len) if text_position == "first" else slice(S - text_len, S)
        keys[:, text] = text_mask.to(device=q.device, dtype=torch.bool)
        mask = keys[:, None, None, :]
    out = F.scaled_dot_product_attention(q[:, rows].transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         attn_mask=mask, scale=scale)
    return out.transpose(1, 2).to(q.dtype)
