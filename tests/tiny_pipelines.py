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


def build_hunyuan_video() -> TinyCase:
    from diffusers import (
        AutoencoderKLHunyuanVideo, FlowMatchEulerDiscreteScheduler, HunyuanVideoPipeline, HunyuanVideoTransformer3DModel,
    )

    torch.manual_seed(0)
    vae = AutoencoderKLHunyuanVideo(
        in_channels=3, out_channels=3, latent_channels=4, down_block_types=("HunyuanVideoDownBlock3D",) * 4,
        up_block_types=("HunyuanVideoUpBlock3D",) * 4, block_out_channels=(8,) * 4, layers_per_block=1, act_fn="silu",
        norm_num_groups=4, scaling_factor=0.476986, spatial_compression_ratio=8, temporal_compression_ratio=4,
        mid_block_add_attention=True,
    )
    transformer = HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=2, num_single_layers=2,
        num_refiner_layers=1, patch_size=2, patch_size_t=1, guidance_embeds=True, text_embed_dim=16, pooled_projection_dim=8,
        rope_axes_dim=(4, 6, 6),
    ).eval()
    pipe = HunyuanVideoPipeline(transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
                                text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None)
    pipe.set_progress_bar_config(disable=True)
    # Padded prompts (the transformer masks text padding): 11 of 16 tokens real, 6 in the negative.
    call = dict(
        prompt_embeds=torch.randn(1, 16, 16, generator=_gen(1)), pooled_prompt_embeds=torch.randn(1, 8, generator=_gen(2)),
        prompt_attention_mask=_text_mask([11], 16),
        negative_prompt_embeds=torch.randn(1, 16, 16, generator=_gen(3)), negative_pooled_prompt_embeds=torch.randn(1, 8, generator=_gen(4)),
        negative_prompt_attention_mask=_text_mask([6], 16),
        # 17 frames -> 5 latent frames; 112x144 -> 14x18 latent -> 7x9 tokens per frame: 315 tokens.
        height=112, width=144, num_frames=17, num_inference_steps=2, true_cfg_scale=3.0, guidance_scale=6.0, output_type="pt",
    )

    def inputs(grid):
        T, H, W = grid
        return dict(
            hidden_states=torch.randn(2, 4, T, 2 * H, 2 * W, generator=_gen(5)), timestep=torch.tensor([500.0, 500.0]),
            encoder_hidden_states=torch.randn(2, 16, 16, generator=_gen(6)), encoder_attention_mask=_text_mask([16, 9], 16),
            pooled_projections=torch.randn(2, 8, generator=_gen(7)), guidance=torch.tensor([6000.0, 6000.0]), return_dict=False,
        )

    return TinyCase("hunyuan_video", pipe, call, "frames", inputs)


def build_cogvideox() -> TinyCase:
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXPipeline, CogVideoXTransformer3DModel

    torch.manual_seed(0)
    vae = AutoencoderKLCogVideoX(
        in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4, up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8,) * 4, latent_channels=4, layers_per_block=1, norm_num_groups=2, temporal_compression_ratio=4,
    )
    # 5B-style: rotary embeddings (computed by the pipeline) instead of absolute positions.
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=2, text_embed_dim=32,
        num_layers=2, sample_width=10, sample_height=7, sample_frames=17, patch_size=2, temporal_compression_ratio=4,
        max_text_seq_length=16, use_rotary_positional_embeddings=True,
    ).eval()
    # The released 5B scheduler settings (v-prediction, zero terminal SNR) keep the random model's latents small.
    scheduler = CogVideoXDDIMScheduler(prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing",
                                       beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=True, snr_shift_scale=1.0)
    pipe = CogVideoXPipeline(transformer=transformer, vae=vae, scheduler=scheduler, text_encoder=None, tokenizer=None)
    pipe.set_progress_bar_config(disable=True)
    prompt = torch.randn(1, 16, 32, generator=_gen(1))
    call = dict(
        prompt_embeds=prompt, negative_prompt_embeds=torch.randn(1, 16, 32, generator=_gen(2)),
        # 17 frames -> 5 latent frames; 112x160 -> 14x20 latent -> 7x10 tokens per frame: 350 tokens.
        height=112, width=160, num_frames=17, num_inference_steps=2, guidance_scale=3.0, output_type="pt",
    )

    def inputs(grid):
        T, H, W = grid
        latent = torch.randn(2, T, 4, 2 * H, 2 * W, generator=_gen(3))
        # CogVideoX 5B takes RoPE tables from the pipeline; build them the pipeline's way for this grid.
        rotary = pipe._prepare_rotary_positional_embeddings(2 * 8 * H, 2 * 8 * W, T, torch.device("cpu"))
        return dict(hidden_states=latent, encoder_hidden_states=torch.randn(2, 16, 32, generator=_gen(4)),
                    timestep=torch.tensor([500, 500]), image_rotary_emb=rotary, return_dict=False)

    return TinyCase("cogvideox", pipe, call, "frames", inputs)


