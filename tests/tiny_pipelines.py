"""Tiny random-weight diffusers pipelines built offline from configs, one builder per family.

Each builder returns a TinyCase: the pipeline, the keyword arguments of a short generation,
and how to call the transformer directly (for per-call checks at larger grids).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch


@dataclass
class TinyCase:
    family: str
    pipe: object
    call_kwargs: dict  # pipe(**call_kwargs) runs a short generation
    output_attr: str  # "frames" or "images"
    transformer_inputs: Callable[[tuple[int, int, int]], dict]  # grid -> transformer(**inputs)

    def generate(self):
        out = self.pipe(**self.call_kwargs, generator=torch.Generator().manual_seed(0))
        return getattr(out, self.output_attr)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def build_wan() -> TinyCase:
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel

    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True])
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, rope_max_seq_len=32,
    ).eval()
    pipe = WanPipeline(transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), text_encoder=None, tokenizer=None)
    pipe.set_progress_bar_config(disable=True)
    prompt = torch.randn(1, 16, 32, generator=_gen(1))
    negative = torch.randn(1, 16, 32, generator=_gen(2))
    # 17 frames -> 5 latent frames; 80x144 -> 10x18 tokens per frame: 900 tokens, not a multiple of 128.
    call = dict(prompt_embeds=prompt, negative_prompt_embeds=negative, height=80, width=144, num_frames=17,
                num_inference_steps=3, guidance_scale=5.0, output_type="pt")

    def inputs(grid):
        T, H, W = grid
        return dict(hidden_states=torch.randn(1, 16, T, 2 * H, 2 * W, generator=_gen(3)), timestep=torch.tensor([500.0]),
                    encoder_hidden_states=prompt, return_dict=False)

    return TinyCase("wan", pipe, call, "frames", inputs)


BUILDERS: dict[str, Callable[[], TinyCase]] = {
    "wan": build_wan,
}
