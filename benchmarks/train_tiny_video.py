"""Train the built-in tiny video model (``ditaccel.pipelines.tiny_video``) on procedural clips.

Flow matching in pixel space: x_t = (1 - s) x_0 + s n, the transformer predicts the velocity
n - x_0 at timestep 1000 s, with s = shift(u), u ~ U(0, 1) (the same shift the sampler uses).
Transformer and text encoder train jointly; 10% of prompts are dropped to "" so that classifier-free
guidance works. Every batch is rendered fresh on the device (``procedural_clips``), seeded by the
global step, so a resumed run sees the same data stream as an uninterrupted one.

A run trains for a wall-clock budget (``--max-minutes``) and leaves in ``--out``:
  model-0000k.safetensors  fp32 weights (transformer.* and text_encoder.*), shards <= 15 MB
  ema-0000k.safetensors    the EMA weights in fp16 (what ships), shards <= 15 MB
  state.json               global step, total training time, settings of every run
  train_log.jsonl          loss log of all runs so far (one JSON object per logged step)
  samples.png              a few EMA samples (frames 0, 5, 10, 15 of each prompt) at the end

Resume with ``--resume DIR`` (a previous ``--out``, or a saved pipeline such as the shipped
``ditaccel/pipelines/tiny_video_weights``: then the fp16 weights start both model and EMA and the
step count comes from ``benchmarks/results/tiny_video/train_settings.json``). The optimizer state is not kept (it would
double the checkpoint); a resumed run re-warms the learning rate over ``--warmup`` steps instead.
If DIR lacks EMA shards, ``--ema-from`` names a saved pipeline whose weights start the EMA.

  python benchmarks/train_tiny_video.py --out outputs/tiny --max-minutes 8.5
  python benchmarks/train_tiny_video.py --out outputs/tiny2 --resume outputs/tiny --max-minutes 8.5 --decay
  python benchmarks/train_tiny_video.py --export outputs/tiny2   # -> ditaccel/pipelines/tiny_video_weights
  python benchmarks/train_tiny_video.py --report outputs/tiny2   # -> benchmarks/results/tiny_video/loss_curve.png
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ditaccel.eval.prompt_following import score  # noqa: E402
from ditaccel.pipelines.procedural_clips import generate_batch, held_out_prompts, seen_prompts  # noqa: E402
from ditaccel.pipelines.tiny_video import (  # noqa: E402
    DEFAULT_WEIGHTS_DIR,
    TinyVideoPipeline,
    encode_prompts,
    flow_shift,
)

SHARD_BYTES = 15 * 1024 * 1024
SAMPLE_PROMPTS = [
    "a red circle moving right on a gray background",
    "a blue square moving up on a checkered background",
    "a yellow triangle bouncing on a black background",
    "a green circle growing and a purple square moving left on a white background",
]


def _parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.environ.get("OUT", "outputs/tiny_video_train"))
    p.add_argument("--resume", default=None, help="directory of a previous run's --out")
    p.add_argument("--ema-from", default=None, help="saved pipeline whose weights start the EMA on resume")
    p.add_argument("--max-minutes", type=float, default=8.5, help="wall-clock training budget of this run")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps of this run")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--min-lr", type=float, default=2e-5)
    p.add_argument("--warmup", type=int, default=250)
    p.add_argument("--decay", action="store_true", help="decay LR linearly to --min-lr over the second half of the budget")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--cfg-drop", type=float, default=0.1, help="probability of training with the empty prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--ckpt-minutes", type=float, default=3.0)
    p.add_argument("--sample-steps", type=int, default=20)
    p.add_argument("--eval-every", type=int, default=1000,
                   help="score the EMA weights on the held-out and seen prompt-following sets every N steps (0: never)")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="skip torch.compile of the blocks on CUDA")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--export", default=None, metavar="RUN_DIR", help="only export RUN_DIR's EMA as the shipped pipeline")
    p.add_argument("--export-to", default=str(DEFAULT_WEIGHTS_DIR))
    p.add_argument("--report", default=None, metavar="RUN_DIR",
                   help="only write RUN_DIR's loss curve, settings and log to --report-to")
    p.add_argument("--report-to", default=str(Path(__file__).resolve().parent / "results" / "tiny_video"))
    return p.parse_args(argv)


# -- checkpoint files ---------------------------------------------------------------------------


def _named_state(pipe: TinyVideoPipeline) -> dict[str, torch.Tensor]:
    state = {f"transformer.{k}": v for k, v in pipe.transformer.state_dict().items()}
    state.update({f"text_encoder.{k}": v for k, v in pipe.text_encoder.state_dict().items()})
    return state


def _save_sharded(state: dict[str, torch.Tensor], out: Path, prefix: str, dtype: torch.dtype) -> None:
    for old in out.glob(f"{prefix}-*.safetensors"):
        old.unlink()
    shard, size, index = {}, 0, 1
    for name, tensor in state.items():
        t = tensor.detach().to("cpu", dtype).clone().contiguous()  # clone: tied weights share storage
        if shard and size + t.numel() * t.element_size() > SHARD_BYTES:
            save_file(shard, out / f"{prefix}-{index:05d}.safetensors")
            shard, size, index = {}, 0, index + 1
        shard[name] = t
        size += t.numel() * t.element_size()
    save_file(shard, out / f"{prefix}-{index:05d}.safetensors")


def _load_sharded(directory: Path, prefix: str) -> dict[str, torch.Tensor]:
    state = {}
    for f in sorted(directory.glob(f"{prefix}-*.safetensors")):
        state.update(load_file(f))
    return state


def _load_pipeline_state(pipeline_dir: Path) -> dict[str, torch.Tensor]:
    state = {f"transformer.{k}": v for k, v in load_file(pipeline_dir / "transformer" / "diffusion_pytorch_model.safetensors").items()}
    state.update({f"text_encoder.{k}": v for k, v in load_file(pipeline_dir / "text_encoder" / "model.safetensors").items()})
    return state


def _load_into(pipe: TinyVideoPipeline, state: dict[str, torch.Tensor]) -> None:
    for name, module in (("transformer", pipe.transformer), ("text_encoder", pipe.text_encoder)):
        sub = {k[len(name) + 1 :]: v for k, v in state.items() if k.startswith(name + ".")}
        missing, unexpected = module.load_state_dict(sub, strict=False)
        missing = [m for m in missing if not m.endswith("embed_tokens.weight")]  # tied to "shared"
        if missing or unexpected:
            raise RuntimeError(f"{name}: missing {missing}, unexpected {unexpected}")


def export_pipeline(run_dir: Path, target: Path) -> None:
    """Write the EMA weights of ``run_dir`` as a fp16 ``save_pretrained`` pipeline at ``target``."""
    pipe = TinyVideoPipeline.from_scratch()
    _load_into(pipe, _load_sharded(run_dir, "ema"))
    pipe.transformer.half()
    pipe.text_encoder.half()
    if target.exists():
        shutil.rmtree(target)
    pipe.save_pretrained(target)
    # transformers 5 names the fast tokenizer class "TokenizersBackend", which transformers 4 lacks;
    # "PreTrainedTokenizerFast" is the same class in 5 and loads in both.
    for path, keys in ((target / "model_index.json", None), (target / "tokenizer" / "tokenizer_config.json", "tokenizer_class")):
        data = json.loads(path.read_text())
        if keys is None:
            data["tokenizer"] = ["transformers", "PreTrainedTokenizerFast"]
        else:
            data[keys] = "PreTrainedTokenizerFast"
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    total = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
    print(f"exported {run_dir} -> {target} ({total / 1e6:.2f} MB)")


def write_report(run_dir: Path, target: Path) -> None:
    """Loss curve PNG, training settings JSON and the loss log of a run directory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target.mkdir(parents=True, exist_ok=True)
    records = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines() if line.strip()]
    log = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval" in r]
    state = json.loads((run_dir / "state.json").read_text())
    shutil.copy(run_dir / "train_log.jsonl", target / "train_log.jsonl")
    settings = {
        "total_steps": state["step"],
        "total_training_minutes": round(state["trained_seconds"] / 60.0, 2),
        "parameters": state["parameters"],
        "final_loss_mean_of_last_10_logs": sum(r["loss"] for r in log[-10:]) / len(log[-10:]),
        "runs": state["runs"],
    }
    (target / "train_settings.json").write_text(json.dumps(settings, indent=2))
    if evals:
        settings["prompt_following_during_training"] = evals
    fig, axes = plt.subplots(2 if evals else 1, 1, figsize=(8, 7.5 if evals else 4.5), squeeze=False)
    ax = axes[0, 0]
    steps = [r["step"] for r in log]
    ax.plot(steps, [r["loss"] for r in log], lw=1, label="flow-matching loss (mean of 50 steps)")
    for run in state["runs"][1:]:
        ax.axvline(run["start_step"], color="gray", ls="--", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("step (batch 32)")
    ax.set_ylabel("MSE of velocity")
    ax.grid(alpha=0.3, which="both")
    ax2 = ax.twinx()
    ax2.plot(steps, [r["lr"] for r in log], color="tab:orange", lw=0.8, label="learning rate")
    ax2.set_ylabel("learning rate")
    ax.set_title(f"Tiny video model training: {state['step']} steps, {state['trained_seconds'] / 60:.1f} min on "
                 f"{state['runs'][-1]['device']} (dashed line: resumed)", fontsize=9)
    lines = ax.get_lines()[:1] + ax2.get_lines()
    ax.legend(lines, [ln.get_label() for ln in lines], loc="lower left", fontsize=8)
    if evals:
        ev = axes[1, 0]
        eval_steps = [r["step"] for r in evals]
        for split, style in (("held_out", "-"), ("seen", "--")):
            for key, colour in (("motion", "tab:blue"), ("colour", "tab:green")):
                ev.plot(eval_steps, [100 * r["eval"][split][key] for r in evals], style, color=colour, marker="o",
                        ms=3, label=f"{key}, {split.replace('_', '-')} prompts")
        ev.axhline(80, color="gray", lw=0.8, ls=":")
        ev.set_ylim(0, 105)
        ev.set_xlim(ax.get_xlim())
        ev.set_xlabel("step")
        ev.set_ylabel("% of videos right")
        ev.set_title("Prompt following of the EMA weights (20 steps, guidance 4; dotted: 80% target)", fontsize=9)
        ev.grid(alpha=0.3)
        ev.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(target / "loss_curve.png", dpi=110)
    print(f"wrote {target / 'loss_curve.png'} and {target / 'train_settings.json'}")


# -- training -----------------------------------------------------------------------------------


def _lr_at(args, run_step: int, run_fraction: float) -> float:
    lr = args.lr * min(1.0, (run_step + 1) / args.warmup)
    if args.decay and run_fraction > 0.5:
        frac = min(1.0, (run_fraction - 0.5) / 0.5)
        lr = args.min_lr + (lr - args.min_lr) * (1.0 - frac)
    return lr


@torch.no_grad()
def _write_samples(pipe: TinyVideoPipeline, out: Path, steps: int) -> None:
    import numpy as np
    from PIL import Image

    pipe.set_progress_bar_config(disable=True)
    frames = pipe(SAMPLE_PROMPTS, num_inference_steps=steps, generator=torch.Generator().manual_seed(0)).frames
    rows = [np.concatenate([clip[f] for f in (0, 5, 10, 15)], axis=1) for clip in frames]
    Image.fromarray((np.concatenate(rows, axis=0) * 255).round().astype(np.uint8)).save(out / "samples.png")


@torch.no_grad()
def _evaluate(sampler: TinyVideoPipeline, ema: list[torch.Tensor], names: list[str], steps: int) -> dict:
    """Prompt following of the EMA weights, scored as in ``tiny_video_prompt_following.py`` (same seeds)."""
    _load_into(sampler, dict(zip(names, ema)))
    result = {}
    for split, prompts in (("held_out", held_out_prompts()), ("seen", seen_prompts())):
        gens = [torch.Generator().manual_seed(i) for i in range(len(prompts))]
        videos = sampler(prompts, num_inference_steps=steps, generator=gens).frames
        _, summary = score(prompts, list(videos))
        result[split] = {"colour": summary["colour_accuracy"], "motion": summary["motion_accuracy"]}
    return result


def train(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(args.seed)

    pipe = TinyVideoPipeline.from_scratch()
    step, trained_seconds, runs = 0, 0.0, []
    settings = {k: v for k, v in vars(args).items() if k not in ("export", "export_to")}
    if args.resume and (Path(args.resume) / "model_index.json").is_file():
        # A saved pipeline (e.g. the shipped fp16 weights): model and EMA both start from it; the
        # step count and the log come from the committed training report.
        resume, report = Path(args.resume), Path(args.report_to)
        info = json.loads((report / "train_settings.json").read_text())
        step, trained_seconds, runs = info["total_steps"], info["total_training_minutes"] * 60.0, info["runs"]
        ema_state = _load_pipeline_state(resume)
        _load_into(pipe, ema_state)
        shutil.copy(report / "train_log.jsonl", out / "train_log.jsonl")
        print(f"resumed from pipeline {resume} at step {step} ({trained_seconds / 60:.1f} min trained)")
    elif args.resume:
        resume = Path(args.resume)
        state = json.loads((resume / "state.json").read_text())
        step, trained_seconds, runs = state["step"], state["trained_seconds"], state["runs"]
        _load_into(pipe, _load_sharded(resume, "model"))
        ema_state = _load_sharded(resume, "ema")
        if not ema_state and args.ema_from:
            ema_state = _load_pipeline_state(Path(args.ema_from))
        if (resume / "train_log.jsonl").exists() and resume.resolve() != out.resolve():
            shutil.copy(resume / "train_log.jsonl", out / "train_log.jsonl")
        print(f"resumed from {resume} at step {step} ({trained_seconds / 60:.1f} min trained)")
    else:
        ema_state = {}
        (out / "train_log.jsonl").unlink(missing_ok=True)

    pipe.transformer.to(device).train()
    pipe.text_encoder.to(device).train()
    params = [p for m in (pipe.transformer, pipe.text_encoder) for p in m.parameters()]
    names = list(_named_state(pipe))
    n_params = sum(p.numel() for p in params)
    # EMA as a flat list aligned with state_dict order (parameters and buffers alike).
    live = list(_named_state(pipe).values())  # views of the parameters, updated in place
    ema = [ema_state[k].to(device, torch.float32) if k in ema_state else v.detach().float().clone() for k, v in zip(names, live)]

    decay, no_decay = [], []
    for m in (pipe.transformer, pipe.text_encoder):
        for n, p in m.named_parameters():
            (no_decay if p.ndim < 2 or "norm" in n or "scale_shift" in n else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.99), fused=device.type == "cuda",
    )
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    tokenizer, text_encoder, transformer = pipe.tokenizer, pipe.text_encoder, pipe.transformer
    gen = torch.Generator(device=device)

    print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}), "
          f"{n_params / 1e6:.2f}M parameters, batch {args.batch_size}")
    run_info = {"start_step": step, "settings": settings,
                "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    budget = args.max_minutes * 60.0
    t_start = time.time()
    last_ckpt = t_start
    run_step, loss_sum, loss_count, t_log = 0, 0.0, 0, time.time()

    def save(final: bool) -> None:
        live_state = _named_state(pipe)
        _save_sharded(live_state, out, "model", torch.float32)
        _save_sharded(dict(zip(names, ema)), out, "ema", torch.float16)
        info = dict(run_info, end_step=step, seconds=time.time() - t_start, final=final)
        meta = {"step": step, "trained_seconds": trained_seconds + time.time() - t_start,
                "parameters": n_params, "runs": runs + [info]}
        (out / "state.json").write_text(json.dumps(meta, indent=2))

    def train_step(lr: float):
        for g in opt.param_groups:
            g["lr"] = lr
        x0, prompts = generate_batch(args.batch_size, seed=args.seed * 1_000_003 + step, device=device)
        gen.manual_seed(args.seed * 1_000_003 + step + 7_777_777)
        drop = torch.rand(len(prompts), generator=gen, device=device) < args.cfg_drop
        prompts = ["" if d else p for p, d in zip(prompts, drop.tolist())]
        u = torch.rand(len(prompts), generator=gen, device=device)
        sigma = flow_shift(u)
        noise = torch.randn(x0.shape, generator=gen, device=device)
        s = sigma[:, None, None, None, None]
        x_t = (1.0 - s) * x0 + s * noise
        with autocast:
            text = encode_prompts(tokenizer, text_encoder, prompts, device)
            pred = transformer(hidden_states=x_t, timestep=sigma * 1000.0, encoder_hidden_states=text, return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(pred.float(), noise - x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss, grad_norm

    # Holds the EMA weights for the evaluations and the final samples.
    sampler = TinyVideoPipeline.from_scratch()
    sampler.transformer.to(device).eval()
    sampler.text_encoder.to(device).eval()
    sampler.set_progress_bar_config(disable=True)

    def evaluate() -> None:
        t0 = time.time()
        rec = {"step": step, "eval": _evaluate(sampler, ema, names, args.sample_steps)}
        rec["eval_seconds"] = round(time.time() - t0, 1)
        with open(out / "train_log.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        print(f"step {step:6d}  eval {rec['eval']}  ({rec['eval_seconds']} s)", flush=True)

    if args.eval_every:
        evaluate()  # where this run starts from
    compiled = args.compile and device.type == "cuda"
    if compiled:
        transformer.compile_repeated_blocks()  # regional: one compile for all identical blocks
    while True:
        elapsed = time.time() - t_start
        if elapsed >= budget or (args.max_steps is not None and run_step >= args.max_steps):
            break
        lr = _lr_at(args, run_step, elapsed / budget)

        try:
            loss, grad_norm = train_step(lr)
        except Exception as exc:  # noqa: BLE001 -- a compile failure must not cost the run
            if not compiled or run_step > 0:
                raise
            print(f"torch.compile failed ({type(exc).__name__}: {exc}); continuing in eager mode")
            for block in transformer.blocks:
                block._compiled_call_impl = None
            compiled = False
            loss, grad_norm = train_step(lr)
        with torch.no_grad():
            d = min(args.ema_decay, (1.0 + step) / (10.0 + step))
            torch._foreach_lerp_(ema, live, 1.0 - d)
        step += 1
        run_step += 1
        loss_sum += loss.item() if run_step % args.log_every == 0 else loss.detach()
        loss_count += 1

        if run_step % args.log_every == 0:
            now = time.time()
            mean = float(loss_sum) / loss_count
            rec = {"step": step, "loss": mean, "lr": lr, "grad_norm": float(grad_norm),
                   "minutes": (trained_seconds + now - t_start) / 60.0,
                   "sec_per_step": (now - t_log) / loss_count}
            with open(out / "train_log.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")
            print(f"step {step:6d}  loss {mean:.4f}  lr {lr:.2e}  gn {float(grad_norm):.2f}  "
                  f"{rec['sec_per_step'] * 1000:.0f} ms/step  {rec['minutes']:.1f} min", flush=True)
            loss_sum, loss_count, t_log = 0.0, 0, now
        if args.eval_every and run_step % args.eval_every == 0:
            evaluate()
        if time.time() - last_ckpt > args.ckpt_minutes * 60.0:
            save(final=False)
            last_ckpt = time.time()

    save(final=True)
    print(f"saved checkpoint at step {step} to {out}")
    if args.eval_every:
        evaluate()
    # Samples from the EMA weights, written last: they are a check, not part of the state.
    _load_into(sampler, dict(zip(names, ema)))
    with autocast:
        _write_samples(sampler, out, args.sample_steps)
    print("wrote samples.png")


def main(argv=None) -> None:
    args = _parse_args(argv)
    if args.export:
        export_pipeline(Path(args.export), Path(args.export_to))
    elif args.report:
        write_report(Path(args.report), Path(args.report_to))
    else:
        train(args)


if __name__ == "__main__":
    main()
