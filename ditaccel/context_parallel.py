"""Sparse attention under diffusers' context parallelism (Ulysses).

With ``transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=N))`` diffusers
splits the token sequence over N ranks and its dense attention all-to-alls q, k, v from (S / N
tokens, all H heads) to (all S tokens, H / N heads) and back. A sparse call does the same here:
each rank then runs the method on the whole sequence of its own heads, with layouts built for the
global grid, so the result equals one process's. We plug into diffusers' engine (its split and
gather hooks, its process groups) and only add the exchange around our own kernel.

Joint text + video models split both streams separately, so the gathered sequence interleaves the
ranks ([text_r0, video_r0, text_r1, video_r1, ...]); ``canonical_index`` puts it back into the
model's order (text first or last, then the video tokens in order) and back again.

Ring attention (``ring_degree > 1``) never shows a rank the whole sequence: a global sparse layout
does not map onto its chunks, so it is refused with one line, as are uneven shards.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist


@dataclass
class Ulysses:
    """The all-to-all group of a transformer under Ulysses context parallelism."""

    group: object  # torch.distributed ProcessGroup
    config: object  # the ContextParallelConfig it came from
    degree: int
    rank: int  # this rank's index in the group: its heads are [rank * H / N, (rank + 1) * H / N)
    _indices: dict = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, transformer: torch.nn.Module) -> "Ulysses | None":
        """The transformer's Ulysses group, None without context parallelism (or with degree 1)."""
        parallel = getattr(transformer, "_parallel_config", None)
        config = getattr(parallel, "context_parallel_config", None)
        if config is None:
            return None
        if (config.ring_degree or 1) > 1:
            raise NotImplementedError(
                f"ditaccel sparse attention supports Ulysses context parallelism only, got ring_degree="
                f"{config.ring_degree}: use ContextParallelConfig(ulysses_degree=N) or unpatch")
        if getattr(config, "ulysses_anything", False):
            raise NotImplementedError("ditaccel sparse attention needs equal shards: ContextParallelConfig(ulysses_anything=True) "
                                      "is not supported; use a sequence length the degree divides")
        if (config.ulysses_degree or 1) <= 1:
            return None
        return cls(config._ulysses_mesh.get_group(), config, int(config.ulysses_degree), int(config._ulysses_local_rank))

    def check_heads(self, heads: int) -> None:
        if heads % self.degree:
            raise ValueError(f"Ulysses context parallelism splits the heads over {self.degree} ranks, but this layer has "
                             f"{heads} heads: use a degree that divides {heads}")

    def seq_to_head(self, x: torch.Tensor) -> torch.Tensor:
        """[B, S / N, H, D] local tokens, all heads -> [B, S, H / N, D] all tokens (rank-major), own heads."""
        B, s, H, D = x.shape
        n = self.degree
        x = x.reshape(B, s, n, H // n, D).permute(2, 1, 0, 3, 4).contiguous()  # chunk j goes to rank j
        x = self._exchange(x).reshape(n, s, B, H // n, D)  # chunk j came from rank j
        return x.flatten(0, 1).permute(1, 0, 2, 3).contiguous()

    def head_to_seq(self, x: torch.Tensor) -> torch.Tensor:
        """The inverse: [B, S, H / N, D] -> [B, S / N, H, D]."""
        B, S, h, D = x.shape
        n = self.degree
        x = x.reshape(B, n, S // n, h, D).permute(1, 3, 0, 2, 4).contiguous()  # token chunk j goes to rank j
        x = self._exchange(x).reshape(n, h, B, S // n, D)  # head block j came from rank j
        return x.flatten(0, 1).permute(1, 2, 0, 3).contiguous()

    def _exchange(self, x: torch.Tensor) -> torch.Tensor:
        """All-to-all along the leading dimension (chunk j to rank j), as diffusers' own Ulysses does."""
        from torch.distributed import _functional_collectives as funcol

        out = funcol.all_to_all_single(x.flatten(), None, None, self.group)
        if isinstance(out, funcol.AsyncCollectiveTensor):
            out = out.wait()
        return out.reshape(x.shape)

    def canonical_index(self, seq_len: int, text_len: int, text_position: str, device) -> torch.Tensor | None:
        """Gathered position of each token in the model's order (None when they are the same: no
        text, or text the ranks do not split). Both streams must split evenly over the ranks."""
        if not text_len or text_position == "none":
            return None
        n = self.degree
        video_len = seq_len - text_len
        if text_len % n or video_len % n:
            raise ValueError(f"Ulysses context parallelism over {n} ranks needs the text ({text_len} tokens) and the video "
                             f"({video_len} tokens) to split evenly")
        key = (seq_len, text_len, text_position, str(device))
        if key not in self._indices:
            t, v = text_len // n, video_len // n
            rank = torch.arange(n)[:, None] * (seq_len // n)  # where each rank's chunk starts, gathered
            first, second = (t, v) if text_position == "first" else (v, t)
            head = (rank + torch.arange(first)).flatten()  # the stream each local chunk holds first
            tail = (rank + first + torch.arange(second)).flatten()
            self._indices[key] = torch.cat([head, tail]).to(device)
        return self._indices[key]


def all_ranks_min(ulysses: Ulysses | None, value: int, device) -> int:
    """The smallest of every rank's ``value`` (one collective: a rank that failed can say so with
    the lowest value instead of leaving the others waiting)."""
    if ulysses is None:
        return value
    tensor = torch.tensor([value], dtype=torch.int32, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN, group=ulysses.group)
    return int(tensor.item())
