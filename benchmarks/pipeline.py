"""Whole-pipeline speed of sparse attention, attention caching and their combinations (issue 13).

(a) ``--part pipeline``: the Wan2.1-1.3B pipeline architecture (diffusers WanPipeline, random bf16
    weights) at 480p, 81 frames, 50 steps with classifier-free guidance (prompt embeddings given,
    so no text encoder), output left as latents: the end-to-end wall time of the denoising loop for
    each combination in one run, and the VAE decode timed once on its own. A combination is any
    method spec (ditaccel.method_spec); the default ones: dense, radial (preset), broadcast, radial +
    broadcast, radial + residual reuse, diffusers' FirstBlockCache (its default threshold, 0.05) and
    radial + FirstBlockCache, diffusers' TaylorSeer cache in lite mode (``TAYLORSEER``) and radial +
    TaylorSeer.
(b) ``--part steps``: the Wan2.1-14B transformer at 720p, 81 frames: one forward of each kind of
    step, measured in one run (dense; sparse, the radial preset's layer 0 dense; every attention
    output reused; residual reuse applying a kept residual; residual reuse refreshing it; predicted,
    TaylorSeer lite's forward that skips every block and extrapolates the output projection), then
    the 50-step total of each schedule with CFG (2 forwards per step) from those times and the
    schedule's step kinds, which are worked out by the same rules the runtime uses (for TaylorSeer,
    diffusers' rule: ``taylorseer_computes``). Caches that decide from the data which steps they
    reuse (FirstBlockCache) have no step kinds: only part (a) measures them.

Usage: python benchmarks/pipeline.py --part pipeline|steps --out DIR [--steps 50] [--smoke]
(--smoke: the same code on tiny random models on the CPU, a few steps: checks the script, times nothing.)
Writes DIR/pipeline_<gpu>.json (part a) or DIR/pipeline_steps_<gpu>.json (part b).
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
sys.path.insert(0, os.path.dirname(__file__))

from attention import gpu_name  # noqa: E402

WAN_1_3B = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
                text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
                qk_norm="rms_norm_across_heads", eps=1e-6)
WAN_14B = dict(WAN_1_3B, num_attention_heads=40, ffn_dim=13824, num_layers=40)
# diffusers' TaylorSeer in lite mode: a step it does not compute skips every block and predicts the
# output projection. Interval 3 after the radial preset's 12 dense warm-up steps of 50 (24%).
TAYLORSEER = "taylorseer_cache(use_lite_mode=True, cache_interval=3, disable_cache_before_step=12)"
PIPELINE_COMBINATIONS = ["dense", "radial", "broadcast", "radial + broadcast", "radial + residual_reuse",
                         "first_block_cache", "radial + first_block_cache", TAYLORSEER, "radial + " + TAYLORSEER]
# --smoke: tiny stand-ins (2 layers, 2 heads) and sizes, float32 on the CPU.
SMOKE_CONFIG = dict(WAN_1_3B, num_attention_heads=2, attention_head_dim=16, text_dim=32, ffn_dim=32, num_layers=2,
                    rope_max_seq_len=32)
DEVICE, DTYPE, TEXT = "cuda", torch.bfloat16, (512, 4096)
SIZES = dict(pipeline=(480, 832, 81), steps=(720, 1280, 81))


def use_smoke() -> None:
    global DEVICE, DTYPE, TEXT, SIZES, WAN_1_3B, WAN_14B
    DEVICE, DTYPE, TEXT = "cpu", torch.float32, (16, 32)
    SIZES = dict(pipeline=(64, 64, 9), steps=(64, 96, 9))
    WAN_1_3B = WAN_14B = SMOKE_CONFIG


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def environment() -> dict:
    import diffusers
    import triton

    return dict(gpu=torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu (smoke)", torch=torch.__version__, triton=triton.__version__,
                diffusers=diffusers.__version__, date=time.strftime("%Y-%m-%d"))


def build_transformer(config: dict):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    torch.set_default_dtype(DTYPE)
    with torch.device(DEVICE):
        model = WanTransformer3DModel(**config)
    torch.set_default_dtype(torch.float32)
    return model.to(DTYPE).eval().requires_grad_(False)


def apply_combination(pipe, name: str):
    """Enable the method spec ``name`` on ``pipe`` (ditaccel.patch with the spec's arguments for Wan;
    diffusers' caches are enabled by patch too); returns a function that takes it off again."""
    import ditaccel
    from ditaccel.method_spec import parse_method_spec

    spec = parse_method_spec(name)
    if spec.is_dense:
        return lambda: None
    return ditaccel.patch(pipe, **spec.patch_arguments("wan")).unpatch


def part_pipeline(args, save) -> dict:
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline

    from ditaccel.method_spec import parse_method_specs

    result = dict(environment(), part="pipeline", model="Wan2.1-1.3B architecture, random bf16 weights",
                  config=WAN_1_3B, height=SIZES["pipeline"][0], width=SIZES["pipeline"][1], frames=SIZES["pipeline"][2],
                  steps=args.steps, guidance=5.0,
                  scheduler="UniPCMultistepScheduler(flow_shift=3.0, flow prediction)", runs=[])
    transformer = build_transformer(WAN_1_3B)
    vae = (AutoencoderKLWan(base_dim=3, dim_mult=[1, 1, 1, 1], num_res_blocks=1) if DEVICE == "cpu" else AutoencoderKLWan())
    vae = vae.to(DEVICE, DTYPE).eval()
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    pipe = WanPipeline(transformer=transformer, vae=vae, scheduler=scheduler, text_encoder=None, tokenizer=None)
    pipe.set_progress_bar_config(disable=True)
    g = torch.Generator(DEVICE).manual_seed(0)
    prompt = torch.randn(1, *TEXT, generator=g, device=DEVICE, dtype=DTYPE)
    negative = torch.randn(1, *TEXT, generator=g, device=DEVICE, dtype=DTYPE)
    height, width, frames = SIZES["pipeline"]
    call = dict(prompt_embeds=prompt, negative_prompt_embeds=negative, height=height, width=width, num_frames=frames,
                guidance_scale=5.0, output_type="latent")

    def generate(steps: int):
        return pipe(**call, num_inference_steps=steps, generator=torch.Generator(DEVICE).manual_seed(1)).frames

    dense_latents = None
    for name in [spec.text for spec in parse_method_specs(args.combinations)]:
        record = dict(combination=name)
        try:
            off = apply_combination(pipe, name)
            try:
                generate(4)  # warm-up: kernels compiled and autotuned, layouts built
                sync()
                if DEVICE == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                start = time.perf_counter()
                latents = generate(args.steps)
                sync()
                record["seconds"] = time.perf_counter() - start
                if DEVICE == "cuda":
                    record["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
                from ditaccel import is_patched, summary

                if is_patched(pipe):
                    s = summary(pipe)
                    record["attention_compute"] = s.compute_fraction
                    record["cache_peak_bytes"] = sum(s.cache_bytes.values())
            finally:
                off()
            if dense_latents is None and name == "dense":
                dense_latents = latents.float()
            elif dense_latents is not None:
                err = (latents.float() - dense_latents).norm() / dense_latents.norm()
                record["latent_rel_l2_vs_dense"] = float(err)
        except Exception as error:  # keep going: the record says why
            traceback.print_exc()
            record["error"] = f"{type(error).__name__}: {str(error)[:300]}"
        result["runs"].append(record)
        print(json.dumps(record), flush=True)
        save(result)  # a run cut short keeps the combinations it finished
    dense = next((r["seconds"] for r in result["runs"] if r["combination"] == "dense" and "seconds" in r), None)
    for r in result["runs"]:
        if dense and "seconds" in r:
            r["speedup_vs_dense"] = dense / r["seconds"]
    if dense_latents is not None:
        with torch.no_grad():
            z = dense_latents.to(DTYPE)
            vae.decode(z[:, :, :2] / 1.0, return_dict=False)  # warm-up
            sync()
            start = time.perf_counter()
            vae.decode(z, return_dict=False)
            sync()
        result["vae_decode_seconds"] = time.perf_counter() - start
    return result


def taylorseer_computes(config, step: int) -> bool:
    """Whether diffusers' TaylorSeer cache (``config``: a TaylorSeerCacheConfig) runs the full forward
    at ``step`` (0-based; it counts calls per cache context, so steps per CFG branch): the rule of
    diffusers' ``TaylorSeerCacheHook._measure_should_compute`` (0.42). Every step before
    ``disable_cache_before_step``, then every ``cache_interval``-th step from the one after it (the
    step at ``disable_cache_before_step`` itself predicts), and every step from
    ``disable_cache_after_step`` on."""
    before, after = config.disable_cache_before_step, config.disable_cache_after_step
    return (step < before or (step - before - 1) % config.cache_interval == 0
            or (after is not None and step >= after))


def step_kinds(name: str, steps: int) -> list[str]:
    """Per step of a ``steps``-step generation, the kind of forward the spec ``name`` runs (the
    runtime's own rules: the method's Wan schedule, Broadcast.phase, ResidualReuse's refresh count,
    TaylorSeer's ``taylorseer_computes``). Any method spec with a radial method works: "radial +
    broadcast(period=3, window=(0.05, 0.95))"."""
    import diffusers

    import ditaccel
    from ditaccel.method_spec import parse_method_spec

    spec = parse_method_spec(name)
    schedule = spec.schedule_for("wan")
    broadcast = spec.cache if isinstance(spec.cache, ditaccel.Broadcast) else None
    residual = spec.cache if isinstance(spec.cache, ditaccel.ResidualReuse) else None
    taylorseer = spec.cache if isinstance(spec.cache, diffusers.TaylorSeerCacheConfig) else None
    if spec.cache is not None and not (broadcast or residual or taylorseer):
        raise ValueError(f"spec {name!r}: {type(spec.cache).__name__} decides from the data which steps it reuses; "
                         "it has no step kinds, only the pipeline part (--part pipeline) measures it")
    if taylorseer is not None and not taylorseer.use_lite_mode:
        raise ValueError(f"spec {name!r}: TaylorSeer without use_lite_mode=True predicts each attention module's "
                         "output and still runs the rest of every block; the measured kind 'predicted' is the lite "
                         "forward (every block skipped): write use_lite_mode=True")
    kinds, sparse_count, kept = [], 0, False
    for step in range(steps):
        if taylorseer is not None and not taylorseer_computes(taylorseer, step):
            kinds.append("predicted")
            continue
        if broadcast is not None:
            phase = broadcast.phase(step, steps, None)
            if phase == "outside":
                kept = False
            elif phase == "reuse" and kept:
                kinds.append("reused")
                continue
            else:
                kept = True
        dense = schedule is None or schedule.step_is_dense(step, steps)
        if dense:
            kinds.append("dense")
        elif residual is not None:
            kinds.append("residual_refresh" if sparse_count % residual.refresh_every == 0 else "residual_apply")
            sparse_count += 1
        else:
            kinds.append("sparse")
    return kinds


def part_steps(args) -> dict:
    import diffusers

    import ditaccel
    from ditaccel.presets import preset

    result = dict(environment(), part="steps", model="Wan2.1-14B architecture, random bf16 weights", config=WAN_14B,
                  height=SIZES["steps"][0], width=SIZES["steps"][1], frames=SIZES["steps"][2], steps=args.steps, forwards_per_step=2, kinds={}, schedules={})
    model = build_transformer(WAN_14B)
    height, width, frames = SIZES["steps"]
    latent = (1, 16, (frames - 1) // 4 + 1, height // 8, width // 8)
    inputs = dict(hidden_states=torch.randn(*latent, device=DEVICE, dtype=DTYPE),
                  encoder_hidden_states=torch.randn(1, *TEXT, device=DEVICE, dtype=DTYPE), return_dict=False)

    def forward(t: float) -> float:
        sync()
        start = time.perf_counter()
        # One CFG branch's context, as the pipeline sets it: diffusers' stateful hooks (TaylorSeer)
        # keep their state per context and refuse a call outside one.
        with torch.no_grad(), model.cache_context("cond"):
            model(**inputs, timestep=torch.tensor([t], device=DEVICE))
        sync()  # one forward is seconds long at this size: host timing around a synchronised call is exact enough
        return (time.perf_counter() - start) * 1e3

    method, schedule = preset("radial", "wan")
    sparse_schedule = ditaccel.Schedule(dense_steps=0, dense_layers=schedule.dense_layers)
    # kind -> (patch arguments or None, timesteps of a warm-up then timed sequence, which calls are timed)
    plans = {
        "dense": (None, [999, 998], [1]),
        "sparse": (dict(method=method, schedule=sparse_schedule), [999, 998], [1]),
        # Broadcast with the whole range as its window and a long period: step 0 computes, the rest reuse.
        "reused": (dict(cache=ditaccel.Broadcast(period=1000, window=(0.0, 1.0))), [999, 998, 999, 998], [3]),
        # Residual reuse: the first sparse step refreshes, the next applies (a new generation restarts).
        "residual_refresh": (dict(method=method, schedule=sparse_schedule, cache=ditaccel.ResidualReuse(refresh_every=1000)),
                             [999, 998, 999], [2]),
        "residual_apply": (dict(method=method, schedule=sparse_schedule, cache=ditaccel.ResidualReuse(refresh_every=1000)),
                           [999, 998, 999, 998], [3]),
        # TaylorSeer lite predicting from the second call on (taylorseer_computes: calls 0 and 2
        # compute, 1, 3, 4 predict); calls 3 and 4 extrapolate to first order, as in a generation.
        "predicted": (dict(cache=diffusers.TaylorSeerCacheConfig(use_lite_mode=True, cache_interval=1000,
                                                                 disable_cache_before_step=1)),
                      [999, 998, 997, 996, 995], [3, 4]),
    }
    for kind, (arguments, timesteps, timed) in plans.items():
        try:
            handle = ditaccel.patch(model, **arguments) if arguments else None
            try:
                times = [forward(t) for t in timesteps]
            finally:
                if handle is not None:
                    handle.unpatch()
            result["kinds"][kind] = dict(ms=min(times[i] for i in timed), all_ms=times)
        except Exception as error:
            traceback.print_exc()
            result["kinds"][kind] = dict(error=f"{type(error).__name__}: {str(error)[:300]}")
        print(kind, json.dumps(result["kinds"][kind]), flush=True)
    return add_schedules(result, SCHEDULES, args.steps)


SCHEDULES = ("dense", "radial", "broadcast", "radial + broadcast", "radial + residual_reuse", TAYLORSEER,
             "radial + " + TAYLORSEER,
             "radial + taylorseer_cache(use_lite_mode=True, cache_interval=2, disable_cache_before_step=12)",
             "radial + taylorseer_cache(use_lite_mode=True, cache_interval=2, disable_cache_before_step=3)")


def add_schedules(result: dict, names, steps: int) -> dict:
    """The ``steps``-step total with CFG (2 forwards per step) of each spec in ``names`` from the
    measured step kinds in ``result``; speed-ups against dense's total."""
    ms = {k: v["ms"] for k, v in result["kinds"].items() if "ms" in v}
    result.setdefault("schedules", {})
    for name in ("dense", *[n for n in names if n != "dense"]):
        kinds = step_kinds(name, steps)
        counts = {k: kinds.count(k) for k in sorted(set(kinds))}
        unmeasured = sorted(set(kinds) - set(ms))
        total = None if unmeasured else sum(2 * ms[k] for k in kinds) / 1e3
        result["schedules"][name] = dict(step_kinds=counts, total_seconds=total)
        if unmeasured:  # no total: a kind this result has no time for (not measured, or its run failed)
            result["schedules"][name]["unmeasured_kinds"] = unmeasured
    dense_total = result["schedules"]["dense"]["total_seconds"]
    for entry in result["schedules"].values():
        if dense_total and entry["total_seconds"]:
            entry["speedup_vs_dense"] = dense_total / entry["total_seconds"]
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("pipeline", "steps"), default=None, help="required unless --from-kinds")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--combinations", default=",".join(PIPELINE_COMBINATIONS),
                    help="comma-separated method specs for --part pipeline (commas inside parentheses belong to a spec)")
    ap.add_argument("--smoke", action="store_true", help="tiny models on the CPU: checks the script, times nothing")
    ap.add_argument("--from-kinds", default=None, help="a pipeline_steps_*.json: add --schedules' totals from its measured "
                    "step kinds (no GPU) and write it back")
    ap.add_argument("--schedules", default="", help="'|'-separated method specs for --from-kinds")
    args = ap.parse_args()
    if args.from_kinds:
        with open(args.from_kinds) as f:
            result = json.load(f)
        names = [n.strip() for n in args.schedules.split("|") if n.strip()]
        add_schedules(result, names, result.get("steps", args.steps))
        with open(args.from_kinds, "w") as f:
            json.dump(result, f, indent=1)
        for name in names:
            print(name, json.dumps(result["schedules"][name]))
        return
    if args.part is None:
        ap.error("--part is required (or --from-kinds FILE)")
    if args.smoke:
        use_smoke()
    os.makedirs(args.out, exist_ok=True)
    suffix = "" if args.part == "pipeline" else "_steps"
    path = os.path.join(args.out, f"pipeline{suffix}_{gpu_name() if DEVICE == 'cuda' else 'smoke'}.json")

    def save(result: dict) -> None:
        with open(path, "w") as f:
            json.dump(result, f, indent=1)

    save(part_pipeline(args, save) if args.part == "pipeline" else part_steps(args))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
