"""Kernel on canonical tensors (text at the end, kv_len), old vs new kernel source, fixed configs;
and the runtime's token paths (box / gather) against it. Usage: python canonical_probe.py CASE METHOD

The old source is the kernel before session 4's change (commit 07c603f); put it next to this file
first: git show 07c603f:ditaccel/kernels/block_sparse_triton.py > benchmarks/probes/old_block_sparse_triton.py"""
import math
import os
import sys

import torch
import triton.testing

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import old_block_sparse_triton as old  # noqa: E402
from attention import CASES, build_layouts  # noqa: E402

from ditaccel.kernels import block_sparse_triton as new  # noqa: E402
from ditaccel.kernels import ops  # noqa: E402
from ditaccel.kernels.attention import block_sparse_attention_model_order, canonical_sequence  # noqa: E402

name, method = sys.argv[1], sys.argv[2]
cfg = CASES[name]
lay = build_layouts(name, cfg, [method])[method]
H, D = cfg["heads"], cfg["dim"]
n_video = math.prod(cfg["grid"])
text_len, text_real = cfg["text"], cfg.get("text_real", cfg["text"])
first = cfg.get("text_position") == "first"
pl = dict(video_start=text_len if first else 0, text_start=0 if first else n_video, text_len=text_len)
kv_len = None
if text_len:
    kv_len = torch.tensor([lay.tiling.canon_len + text_real], dtype=torch.int32, device="cuda")
    if text_real < text_len:
        pl.update(text_order=torch.arange(text_len, device="cuda")[None], kv_len=kv_len)
q, k, v = (torch.randn(1, n_video + text_len, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
qc, kc, vc = (canonical_sequence(x, lay, **{n: pl.get(n) for n in ("video_start", "text_start", "text_len", "text_order")}).contiguous()
              for x in (q, k, v))
hp = bool(lay.kv_partial.any())
flops = 4.0 * lay.block_size**2 * D * H * float(lay.kv_counts.double().sum())


def canon(mod, conf):
    return lambda: mod.block_sparse_attention_fwd(qc, kc, vc, lay.kv_counts, lay.kv_indices, lay.kv_partial, lay.q_lo, lay.q_hi,
                                                  lay.k_coord, kv_len, None, lay.block_size, has_partial=hp, config=conf)


def path(p):
    def run():
        ops.TOKEN_PATH = p
        return block_sparse_attention_model_order(q, k, v, lay, backend="triton", **pl)
    return run


variants = {}
for st in (3, 2):
    for bn in (128, 64):
        c = dict(BLOCK_M=128, BLOCK_N=bn, num_warps=8, num_stages=st)
        variants[f"old canon n{bn} s{st}"] = canon(old, c)
        variants[f"new canon n{bn} s{st}"] = canon(new, c)
variants["new canon tuned"] = canon(new, None)
variants["old canon tuned"] = canon(old, None)
variants["path gather"] = path("gather")
if lay.tiling.tile is not None:
    variants["path box"] = path("box")
per = {n: [] for n in variants}
for rnd in range(3):
    for n, fn in variants.items():
        per[n].append(triton.testing.do_bench(fn, warmup=30, rep=150, return_mode="median"))
print(f"{name} {method}: density {lay.block_density():.3f} partial {hp} kv_len {kv_len is not None}")
for n, ts in per.items():
    t = sorted(ts)[1]
    print(f"  {n:22s} {t:8.3f} ms {flops / t / 1e9:6.0f} TFLOP/s rounds {[round(x, 2) for x in ts]}", flush=True)
for mod in (old, new):
    print(mod.__name__, "tuned:", {str(k)[:120]: str(v) for k, v in mod._block_sparse_fwd_tuned.cache.items()})
