"""Which (query block, key block) pairs a patched pipeline's method computes, as data and as a
picture: the demo draws it, and users can look at a layout before they spend GPU time on it.

    with ditaccel.BlockMapRecorder(handle) as recorder:   # handle = ditaccel.patch(pipe, "piecewise")
        pipe(...)
    picture = recorder.block_map().image()                 # (H, W, 3) uint8

Codes: ``COMPUTED`` (attended exactly), ``APPROXIMATED`` (piecewise's summary keys, pyramid's pooled
levels 2/4/8) and ``SKIPPED``. A static method's map is its layout on the last grid (one head group);
a dynamic method's is what its last attention call chose for sample 0, head 0, recomputed from that
call's q, k, v by the method's own ``block_codes``. Video blocks only: joint-attention text is always
computed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

SKIPPED, APPROXIMATED, COMPUTED = 0, 1, 2
COLOURS = {SKIPPED: (238, 238, 238), APPROXIMATED: (242, 165, 55), COMPUTED: (37, 87, 190)}
NAMES = {SKIPPED: "skipped", APPROXIMATED: "approximated", COMPUTED: "computed"}


@dataclass
class BlockMap:
    codes: np.ndarray  # int8 [query blocks, key blocks]
    method: str  # the resolved config
    grid: tuple[int, int, int]
    block_size: int
    source: str  # where the map comes from (the layout, or which call)

    def shares(self) -> dict[str, float]:
        """Fraction of the block pairs per code name."""
        total = self.codes.size
        return {NAMES[c]: float((self.codes == c).sum()) / total for c in (COMPUTED, APPROXIMATED, SKIPPED)}

    def image(self, max_side: int = 640) -> np.ndarray:
        """(H, W, 3) uint8: one square per block pair (rows: query blocks, columns: key blocks),
        blown up to about ``max_side`` pixels when the map is small, averaged down when it is larger."""
        rgb = np.zeros((*self.codes.shape, 3), dtype=np.float32)
        for code, colour in COLOURS.items():
            rgb[self.codes == code] = colour
        side = max(self.codes.shape)
        if side > max_side:  # average pool: a large map keeps its proportions of colours
            factor = -(-side // max_side)
            t = torch.from_numpy(rgb).permute(2, 0, 1)[None]
            rgb = torch.nn.functional.avg_pool2d(t, factor, ceil_mode=True)[0].permute(1, 2, 0).numpy()
        else:
            scale = max(1, max_side // side)
            rgb = rgb.repeat(scale, axis=0).repeat(scale, axis=1)
        return rgb.round().clip(0, 255).astype(np.uint8)

    def caption(self) -> str:
        shares = self.shares()
        counts = ", ".join(f"{name} {100 * share:.1f}%" for name, share in shares.items() if share > 0)
        return (f"{self.method} on grid {self.grid}: {self.codes.shape[0]} x {self.codes.shape[1]} blocks of "
                f"{self.block_size} tokens ({self.source}); {counts}")


def layout_block_map(layout, group: int = 0) -> np.ndarray:
    """int8 [query blocks, key blocks] of a static ``BlockLayout`` (video blocks): COMPUTED where
    the layout computes the pair (partially masked pairs included), SKIPPED elsewhere."""
    counts = layout.kv_counts[group].cpu()
    indices = layout.kv_indices[group].cpu()
    n = layout.num_blocks
    codes = np.full((counts.shape[0], n), SKIPPED, dtype=np.int8)
    for row in range(counts.shape[0]):
        codes[row, indices[row, : int(counts[row])].numpy()] = COMPUTED
    return codes


class BlockMapRecorder:
    """While active, keeps the q, k, v (sample 0, head 0) of the last dynamic attention call of a
    patch (``ditaccel.patch``'s handle); ``block_map()`` then draws what that call chose, or the
    layout of a static method on the last grid."""

    def __init__(self, handle):
        self.handle = handle
        self.last: tuple | None = None

    def __enter__(self) -> "BlockMapRecorder":
        for state in self.handle.states:
            if state.runner is not None and state.runner.dynamic:
                state.runner.observer = self._observe
        return self

    def __exit__(self, *exc) -> None:
        for state in self.handle.states:
            if state.runner is not None:
                state.runner.observer = None

    def _observe(self, q, k, v, scale) -> None:
        self.last = tuple(x[:1, :, :1].detach().clone() for x in (q, k, v)) + (scale,)

    def block_map(self) -> BlockMap | None:
        """None when nothing sparse ran (dense attention with a cache, or no call yet)."""
        state = next((s for s in self.handle.states if s.runner is not None), None)
        if state is None or state.context.grid is None:
            return None
        grid, method = tuple(state.context.grid), state.runner.method
        if not state.runner.dynamic:
            layout = state.runner.video_layout(grid)
            return BlockMap(layout_block_map(layout), repr(method), grid, layout.block_size, "its layout")
        if self.last is None:
            return None
        q, k, v, scale = self.last
        codes = method.block_codes(q.float(), k.float(), v.float(), scale=scale)[0, 0].cpu().numpy().astype(np.int8)
        return BlockMap(codes, repr(method), grid, method.block_size, "the last attention call, head 0")
