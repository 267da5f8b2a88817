"""Where the ~0.2 ms a patched-but-dense forward costs on LTX-Video and FLUX goes (issue 15 probe).

families.py (session 11, interleaved dense twin): every row the cost model runs dense reads
0.973-0.993x dense on the 8-24 ms two-block forwards and ~1.0x on the long ones. Per family: an A/A
pair (the unpatched model against its unpatched twin: the timing's noise floor), the full-window
patch (runs dense) against the twin, and the pre- and post-forward hooks alone on the host (wall
time per call, the pre-hook's timestep read synchronises). Prints JSON lines; no result file.

With --trace DIR: a torch.profiler trace (CPU and CUDA) of 5 forwards of each (the twin, then the
patched-but-dense model) written to DIR as Chrome traces, and each one's operator table printed.

Usage: python benchmarks/probes/prehook_overhead.py [--rounds 200] [--trace DIR]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import families as F  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--trace", default=None, help="folder for torch.profiler traces of both forwards")
    ap.add_argument("--device", default="cuda", help="cpu: checks the script (slow at real widths; use --rounds 1)")
    args = ap.parse_args()
    import diffusers

    import ditaccel
    from ditaccel.cost_model import time_pair

    for family, resolution in (("ltx", "480p_161f"), ("flux", "1024px")):
        builder, resolutions, text_len = F.FAMILIES[family]
        class_name, config = builder(2)
        torch.manual_seed(0)
        torch.set_default_dtype(torch.bfloat16)
        with torch.device(args.device):
            model = getattr(diffusers, class_name)(**config).to(torch.bfloat16).eval().requires_grad_(False)
            twin = copy.deepcopy(model)
        torch.set_default_dtype(torch.float32)
        kwargs = F.inputs(family, model, resolutions[resolution], text_len, args.device, torch.bfloat16, False)

        def run(m):
            def call():
                with torch.no_grad():
                    m(**kwargs)
            return call

        record = dict(family=family, resolution=resolution, rounds=args.rounds)
        a, b = time_pair(run(twin), run(model), device=args.device, rounds=args.rounds)
        record.update(aa_twin_ms=a, aa_model_ms=b, aa_ratio=a / b)
        with ditaccel.patch(model, ditaccel.Neighborhood(window=(1.0, 1.0, 1.0)), schedule=ditaccel.Schedule()) as handle:
            a, b = time_pair(run(twin), run(model), device=args.device, rounds=args.rounds)
            record.update(full_window_twin_ms=a, full_window_patched_ms=b, full_window_ratio=a / b)
            state = handle.states[0]
            for name, hook in (("pre", lambda: state._pre_forward(model, (), dict(kwargs))),
                               ("post", lambda: state._post_forward(model, (), None))):
                times = []
                for _ in range(args.rounds):
                    if args.device == "cuda":
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    hook()
                    times.append((time.perf_counter() - t0) * 1e6)
                record[f"{name}_hook_us"] = statistics.median(times)
            state.context.tiling = None
            if args.trace:
                trace(args, family, {"twin": run(twin), "patched_dense": run(model)})
        print(json.dumps(record), flush=True)
        del model, twin
        if args.device == "cuda":
            torch.cuda.empty_cache()


def trace(args, family: str, calls: dict) -> None:
    """A CPU + CUDA profiler trace of 5 forwards of each call, written as Chrome traces."""
    from torch.profiler import ProfilerActivity, profile

    os.makedirs(args.trace, exist_ok=True)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    for name, call in calls.items():
        call()
        with profile(activities=activities) as prof:
            for _ in range(5):
                call()
            if args.device == "cuda":
                torch.cuda.synchronize()
        prof.export_chrome_trace(os.path.join(args.trace, f"{family}_{name}.json"))
        sort = "self_cuda_time_total" if args.device == "cuda" else "self_cpu_time_total"
        print(f"== {family} {name}\n" + prof.key_averages().table(sort_by=sort, row_limit=25), flush=True)


if __name__ == "__main__":
    main()
