"""Is top-k's exact phase held back by L2 at HunyuanVideo 720p? (issue 12 probe, session 14)

Session 13's probe (topk_rate_probe.py) showed the rate per computed block falling with the sequence
length (Wan2.1-14B 720p 0.84 of cuDNN, HunyuanVideo 720p 0.80), which points at the per-head K/V
footprint (61 MB at HunyuanVideo against the H200's 50 MB L2). This probe holds the kernel, the
shapes and the number of blocks per query block fixed and changes only which key blocks each query
block reads:

- ``real``: the method's own selection on the benchmark's inputs (attention.py's smooth fields);
- ``shared``: every query block reads query block 0's selection (the smallest footprint: ``keep``
  blocks per head);
- ``band``: query block i reads the ``keep`` blocks around block i (neighbours share almost all);
- ``random``: a random sorted subset per query block (no locality at all).

and one candidate fix, ``real/split2`` and ``real/split3``: the real selection run as 2 or 3 launches,
each over the key blocks of one contiguous range (a head's K/V footprint per launch halved or cut to a
third); timed without the log-sum-exp merge it would need (about 0.5 ms of memory traffic at these
sizes), to see whether the ranges run at a higher rate.

It prints, per case and variant, the kernel time, the rate per computed block against cuDNN dense
(video tokens only, same run) and the union of key blocks that 264 consecutive query blocks (two
programs per SM, in launch order) read, as a fraction of all key blocks. ``--ncu CASE VARIANT``
runs one variant three times for Nsight Compute (L2 hit rate, DRAM throughput).

Usage: python benchmarks/probes/topk_l2_probe.py [--cases wan14b_720p,hunyuan_720p]
       python benchmarks/probes/topk_l2_probe.py --ncu hunyuan_720p real
       python benchmarks/probes/topk_l2_probe.py --attention-kv-ranges --out DIR ...  (attention.py with key ranges on)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from attention import CASES, MODELS, bench, dynamic_inputs  # noqa: E402

from ditaccel.kernels import piecewise_triton as pwt  # noqa: E402
from ditaccel.presets import preset  # noqa: E402

VARIANTS = ("real", "shared", "band", "random")
IN_FLIGHT = 264  # query blocks resident at once: 132 SMs x 2 programs (4 warps, 64-row tiles)


def inputs(case: str):
    cfg = CASES[case]
    method = preset("topk", MODELS[case][0])[0]
    q, k, v, _ = dynamic_inputs(cfg, tiling=method.tiling(cfg["grid"]))
    n = math.prod(cfg["grid"])
    start = cfg["text"] if cfg.get("text_position") == "first" else 0
    q, k, v = (x[:, start : start + n].contiguous() for x in (q, k, v))
    return q, k, v, method


def luts(q, k, v, method) -> dict:
    B, N, H, D = q.shape
    bs = method.block_size
    nb = -(-N // bs)
    keep = max(1, math.floor(method.density * nb + 1e-9))
    tau = D**-0.5
    stats = pwt.piecewise_statistics_op(q, k, v, bs, False)
    real, _ = pwt.select_blocks(stats[0], stats[1], stats[2], tau, keep)
    BH = real.shape[0]
    shared = real[:, :1].expand(BH, nb, keep).contiguous()
    first = (torch.arange(nb, device=q.device) - keep // 2).clamp(0, nb - keep)
    band = (first[:, None] + torch.arange(keep, device=q.device)[None]).to(torch.int32)[None].expand(BH, nb, keep).contiguous()
    g = torch.Generator(device=q.device).manual_seed(0)
    rnd = torch.rand(BH, nb, nb, device=q.device, generator=g).topk(keep, -1).indices.sort(-1).values.to(torch.int32)
    return dict(real=real, shared=shared, band=band, random=rnd), keep, nb


def union_fraction(lut: torch.Tensor, nb: int) -> float:
    """Mean over heads and windows of IN_FLIGHT consecutive query blocks of the distinct key blocks
    they read, as a fraction of all key blocks."""
    BH, rows, keep = lut.shape
    mask = torch.zeros(BH, rows, nb, dtype=torch.bool, device=lut.device).scatter_(-1, lut.long(), True)
    w = rows // IN_FLIGHT
    windows = mask[:, : w * IN_FLIGHT].view(BH, w, IN_FLIGHT, nb).any(2)
    return float(windows.float().mean())


def kernel_fn(q, k, v, lut, keep, bs, counts=None, kv_ranges=1):
    cfg = pwt.default_config(q.shape[-1], bs)
    tau = q.shape[-1] ** -0.5
    return lambda: pwt.piecewise_attention_fwd(q, k, v, lut, counts, None, None, None, None, None, None, None, tau, bs, keep,
                                                config=cfg, kv_ranges=kv_ranges)


def split_fn(q, k, v, lut, keep, bs, nb, parts):
    """The LUT cut into ``parts`` contiguous key ranges, one launch each (entries left-packed, counts per row)."""
    bounds = [nb * i // parts for i in range(parts + 1)]
    launches = []
    for lo, hi in zip(bounds, bounds[1:]):
        inside = (lut >= lo) & (lut < hi)
        order = torch.sort((~inside).to(torch.uint8), dim=-1, stable=True).indices
        part = torch.gather(lut, -1, order).contiguous()
        launches.append(kernel_fn(q, k, v, part, keep, bs, inside.sum(-1, dtype=torch.int32).contiguous()))
    return lambda: [f() for f in launches]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--cases", default="wan14b_720p,hunyuan_720p")
    p.add_argument("--ncu", nargs=2, metavar=("CASE", "VARIANT"))
    p.add_argument("--attention-kv-ranges", nargs=argparse.REMAINDER,
                   help="run attention.py with these arguments, key ranges on (L2_KV_BYTES = 40 MB)")
    args = p.parse_args()
    if args.attention_kv_ranges is not None:
        import attention

        pwt.L2_KV_BYTES = 40 << 20
        sys.argv = [sys.argv[0], *args.attention_kv_ranges]
        attention.main()
        return
    if args.ncu:
        case, variant = args.ncu
        q, k, v, method = inputs(case)
        tables, keep, nb = luts(q, k, v, method)
        fn = kernel_fn(q, k, v, tables[variant], keep, method.block_size)
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        return
    for case in args.cases.split(","):
        q, k, v, method = inputs(case)
        tables, keep, nb = luts(q, k, v, method)
        qd, kd, vd = (x.transpose(1, 2).contiguous() for x in (q, k, v))

        def cudnn():
            from torch.nn.attention import SDPBackend, sdpa_kernel

            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                return F.scaled_dot_product_attention(qd, kd, vd)

        dense_ms = bench(cudnn, 200.0)
        for name, lut in tables.items():
            ms = bench(kernel_fn(q, k, v, lut, keep, method.block_size), 200.0)
            union = union_fraction(lut, nb)
            rec = dict(case=case, variant=name, heads=q.shape[2], tokens=q.shape[1], blocks=nb, keep=keep, kernel_ms=ms,
                       cudnn_dense_ms=dense_ms, rate_vs_cudnn=keep / nb * dense_ms / ms, in_flight_union=union,
                       union_mb_per_head=union * q.shape[1] * q.shape[3] * 2 * 2 / 1e6)
            print(json.dumps(rec), flush=True)
        for parts in (2, 3):
            ms = bench(split_fn(q, k, v, tables["real"], keep, method.block_size, nb, parts), 200.0)
            print(json.dumps(dict(case=case, variant=f"real/split{parts}", kernel_ms=ms, cudnn_dense_ms=dense_ms,
                                  rate_vs_cudnn=keep / nb * dense_ms / ms)), flush=True)
        # The kernel's key ranges (session 14): the same split, the softmax carried between launches.
        for parts in (2, 3, 4):
            ms = bench(kernel_fn(q, k, v, tables["real"], keep, method.block_size, kv_ranges=parts), 200.0)
            print(json.dumps(dict(case=case, variant=f"real/kv_ranges={parts}", kernel_ms=ms, cudnn_dense_ms=dense_ms,
                                  rate_vs_cudnn=keep / nb * dense_ms / ms)), flush=True)
        del q, k, v, qd, kd, vd, tables
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
