"""Fixed cost per program against cost per key block of the block-sparse kernel (issue 15: why
head_dim-64 layouts run at 0.53-0.56 of cuDNN's rate per computed block while the same kernel over
every block runs at 1.08).

Canonical tensors of 158 query / key blocks of 128 tokens (CogVideoX-5B's canonical length), whole
blocks only (no masks, no text): every query block attends the same number n of key blocks, a band
around its diagonal, n from 8 to all 158; head_dim 64 with 48 heads (CogVideoX-5B) and head_dim 128
with 24 heads. The time per call, t(n) = programs x a + programs x n x b over the SMs, fitted by least
squares per head_dim and config, gives a (the fixed cost of a program, in key blocks' worth: a / b)
and b. A random selection of n = 41 blocks per row (the blocked window's count) against the band
shows what scattered indices cost. cuDNN dense in the same run.

    python benchmarks/probes/program_cost_probe.py [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from attention import bench  # noqa: E402

from ditaccel.kernels import block_sparse_triton as bst  # noqa: E402
from ditaccel.kernels.layout import full_boxes, pack_block_mask  # noqa: E402

BLOCK, M = 128, 158
COUNTS = (8, 16, 32, 41, 64, 96, 158)
CONFIGS = {"128x128 w4 s3": (128, 128, 4, 3), "128x128 w8 s3": (128, 128, 8, 3), "128x128 w4 s2": (128, 128, 4, 2),
           "128x64 w4 s3": (128, 64, 4, 3)}


def band(n: int) -> torch.Tensor:
    i = torch.arange(M)[:, None]
    lo = (i - n // 2).clamp(0, M - n)
    j = torch.arange(M)[None, :]
    return (j >= lo) & (j < lo + n)


def scattered(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    order = torch.rand(M, M, generator=g).argsort(-1)[:, :n]
    return torch.zeros(M, M, dtype=torch.bool).scatter_(1, order, True)


def lut(mask: torch.Tensor):
    counts, indices, flags = pack_block_mask(mask)
    lo, hi = full_boxes(M * BLOCK)
    coord = torch.zeros(M * BLOCK, 4, dtype=torch.int32)
    return tuple(x.cuda() for x in (counts, indices, flags, lo, hi, coord))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    records = []
    for D, H in ((64, 48), (128, 24)):
        q, k, v = (torch.randn(1, M * BLOCK, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
        with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.CUDNN_ATTENTION):
            cudnn = bench(lambda: F.scaled_dot_product_attention(qt, kt, vt))
        print(f"head_dim {D}, {H} heads: cuDNN dense {cudnn:.3f} ms", flush=True)
        for name, (bm, bn, w, s) in CONFIGS.items():
            cfg = dict(BLOCK_M=bm, BLOCK_N=bn, num_warps=w, num_stages=s)
            if bst._smem_bytes(bst._config(bm, bn, w, s), D) > bst._smem_limit():
                continue
            for kind, n in [("band", n) for n in COUNTS] + [("scattered", 41)]:
                c, i, f, lo, hi, coord = lut(band(n) if kind == "band" else scattered(n))
                run = lambda: bst.block_sparse_attention_fwd(q, k, v, c, i, f, lo, hi, coord, None, None, BLOCK,  # noqa: E731
                                                             has_partial=False, config=cfg)
                try:
                    ms = bench(run, 150.0)
                except Exception as e:  # out of resources for this config
                    print(f"  {name}: {type(e).__name__}: {str(e)[:120]}", flush=True)
                    break
                rate = (n / M) * cudnn / ms
                records.append(dict(head_dim=D, heads=H, config=name, layout=kind, n=n, ms=round(ms, 4), cudnn_ms=round(cudnn, 4),
                                    rate_vs_cudnn=round(rate, 4)))
                print(f"  {name} {kind:9s} n={n:3d}: {ms:.3f} ms, rate {rate:.3f}", flush=True)
    fits = []
    for D in (64, 128):
        for name in CONFIGS:
            rows = [r for r in records if r["head_dim"] == D and r["config"] == name and r["layout"] == "band"]
            if len(rows) < 3:
                continue
            H = rows[0]["heads"]
            programs = H * M
            A = torch.tensor([[programs / sms, programs * r["n"] / sms] for r in rows], dtype=torch.float64)
            t = torch.tensor([r["ms"] * 1e3 for r in rows], dtype=torch.float64)  # us
            a, b = torch.linalg.lstsq(A, t[:, None]).solution.flatten().tolist()
            fits.append(dict(head_dim=D, config=name, fixed_us_per_program_per_sm=round(a, 3), us_per_block_per_sm=round(b, 4),
                             fixed_in_blocks=round(a / b, 1)))
            print(f"fit head_dim {D} {name}: a = {a:.2f} us per program (per SM), b = {b:.4f} us per block, a/b = {a / b:.1f} blocks",
                  flush=True)
    meta = dict(gpu=torch.cuda.get_device_name(0), sms=sms, torch=torch.__version__, blocks=M, block=BLOCK,
                note="canonical tensors, whole blocks, no text; rate = (n / blocks) x cuDNN dense ms / ms")
    path = os.path.join(args.out, "program_cost_h200.json")
    with open(path, "w") as fh:
        json.dump(dict(meta=meta, records=records, fits=fits), fh, indent=1)
    print("wrote", path)


if __name__ == "__main__":
    main()
