"""The built-in tiny text-to-video model and its diffusers pipeline.

A pixel-space flow-matching model trained by this project on procedural clips
(``procedural_clips``): 16 frames x 64 x 64 RGB, patchified (1, 4, 4) into a 16 x 16 x 16 token
grid by a stock diffusers ``WanTransformer3DModel``, so every Wan code path of ditaccel (adapter,
sparse methods, caching) runs on it unchanged. Text goes through a word-level tokenizer and a
two-layer ``UMT5EncoderModel`` trained jointly with the transformer. The weights ship inside the
package (``DEFAULT_WEIGHTS_DIR``) and load with no network.

```python
from ditaccel.pipelines.tiny_video import load_tiny_video_pipeline
pipe = load_tiny_video_pipeline()                       # CPU, float32
video = pipe("a red circle moving right", generator=torch.Generator().manual_seed(0)).frames[0]
```
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler, WanTransformer3DModel
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

__all__ = [
    "DEFAULT_WEIGHTS_DIR",
    "TinyVideoPipeline",
    "TinyVideoPipelineOutput",
    "complete_prompt",
    "load_tiny_video_pipeline",
]

DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parent / "tiny_video_weights"

# Default generation settings: one video takes about 40 s on 2 idle CPU cores (limit: 3 minutes).
DEFAULT_NUM_STEPS = 20
DEFAULT_GUIDANCE = 4.0
MAX_SEQUENCE_LENGTH = 24

TEXT_DIM = 128
TRANSFORMER_CONFIG = dict(
    patch_size=(1, 4, 4),
    num_attention_heads=5,
    attention_head_dim=64,
    in_channels=3,
    out_channels=3,
    text_dim=TEXT_DIM,
    freq_dim=64,
    ffn_dim=1024,
    num_layers=5,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=256,
)
TEXT_ENCODER_CONFIG = dict(
    d_model=TEXT_DIM,
    d_kv=32,
    num_heads=4,
    d_ff=256,
    num_layers=2,
    relative_attention_num_buckets=16,
    relative_attention_max_distance=32,
    dropout_rate=0.0,
    feed_forward_proj="gated-gelu",
    pad_token_id=0,
    eos_token_id=1,
    decoder_start_token_id=0,
)
# Flow-matching time shift: more of the schedule at high noise, where 64x64 x 16-frame videos
# (very redundant signals) decide their layout. Training samples t with the same shift.
FLOW_SHIFT = 3.0
SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer over the template vocabulary, T5-style specials, EOS appended."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    from .procedural_clips import VOCABULARY

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for word in VOCABULARY:
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", vocab["</s>"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=MAX_SEQUENCE_LENGTH,
    )


def build_text_encoder(vocab_size: int) -> UMT5EncoderModel:
    # Round the vocabulary up so that a few new words can be added without a new embedding shape.
    return UMT5EncoderModel(UMT5Config(vocab_size=-(-vocab_size // 16) * 16, **TEXT_ENCODER_CONFIG))


def build_transformer() -> WanTransformer3DModel:
    return WanTransformer3DModel(**TRANSFORMER_CONFIG)


def build_scheduler() -> FlowMatchEulerDiscreteScheduler:
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=FLOW_SHIFT)


def encode_prompts(
    tokenizer: PreTrainedTokenizerFast,
    text_encoder: UMT5EncoderModel,
    prompts: list[str],
    device: torch.device | str,
    dtype: torch.dtype | None = None,
    max_sequence_length: int = MAX_SEQUENCE_LENGTH,
) -> torch.Tensor:
    """(B, max_sequence_length, TEXT_DIM) embeddings; positions after EOS are zero (as in Wan)."""
    inputs = tokenizer(
        [p.lower() for p in prompts],
        padding="max_length",
        max_length=max_sequence_length,
        truncation=True,
        return_tensors="pt",
    )
    ids = inputs.input_ids.to(device)
    mask = inputs.attention_mask.to(device)
    hidden = text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    hidden = hidden * mask[..., None].to(hidden.dtype)
    return hidden.to(dtype) if dtype is not None else hidden


def complete_prompt(prompt: str) -> str:
    """Every training prompt names its background; a prompt that does not gets the gray one."""
    text = " ".join(prompt.lower().split())
    if text and "background" not in text:
        text += " on a gray background"
    return text


def flow_shift(u: torch.Tensor, shift: float = FLOW_SHIFT) -> torch.Tensor:
    """Map u in [0, 1] to the shifted flow time sigma, as FlowMatchEulerDiscreteScheduler does."""
    return shift * u / (1.0 + (shift - 1.0) * u)


@dataclass
class TinyVideoPipelineOutput(BaseOutput):
    """``frames``: (B, F, H, W, 3) floats in [0, 1] for ``output_type="np"``, (B, F, 3, H, W) for "pt"."""

    frames: np.ndarray | torch.Tensor


def _cache_context(model, name: str, **kwargs):
    # diffusers' per-call cache context ("cond"/"uncond") lets caching methods keep separate state
    # for the two CFG branches; older diffusers versions lack it or its keyword arguments.
    if not hasattr(model, "cache_context"):
        return contextlib.nullcontext()
    try:
        return model.cache_context(name, **kwargs)
    except TypeError:
        return model.cache_context(name)


class TinyVideoPipeline(DiffusionPipeline):
    """Text-to-video in pixel space: word-level tokenizer -> UMT5 encoder -> Wan transformer."""

    model_cpu_offload_seq = "text_encoder->transformer"

    def __init__(
        self,
        transformer: WanTransformer3DModel,
        text_encoder: UMT5EncoderModel,
        tokenizer: PreTrainedTokenizerFast,
        scheduler: FlowMatchEulerDiscreteScheduler,
    ):
        super().__init__()
        self.register_modules(transformer=transformer, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)

    @classmethod
    def from_scratch(cls) -> "TinyVideoPipeline":
        """Untrained components with the shipped architecture (what the training script starts from)."""
        tokenizer = build_tokenizer()
        return cls(build_transformer(), build_text_encoder(len(tokenizer)).eval(), tokenizer, build_scheduler())

    def encode_prompt(
        self, prompts: list[str], device: torch.device, max_sequence_length: int = MAX_SEQUENCE_LENGTH
    ) -> torch.Tensor:
        return encode_prompts(
            self.tokenizer, self.text_encoder, prompts, device, self.transformer.dtype, max_sequence_length
        )

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] = "",
        num_frames: int = 16,
        height: int = 64,
        width: int = 64,
        num_inference_steps: int = DEFAULT_NUM_STEPS,
        guidance_scale: float = DEFAULT_GUIDANCE,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        attention_kwargs: dict | None = None,
        max_sequence_length: int = MAX_SEQUENCE_LENGTH,
        callback_on_step_end: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
    ):
        patch = self.transformer.config.patch_size
        if height % patch[1] or width % patch[2]:
            raise ValueError(f"height and width must be multiples of {patch[1]}, got {height}x{width}")
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        if output_type not in ("np", "pt", "latent"):
            raise ValueError(f"output_type must be 'np', 'pt' or 'latent', got {output_type!r}")
        prompts = [complete_prompt(p) for p in ([prompt] if isinstance(prompt, str) else prompt)]
        negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else list(negative_prompt)
        if len(negatives) != len(prompts):
            raise ValueError(f"negative_prompt has {len(negatives)} entries for {len(prompts)} prompts")
        device = self._execution_device
        dtype = self.transformer.dtype
        do_cfg = guidance_scale > 1.0

        prompt_embeds = self.encode_prompt(prompts, device, max_sequence_length)
        negative_embeds = self.encode_prompt(negatives, device, max_sequence_length) if do_cfg else None

        shape = (len(prompts), self.transformer.config.in_channels, num_frames, height, width)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        else:
            latents = latents.to(device=device, dtype=torch.float32)

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        with self.progress_bar(total=num_inference_steps) as progress_bar:
            for i, t in enumerate(timesteps):
                timestep = t.expand(latents.shape[0])
                ctx = dict(step_index=i, sigma=float(self.scheduler.sigmas[i]), num_inference_steps=num_inference_steps)
                model_input = latents.to(dtype)
                with _cache_context(self.transformer, "cond", **ctx):
                    velocity = self.transformer(
                        hidden_states=model_input,
                        timestep=timestep,
                        encoder_hidden_states=prompt_embeds,
                        attention_kwargs=attention_kwargs,
                        return_dict=False,
                    )[0].float()
                if do_cfg:
                    with _cache_context(self.transformer, "uncond", **ctx):
                        velocity_uncond = self.transformer(
                            hidden_states=model_input,
                            timestep=timestep,
                            encoder_hidden_states=negative_embeds,
                            attention_kwargs=attention_kwargs,
                            return_dict=False,
                        )[0].float()
                    velocity = velocity_uncond + guidance_scale * (velocity - velocity_uncond)
                latents = self.scheduler.step(velocity, t, latents, return_dict=False)[0]
                if callback_on_step_end is not None:
                    callback_on_step_end(i, t, latents)
                progress_bar.update()

        if output_type == "latent":
            frames = latents
        else:
            video = ((latents.clamp(-1.0, 1.0) + 1.0) / 2.0).permute(0, 2, 1, 3, 4)  # (B, F, C, H, W)
            frames = video.cpu() if output_type == "pt" else video.permute(0, 1, 3, 4, 2).cpu().numpy()
        self.maybe_free_model_hooks()
        if not return_dict:
            return (frames,)
        return TinyVideoPipelineOutput(frames=frames)


def load_tiny_video_pipeline(
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    weights_dir: str | Path | None = None,
) -> TinyVideoPipeline:
    """Load the shipped (or another saved) tiny video pipeline from disk, never from the network.

    ``dtype`` defaults to float32 on CPU and bfloat16 elsewhere; the text encoder stays float32
    (it is tiny, and its output is cast to the transformer's dtype).
    """
    path = Path(weights_dir) if weights_dir is not None else DEFAULT_WEIGHTS_DIR
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(f"no saved TinyVideoPipeline in {path} (model_index.json missing)")
    device = torch.device(device)
    if dtype is None:
        dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    # Loading with the dtype (not casting afterwards) keeps the modules Wan wants in float32 there.
    from .loading import dtype_argument

    pipe = TinyVideoPipeline.from_pretrained(path, local_files_only=True, **dtype_argument(dtype))
    pipe.text_encoder.to(dtype=torch.float32)
    return pipe.to(device)
