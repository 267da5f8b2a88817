"""One denoising step of the Wan2.1-14B transformer at 720p / 81 frames: dense vs sparse.

The model is diffusers' WanTransformer3DModel built from the Wan2.1-14B config (40 layers,
40 heads x 128, ffn 13824, text_dim 4096, patch (1, 2, 2)) with random bf16 weights (no
checkpoint is needed to time it). Inputs: latent [1, 16, 21, 90, 160] (720p, 81 frames:
21 x 45 x 80 = 75,600 tokens), one timestep, text embeddings [1, 512, 4096].

Measured, eager and with diffusers' regional compile (compile_repeated_blocks): one forward
dense, one forward patched with radial (paper defaults for Wan: decay 0.2, attention sink) with
every layer sparse, and with the first layer dense (the paper's schedule inside a sparse step).
With ``--method neighborhood`` (the "neighborhood" preset's window, half of each grid dimension,
every layer sparse) instead: the forward in tile order (the default where the tile divides the
grid, e.g. 768 x 1280: 21 x 48 x 80 tokens, (1, 8, 16) tiles) against the same patch with
``tile_order=False`` (the tokens moved in every attention call).
Timed with CUDA events after a warm-up forward; peak GPU memory per configuration.

Usage: python benchmarks/transformer.py --out DIR [--frames 81 --height 720 --width 1280] [--method neighborhood]
Writes DIR/transformer_<gpu>[_neighborhood].json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

WAN_14B = dict(
    patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=16, out_channels=16, text_dim=4096,
    freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6,
)


def gpu_name() -> str:
    name = torch.cuda.get_device_name()
    for tag in ("H100", "H200", "A100", "B200"):
        if tag in name:
            return tag.lower()
    return name.replace(" ", "_").lower()


def timed_forward(model, inputs, reps: int = 1) -> tuple[float, float, float]:
    """(first call ms, best of ``reps`` timed calls ms, peak GiB of the timed calls)."""
    t0 = time.time()
    with torch.no_grad():
        model(**inputs, return_dict=False)
    torch.cuda.synchronize()
    first = (time.time() - t0) * 1e3
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        with torch.no_grad():
            start.record()
            model(**inputs, return_dict=False)
            end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return first, min(times), torch.cuda.max_memory_allocated() / 2**30


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--frames", type=int, default=81)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--layers", type=int, default=40)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--method", choices=("radial", "neighborhood"), default="radial")
    args = ap.parse_args()

    import diffusers
    from diffusers import WanTransformer3DModel

    import ditaccel
    from ditaccel import Radial, Schedule
    from ditaccel.presets import preset

    os.makedirs(args.out, exist_ok=True)
    suffix = "" if args.method == "radial" else f"_{args.method}"
    path = os.path.join(args.out, f"transformer_{gpu_name()}{suffix}.json")
    import triton

    result = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
                  diffusers=diffusers.__version__, date=time.strftime("%Y-%m-%d"), model="Wan2.1-14B (random bf16 weights)",
                  config=dict(WAN_14B, num_layers=args.layers), runs=[])

    def save():
        with open(path, "w") as f:
            json.dump(result, f, indent=1)

    torch.manual_seed(0)
    t0 = time.time()
    torch.set_default_dtype(torch.bfloat16)  # build the parameters in bf16 directly (28 GB, not 56)
    with torch.device("cuda"):
        model = WanTransformer3DModel(**dict(WAN_14B, num_layers=args.layers))
    torch.set_default_dtype(torch.float32)
    model = model.to(torch.bfloat16).eval().requires_grad_(False)
    print(f"model built in {time.time() - t0:.0f}s, {sum(p.numel() for p in model.parameters()) / 1e9:.2f}B params", flush=True)
    latent_t = (args.frames - 1) // 4 + 1
    inputs = dict(
        hidden_states=torch.randn(1, 16, latent_t, args.height // 8, args.width // 8, device="cuda", dtype=torch.bfloat16),
        timestep=torch.tensor([500], device="cuda"),
        encoder_hidden_states=torch.randn(1, 512, 4096, device="cuda", dtype=torch.bfloat16),
    )
    grid = (latent_t, args.height // 16, args.width // 16)
    result.update(grid=list(grid), tokens=grid[0] * grid[1] * grid[2])
    all_sparse = Schedule(dense_steps=0, dense_layers=0)
    if args.method == "radial":
        method = Radial(decay=0.2, sink=True)
        variants = [  # name, schedule, tile_order
            ("dense", None, True),
            ("radial_all_layers", all_sparse, True),
            ("radial_first_layer_dense", Schedule(dense_steps=0, dense_layers=1), True),
        ]
    else:
        method = preset("neighborhood", "wan")[0]
        layout = method.build_layout(grid, device="cuda")
        result.update(method=repr(method), tile=list(layout.tiling.tile), block_density=round(layout.block_density(), 4),
                      tile_divides_grid=layout.tiling.canon_len == layout.tiling.num_tokens)
        variants = [
            ("dense", None, True),
            ("neighborhood_tile_order", all_sparse, True),
            ("neighborhood_model_order", all_sparse, False),
        ]

    def run(mode: str):
        for name, schedule, tile_order in variants:
            handle = None
            try:
                if schedule is not None:
                    handle = ditaccel.patch(model, method, schedule=schedule, tile_order=tile_order)
                first, ms, peak = timed_forward(model, inputs, args.reps)
                rec = dict(mode=mode, variant=name, first_call_ms=round(first, 1), forward_ms=round(ms, 1), peak_gib=round(peak, 3))
            except Exception as e:
                traceback.print_exc()
                rec = dict(mode=mode, variant=name, error=f"{type(e).__name__}: {str(e)[:400]}")
            finally:
                if handle is not None:
                    ditaccel.unpatch(model)
            result["runs"].append(rec)
            save()
            print(json.dumps(rec), flush=True)

    run("eager")
    if not args.no_compile:
        try:
            model.compile_repeated_blocks(fullgraph=True)
            result["compile"] = "compile_repeated_blocks(fullgraph=True)"
        except Exception as e:
            result["compile_error"] = f"{type(e).__name__}: {e}"
        run("compiled")

    by = {(r["mode"], r["variant"]): r for r in result["runs"] if "forward_ms" in r}
    summary = {}
    for mode in ("eager", "compiled"):
        dense = by.get((mode, "dense"))
        for name, _, _ in variants[1:]:
            sparse = by.get((mode, name))
            if dense and sparse:
                summary[f"{mode}_{name}"] = dict(
                    speedup=round(dense["forward_ms"] / sparse["forward_ms"], 3),
                    peak_vs_dense=round(sparse["peak_gib"] / dense["peak_gib"], 4),
                )
        tiled, per_call = by.get((mode, "neighborhood_tile_order")), by.get((mode, "neighborhood_model_order"))
        if tiled and per_call:
            summary[f"{mode}_tile_order_gain"] = round(per_call["forward_ms"] / tiled["forward_ms"] - 1, 4)
    result["summary"] = summary
    save()
    print(json.dumps(summary, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
