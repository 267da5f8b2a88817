"""Why does the kernel's all-blocks rate differ by case (HunyuanVideo 720p ~543 TFLOP/s, NATTEN's
shape and Wan ~468)? Times kernel variants on one shape with fixed configs (no autotuning):
the plain loop, the loop with the (never taken) key-end check compiled in (kv_len = N), other
stage counts, and warp specialization; cuDNN dense in the same run. Usage:
python variant_probe.py CASE [all|neighborhood_blocked] > log; writes nothing else."""
import math
import os
import sys

import torch
import triton.testing

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from attention import CASES, all_blocks_layout, build_layouts  # noqa: E402

from ditaccel.kernels import block_sparse_triton as bst  # noqa: E402

name, which = sys.argv[1], sys.argv[2]
cfg = CASES[name]
method = "radial" if cfg["radial"] is not None and which == "all" else "neighborhood_blocked"
base = build_layouts(name, dict(cfg, text=0), [method])[method]
lay = all_blocks_layout(base) if which == "all" else base
H, D = cfg["heads"], cfg["dim"]
N = math.prod(cfg["grid"]) if lay.tiling is None or lay.tiling.tile is None else lay.seq_len
N = min(N, lay.seq_len)
q, k, v = (torch.randn(1, N, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
blocks = float(lay.kv_counts.double().sum()) * H
flops = 4.0 * lay.block_size * lay.block_size * D * blocks
full = torch.tensor([N], dtype=torch.int32, device="cuda")
has_partial = bool(lay.kv_partial.any())


def ours(kv_len, **conf):
    c = dict(BLOCK_M=128, BLOCK_N=128, num_warps=8, num_stages=3)
    c.update(conf)
    return lambda: bst.block_sparse_attention_fwd(q, k, v, lay.kv_counts, lay.kv_indices, lay.kv_partial, lay.q_lo, lay.q_hi,
                                                  lay.k_coord, kv_len, None, lay.block_size, has_partial=has_partial, config=c)


qd, kd, vd = (x.transpose(1, 2).contiguous() for x in (q, k, v))


def cudnn():
    from torch.nn.attention import SDPBackend, sdpa_kernel
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        return torch.nn.functional.scaled_dot_product_attention(qd, kd, vd)


variants = {
    "plain s3": ours(None),
    "kvlen s3": ours(full),
    "plain s2": ours(None, num_stages=2),
    "kvlen s2": ours(full, num_stages=2),
    "plain s4": ours(None, num_stages=4),
    "plain n64 s3": ours(None, BLOCK_N=64),
    "plain ws w8": ours(None, WARP_SPECIALIZE=True),
    "plain ws w4": ours(None, WARP_SPECIALIZE=True, num_warps=4),
    "kvlen ws w8": ours(full, WARP_SPECIALIZE=True),
}
ref = variants["plain s3"]()
per = {n: [] for n in variants}
dense = []
for rnd in range(3):
    for n, fn in variants.items():
        try:
            if rnd == 0:
                err = float((fn().float() - ref.float()).norm() / ref.float().norm())
                print(f"{n}: diff vs plain {err:.1e}", flush=True)
            per[n].append(triton.testing.do_bench(fn, warmup=30, rep=150, return_mode="median"))
        except Exception as e:  # noqa: BLE001
            print(f"{n}: {type(e).__name__}: {str(e)[:200]}", flush=True)
    dense.append(triton.testing.do_bench(cudnn, warmup=30, rep=150, return_mode="median"))
nd = math.prod(cfg["grid"])
dms = sorted(dense)[1]
print(f"{name} {which}: blocks {blocks:.0f} cuDNN {dms:.2f} ms = {4.0 * nd * nd * D * H / dms / 1e9:.0f} TFLOP/s")
for n, ts in per.items():
    if ts:
        t = sorted(ts)[len(ts) // 2]
        print(f"  {n:14s} {t:8.3f} ms {flops / t / 1e9:6.0f} TFLOP/s  rounds {[round(x, 2) for x in ts]}", flush=True)
