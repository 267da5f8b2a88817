"""Is the tiny model's self-attention local? Attention mass vs frame and spatial distance.

Generates a few videos with the built-in tiny model and, at every denoising call, rebuilds each
block's self-attention probabilities P = softmax(q k^T / sqrt(d)) from the block's own q/k
projections, RMS norms and rotary embedding (checked against the block's real output). For a
query token at (frame f, row y, col x), the mass it gives to keys at frame distance |f - f'| = d
and at spatial distance round(sqrt((y - y')^2 + (x - x')^2)) = r is accumulated into a (d, r)
table, averaged over queries, heads, layers, denoising calls and videos. Uniform attention (every
key equally weighted) is the baseline: locality means mass above it at small distances.

  python benchmarks/tiny_video_attention_locality.py                 # shipped weights, auto device
Writes attention_locality.json and attention_locality.png to --out-dir.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ditaccel.pipelines.tiny_video import DEFAULT_GUIDANCE, DEFAULT_NUM_STEPS, load_tiny_video_pipeline  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results" / "tiny_video"
PROMPTS = [
    "a red circle moving right on a gray background",
    "a blue square moving down and left on a checkered background",
    "a yellow triangle bouncing on a black background",
    "a green circle growing and a purple square moving left on a white background",
    "an orange square moving up on a striped background",
    "a purple triangle shrinking on a noisy background",
]


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # Rotary embedding on interleaved pairs (x[2i], x[2i+1]) by the angle whose cos/sin Wan's rope
    # module stores (repeated per pair) in its freqs tables.
    even, odd = x[..., 0::2], x[..., 1::2]
    c, s = cos[..., 0::2], sin[..., 1::2]
    return torch.stack((even * c - odd * s, even * s + odd * c), dim=-1).flatten(-2)


def attention_probs(attn, hidden: torch.Tensor, rotary) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-attention probabilities (B, heads, N, N) of a Wan attention module, and its output."""
    q = attn.norm_q(attn.to_q(hidden)).unflatten(2, (attn.heads, -1))
    k = attn.norm_k(attn.to_k(hidden)).unflatten(2, (attn.heads, -1))
    v = attn.to_v(hidden).unflatten(2, (attn.heads, -1))
    if rotary is not None:
        q, k = _rotate(q, *rotary), _rotate(k, *rotary)
    q, k, v = (t.transpose(1, 2).float() for t in (q, k, v))
    probs = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1)
    out = (probs @ v).transpose(1, 2).flatten(2).to(hidden.dtype)
    return probs, attn.to_out[0](out)


