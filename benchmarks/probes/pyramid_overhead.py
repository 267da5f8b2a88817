"""Pyramid's per-call overhead, piece by piece (issue 12 probe): the importance kernel at 8/16/32
samples per block and a few launch configs, the level assignment after it, the LUT, the pooled
K/V buffer (the Triton kernel against the torch strided means it replaced, same inputs, equality
checked) and the computed-fraction reduction, at Wan2.1-14B 720p and HunyuanVideo 720p (random
bf16 q, k, v: none of these costs depends on the values). Prints JSON lines; no result file.

Usage: python benchmarks/probes/pyramid_overhead.py [--cases wan14b_720p,hunyuan_720p]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from attention import CASES, bench  # noqa: E402

from ditaccel.kernels import pyramid_triton as pt  # noqa: E402
from ditaccel.kernels.pyramid import _block_importance, pyramid_levels, sample_rows  # noqa: E402
from ditaccel.plugins.pyramid import pyramid_compute_fraction  # noqa: E402


IMPORTANCE_CONFIGS = [(128, 4, 3)]  # (rows = cols, num_warps, num_stages): the kernel's default


def torch_pool(x: torch.Tensor, bs: int) -> torch.Tensor:
    """The torch pooling pool_kv used before the Triton kernel (full blocks only: the timed part)."""
    B, N, H, D = x.shape
    nb, full = -(-N // bs), N // bs
    buf = x.new_zeros(B, pt.pooled_rows(nb, bs), H, D)
    for lv in pt.POOLED_LEVELS:
        r, row0 = bs // lv, pt.pooled_row_offset(lv, nb, bs)
        torch.mean(x[:, : full * bs].unflatten(1, (full * r, lv)), dim=2, out=buf[:, row0 : row0 + full * r])
    return buf


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="wan14b_720p,hunyuan_720p")
    args = ap.parse_args()
    bs = 128
    for name in args.cases.split(","):
        cfg = CASES[name]
        N, H, D = math.prod(cfg["grid"]), cfg["heads"], cfg["dim"]
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v = (torch.randn(1, N, H, D, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
        rec = {"case": name, "tokens": N, "heads": H}
        for samples in (8, 16, 32):
            rec[f"importance_s{samples}_ms"] = bench(lambda: _block_importance(q, k, bs, samples, None, None), 150.0)
            rec[f"levels_s{samples}_ms"] = bench(lambda: pyramid_levels(q, k, block_size=bs, mode="mass", samples=samples), 150.0)
        nb = -(-N // bs)
        index = sample_rows(N, bs, 16, q.device)
        tau = D**-0.5
        # Launch configs of the importance kernel at 16 samples (session12_c swept rows 64/128/256 x
        # warps 4/8 x stages 1/3: logs/session12/c/pyramid_overhead.log; the default won).
        for rows, warps, stages in IMPORTANCE_CONFIGS:
            cfgk = dict(num_warps=warps, num_stages=stages)
            try:
                t = bench(lambda: pt.block_importance_fwd(q, k, index, tau, rows=rows, cols=rows, config=cfgk), 100.0)
            except Exception as e:  # noqa: BLE001 (a config that does not fit is skipped)
                t = f"{type(e).__name__}"
            rec[f"importance_s16_r{rows}_w{warps}_st{stages}_ms"] = t
        levels = pyramid_levels(q, k, block_size=bs, mode="mass", samples=16)
        rec["lut_ms"] = bench(lambda: pt.pyramid_lut(levels), 100.0)
        rec["fraction_ms"] = bench(lambda: pyramid_compute_fraction(levels, N, bs), 100.0)
        rec["pool_torch_ms"] = bench(lambda: (torch_pool(k, bs), torch_pool(v, bs)), 100.0)
        new = pt.pool_kv(k, v, bs)
        full_rows = [slice(pt.pooled_row_offset(lv, nb, bs), pt.pooled_row_offset(lv, nb, bs) + (N // bs) * (bs // lv))
                     for lv in pt.POOLED_LEVELS]
        old = torch_pool(k, bs)
        rec["pool_equal_full_blocks"] = all(torch.equal(new.k[:, r], old[:, r]) for r in full_rows)
        for cols in (64, 128):
            for warps in (4, 8):
                rec[f"pool_triton_c{cols}_w{warps}_ms"] = bench(
                    lambda: (pt.pool_fwd(k, bs, cols=cols, num_warps=warps), pt.pool_fwd(v, bs, cols=cols, num_warps=warps)), 100.0)
        print(json.dumps({k_: (round(v_, 3) if isinstance(v_, float) else v_) for k_, v_ in rec.items()}), flush=True)
        del q, k, v, new, old
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