def build_ltx() -> TinyCase:
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXPipeline, LTXVideoTransformer3DModel

    torch.manual_seed(0)
    vae = AutoencoderKLLTXVideo(
        in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(8,) * 4, decoder_block_out_channels=(8,) * 4,
        layers_per_block=(1,) * 5, decoder_layers_per_block=(1,) * 5, spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False), decoder_inject_noise=(False,) * 5,
        upsample_residual=(False,) * 4, upsample_factor=(1,) * 4, timestep_conditioning=False, patch_size=1, patch_size_t=1,
        encoder_causal=True, decoder_causal=False,
    )
    vae.use_framewise_encoding = False
    vae.use_framewise_decoding = False
    transformer = LTXVideoTransformer3DModel(
        in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=16,
        cross_attention_dim=32, num_layers=2, caption_channels=32,
    ).eval()
    pipe = LTXPipeline(transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(), text_encoder=None, tokenizer=None)
    pipe.set_progress_bar_config(disable=True)
    call = dict(
        prompt_embeds=torch.randn(1, 16, 32, generator=_gen(1)), prompt_attention_mask=_text_mask([10], 16),
        negative_prompt_embeds=torch.randn(1, 16, 32, generator=_gen(2)), negative_prompt_attention_mask=_text_mask([4], 16),
        # VAE x4 in space and time: 17 frames -> 5 latent frames; 32x96 -> 8x24 tokens per frame: 960 tokens.
        height=32, width=96, num_frames=17, num_inference_steps=2, guidance_scale=3.0, output_type="pt",
    )

    def inputs(grid):
        T, H, W = grid
        return dict(
            hidden_states=torch.randn(2, T * H * W, 8, generator=_gen(3)), encoder_hidden_states=torch.randn(2, 16, 32, generator=_gen(4)),
            timestep=torch.tensor([500.0, 500.0]), encoder_attention_mask=_text_mask([16, 7], 16), num_frames=T, height=H, width=W,
            rope_interpolation_scale=(4 / 25, 4, 4), return_dict=False,
        )

    return TinyCase("ltx", pipe, call, "frames", inputs)


def build_mochi() -> TinyCase:
    from diffusers import AutoencoderKLMochi, FlowMatchEulerDiscreteScheduler, MochiPipeline, MochiTransformer3DModel

    torch.manual_seed(0)
    vae = AutoencoderKLMochi(latent_channels=12, out_channels=3, encoder_block_out_channels=(32,) * 4,
                             decoder_block_out_channels=(32,) * 4, layers_per_block=(1,) * 5)
    transformer = MochiTransformer3DModel(
        patch_size=2, num_attention_heads=2, attention_head_dim=16, num_layers=2, pooled_projection_dim=16, in_channels=12,
        qk_norm="rms_norm", text_embed_dim=32, time_embed_dim=4, activation_fn="swiglu", max_sequence_length=16,
    ).eval()
    pipe = MochiPipeline(transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(), text_encoder=None, tokenizer=None)
    pipe.set_progress_bar_config(disable=True)
    call = dict(
        prompt_embeds=torch.randn(1, 16, 32, generator=_gen(1)), prompt_attention_mask=_text_mask([12], 16),
        negative_prompt_embeds=torch.randn(1, 16, 32, generator=_gen(2)), negative_prompt_attention_mask=_text_mask([5], 16),
        # VAE x6 in time, x8 in space, patch 2: 13 frames -> 3 latent frames; 128x208 -> 8x13 tokens per frame: 312 tokens.
        height=128, width=208, num_frames=13, num_inference_steps=2, guidance_scale=4.5, output_type="pt",
    )

    def inputs(grid):
        T, H, W = grid
        # Padding in the middle for the second sample: upstream keeps only the valid tokens, in order.
        mask = _text_mask([16, 9], 16)
        mask[1] = mask[1][torch.randperm(16, generator=_gen(5))]
        return dict(
            hidden_states=torch.randn(2, 12, T, 2 * H, 2 * W, generator=_gen(3)), encoder_hidden_states=torch.randn(2, 16, 32, generator=_gen(4)),
            timestep=torch.tensor([500.0, 500.0]), encoder_attention_mask=mask, return_dict=False,
        )

    return TinyCase("mochi", pipe, call, "frames", inputs)


def build_flux() -> TinyCase:
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=2, num_single_layers=2, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
    ).eval()
    vae = AutoencoderKL(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4,), layers_per_block=1, latent_channels=1,
                        norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)
    pipe = FluxPipeline(transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(), text_encoder=None, tokenizer=None,
                        text_encoder_2=None, tokenizer_2=None)
    pipe.set_progress_bar_config(disable=True)
    call = dict(
        prompt_embeds=torch.randn(1, 16, 32, generator=_gen(1)), pooled_prompt_embeds=torch.randn(1, 32, generator=_gen(2)),
        negative_prompt_embeds=torch.randn(1, 16, 32, generator=_gen(3)), negative_pooled_prompt_embeds=torch.randn(1, 32, generator=_gen(4)),
        # VAE x1 here, 2x2 packing: 40x48 -> 20x24 image tokens: 480.
        height=40, width=48, num_inference_steps=3, true_cfg_scale=2.0, output_type="pt",
    )

    def inputs(grid):
        _, H, W = grid
        rows, cols = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
        img_ids = torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).reshape(-1, 3).float()
        return dict(
            hidden_states=torch.randn(2, H * W, 4, generator=_gen(5)), encoder_hidden_states=torch.randn(2, 16, 32, generator=_gen(6)),
            pooled_projections=torch.randn(2, 32, generator=_gen(7)), timestep=torch.tensor([0.5, 0.5]), img_ids=img_ids,
            txt_ids=torch.zeros(16, 3), return_dict=False,
        )

    return TinyCase("flux", pipe, call, "images", inputs)


def _text_mask(valid: list[int], length: int) -> torch.Tensor:
    """[len(valid), length] attention mask (1 = real token), each row's valid tokens first."""
    return (torch.arange(length)[None, :] < torch.tensor(valid)[:, None]).long()


BUILDERS: dict[str, Callable[[], TinyCase]] = {
    "wan": build_wan,
    "hunyuan_video": build_hunyuan_video,
    "cogvideox": build_cogvideox,
    "ltx": build_ltx,
    "mochi": build_mochi,
    "flux": build_flux,
}
