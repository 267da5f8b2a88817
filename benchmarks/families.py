"""Is a patched transformer ever slower than dense? Every supported family at two common resolutions
(issue 15).

For each family: diffusers' own transformer class at the family's real width (heads x head_dim, text
width) with a few layers (--layers, random bf16 weights), at two resolutions. Per (family,
resolution) one forward, in one run: dense; the radial and neighborhood presets and a full-window
layout, each as patch() runs them by default (the cost model decides dense or sparse per shape, the
first forward calibrates, outside the timing) and with force_sparse=True (the sparse path whatever
it costs). Records: forward_ms (CUDA events after a warm-up, median), ratio_vs_dense,
what ran (the cost model's decision), block density. Each record's dense_ms comes from an
unpatched copy of the model whose forwards alternate with the patched model's (medians of at least
--reps forwards each, more for short ones), so both see the same GPU clocks. The target: the
default patch at >= 0.98x of dense everywhere.

Usage: python benchmarks/families.py --out DIR [--families wan,hunyuan_video,...] [--layers 2]
       python benchmarks/families.py --out DIR --smoke     # tiny widths on the CPU: checks the script
Writes DIR/families_<gpu>.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
import traceback

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def _wan(layers):
    return "WanTransformer3DModel", dict(patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=16,
                                         out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=layers,
                                         cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6)


def _hunyuan(layers):
    return "HunyuanVideoTransformer3DModel", dict(in_channels=16, out_channels=16, num_attention_heads=24, attention_head_dim=128,
                                                  num_layers=layers, num_single_layers=layers, num_refiner_layers=1,
                                                  patch_size=2, patch_size_t=1, guidance_embeds=True, text_embed_dim=4096,
                                                  pooled_projection_dim=768, rope_axes_dim=(16, 56, 56))


def _cogvideox(layers):
    return "CogVideoXTransformer3DModel", dict(num_attention_heads=48, attention_head_dim=64, in_channels=16, out_channels=16,
                                               time_embed_dim=512, text_embed_dim=4096, num_layers=layers, sample_width=90,
                                               sample_height=60, sample_frames=49, patch_size=2, temporal_compression_ratio=4,
                                               use_rotary_positional_embeddings=True)


def _ltx(layers):
    return "LTXVideoTransformer3DModel", dict(in_channels=128, out_channels=128, patch_size=1, patch_size_t=1,
                                              num_attention_heads=32, attention_head_dim=64, cross_attention_dim=2048,
                                              num_layers=layers, caption_channels=4096)


def _mochi(layers):
    return "MochiTransformer3DModel", dict(patch_size=2, num_attention_heads=24, attention_head_dim=128, num_layers=layers,
                                           pooled_projection_dim=1536, in_channels=12, text_embed_dim=4096, time_embed_dim=256)


def _flux(layers):
    return "FluxTransformer2DModel", dict(patch_size=1, in_channels=64, num_layers=max(1, layers // 2), num_single_layers=layers,
                                          attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
                                          pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56))


# family -> (config builder, {resolution: latent grid (T', H', W') in transformer tokens}, text tokens)
FAMILIES = {
    "wan": (_wan, {"480p_81f": (21, 30, 52), "720p_81f": (21, 45, 80)}, 512),
    "hunyuan_video": (_hunyuan, {"544p_129f": (33, 34, 60), "720p_129f": (33, 45, 80)}, 256),
    "cogvideox": (_cogvideox, {"480p_49f": (13, 30, 45), "480p_81f": (21, 30, 45)}, 226),
    "ltx": (_ltx, {"480p_161f": (21, 15, 22), "720p_121f": (16, 22, 40)}, 128),
    "mochi": (_mochi, {"480p_163f": (28, 30, 53), "480p_85f": (15, 30, 53)}, 256),
    "flux": (_flux, {"1024px": (1, 64, 64), "1536px": (1, 96, 96)}, 512),
}
# --smoke: the same classes at toy widths (2 heads x 16), tiny grids.
SMOKE = dict(num_attention_heads=2, attention_head_dim=16)
SMOKE_WIDTHS = {"wan": dict(text_dim=32, ffn_dim=32), "hunyuan_video": dict(text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(4, 6, 6)),
                "cogvideox": dict(text_embed_dim=32, time_embed_dim=8, sample_width=18, sample_height=10, sample_frames=17),
                "ltx": dict(in_channels=8, out_channels=8, cross_attention_dim=32, caption_channels=32),
                "mochi": dict(pooled_projection_dim=16, text_embed_dim=32, time_embed_dim=8),
                "flux": dict(in_channels=4, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=(4, 4, 8))}
SMOKE_GRIDS = {"wan": (3, 5, 9), "hunyuan_video": (3, 5, 9), "cogvideox": (3, 5, 9), "ltx": (3, 5, 9), "mochi": (3, 5, 9),
               "flux": (1, 10, 12)}


def inputs(family: str, model, grid, text_len: int, device, dtype, smoke: bool) -> dict:
    """The forward's keyword arguments for a latent grid of ``grid`` transformer tokens."""
    T, H, W = grid
    g = torch.Generator(device).manual_seed(0)
    cfg = model.config

    def randn(*shape):
        return torch.randn(*shape, generator=g, device=device, dtype=dtype)

    text_dim = {"wan": "text_dim", "hunyuan_video": "text_embed_dim", "cogvideox": "text_embed_dim", "ltx": "caption_channels",
                "mochi": "text_embed_dim", "flux": "joint_attention_dim"}[family]
    text = randn(1, text_len, cfg[text_dim])
    mask = torch.ones(1, text_len, device=device, dtype=torch.bool)
    t = torch.tensor([500.0], device=device)
    if family == "wan":
        return dict(hidden_states=randn(1, cfg.in_channels, T, 2 * H, 2 * W), timestep=t, encoder_hidden_states=text)
    if family == "hunyuan_video":
        return dict(hidden_states=randn(1, cfg.in_channels, T, 2 * H, 2 * W), timestep=t, encoder_hidden_states=text,
                    encoder_attention_mask=mask, pooled_projections=randn(1, cfg.pooled_projection_dim),
                    guidance=torch.tensor([6000.0], device=device))
    if family == "cogvideox":
        from diffusers.models.embeddings import get_3d_rotary_pos_embed

        cos, sin = get_3d_rotary_pos_embed(cfg.attention_head_dim, ((0, 0), (H, W)), (H, W), T, device=device)
        return dict(hidden_states=randn(1, T, cfg.in_channels, 2 * H, 2 * W), encoder_hidden_states=text, timestep=t,
                    image_rotary_emb=(cos.to(dtype), sin.to(dtype)))
    if family == "ltx":
        return dict(hidden_states=randn(1, T * H * W, cfg.in_channels), encoder_hidden_states=text, timestep=t,
                    encoder_attention_mask=mask.long(), num_frames=T, height=H, width=W)
    if family == "mochi":
        return dict(hidden_states=randn(1, cfg.in_channels, T, 2 * H, 2 * W), encoder_hidden_states=text, timestep=t,
                    encoder_attention_mask=mask)
    rows, cols = torch.meshgrid(torch.arange(H, device=device), torch.arange(W, device=device), indexing="ij")
    img_ids = torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).reshape(-1, 3).to(dtype)
    return dict(hidden_states=randn(1, H * W, cfg.in_channels), encoder_hidden_states=text,
                pooled_projections=randn(1, cfg.pooled_projection_dim), timestep=t / 1000, img_ids=img_ids,
                txt_ids=torch.zeros(text_len, 3, device=device, dtype=dtype), guidance=torch.tensor([3.5], device=device))


