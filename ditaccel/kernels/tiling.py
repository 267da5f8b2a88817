"""Token tiling: the permutation between a model's raster token order and the canonical order
that block-sparse kernels run on.

Video DiTs flatten their latent grid time-major (t, then h, then w). In that raster order a 3-D
neighbourhood is scattered over many rows, so a 128-token block is rarely wholly inside or
wholly outside a window. Reordering tokens into tiles of t x h x w = 128 tokens (e.g. 2x8x8)
makes local masks whole-block. Dilation groups (NATTEN's dilation) are moved apart first, so each
group's sub-grid is tiled on its own and a dilated window is again a box of whole tiles.

Grids the tile does not divide are padded per dimension (and per dilation group); padding tokens
get coordinate -1 so that every mask rejects them as keys. Every tile is exactly one block.

Canonical token coordinates are (group, t, h, w) with t/h/w measured inside the dilation group.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import torch

Grid = tuple[int, int, int]

PAD_COORD = -1


@dataclass(frozen=True, eq=False)
class TokenTiling:
    """Permutation of ``prod(grid)`` raster tokens into ``canon_len`` canonical positions.

    ``tile=None`` keeps raster order and only pads the end up to a multiple of ``block_size``.
    """

    grid: Grid
    tile: Grid | None
    block_size: int
    dilation: Grid = (1, 1, 1)
    raster_to_canon: torch.Tensor = field(repr=False, default=None)  # int64 [num_tokens]
    coords: torch.Tensor = field(repr=False, default=None)  # int32 [canon_len, 4], -1 on padding
    group_shapes: tuple[Grid, ...] = field(repr=False, default=())  # sub-grid of each dilation group
    _index_cache: dict = field(repr=False, default_factory=dict, compare=False)

    @property
    def num_tokens(self) -> int:
        return math.prod(self.grid)

    @property
    def canon_len(self) -> int:
        return int(self.coords.shape[0])

    @property
    def num_blocks(self) -> int:
        return self.canon_len // self.block_size

    @property
    def is_identity(self) -> bool:
        return self.canon_len == self.num_tokens and self.tile is None

    def to_canonical(self, x: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """Scatter raster tokens (along ``dim``) into canonical order; padding is zero."""
        if self.is_identity:
            return x
        if dim == 1 and _use_gather_kernel(x):
            from .permute_triton import gather_tokens

            return gather_tokens(x, self.device_index(x.device, "canon_to_raster"))
        index = self.device_index(x.device, "raster_to_canon")
        shape = list(x.shape)
        shape[dim] = self.canon_len
        out = x.new_zeros(shape)
        out.index_copy_(dim, index, x)
        return out

    def from_canonical(self, y: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """Gather canonical tokens back to raster order (drops padding)."""
        if self.is_identity:
            return y
        if dim == 1 and _use_gather_kernel(y):
            from .permute_triton import gather_tokens

            return gather_tokens(y, self.device_index(y.device, "raster_to_canon"))
        return y.index_select(dim, self.device_index(y.device, "raster_to_canon"))

    def cache_device_indices(self, device) -> None:
        """Copy both permutations to ``device`` now (e.g. before a compiled region uses them)."""
        for which in ("canon_to_raster", "raster_to_canon"):
            self.device_index(torch.device(device), which)

    def device_index(self, device: torch.device, which: str) -> torch.Tensor:
        """The permutation ``which`` ("raster_to_canon" or "canon_to_raster") on ``device``, copied
        there once (a host-to-device copy per attention call would cost a synchronisation)."""
        key = (str(device), which)
        cache = self._index_cache
        if key not in cache:
            if which == "raster_to_canon":
                index = self.raster_to_canon
            else:
                index = inverse_index(self.raster_to_canon, self.canon_len)
            cache[key] = index.to(device)
        return cache[key]


def inverse_index(raster_to_canon: torch.Tensor, canon_len: int) -> torch.Tensor:
    """canon_to_raster (int32 [canon_len], -1 on padding) from raster_to_canon."""
    inv = torch.full((canon_len,), -1, dtype=torch.int32, device=raster_to_canon.device)
    inv[raster_to_canon.long()] = torch.arange(raster_to_canon.numel(), dtype=torch.int32, device=raster_to_canon.device)
    return inv


def _use_gather_kernel(x: torch.Tensor) -> bool:
    """The Triton gather runs at memory bandwidth (about 2x torch's index ops) on CUDA, eager."""
    if not x.is_cuda or torch.compiler.is_compiling():
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def build_tiling(grid: Grid, tile: Grid | None, block_size: int, dilation: Grid = (1, 1, 1)) -> TokenTiling:
    grid = tuple(int(g) for g in grid)
    if tile is not None and math.prod(tile) != block_size:
        raise ValueError(f"tile={tile} must hold exactly block_size={block_size} tokens (t*h*w == block_size)")
    T, H, W = grid
    t_idx, h_idx, w_idx = torch.meshgrid(torch.arange(T), torch.arange(H), torch.arange(W), indexing="ij")
    raster = torch.stack([t_idx.flatten(), h_idx.flatten(), w_idx.flatten()], dim=1)  # [N, 3]

    if tile is None:
        if dilation != (1, 1, 1):
            raise ValueError("dilation needs a tiled layout (tile=None keeps raster order)")
        canon_len = _round_up(raster.shape[0], block_size)
        coords = torch.full((canon_len, 4), PAD_COORD, dtype=torch.int32)
        coords[: raster.shape[0], 0] = 0
        coords[: raster.shape[0], 1:] = raster.int()
        return TokenTiling(grid, None, block_size, dilation, torch.arange(raster.shape[0]), coords, (grid,))

    raster_to_canon = torch.empty(raster.shape[0], dtype=torch.int64)
    coord_chunks, group_shapes, offset = [], [], 0
    for gid, residue in enumerate(itertools.product(*(range(d) for d in dilation))):
        # Tokens of this dilation group and their coordinates inside the group's sub-grid.
        sel = torch.ones(raster.shape[0], dtype=torch.bool)
        for d in range(3):
            sel &= raster[:, d] % dilation[d] == residue[d]
        members = sel.nonzero().flatten()
        sub = raster[members] // torch.tensor(dilation)
        shape = tuple(-(-(grid[d] - residue[d]) // dilation[d]) for d in range(3))
        group_shapes.append(shape)
        ntiles = [-(-shape[d] // tile[d]) for d in range(3)]
        # Canonical position: tile index (raster over tiles), then position inside the tile.
        tile_of = sub // torch.tensor(tile)
        inner = sub % torch.tensor(tile)
        tile_id = (tile_of[:, 0] * ntiles[1] + tile_of[:, 1]) * ntiles[2] + tile_of[:, 2]
        inner_id = (inner[:, 0] * tile[1] + inner[:, 1]) * tile[2] + inner[:, 2]
        raster_to_canon[members] = offset + tile_id * block_size + inner_id
        group_len = math.prod(ntiles) * block_size
        c = torch.full((group_len, 4), PAD_COORD, dtype=torch.int32)
        pos = tile_id * block_size + inner_id
        c[pos, 0] = gid
        c[pos, 1:] = sub.int()
        coord_chunks.append(c)
        offset += group_len
    return TokenTiling(grid, tuple(tile), block_size, tuple(dilation), raster_to_canon, torch.cat(coord_chunks), tuple(group_shapes))


def compact_tiling(grid: Grid, tile: Grid | None, block_size: int) -> TokenTiling:
    """Tile order with no padding, for methods that cut the sequence into blocks of ``block_size``
    consecutive tokens themselves (the dynamic ones): the whole tiles first (raster order over
    tiles, raster order inside each), then the edge tiles the grid cuts short, each holding only the
    tokens it has. With tiles of ``block_size`` tokens every whole tile is exactly one block (a
    compact 3-D region); only the blocks cut from the edge tiles, at the end, straddle tiles. A pure
    permutation (``canon_len`` equals the token count), so a tile-order forward can always use it.
    ``tile=None``: raster order."""
    grid = tuple(int(g) for g in grid)
    if tile is None:
        return build_tiling(grid, None, block_size) if math.prod(grid) % block_size == 0 else _raster_permutation(grid, block_size)
    volume = math.prod(tile)
    padded = build_tiling(grid, tile, volume)
    real = padded.coords[:, 0] != PAD_COORD
    tile_of = torch.arange(real.numel()) // volume
    short = real.view(-1, volume).sum(1) < volume  # edge tiles the grid cuts short
    # Canonical order of the real positions: whole tiles first, then the short ones, each in order.
    position = torch.arange(real.numel())
    order = torch.argsort(short[tile_of].long() * real.numel() + position)
    order = order[real[order]]
    rank = torch.empty(real.numel(), dtype=torch.long)
    rank[order] = torch.arange(order.numel())
    return TokenTiling(grid, tuple(tile), block_size, (1, 1, 1), rank[padded.raster_to_canon], padded.coords[order],
                       padded.group_shapes)


def _raster_permutation(grid: Grid, block_size: int) -> TokenTiling:
    """Raster order without the end padding: the identity permutation."""
    raster = build_tiling(grid, None, block_size)
    n = raster.num_tokens
    return TokenTiling(grid, None, block_size, (1, 1, 1), raster.raster_to_canon, raster.coords[:n], raster.group_shapes)


def default_tile(grid: Grid, block_size: int = 128, align: Grid = (1, 1, 1)) -> Grid:
    """A 3-D tile of ``block_size`` tokens for ``grid``.

    Preference order: tiles that divide the ``align`` sizes (a neighbourhood's stride groups, so
    that groups map to whole tiles), then the least padding, then cube-like shapes (2x8x8 for 128).
    """
    best, best_cost = None, None
    for tt in _divisors(block_size):
        for th in _divisors(block_size // tt):
            tw = block_size // tt // th
            tile = (tt, th, tw)
            if any(tile[d] > 2 * grid[d] for d in range(3)):
                continue
            misaligned = sum(1 for d in range(3) if align[d] > 1 and align[d] % tile[d] != 0)
            padded = math.prod(_round_up(grid[d], tile[d]) for d in range(3))
            cost = (misaligned, padded, max(tile) / min(tile))
            if best_cost is None or cost < best_cost:
                best, best_cost = tile, cost
    return best if best is not None else (1, 1, block_size)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m
