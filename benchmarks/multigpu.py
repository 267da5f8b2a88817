"""Sparse attention under diffusers' Ulysses context parallelism on several GPUs: parity and speed.

Launched with torchrun on one machine (``--nproc_per_node N``). The Wan2.1-14B transformer
architecture (random bf16 weights, the same on every rank) at 720p / 81 frames (21 x 45 x 80 =
75,600 tokens), one forward each of: dense and radial (the preset for Wan, every step sparse, its
dense layer 0 kept) on one GPU (rank 0 alone, the others wait), then the same model under
``enable_parallelism(ContextParallelConfig(ulysses_degree=N))`` on all N GPUs. Per record:
forward_ms (CUDA events, best of --reps after a warm-up), speedup_vs_1gpu, rel_l2_vs_1gpu (the
output against the one-GPU output of the same method), all_to_all_ms / all_to_all_share (CUDA
events around every all-to-all of the forward, diffusers' dense path and ours alike), and the
50-step totals with CFG for the radial preset's schedule (first 24% of the steps dense).

    torchrun --standalone --nproc_per_node 2 benchmarks/multigpu.py --out DIR
    torchrun --standalone --nproc_per_node 2 benchmarks/multigpu.py --out DIR --smoke   # CPU, gloo, tiny
Writes DIR/multigpu_<gpu>.json (rank 0). NCCL's NVLink multicast stays off (NCCL_NVLS_ENABLE=0).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # the machines' notes: NVLink multicast off

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from pipeline import SMOKE_CONFIG, WAN_14B  # noqa: E402

STEPS, DENSE_STEPS = 50, 12  # the radial preset's schedule: 24% of 50 steps dense


class AllToAllTimer:
    """CUDA events (or the wall clock) around every functional all-to-all while active."""

    def __init__(self, cuda: bool):
        from torch.distributed import _functional_collectives as funcol

        self.funcol, self.cuda, self.original = funcol, cuda, funcol.all_to_all_single
        self.marks: list = []
        self.active = False

    def __enter__(self):
        original, timer = self.original, self

        def timed(*args, **kwargs):
            if not timer.active:
                return original(*args, **kwargs)
            start = torch.cuda.Event(enable_timing=True) if timer.cuda else time.perf_counter()
            if timer.cuda:
                start.record()
            out = original(*args, **kwargs)
            out = out.wait() if isinstance(out, timer.funcol.AsyncCollectiveTensor) else out
            if timer.cuda:
                end = torch.cuda.Event(enable_timing=True)
                end.record()
            else:
                end = time.perf_counter()
            timer.marks.append((start, end))
            return out

        self.funcol.all_to_all_single = timed
        return self

    def __exit__(self, *exc):
        self.funcol.all_to_all_single = self.original

    def take_ms(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            total = sum(a.elapsed_time(b) for a, b in self.marks)
        else:
            total = sum(b - a for a, b in self.marks) * 1e3
        self.marks = []
        return total


def forward_ms(model, inputs, reps: int, cuda: bool, timer: AllToAllTimer) -> tuple[float, float, torch.Tensor]:
    """(best forward ms, its all-to-all ms, the output) after one warm-up forward."""
    best, best_a2a, out = float("inf"), 0.0, None
    with torch.no_grad():
        for i in range(reps + 1):
            timer.active = i > 0
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            out = model(**inputs)[0]
            if cuda:
                torch.cuda.synchronize()
            ms = (time.perf_counter() - start) * 1e3  # seconds-long forwards: host timing around a sync is exact
            a2a = timer.take_ms()
            if i > 0 and ms < best:
                best, best_a2a = ms, a2a
    timer.active = False
    return best, best_a2a, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help="tiny model on CPU processes (gloo): checks the script")
    args = ap.parse_args()

    cuda = torch.cuda.is_available() and not args.smoke
    local = int(os.environ.get("LOCAL_RANK", 0))
    if cuda:
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if not cuda and torch.accelerator.device_count() == 0:
        torch.accelerator.device_count = lambda: 1  # diffusers 0.42.1 divides by it in enable_parallelism
    import transformers  # noqa: F401  (diffusers' split hook logs with transformers' warning_once)
    from diffusers import ContextParallelConfig, WanTransformer3DModel

    import ditaccel
    from ditaccel.presets import preset

    device, dtype = (torch.device("cuda", local), torch.bfloat16) if cuda else (torch.device("cpu"), torch.float32)
    config = SMOKE_CONFIG if args.smoke else WAN_14B
    latent = (1, 16, 4, 10, 18) if args.smoke else (1, 16, 21, 90, 160)  # 180 / 75,600 tokens: split evenly
    text = (1, 16, 32) if args.smoke else (1, 512, 4096)
    torch.manual_seed(0)
    torch.set_default_dtype(dtype)  # built in bf16 directly: 14B parameters in fp32 first would double the memory
    with torch.device(device):
        model = WanTransformer3DModel(**config).to(dtype).eval().requires_grad_(False)
    torch.set_default_dtype(torch.float32)
    g = torch.Generator(device).manual_seed(1)
    inputs = dict(hidden_states=torch.randn(*latent, generator=g, device=device, dtype=dtype),
                  encoder_hidden_states=torch.randn(*text, generator=g, device=device, dtype=dtype),
                  timestep=torch.tensor([500.0], device=device), return_dict=False)
    case = "tiny_wan_smoke" if args.smoke else "wan14b_720p"
    method, schedule = preset("radial", "wan")
    every_step = ditaccel.Schedule(dense_steps=0, dense_layers=schedule.dense_layers)
    name = torch.cuda.get_device_name(device) if cuda else "cpu (smoke)"
    result = dict(gpu=name, torch=torch.__version__, world=world, date=time.strftime("%Y-%m-%d"),
                  model="Wan2.1-14B architecture, random weights" if not args.smoke else "tiny Wan (smoke)",
                  latent=list(latent), dtype=str(dtype), method=repr(method), nccl_nvls_enable=os.environ.get("NCCL_NVLS_ENABLE"),
                  records=[])

    def run(patched: bool, timer):
        if not patched:
            return forward_ms(model, inputs, args.reps, cuda, timer)
        with ditaccel.patch(model, method, schedule=every_step, force_sparse=True):
            return forward_ms(model, inputs, args.reps, cuda, timer)

    with AllToAllTimer(cuda) as timer:
        single = {}
        if rank == 0:  # one GPU: rank 0 alone, before any parallelism
            for label, patched in (("dense", False), ("radial", True)):
                ms, _, out = run(patched, timer)
                single[label] = (ms, out.float())
                result["records"].append(dict(case=case, method=label, gpus=1, forward_ms=ms, speedup_vs_1gpu=1.0,
                                              rel_l2_vs_1gpu=0.0, all_to_all_ms=0.0, all_to_all_share=0.0))
                print(json.dumps(result["records"][-1]), flush=True)
        dist.barrier()
        model.enable_parallelism(config=ContextParallelConfig(ulysses_degree=world))
        for label, patched in (("dense", False), ("radial", True)):
            ms, a2a, out = run(patched, timer)
            if rank == 0:
                ms1, out1 = single[label]
                error = float((out.float() - out1).norm() / out1.norm())
                result["records"].append(dict(case=case, method=label, gpus=world, forward_ms=ms,
                                              speedup_vs_1gpu=ms1 / ms, rel_l2_vs_1gpu=error, all_to_all_ms=a2a,
                                              all_to_all_share=a2a / ms))
                print(json.dumps(result["records"][-1]), flush=True)
    if rank == 0:
        ms = {(r["method"], r["gpus"]): r["forward_ms"] for r in result["records"]}
        result["fifty_steps_cfg_s"] = {
            f"{gpus} GPU(s)": {label: 2 * (STEPS if label == "dense" else DENSE_STEPS) * ms[("dense", gpus)] / 1e3
                               + (0 if label == "dense" else 2 * (STEPS - DENSE_STEPS) * ms[("radial", gpus)] / 1e3)
                               for label in ("dense", "radial")}
            for gpus in sorted({g for _, g in ms})}
        os.makedirs(args.out, exist_ok=True)
        tag = "smoke" if args.smoke else next((t.lower() for t in ("H100", "H200", "B200") if t in name), "gpu")
        path = os.path.join(args.out, f"multigpu_{tag}.json")
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {path}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