class DistanceTable:
    """Accumulates attention mass by (frame distance, spatial distance bin)."""

    def __init__(self, grid: tuple[int, int, int], device):
        frames, height, width = grid
        self.grid = grid
        ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        pos = torch.stack((ys.flatten(), xs.flatten()), dim=1).float()
        r = torch.cdist(pos, pos).round().long()  # (S, S) spatial distance bins
        self.num_r = int(r.max()) + 1
        self.onehot_r = torch.nn.functional.one_hot(r.flatten(), self.num_r).float().to(device)  # (S*S, R)
        f = torch.arange(frames)
        self.d = (f[:, None] - f[None, :]).abs().to(device)  # (F, F)
        self.sum = torch.zeros(frames, self.num_r, dtype=torch.float64, device=device)
        self.per_layer: dict[int, torch.Tensor] = {}
        self.count = 0

    def table(self, probs: torch.Tensor) -> torch.Tensor:
        """(F, R) mass table of probs (..., N, N), averaged over all leading dims and queries."""
        frames, height, width = self.grid
        s = height * width
        p = probs.reshape(-1, frames, s, frames, s).permute(0, 1, 3, 2, 4).reshape(-1, frames, frames, s * s)
        by_r = (p @ self.onehot_r).mean(0) / s  # (Fq, Fk, R): mass per query, averaged over queries in frame
        out = torch.zeros(frames, self.num_r, device=probs.device)
        out.index_add_(0, self.d.flatten(), by_r.reshape(frames * frames, self.num_r))
        return (out / frames).double()  # mean over query frames

    def add(self, layer: int, probs: torch.Tensor) -> None:
        t = self.table(probs)
        self.sum += t
        self.per_layer[layer] = self.per_layer.get(layer, 0) + t
        self.count += 1


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=None)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="transformer dtype (float32 matches CPU runs)")
    p.add_argument("--steps", type=int, default=DEFAULT_NUM_STEPS)
    p.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE)
    p.add_argument("--num-prompts", type=int, default=len(PROMPTS))
    p.add_argument("--out-dir", default=str(RESULTS_DIR))
    args = p.parse_args(argv)

    pipe = load_tiny_video_pipeline(device=args.device, dtype=getattr(torch, args.dtype), weights_dir=args.weights)
    pipe.set_progress_bar_config(disable=True)
    tr = pipe.transformer
    pt, ph, pw = tr.config.patch_size
    grid = (16 // pt, 64 // ph, 64 // pw)
    table = DistanceTable(grid, pipe.device)
    max_err = [0.0]

    def make_hook(layer):
        def hook(module, args_, kwargs, output):
            hidden, rotary = args_[0], args_[3] if len(args_) > 3 else kwargs.get("rotary_emb")
            with torch.no_grad():
                probs, out = attention_probs(module, hidden, rotary)
                max_err[0] = max(max_err[0], float((out.float() - output.float()).abs().max() / (output.float().abs().max() + 1e-6)))
                table.add(layer, probs)

        return hook

    handles = [blk.attn1.register_forward_hook(make_hook(i), with_kwargs=True) for i, blk in enumerate(tr.blocks)]
    t0 = time.perf_counter()
    prompts = PROMPTS[: args.num_prompts]
    for i, prompt in enumerate(prompts):
        pipe(prompt, num_inference_steps=args.steps, guidance_scale=args.guidance, generator=torch.Generator().manual_seed(i))
    for h in handles:
        h.remove()
    seconds = time.perf_counter() - t0

    learned = (table.sum / table.count).cpu().numpy()  # (D, R), sums to 1
    uniform = table.table(torch.full((1, 1) + (grid[0] * grid[1] * grid[2],) * 2, 1.0 / (grid[0] * grid[1] * grid[2]), device=pipe.device)).cpu().numpy()
    per_layer = {str(k): (v / (table.count / len(tr.blocks))).cpu().numpy() for k, v in sorted(table.per_layer.items())}
    frame_mass, frame_uniform = learned.sum(1), uniform.sum(1)
    space_mass, space_uniform = learned.sum(0), uniform.sum(0)

    def within(mass, limit):
        return float(mass[: limit + 1].sum())

    summary = {
        "mass_frame_distance_le_1": within(frame_mass, 1), "uniform_frame_distance_le_1": within(frame_uniform, 1),
        "mass_frame_distance_le_3": within(frame_mass, 3), "uniform_frame_distance_le_3": within(frame_uniform, 3),
        "mass_spatial_distance_le_2": within(space_mass, 2), "uniform_spatial_distance_le_2": within(space_uniform, 2),
        "mass_spatial_distance_le_4": within(space_mass, 4), "uniform_spatial_distance_le_4": within(space_uniform, 4),
    }
    device_name = torch.cuda.get_device_name() if pipe.device.type == "cuda" else "cpu"
    result = {
        "summary": summary,
        "grid": list(grid), "layers": len(tr.blocks), "heads": tr.config.num_attention_heads,
        "prompts": prompts, "steps": args.steps, "guidance": args.guidance, "dtype": args.dtype,
        "attention_calls_averaged": table.count,
        "max_relative_error_of_rebuilt_attention_output": max_err[0],
        "device": device_name, "date": time.strftime("%Y-%m-%d"), "seconds": round(seconds, 1),
        "mass_by_frame_distance": frame_mass.tolist(), "uniform_by_frame_distance": frame_uniform.tolist(),
        "mass_by_spatial_distance": space_mass.tolist(), "uniform_by_spatial_distance": space_uniform.tolist(),
        "mass_by_frame_distance_per_layer": {k: v.sum(1).tolist() for k, v in per_layer.items()},
        "mass_by_spatial_distance_per_layer": {k: v.sum(0).tolist() for k, v in per_layer.items()},
        "mass_table_frame_x_spatial": learned.tolist(),
    }
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "attention_locality.json").write_text(json.dumps(result, indent=2))
    _plot(result, learned, uniform, out / "attention_locality.png")
    print(json.dumps({"summary": summary, "max_rel_err": max_err[0], "seconds": round(seconds, 1)}, indent=2))
    return result


def _plot(result, learned, uniform, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, key, base, xlabel in (
        (axes[0], "mass_by_frame_distance", "uniform_by_frame_distance", "frame distance |f - f'| (latent frames)"),
        (axes[1], "mass_by_spatial_distance", "uniform_by_spatial_distance", "spatial distance (tokens, rounded)"),
    ):
        for layer, values in result[key + "_per_layer"].items():
            ax.plot(values, lw=0.8, alpha=0.5, label=f"layer {layer}")
        ax.plot(result[key], "k-o", ms=3, lw=2, label="mean of layers and heads")
        ax.plot(result[base], "k--", lw=1, label="uniform attention")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("attention mass per query")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    ratio = np.log10(np.maximum(learned, 1e-9) / np.maximum(uniform, 1e-12))
    ratio[uniform <= 0] = np.nan
    im = axes[2].imshow(ratio, aspect="auto", origin="lower", cmap="RdBu_r", vmin=-2, vmax=2)
    axes[2].set_xlabel("spatial distance")
    axes[2].set_ylabel("frame distance")
    axes[2].set_title("log10(mass / uniform)")
    fig.colorbar(im, ax=axes[2])
    grid = result["grid"]
    fig.suptitle(
        f"Tiny video model self-attention locality ({grid[0]}x{grid[1]}x{grid[2]} tokens, {result['layers']} layers x "
        f"{result['heads']} heads, {len(result['prompts'])} videos x {result['steps']} steps, {result['device']})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
