"""Issue 15, partial blocks: what stride-1 neighbourhoods cost per computed block, by tile shape and
by how many coordinates the kernel tests in a partial block.

For each case's stride-1 window and each candidate tile it times the kernel on tensors already in
canonical order (no token movement) twice: testing only the coordinates some partial block of the
layout needs (the layout's ``partial_dims``, a compile-time choice) and testing all four (what
the kernel did before). cuDNN dense on the raster tokens runs in the same process;
the rate is useful FLOP/s (computed blocks) over cuDNN's dense FLOP/s, as in attention.py. A
relative L2 check against the reference runs on 4 heads of each layout.

python benchmarks/probes/partial_blocks.py --out DIR [--cases ...] [--budget-s S]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch
import triton.testing

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from attention import CASES  # noqa: E402

from ditaccel import Neighborhood  # noqa: E402
from ditaccel.kernels import block_sparse_triton as bst  # noqa: E402
from ditaccel.kernels import reference_block_sparse_attention  # noqa: E402
from ditaccel.kernels.layout import PARTIAL_ALL  # noqa: E402

TILES = [None, (2, 8, 8), (2, 4, 16), (4, 4, 8)]  # None: the default tile


def bench(fn) -> float:
    return float(triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--cases", default="wan14b_720p,hunyuan_720p,cogvideox5b,hunyuan_natten")
    ap.add_argument("--budget-s", type=float, default=200)
    ap.add_argument("--smoke", action="store_true", help="CPU, TRITON_INTERPRET=1, one tiny case: checks the script runs")
    args = ap.parse_args()
    dev = "cpu" if args.smoke else "cuda"
    dtype = torch.float32 if args.smoke else torch.bfloat16
    cases = {"smoke": dict(heads=2, dim=64, grid=(2, 16, 16), nbhd=((1, 11, 11), None))} if args.smoke else CASES
    tiles = [None, (1, 8, 16)] if args.smoke else TILES
    timer = (lambda fn: (lambda t: (fn(), (time.perf_counter() - t) * 1e3)[1])(time.perf_counter())) if args.smoke else bench
    t_start = time.time()
    records = []
    from torch.nn.attention import SDPBackend, sdpa_kernel

    for name in (["smoke"] if args.smoke else args.cases.split(",")):
        cfg = cases[name]
        H, D, grid = cfg["heads"], cfg["dim"], cfg["grid"]
        window = cfg["nbhd"][0]
        N = math.prod(grid)
        qd, kd, vd = (torch.randn(1, H, N, D, device=dev, dtype=dtype) for _ in range(3))
        with sdpa_kernel(SDPBackend.MATH if args.smoke else SDPBackend.CUDNN_ATTENTION):
            cudnn_ms = timer(lambda: torch.nn.functional.scaled_dot_product_attention(qd, kd, vd))
        del qd, kd, vd
        dense_rate = 4.0 * N * N * D * H / cudnn_ms
        print(f"== {name} window {window} stride 1: cuDNN {cudnn_ms:.2f} ms", flush=True)
        for tile in tiles:
            if time.time() - t_start > args.budget_s:
                print("budget reached", flush=True)
                break
            lay = Neighborhood(window=window, stride=1, tile=tile).build_layout(grid, device=dev).to(dev)
            L = lay.seq_len
            q, k, v = (torch.randn(1, L, H, D, device=dev, dtype=dtype) for _ in range(3))
            computed = float(lay.kv_counts.double().sum()) * lay.block_size**2
            useful = 4.0 * computed * D * H
            f = lay.kv_partial[lay.kv_indices >= 0].long()
            dims = sum(((f >> c) & 1) for c in range(4)).float()

            def run(dims, q=q, k=k, v=v, lay=lay):
                return bst.block_sparse_attention_fwd(q, k, v, lay.kv_counts, lay.kv_indices, lay.kv_partial, lay.q_lo, lay.q_hi,
                                                      lay.k_coord, None, None, lay.block_size, has_partial=dims)

            rec = dict(case=name, heads=H, head_dim=D, grid=list(grid), window=list(window),
                       tile=list(lay.tiling.tile), block_density=round(lay.block_density(), 4),
                       partial_fraction=round(float((f > 0).float().mean()), 4),
                       coords_tested_per_partial=round(float(dims[f > 0].mean()), 3) if bool((f > 0).any()) else 0.0,
                       partial_dims=lay.partial_dims, cudnn_ms=round(cudnn_ms, 3))
            # correctness on 4 heads against the reference (bf16 inputs, fp32 reference)
            qs, ks, vs = (x[:, :, :4].contiguous() for x in (q, k, v))
            got = bst.block_sparse_attention_fwd(qs, ks, vs, lay.kv_counts, lay.kv_indices, lay.kv_partial, lay.q_lo, lay.q_hi,
                                                 lay.k_coord, None, None, lay.block_size, has_partial=lay.partial_dims).float()
            ref = reference_block_sparse_attention(qs.float(), ks.float(), vs.float(), lay)
            real = lay.k_coord[:, 0] != -1
            rec["rel_l2_err"] = round(float((got - ref)[:, real].norm() / ref[:, real].norm()), 5)
            for label, dims in (("layout_coordinates", lay.partial_dims), ("all_coordinates", PARTIAL_ALL)):
                ms = timer(lambda dims=dims: run(dims))
                rec[f"{label}_ms"] = round(ms, 3)
                rec[f"{label}_rate_vs_cudnn"] = round((useful / ms) / dense_rate, 3)
                rec[f"{label}_speedup_vs_cudnn"] = round(cudnn_ms / ms, 3)
            records.append(rec)
            print("  " + json.dumps({k: rec[k] for k in ("tile", "block_density", "partial_fraction", "coords_tested_per_partial",
                                                         "partial_dims", "rel_l2_err", "layout_coordinates_ms", "layout_coordinates_rate_vs_cudnn",
                                                         "all_coordinates_ms", "all_coordinates_rate_vs_cudnn")}), flush=True)
            del q, k, v, lay
            if not args.smoke:
                torch.cuda.empty_cache()
    env = dict(gpu=torch.cuda.get_device_name() if not args.smoke else "cpu (smoke)", torch=torch.__version__, triton=triton.__version__,
               date=time.strftime("%Y-%m-%d"))
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "partial_blocks_smoke.json" if args.smoke else "partial_blocks_h200.json")
    with open(path, "w") as fh:
        json.dump(dict(env=env, records=records), fh, indent=1)
    print(f"wrote {path} ({time.time() - t_start:.0f}s)")


if __name__ == "__main__":
    main()
