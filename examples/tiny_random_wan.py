"""A tiny random-weight Wan pipeline (a stock diffusers WanPipeline), dense and with radial attention.

Runs offline on a CPU in under a minute. Prints the time of each run and ditaccel's per-layer
table (method, block density, dense/sparse steps) and writes both videos to outputs/.
Random weights make noise, not pictures: this shows the mechanics; the quality testbed is the
built-in trained model.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import imageio.v2 as imageio
import numpy as np
import torch
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel

import ditaccel


def tiny_wan_pipeline() -> WanPipeline:
    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True])
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=32, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=256, ffn_dim=64, num_layers=4, rope_max_seq_len=64,
    ).eval()
    return WanPipeline(transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0), text_encoder=None, tokenizer=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="radial", help="preset name: radial or neighborhood")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("outputs"))
    args = parser.parse_args()

    pipe = tiny_wan_pipeline()
    prompt = torch.randn(1, 16, 32, generator=torch.Generator().manual_seed(1))
    # 33 frames at 208x384 -> latent grid 9 x 13 x 24 = 2,808 tokens (not a multiple of 128).
    call = dict(prompt_embeds=prompt, height=208, width=384, num_frames=33, num_inference_steps=args.steps, guidance_scale=1.0, output_type="np")

    def run(label: str) -> np.ndarray:
        start = time.perf_counter()
        frames = pipe(**call, generator=torch.Generator().manual_seed(0)).frames[0]
        print(f"{label:>12}: {time.perf_counter() - start:6.2f} s for {args.steps} steps")
        return frames

    pipe(**{**call, "num_inference_steps": 1})  # warm-up: first-call costs stay out of the timings
    dense = run("dense")
    with ditaccel.patch(pipe, args.method) as handle:
        sparse = run(args.method)  # includes building the layout once for this grid
        print(handle.summary())
    again = run("unpatched")
    print(f"unpatched output identical to dense: {np.array_equal(again, dense)}")
    print(f"mean |{args.method} - dense| per pixel: {np.abs(sparse - dense).mean():.4f} (random weights: only mechanics)")

    args.out.mkdir(parents=True, exist_ok=True)
    for label, frames in (("dense", dense), (args.method, sparse)):
        path = args.out / f"quickstart_{label}.mp4"
        imageio.mimwrite(path, (frames * 255).round().astype(np.uint8), fps=8)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