def timed_pair(dense, patched, kwargs, reps: int, device, min_total_ms: float = 400.0) -> tuple[float, float]:
    """Median forward times (ms) of two models, their forwards alternating (ditaccel's own
    ``time_pair``: one untimed forward each first, where calibration and compilation happen), so both
    see the same GPU clocks: ``reps`` rounds, more for short forwards (about ``min_total_ms`` of
    them, at most 25 rounds), so a 10 ms forward is not judged on three samples."""
    from ditaccel.cost_model import time_pair

    def run(model):
        return lambda: model(**kwargs, return_dict=False)

    with torch.no_grad():
        times = time_pair(run(dense), run(patched), device=device, rounds=reps)
        rounds = min(25, math.ceil(min_total_ms / max(times[1], 1e-3)))
        if rounds > reps:  # short forwards: again, with enough rounds
            times = time_pair(run(dense), run(patched), device=device, rounds=rounds)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--layers", type=int, default=2, help="transformer blocks per model (each kind, for dual/single-stream models)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="toy widths and grids on the CPU: checks the script, times nothing")
    args = ap.parse_args()

    import diffusers

    import ditaccel
    from ditaccel.cost_model import CostModel

    cuda = torch.cuda.is_available() and not args.smoke
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    gpu = torch.cuda.get_device_name() if cuda else "cpu (smoke)"
    tag = "smoke" if args.smoke else next((t.lower() for t in ("H100", "H200", "B200") if t in gpu), "gpu")
    path = os.path.join(args.out, f"families_{tag}.json")
    os.makedirs(args.out, exist_ok=True)
    result = dict(gpu=gpu, torch=torch.__version__, diffusers=diffusers.__version__, date=time.strftime("%Y-%m-%d"),
                  layers=args.layers, dtype=str(dtype), records=[],
                  dense_timing="an unpatched copy of the model, its forwards alternating with the patched model's (medians)")
    # On the CPU (smoke) the runtime has no cost model unless given one: give it one, as a GPU has.
    cost_model = CostModel() if args.smoke else None
    variants = {"radial": "radial", "neighborhood": "neighborhood", "full_window": ditaccel.Neighborhood(window=(1.0, 1.0, 1.0))}
    for family in args.families.split(","):
        builder, resolutions, text_len = FAMILIES[family]
        class_name, config = builder(args.layers)
        if args.smoke:
            config = {**config, **SMOKE, **SMOKE_WIDTHS[family]}
            resolutions, text_len = {"smoke": SMOKE_GRIDS[family]}, 16
        try:
            torch.manual_seed(0)
            torch.set_default_dtype(dtype)
            with torch.device(device):
                model = getattr(diffusers, class_name)(**config).to(dtype).eval().requires_grad_(False)
                twin = copy.deepcopy(model)  # stays unpatched: the dense forwards alternate with the patched ones
        except Exception as error:  # noqa: BLE001  (keep going: the record says why)
            traceback.print_exc()
            result["records"].append(dict(family=family, error=f"building {class_name}: {type(error).__name__}: {error}"[:400]))
            continue
        finally:
            torch.set_default_dtype(torch.float32)
        for resolution, grid in resolutions.items():
            try:
                kwargs = inputs(family, model, grid, text_len, device, dtype, args.smoke)
                base = dict(family=family, resolution=resolution, grid=list(grid), tokens=grid[0] * grid[1] * grid[2],
                            text_tokens=text_len, heads=model.config.num_attention_heads,
                            head_dim=model.config.attention_head_dim)
                for name, method in variants.items():
                    for force in (False, True):
                        record = dict(base, variant=name, force_sparse=force)
                        try:
                            with ditaccel.patch(model, method, schedule=ditaccel.Schedule(), force_sparse=force,
                                                cost_model=cost_model) as handle:
                                dense_ms, ms = timed_pair(twin, model, kwargs, args.reps, device)
                                summary = handle.summary()
                            record.update(dense_ms=dense_ms, forward_ms=ms, ratio_vs_dense=dense_ms / ms,
                                          block_density=summary.rows[-1]["block_density"],
                                          ran="sparse" if any(r["sparse_steps"] for r in summary.rows) else "dense",
                                          decision=next(iter(next(iter(summary.decisions.values()), {}).values()), None))
                        except Exception as error:  # noqa: BLE001
                            traceback.print_exc()
                            record["error"] = f"{type(error).__name__}: {error}"[:400]
                        result["records"].append(record)
                        print(json.dumps({k: record.get(k) for k in ("family", "resolution", "variant", "force_sparse", "forward_ms",
                                                                     "ratio_vs_dense", "ran", "error")}), flush=True)
            except Exception as error:  # noqa: BLE001
                traceback.print_exc()
                result["records"].append(dict(family=family, resolution=resolution, error=f"{type(error).__name__}: {error}"[:400]))
            with open(path, "w") as f:
                json.dump(result, f, indent=1)
        del model, twin
        if cuda:
            torch.cuda.empty_cache()
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
