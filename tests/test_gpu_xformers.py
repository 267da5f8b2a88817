"""On a CUDA GPU with xformers: a transformer whose dense attention runs on diffusers' xformers
backend patches, generates and unpatches bit-identically.

The built-in tiny video model (a stock WanTransformer3DModel: head_dim 64, 16 x 16 x 16 tokens) in
bfloat16, its attention set to xformers, then ditaccel's radial preset with the sparse layers on
the Triton kernel. The dense warm-up steps of the patched generation make the same xformers calls
as the reference, so their latents are bit-identical; the sparse steps differ; after unpatch() the
generation is the reference again, with the same processor objects, still on xformers.
"""

from __future__ import annotations

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU: xformers' memory_efficient_attention and ditaccel's Triton kernel run on CUDA only",
                allow_module_level=True)
try:
    import xformers.ops as xops
except Exception as e:  # ImportError, or a wheel whose CUDA extensions do not load with this torch
    pytest.skip(f"xformers is not importable ({type(e).__name__}: {e})", allow_module_level=True)
try:  # PyPI's xformers wheels are built for one torch/CUDA pair; with another its kernels are missing
    _probe = torch.zeros(1, 8, 1, 64, device="cuda", dtype=torch.bfloat16)
    xops.memory_efficient_attention(_probe, _probe, _probe)
except NotImplementedError as e:
    import xformers

    pytest.skip(f"xformers {xformers.__version__} has no CUDA kernel usable with torch {torch.__version__} "
                f"({str(e).splitlines()[0]})", allow_module_level=True)

from diffusers.models import attention_dispatch  # noqa: E402
from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry  # noqa: E402

import ditaccel  # noqa: E402
from ditaccel.patching import PatchState  # noqa: E402
from ditaccel.pipelines.tiny_video import load_tiny_video_pipeline  # noqa: E402
from ditaccel.presets import preset  # noqa: E402

DEVICE, DTYPE, SPARSE_BACKEND = "cuda", torch.bfloat16, "triton"
STEPS = 8  # the radial preset keeps round(0.24 * 8) = 2 steps dense, then 6 sparse
XFORMERS = AttentionBackendName.XFORMERS


def attention_processors(transformer) -> dict:
    return {name: m.processor for name, m in transformer.named_modules() if getattr(m, "processor", None) is not None}


def test_patch_and_unpatch_keep_a_transformer_on_the_xformers_backend(monkeypatch):
    # set_attention_backend also sets diffusers' process-wide backend: put it back for the other tests.
    monkeypatch.setattr(_AttentionBackendRegistry, "_active_backend", _AttentionBackendRegistry._active_backend)
    pipe = load_tiny_video_pipeline(device=DEVICE, dtype=DTYPE)
    pipe.set_progress_bar_config(disable=True)
    transformer = pipe.transformer
    transformer.set_attention_backend("xformers")
    processors = attention_processors(transformer)
    assert processors and all(p._attention_backend == XFORMERS for p in processors.values())

    # diffusers calls xformers.ops.memory_efficient_attention through the module: count the calls.
    assert attention_dispatch.xops is xops
    xformers_calls = []  # per call: self-attention (query and key of one length) or cross-attention
    memory_efficient_attention = xops.memory_efficient_attention

    def counted(query, key, value, *args, **kwargs):
        xformers_calls.append(query.shape[1] == key.shape[1])
        return memory_efficient_attention(query, key, value, *args, **kwargs)

    monkeypatch.setattr(xops, "memory_efficient_attention", counted)
    sparse_calls = []
    attend = PatchState.attend

    def counted_attend(self, layer, *args, **kwargs):
        sparse_calls.append(layer)
        return attend(self, layer, *args, **kwargs)

    monkeypatch.setattr(PatchState, "attend", counted_attend)
    forwards = []
    hook = transformer.register_forward_pre_hook(lambda module, args: forwards.append(None))

    def generate():
        """Final latents, the latents after each step, and the calls the generation made."""
        xformers_calls.clear()
        sparse_calls.clear()
        forwards.clear()
        steps = []
        out = pipe("a red circle moving right", num_inference_steps=STEPS, generator=torch.Generator().manual_seed(0),
                   output_type="latent", callback_on_step_end=lambda i, t, latents: steps.append(latents.clone()))
        calls = dict(forwards=len(forwards), xformers_self=xformers_calls.count(True),
                     xformers_cross=xformers_calls.count(False), sparse=len(sparse_calls))
        return out.frames, steps, calls

    layers = transformer.config.num_layers
    try:
        reference, reference_steps, calls = generate()
        assert calls["xformers_self"] == calls["xformers_cross"] == layers * calls["forwards"] > 0  # attn1, attn2
        assert calls["sparse"] == 0

        handle = ditaccel.patch(pipe, "radial", backend=SPARSE_BACKEND)
        try:
            state = handle.states[0]
            patched, patched_steps, patched_calls = generate()
            rows = handle.summary().rows
            # The layers' backend is still xformers, read through the sparse processors too.
            assert all(p._attention_backend == XFORMERS for p in [*state.originals.values(), *state.sparse.values()])
        finally:
            ditaccel.unpatch(pipe)

        again, _, again_calls = generate()
    finally:
        hook.remove()

    # What the patched generation ran: the preset's dense steps and layer 0 on xformers, the rest sparse.
    schedule = preset("radial", "wan")[1]
    warmup = sum(schedule.step_is_dense(step, STEPS) for step in range(STEPS))
    assert 0 < warmup < STEPS
    assert rows[0]["dense_steps"] == list(range(STEPS)) and rows[0]["sparse_steps"] == []
    assert all(row["dense_steps"] == list(range(warmup)) and row["sparse_steps"] == list(range(warmup, STEPS)) for row in rows[1:])
    per_step = patched_calls["forwards"] // STEPS  # CFG: two transformer calls per step
    assert patched_calls["xformers_self"] == sum(len(row["dense_steps"]) for row in rows) * per_step
    assert patched_calls["xformers_cross"] == layers * patched_calls["forwards"]  # cross-attention is never patched
    assert patched_calls["sparse"] == sum(len(row["sparse_steps"]) for row in rows) * per_step > 0

    # Dense warm-up: the same xformers calls, the same latents; then the sparse steps move away.
    for step in range(warmup):
        assert torch.equal(patched_steps[step], reference_steps[step]), f"dense step {step} differs from the reference"
    assert not torch.equal(patched_steps[warmup], reference_steps[warmup])
    assert torch.isfinite(patched).all() and not torch.equal(patched, reference)

    # unpatch(): the same processor objects, still on xformers, and the reference bit for bit.
    after = attention_processors(transformer)
    assert after.keys() == processors.keys() and all(after[name] is processors[name] for name in processors)
    assert all(p._attention_backend == XFORMERS for p in after.values())
    assert again_calls == calls
    assert torch.equal(again, reference)
