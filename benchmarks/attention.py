"""Block-sparse attention on a GPU: our Triton kernel against cuDNN dense SDPA and FlexAttention
with the same block mask, at the shapes of the models we patch (SPEC section 3).

For every (model shape, method) it measures, in one run, interleaved over --rounds rounds
(median kept):
  - ours_ms: what the runtime does per attention call. Tiled layouts on grids the tile divides run
    in a tile-order forward (ditaccel/tile_order.py): the call gets the video tokens tiled already
    (tiled_call_ms) and is charged its share of the forward's reorders (forward_reorder_ms: the
    patch embedding's output, the rotary tables and the final projection's output of the model the
    shape comes from, through the adapter's own functions, divided by its attention layers).
    Otherwise (model_order_ms): q, k, v in the model's token order (video raster, text first or
    last with padding), the kernel reading video tokens in place (raster rows, or tiles as 3-D
    boxes of the grid), output in model order;
  - kernel_canonical_ms: the kernel alone on tensors already in canonical (tiled) order, what
    Flex gets too; model_order_overhead = ours_ms / kernel_canonical_ms - 1 (token movement);
  - ours_all_blocks_ms: our kernel with an all-blocks LUT (our dense rate);
  - cudnn_dense_ms: torch SDPA forced to cuDNN on the unpadded raster tokens (dense baseline);
  - xformers_dense_ms: xformers.ops.memory_efficient_attention, dense, on the same unpadded tokens
    (same values, in xformers' own [B, N, H, D] layout; xformers_op = the kernel it dispatched to).
    Left out with --no-xformers; xformers_error says why when it cannot be imported or raises;
  - flex_ms: FlexAttention (torch.compile'd) with BlockMask.from_kv_blocks built from our LUT:
    whole blocks as "full" blocks, partial ones with a mask_mod doing the same box test;
  - gather_fallback_ms (tiled layouts): the raster -> tiled gathers of q, k, v and the output
    gather back, the path for dilated windows and GPUs without tensor descriptors.
With --check it first compares the runtime call with the reference backend in bf16 at full size.

Dynamic methods (--methods piecewise,pyramid,topk; their presets for the case's model family) get
the same records with the method's own columns: q, k from smooth random fields with 3-D rotary
(benchmarks/fidelity.py's synthetic inputs: pyramid's mass mode depends on the data), the call as
the runtime makes it in a tile-order forward (video tokens tiled already; text keys extra, text
queries dense), split into overhead_ms (statistics and selection, or importance, levels, pooling and
LUT) and kernel_ms, plus exact_rate_vs_cudnn: top-k's kernel (the exact phase alone) against cuDNN
per computed block. With --check: Triton against the reference backend in bf16 on the same
selection, at wan1.3b_480p size.

Usage: python benchmarks/attention.py --out DIR [--cases wan14b_720p,...] [--check] [--sweep] [--no-xformers]
Writes DIR/attention_<gpu>.json (a list of records) and prints a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
import traceback

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))  # fidelity.py's synthetic inputs

from ditaccel.kernels import block_sparse_triton as bst  # noqa: E402
from ditaccel.kernels import ops  # noqa: E402  (the token path the runtime chose)
from ditaccel.kernels.attention import block_sparse_attention_model_order, canonical_sequence  # noqa: E402
from ditaccel.kernels.layout import BlockLayout, pack_block_mask, with_text  # noqa: E402
from ditaccel.kernels.ops import _prepared  # noqa: E402  (has_partial, looked up once per layout object)
from ditaccel.kernels.permute_triton import gather_tokens, inverse_index  # noqa: E402
from ditaccel.plugins.neighborhood import Neighborhood  # noqa: E402
from ditaccel.plugins.radial import Radial  # noqa: E402
from ditaccel.tile_order import reorder_tokens, uses_tile_order  # noqa: E402

# name: heads, head_dim, grid (T', H', W'), text tokens (joint attention, 0 = none), real text
# tokens (the rest is padding), radial (decay, sink) or None, neighbourhood (window, stride).
CASES = {
    "wan14b_720p": dict(heads=40, dim=128, grid=(21, 45, 80), text=0, radial=(0.2, True), nbhd=((12, 24, 24), (8, 8, 8))),
    "wan14b_480p": dict(heads=40, dim=128, grid=(21, 30, 52), text=0, radial=(0.2, True), nbhd=((12, 16, 24), (8, 8, 8))),
    "wan1.3b_480p": dict(heads=12, dim=128, grid=(21, 30, 52), text=0, radial=(0.2, True), nbhd=((12, 16, 24), (8, 8, 8))),
    "hunyuan_720p": dict(heads=24, dim=128, grid=(33, 45, 80), text=256, text_real=200, text_position="last", radial=(0.95, False), nbhd=((18, 24, 24), (16, 8, 8))),
    # NATTEN's published HunyuanVideo shape (30x48x80 = 115,200 tokens), where its window
    # (18, 24, 24) / stride (16, 8, 8) is perfectly block-sparse with (2, 8, 8) tiles.
    "hunyuan_natten": dict(heads=24, dim=128, grid=(30, 48, 80), text=0, radial=None, nbhd=((18, 24, 24), (16, 8, 8))),
    "cogvideox5b": dict(heads=48, dim=64, grid=(13, 30, 45), text=226, text_position="first", radial=(1.0, False), nbhd=((8, 16, 24), (4, 8, 8))),
    "flux_1024": dict(heads=24, dim=128, grid=(1, 64, 64), text=512, text_position="first", radial=None, nbhd=((1, 32, 32), (1, 16, 16))),
}
# The model each shape comes from, for a tile-order forward's reorders: adapter, attention layers,
# hidden size, and the width of the final projection's output (patch volume x latent channels).
MODELS = {
    "wan14b_720p": ("wan", 40, 5120, 64), "wan14b_480p": ("wan", 40, 5120, 64), "wan1.3b_480p": ("wan", 30, 1536, 64),
    "hunyuan_720p": ("hunyuan_video", 60, 3072, 64), "hunyuan_natten": ("hunyuan_video", 60, 3072, 64),
    "cogvideox5b": ("cogvideox", 42, 3072, 64), "flux_1024": ("flux", 57, 3072, 64),
}


def forward_reorder(case: str, tiling, text_len: int, D: int):
    """The reorders of one tile-order forward of ``case``'s model (batch 1, bf16 activations, fp32
    rotary tables), through the adapter's own functions: () -> None."""
    from ditaccel.pipelines import available_adapters

    family, _, hidden, out_width = MODELS[case]
    adapter = next(a for a in available_adapters() if a.family == family)
    n = tiling.num_tokens
    bf16 = dict(device="cuda", dtype=torch.bfloat16)
    if family == "wan":  # Conv3d output [B, C, T', H', W'] and rope tables [1, N, 1, D]
        entry = torch.randn(1, hidden, *tiling.grid, **bf16)
        tables = tuple(torch.randn(1, n, 1, D, device="cuda") for _ in range(2))
    else:  # tokens [B, (text +) N, C]; rope tables [(text +) N, D]
        entry = torch.randn(1, n + (text_len if family == "cogvideox" else 0), hidden, **bf16)
        tables = tuple(torch.randn(n + (text_len if family == "flux" else 0), D, device="cuda") for _ in range(2))
    exit_ = torch.randn(1, n, out_width, **bf16)

    def run():
        adapter.video_tokens_to_tiles(entry, tiling)
        if family == "cogvideox":  # the pipeline's tables, a forward argument
            adapter.arguments_to_tiles((), {"image_rotary_emb": tables}, tiling)
        else:
            adapter.rotary_to_tiles(tables, tiling)
        reorder_tokens(exit_, 1, tiling, to_tiles=False)

    return run


def load_xformers(disabled: bool):
    """(xformers.ops, version, None), or (None, None, why not) when it is disabled or not importable."""
    if disabled:
        return None, None, None
    try:
        import xformers
        import xformers.ops as xops
    except Exception as e:  # ImportError, or a wheel whose extensions do not load with this torch
        return None, None, f"{type(e).__name__}: {str(e)[:300]}"
    return xops, xformers.__version__, None


def xformers_op_name(q, k, v, scale: float) -> str | None:
    """The forward kernel xformers dispatches these inputs to (e.g. "fa3F", "fa2F@2.7.4-pt",
    "cutlassF-pt"); None when its private dispatcher cannot be asked."""
    try:
        from xformers.ops import fmha

        return fmha._dispatch_fw(fmha.Inputs(query=q, key=k, value=v, scale=scale), False).NAME
    except Exception:
        return None


def bench(fn, rep_ms: float = 300.0) -> float:
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=50, rep=rep_ms, return_mode="median"))


GRAPH_BELOW_MS = 2.0


def graph_bench(fn) -> float:
    """Median ms of ``fn`` replayed from a CUDA graph (no host work per call)."""
    import triton.testing

    return float(triton.testing.do_bench_cudagraph(fn, rep=100, return_mode="median"))


def bench_rounds(fns: dict, rounds: int) -> dict:
    """Median over ``rounds`` interleaved rounds (each variant once per round): a GPU whose clock
    drifts during the run moves all variants alike instead of whichever ran last."""
    per = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            per[name].append(round(bench(fn, 150.0), 3))
    out = {name: float(sorted(v)[len(v) // 2]) for name, v in per.items()}
    out["rounds"] = per
    return out


CANON_ARGS = ("video_start", "text_start", "text_len", "text_order")


def token_access(lay: BlockLayout) -> str:
    """How the runtime's kernel reaches the video tokens (ops.model_order_attention_op)."""
    t = lay.tiling
    if t is None or t.tile is None:
        return "rows in place"
    return "tiled: box or gather (timed)" if t.dilation == (1, 1, 1) else "gathered"


def gpu_name() -> str:
    name = torch.cuda.get_device_name()
    for tag in ("H100", "H200", "A100", "B200", "L40S"):
        if tag in name:
            return tag.lower()
    return name.replace(" ", "_").lower()


def all_blocks_layout(layout: BlockLayout) -> BlockLayout:
    M = layout.num_blocks
    dev = layout.kv_counts.device
    counts = torch.full((1, M), M, dtype=torch.int32, device=dev)
    idx = torch.arange(M, dtype=torch.int32, device=dev).expand(1, M, M).contiguous()
    return BlockLayout(layout.block_size, layout.seq_len, counts, idx, torch.zeros_like(idx, dtype=torch.int8), layout.q_lo,
                       layout.q_hi, layout.k_coord, layout.tiling, layout.num_text_blocks)


def run_ours(q, k, v, layout, kv_len, config=None):
    return bst.block_sparse_attention_fwd(q, k, v, layout.kv_counts, layout.kv_indices, layout.kv_partial, layout.q_lo,
                                          layout.q_hi, layout.k_coord, kv_len, None, layout.block_size,
                                          has_partial=_prepared(layout, q.device)[1], config=config,
                                          text_blocks=layout.num_text_blocks)


def flex_runner(layout: BlockLayout, video_len: int, kv_end: int | None, H: int):
    """FlexAttention with our LUT: whole blocks as full blocks, partial ones with the box test."""
    from torch.nn.attention.flex_attention import BlockMask, flex_attention

    M, bs, N = layout.num_blocks, layout.block_size, layout.seq_len
    on = layout.dense_block_mask()[0]  # [M, M]
    part = torch.zeros_like(on)
    idx = layout.kv_indices[0].long()
    part.scatter_(1, idx.clamp_min(0), (layout.kv_partial[0] > 0) & (idx >= 0))
    if kv_end is not None and kv_end < N:
        part[:, kv_end // bs] |= on[:, kv_end // bs]  # the block crossing the key length
    full = on & ~part

    def packed(mask):
        counts, indices, _ = pack_block_mask(mask[None])
        wide = torch.zeros(1, M, M, dtype=torch.int32, device=mask.device)
        wide[..., : indices.shape[-1]] = indices.clamp_min(0)
        return counts[None].contiguous(), wide[None].contiguous()

    lo, hi, kc = layout.q_lo, layout.q_hi, layout.k_coord
    end = N if kv_end is None else kv_end

    def mask_mod(b, h, q_idx, kv_idx):
        ok = kv_idx < end
        inside = kv_idx >= video_len  # text keys: no box
        box = (lo[q_idx, 0] <= kc[kv_idx, 0]) & (kc[kv_idx, 0] <= hi[q_idx, 0])
        for c in range(1, 4):
            box = box & (lo[q_idx, c] <= kc[kv_idx, c]) & (kc[kv_idx, c] <= hi[q_idx, c])
        return ok & (inside | box)

    pc, pi = packed(part)
    fc, fi = packed(full)
    has_part = bool(part.any())
    bm = BlockMask.from_kv_blocks(pc, pi, fc, fi, BLOCK_SIZE=bs, mask_mod=mask_mod if has_part else None, seq_lengths=(N, N))
    # A fresh compile per mask: past dynamo's recompile limit flex_attention silently falls back
    # to its eager path, which materialises the whole score matrix.
    torch._dynamo.reset()
    compiled = torch.compile(flex_attention, dynamic=False)

    def run(q, k, v):  # [B, N, H, D] canonical
        out = compiled(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), block_mask=bm)
        return out.transpose(1, 2)

    return run


def build_layouts(name: str, cfg: dict, methods: list[str]) -> dict:
    grid, out = cfg["grid"], {}
    for m in methods:
        t0 = time.time()
        if m == "radial":
            if cfg["radial"] is None:
                continue
            decay, sink = cfg["radial"]
            lay = Radial(decay=decay, sink=sink).build_layout(grid, device="cuda")
        elif m == "neighborhood_blocked":
            w, s = cfg["nbhd"]
            lay = Neighborhood(window=w, stride=s).build_layout(grid, device="cuda")
        elif m == "neighborhood_stride1":
            w, _ = cfg["nbhd"]
            lay = Neighborhood(window=w, stride=(1, 1, 1)).build_layout(grid, device="cuda")
        else:
            raise ValueError(m)
        if cfg["text"]:
            lay = with_text(lay, cfg["text"])
        out[m] = lay.to("cuda")
        print(f"  layout {m}: {time.time() - t0:.1f}s density {lay.block_density():.3f}", flush=True)
    return out


DYNAMIC_METHODS = ("piecewise", "pyramid", "topk")


def dynamic_inputs(cfg: dict, seed: int = 0, tiling=None):
    """q, k, v [1, video + text, H, D] bf16 on the GPU: the video tokens (raster, or in ``tiling``'s
    order, as a tile-order forward hands them to a dynamic method), then the text (last or first as
    in the model) with its padding; and the text mask."""
    from fidelity import synthetic_inputs

    H, D, grid = cfg["heads"], cfg["dim"], cfg["grid"]
    q, k, v = (x.to(torch.bfloat16) for x in synthetic_inputs(grid, H, D, 2.0, seed, 0.5, device="cuda"))
    if tiling is not None:
        q, k, v = (tiling.to_canonical(x) for x in (q, k, v))
    text_len = cfg["text"]
    if text_len:
        t = [torch.randn(1, text_len, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3)]
        first = cfg.get("text_position") == "first"
        q, k, v = (torch.cat([b, a] if first else [a, b], dim=1) for a, b in zip((q, k, v), t))
    mask = torch.arange(text_len, device="cuda")[None] < cfg.get("text_real", text_len) if text_len else None
    return q, k, v, mask


def bench_dynamic(name: str, cfg: dict, methods: list[str], args, gpu: str) -> list[dict]:
    """Records of the dynamic methods on one case (see the module docstring)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from ditaccel.kernels import piecewise_triton as pwt, pyramid_triton as pyt
    from ditaccel.plugins.piecewise import piecewise_compute_fraction
    from ditaccel.plugins.sparse_attention import SparseAttention
    from ditaccel.presets import preset

    family = MODELS[name][0]
    H, D, grid = cfg["heads"], cfg["dim"], cfg["grid"]
    n_video, text_len = math.prod(grid), cfg["text"]
    text_real = cfg.get("text_real", text_len)
    first = cfg.get("text_position") == "first"
    video = slice(text_len, None) if first else slice(0, n_video)
    # Dense baseline on the real (unpadded) tokens, [B, H, N, D] as SDPA wants them.
    q, k, v, _ = dynamic_inputs(cfg)
    text = slice(0, text_real) if first else slice(n_video, n_video + text_real)
    qd, kd, vd = (torch.cat([x[:, video], x[:, text]], 1).transpose(1, 2).contiguous() for x in (q, k, v))
    del q, k, v

    def cudnn():
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return F.scaled_dot_product_attention(qd, kd, vd)

    tau = D**-0.5
    records = []
    for method_name in methods:
        method = preset(method_name, family)[0]
        if method_name == "pyramid":
            # One replace (the config checks its fields together); samples imply the sampled estimate.
            changes = {"mode": args.pyramid_mode, "samples": args.pyramid_samples,
                       "importance": args.pyramid_importance or ("sampled" if args.pyramid_samples else None)}
            method = dataclasses.replace(method, **{k: v for k, v in changes.items() if v is not None})
        # The method's token order: its blocks (and pyramid's data-dependent levels) depend on it.
        q, k, v, text_mask = dynamic_inputs(cfg, tiling=method.tiling(grid))
        qv, kv, vv = (x[:, video] for x in (q, k, v))
        runner = SparseAttention(method, backend="triton")
        text_kw = dict(text_len=text_len, text_position=("first" if first else "last") if text_len else "none",
                       text_mask=text_mask, video_tiled=True)

        def call():
            return runner.attend_dynamic(q, k, v, grid, **text_kw)[0]

        bs = method.block_size
        nb = -(-n_video // bs)
        if method_name == "pyramid":
            def method_levels():  # the method's own importance pass, as the runtime runs it
                return method.levels(qv, kv, vv)

            levels = method_levels()

            def overhead():
                return pyt.pool_kv(kv, vv, bs), pyt.pyramid_lut(method_levels())

            pooled, lut = overhead()

            def kernel():
                return pyt.pyramid_attention_op(qv, kv, vv, pooled.k, pooled.v, pooled.log_count, lut.offsets, lut.indices,
                                                None, None, None, tau, bs)

            from ditaccel.plugins.pyramid import pyramid_compute_fraction

            fraction = float(pyramid_compute_fraction(levels, n_video, bs))
            level_share = {str(lv): float((levels == lv).float().mean()) for lv in (0, 1, 2, 4, 8)}
        else:
            order = method.order if method_name == "piecewise" else None
            keep = max(1, math.floor(method.density * nb + 1e-9))

            def overhead():
                stats = pwt.piecewise_statistics_op(qv, kv, vv, bs, order == 1)
                return stats, pwt.select_blocks(stats[0], stats[1], stats[2], tau, keep)

            stats, (lut, sel) = overhead()
            ht = (stats[5] * (tau / n_video)).to(qv.dtype) if order == 1 else None
            summary = order is not None

            def kernel():
                return pwt.piecewise_attention_op(qv, kv, vv, lut, None, sel if summary else None,
                                                  stats[3] if summary else None, stats[4] if summary else None, ht,
                                                  None, None, None, tau, bs, keep)

            fraction = piecewise_compute_fraction(n_video, bs, method.density, approximate=summary)
            level_share = None
        try:
            call()
            torch.cuda.synchronize()
            t = bench_rounds({"ours": call, "overhead": overhead, "kernel": kernel, "cudnn": cudnn}, args.rounds)
        except Exception as e:
            traceback.print_exc()
            records.append(dict(case=name, method=method_name, gpu=gpu, error=f"{type(e).__name__}: {str(e)[:300]}"))
            continue
        rec = dict(case=name, method=method_name, gpu=gpu, config=repr(method), tokens=n_video + text_real,
                   video_tokens=n_video, text_tokens=text_len, heads=H, head_dim=D, dtype="bfloat16",
                   inputs="synthetic smooth fields + 3-D rotary (benchmarks/fidelity.py, sigma 2, own 0.5)",
                   computed_fraction=fraction, level_share=level_share,
                   ours_ms=t["ours"], overhead_ms=t["overhead"], kernel_ms=t["kernel"], cudnn_dense_ms=t["cudnn"],
                   speedup_vs_cudnn=t["cudnn"] / t["ours"], overhead_share=t["overhead"] / t["ours"],
                   rounds={k: v for k, v in t["rounds"].items()})
        records.append(rec)
        print("  " + json.dumps({k: rec[k] for k in ("method", "computed_fraction", "ours_ms", "overhead_ms", "kernel_ms",
                                                     "cudnn_dense_ms", "speedup_vs_cudnn", "overhead_share")}), flush=True)
        del q, k, v, qv, kv, vv
        torch.cuda.empty_cache()
    # The exact phase's rate: top-k's kernel computes only its selected blocks.
    for r in records:
        if r["method"] == "topk" and "kernel_ms" in r:
            r["exact_rate_vs_cudnn"] = r["computed_fraction"] * r["cudnn_dense_ms"] * n_video**2 / r["tokens"] ** 2 / r["kernel_ms"]
    del qd, kd, vd
    torch.cuda.empty_cache()
    return records


CHECK_TOLERANCE = 1e-2  # relative L2, bf16 Triton against the fp32 reference (issue 12)


def _dynamic_check(method: str, out: torch.Tensor, ref: torch.Tensor, tokens: int, heads: int) -> dict:
    err = float((out - ref).norm() / ref.norm())
    finite = bool(torch.isfinite(out).all())
    return dict(method=method, rel_l2_err=err, finite=finite, passed=finite and err <= CHECK_TOLERANCE,
                tolerance=CHECK_TOLERANCE, tokens=tokens, heads=heads, dtype="bfloat16")


def check_dynamic(methods: list[str], checks: list) -> None:
    """Triton against the reference backend in bf16, on the same blocks (wan1.3b_480p size, text
    keys of a HunyuanVideo-like joint attention as extra keys)."""
    from ditaccel.kernels import piecewise_attention, pyramid_attention, pyramid_levels, topk_attention
    from ditaccel.kernels import piecewise_triton as pwt

    cfg = dict(CASES["wan1.3b_480p"], text=256, text_real=200, text_position="last")
    q, k, v, mask = dynamic_inputs(cfg, seed=1)
    n = math.prod(cfg["grid"])
    qv, kv, vv = (x[:, :n] for x in (q, k, v))
    extra = (k[:, n:], v[:, n:], mask.sum(1).to(torch.int32))
    for name in methods:
        for order in ((0, 1) if name == "piecewise" else (None,)):
            if name == "pyramid":
                for mode in ("mass", "fraction"):
                    levels = pyramid_levels(qv, kv, block_size=128, mode=mode)
                    args = dict(levels=levels, block_size=128, extra_kv=extra)
                    out = pyramid_attention(qv, kv, vv, backend="triton", **args).float()
                    ref = pyramid_attention(qv, kv, vv, backend="reference", **args).float()
                    checks.append(_dynamic_check(f"pyramid ({mode})", out, ref, n, cfg["heads"]))
                    print(f"  check {checks[-1]}", flush=True)
                continue
            selected = pwt.triton_piecewise_selection(qv, kv, vv, density=0.15, block_size=64)
            fn = topk_attention if name == "topk" else piecewise_attention
            kw = dict(selected=selected, block_size=64, extra_kv=extra, **({} if name == "topk" else {"order": order}))
            out = fn(qv, kv, vv, backend="triton", **kw).float()
            ref = fn(qv, kv, vv, backend="reference", **kw).float()
            checks.append(_dynamic_check(name + ("" if order is None else f" (order {order})"), out, ref, n, cfg["heads"]))
            print(f"  check {checks[-1]}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--methods", default="radial,neighborhood_blocked,neighborhood_stride1")
    ap.add_argument("--check", action="store_true", help="compare with the reference backend first")
    ap.add_argument("--no-flex", action="store_true")
    ap.add_argument("--no-xformers", action="store_true", help="leave out the xformers dense baseline")
    ap.add_argument("--sweep", default="", help="case:method to time every kernel config on")
    ap.add_argument("--budget-s", type=float, default=1e9, help="stop starting new cases after this many seconds")
    ap.add_argument("--tag", default="", help="suffix of the output file name")
    ap.add_argument("--pyramid-samples", type=int, default=None,
                    help="importance samples per block for pyramid (default: block_size // 4); implies "
                         "--pyramid-importance sampled unless that is given")
    ap.add_argument("--pyramid-mode", choices=("mass", "fraction"), default=None,
                    help="pyramid's mode (default: the preset's)")
    ap.add_argument("--pyramid-importance", choices=("sampled", "score"), default=None,
                    help="pyramid's importance estimate (default: the preset's)")
    ap.add_argument("--rounds", type=int, default=3, help="timing rounds, interleaved over the variants (median kept)")
    args = ap.parse_args()
    t_start = time.time()
    torch.manual_seed(0)
    os.makedirs(args.out, exist_ok=True)
    gpu = gpu_name()
    import triton

    xops, xformers_version, xformers_import_error = load_xformers(args.no_xformers)
    env = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
               date=time.strftime("%Y-%m-%d"), cudnn=torch.backends.cudnn.version(), xformers=xformers_version)
    if xformers_import_error is not None:
        env["xformers_error"] = xformers_import_error
    print(env, flush=True)
    path = os.path.join(args.out, f"attention_{gpu}{args.tag}.json")
    records: list[dict] = []
    checks: list[dict] = []

    def save():
        with open(path, "w") as f:
            json.dump({"env": env, "records": records, "checks": checks}, f, indent=1)

    dynamic = [m for m in args.methods.split(",") if m in DYNAMIC_METHODS]
    if args.check and dynamic:
        check_dynamic(dynamic, checks)
        save()
    for name in args.cases.split(","):
        if time.time() - t_start > args.budget_s:
            print(f"budget reached: skipping {name}", flush=True)
            continue
        cfg = CASES[name]
        H, D, grid = cfg["heads"], cfg["dim"], cfg["grid"]
        n_video = math.prod(grid)
        print(f"== {name}: {H}x{D}, grid {grid} = {n_video} video tokens, text {cfg['text']}", flush=True)
        dynamic = [m for m in args.methods.split(",") if m in DYNAMIC_METHODS]
        if dynamic:
            records += bench_dynamic(name, cfg, dynamic, args, gpu)
            save()
        static = [m for m in args.methods.split(",") if m not in DYNAMIC_METHODS]
        if not static:
            continue
        try:
            layouts = build_layouts(name, cfg, static)
        except Exception:
            traceback.print_exc()
            continue
        if not layouts:
            continue
        text_len = cfg["text"]
        text_real = cfg.get("text_real", text_len)
        n_real = n_video + text_real
        # Dense baseline on the real (unpadded) tokens.
        qd, kd, vd = (torch.randn(1, H, n_real, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        from torch.nn.attention import SDPBackend, sdpa_kernel

        def cudnn():
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                return F.scaled_dot_product_attention(qd, kd, vd)

        dense_flops = 4.0 * n_real * n_real * D * H
        # xformers on the same tokens, in its own [B, N, H, D] layout (the one diffusers hands it).
        xformers_dense, xformers_error, xformers_op, xformers_check = None, xformers_import_error, None, None
        if xops is not None:
            qx, kx, vx = (x.transpose(1, 2).contiguous() for x in (qd, kd, vd))
            scale = 1.0 / math.sqrt(D)  # SDPA's default, which the cuDNN row uses

            def run_xformers():
                return xops.memory_efficient_attention(qx, kx, vx, scale=scale)

            try:  # once here: a shape it refuses must not take the case's other rows with it
                xo = run_xformers()
                torch.cuda.synchronize()
                xformers_dense, xformers_op = run_xformers, xformers_op_name(qx, kx, vx, scale)
                if args.check:  # the same attention as the cuDNN row: equal up to bf16 rounding
                    co = cudnn().float()
                    xformers_check = float((xo.transpose(1, 2).float() - co).norm() / co.norm())
                    del co
                del xo
            except Exception as e:  # keep going: the records say why
                traceback.print_exc()
                xformers_error, xformers_dense = f"{type(e).__name__}: {str(e)[:300]}", None
                del qx, kx, vx
                torch.cuda.empty_cache()
        ours_all_layout = None
        for method, lay in layouts.items():
            try:
                N = lay.seq_len
                video_len = (lay.num_blocks - lay.num_text_blocks) * lay.block_size  # canonical video positions
                kv_end = video_len + text_real if text_len else None
                kv_len = torch.tensor([kv_end], dtype=torch.int32, device="cuda") if kv_end is not None else None
                # What the runtime does (plugins/sparse_attention.py): q, k, v in the model's token order
                # (video raster, text first or last, text_real of the text tokens valid), read in place by
                # the kernel; the output comes back in the model's order.
                first = cfg.get("text_position") == "first"
                placement = dict(video_start=text_len if first else 0, text_start=0 if first else n_video, text_len=text_len)
                if text_real < text_len:  # the model passes a text mask (HunyuanVideo): valid text first, keys cut at kv_len
                    valid = torch.arange(text_len, device="cuda")[None] < text_real
                    placement.update(text_order=torch.argsort((~valid).to(torch.int8), dim=1, stable=True), kv_len=kv_len)
                q, k, v = (torch.randn(1, n_video + text_len, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))

                def model_order():
                    return block_sparse_attention_model_order(q, k, v, lay, backend="triton", **placement)

                tile_order = uses_tile_order(lay.tiling)
                video = slice(placement["video_start"], placement["video_start"] + n_video)
                if tile_order:  # a tile-order forward hands the call its video tokens tiled already
                    qt, kt, vt = (torch.cat([x[:, : video.start], lay.tiling.to_canonical(x[:, video]), x[:, video.stop :]], 1)
                                  for x in (q, k, v))

                    def ours():
                        return block_sparse_attention_model_order(qt, kt, vt, lay, backend="triton", video_tiled=True, **placement)
                else:
                    ours = model_order

                # The kernel alone on tensors already in canonical order (its rate, and what Flex gets).
                qc, kc, vc = (canonical_sequence(x, lay, **{n: placement.get(n) for n in CANON_ARGS}).contiguous() for x in (q, k, v))
                rec = dict(case=name, method=method, gpu=gpu, tokens=n_real, canonical_tokens=N, heads=H, head_dim=D,
                           block_size=lay.block_size, grid=list(grid), text_tokens=text_real, text_position=cfg.get("text_position"),
                           block_density=round(lay.block_density(), 4),
                           partial_fraction=round(float((lay.kv_partial != 0).sum()) / float(lay.kv_counts.sum()), 4),
                           tile=list(lay.tiling.tile) if lay.tiling is not None and lay.tiling.tile else None,
                           token_access=token_access(lay))
                if args.check:
                    out = ours()
                    torch.cuda.synchronize()
                    ref = block_sparse_attention_model_order(q.float(), k.float(), v.float(), lay, backend="reference", **placement)
                    if tile_order:  # the reference's output in the tile order the call works in
                        ref[:, video] = lay.tiling.to_canonical(ref[:, video])
                    err = float((out.float() - ref).norm() / ref.norm())
                    again = ours()
                    rec["rel_l2_err"] = err
                    row_err = ((out.float() - ref).norm(dim=-1) / ref.norm(dim=-1).clamp_min(1e-6)).amax(dim=(0, 2))  # [S]
                    worst = int(row_err.argmax())
                    checks.append(dict(case=name, method=method, rel_l2_err=err, finite=bool(torch.isfinite(out).all()),
                                       deterministic=bool(torch.equal(out, again)), worst_row=worst, worst_row_err=float(row_err[worst]),
                                       rows_over_5pct=int((row_err > 0.05).sum()), config=str(getattr(bst._block_sparse_fwd_tuned, "best_config", None))))
                    print(f"  check {method}: rel L2 {err:.2e} {checks[-1]}", flush=True)
                    del ref, out, again
                fns = {"ours": ours, "kernel_canonical": lambda: run_ours(qc, kc, vc, lay, kv_len), "cudnn_dense": cudnn}
                ours()  # the config the runtime call runs (the autotuner names the one of its last call)
                best = getattr(bst._block_sparse_fwd_tuned, "best_config", None)
                rec["config"] = str(best) if best is not None else None
                if xformers_dense is not None:
                    fns["xformers_dense"] = xformers_dense
                elif xformers_error is not None:
                    rec["xformers_error"] = xformers_error
                if tile_order:
                    fns["model_order"] = model_order
                if lay.num_blocks != getattr(ours_all_layout, "num_blocks", None):
                    ours_all_layout = all_blocks_layout(lay)
                fns["ours_all_blocks"] = lambda: run_ours(qc, kc, vc, ours_all_layout, kv_len)
                if not args.no_flex:
                    try:
                        raster = lay.tiling is None or lay.tiling.tile is None  # padding at the end: keys cut there
                        flex = flex_runner(lay, video_len, kv_end if text_len else (n_video if raster else None), H)
                        if args.check:
                            fo, oo = flex(qc, kc, vc), run_ours(qc, kc, vc, lay, kv_len)
                            rec["flex_vs_ours_rel_l2"] = float((fo.float() - oo.float()).norm() / oo.float().norm())
                            del fo, oo
                        fns["flex"] = lambda: flex(qc, kc, vc)
                    except Exception as e:  # keep going: the record says why
                        traceback.print_exc()
                        rec["flex_error"] = f"{type(e).__name__}: {str(e)[:300]}"
                times = bench_rounds(fns, args.rounds)
                if lay.tiling is not None and lay.tiling.tile is not None and ops._chosen_paths:
                    rec["token_access"] += f" / chosen: {list(ops._chosen_paths.values())[-1]}"
                computed = float(lay.kv_counts.double().sum()) * lay.block_size**2
                useful = 4.0 * computed * D * H
                all_flops = 4.0 * N * N * D * H
                ours_ms, cudnn_ms = times["ours"], times["cudnn_dense"]
                reorder = None
                if tile_order:
                    layers = MODELS[name][1]
                    reorder = forward_reorder(name, lay.tiling, text_len, D)
                    reorder_ms = bench(reorder, 100)
                    per_call = rec["token_access"].split("chosen: ")[-1] if "chosen: " in rec["token_access"] else "?"
                    rec.update(token_access=f"tile-order forward (per-call path: {per_call})",
                               tiled_call_ms=round(ours_ms, 3),
                               forward_reorder_ms=round(reorder_ms, 4), model_layers=layers,
                               model_order_ms=round(times["model_order"], 3), model_order_ms_rounds=times["rounds"]["model_order"])
                    ours_ms += reorder_ms / layers
                rec.update(
                    ours_ms=round(ours_ms, 3), ours_ms_rounds=times["rounds"]["ours"], useful_tflops=round(useful / ours_ms / 1e9, 1),
                    kernel_canonical_ms=round(times["kernel_canonical"], 3),
                    ours_all_blocks_ms=round(times["ours_all_blocks"], 3), ours_all_blocks_tflops=round(all_flops / times["ours_all_blocks"] / 1e9, 1),
                    cudnn_dense_ms=round(cudnn_ms, 3), cudnn_ms_rounds=times["rounds"]["cudnn_dense"],
                    cudnn_tflops=round(dense_flops / cudnn_ms / 1e9, 1),
                    speedup_vs_cudnn=round(cudnn_ms / ours_ms, 2),
                    useful_vs_cudnn_rate=round((useful / ours_ms) / (dense_flops / cudnn_ms), 3),
                    # token movement: the runtime call against the kernel on pre-tiled tensors
                    model_order_overhead=round(ours_ms / times["kernel_canonical"] - 1, 4),
                )
                if ours_ms < GRAPH_BELOW_MS:
                    # Short calls: eager timing is the host's launch latency (Python, custom op, descriptors),
                    # which a real forward hides behind the GPU's other work. Replayed from a CUDA graph, the
                    # same calls show the GPU's cost of the token movement alone.
                    g_ours, g_kernel = (graph_bench(fn) for fn in (ours, fns["kernel_canonical"]))
                    if tile_order:
                        g_model_order, g_reorder = graph_bench(model_order), graph_bench(reorder)
                        rec.update(tiled_call_graph_ms=round(g_ours, 4), forward_reorder_graph_ms=round(g_reorder, 4),
                                   model_order_graph_ms=round(g_model_order, 4))
                        g_ours += g_reorder / MODELS[name][1]
                    rec.update(ours_graph_ms=round(g_ours, 4), kernel_canonical_graph_ms=round(g_kernel, 4),
                               model_order_overhead_graph=round(g_ours / g_kernel - 1, 4))
                if "xformers_dense" in times:
                    xformers_ms = times["xformers_dense"]
                    rec.update(xformers_dense_ms=round(xformers_ms, 3), xformers_ms_rounds=times["rounds"]["xformers_dense"],
                               xformers_tflops=round(dense_flops / xformers_ms / 1e9, 1),
                               speedup_vs_xformers=round(xformers_ms / ours_ms, 2), xformers_op=xformers_op)
                    if xformers_check is not None:
                        rec["xformers_vs_cudnn_rel_l2"] = xformers_check
                if "flex" in times:
                    rec.update(flex_ms=round(times["flex"], 3), flex_ms_rounds=times["rounds"]["flex"],
                               flex_useful_tflops=round(useful / times["flex"] / 1e9, 1), speedup_vs_flex=round(times["flex"] / ours_ms, 3))
                if lay.tiling is not None and lay.tiling.tile is not None:
                    # The gather fallback (dilation, GPUs without tensor descriptors): 3 gathers in, 1 out.
                    t = lay.tiling
                    r2c = t.raster_to_canon.to("cuda")
                    c2r = inverse_index(r2c, t.canon_len)
                    xr, xc = q[:, placement["video_start"] : placement["video_start"] + n_video], qc[:, : t.canon_len]

                    def tri_tiling():
                        for _ in range(3):
                            gather_tokens(xr, c2r)
                        gather_tokens(xc, r2c)

                    rec["gather_fallback_ms"] = round(bench(tri_tiling, 100), 3)
                records.append(rec)
                save()
                print("  " + json.dumps({k: rec.get(k) for k in ("method", "token_access", "block_density", "partial_fraction", "ours_ms",
                                                               "kernel_canonical_ms", "useful_tflops", "ours_all_blocks_tflops",
                                                               "cudnn_dense_ms", "xformers_dense_ms", "flex_ms", "speedup_vs_cudnn",
                                                               "speedup_vs_xformers", "speedup_vs_flex",
                                                               "model_order_overhead", "rel_l2_err")}), flush=True)
                if args.sweep == f"{name}:{method}":
                    sweep(qc, kc, vc, lay, kv_len, rec, records, save)
                del q, k, v, qc, kc, vc
                torch.cuda.empty_cache()
            except Exception:  # keep going with the next method; the log has the traceback
                traceback.print_exc()
                torch.cuda.empty_cache()
    save()
    print(f"wrote {path} ({time.time() - t_start:.0f}s)")


SWEEP_CONFIGS = [
    dict(BLOCK_M=128, BLOCK_N=128, num_warps=8, num_stages=3),
    dict(BLOCK_M=128, BLOCK_N=128, num_warps=8, num_stages=2),
    dict(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=3),
    dict(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=4),
    dict(BLOCK_M=128, BLOCK_N=128, num_warps=4, num_stages=3),
    dict(BLOCK_M=128, BLOCK_N=64, num_warps=4, num_stages=3),
    dict(BLOCK_M=128, BLOCK_N=64, num_warps=4, num_stages=3, WARP_SPECIALIZE=True),
    dict(BLOCK_M=128, BLOCK_N=128, num_warps=4, num_stages=2, WARP_SPECIALIZE=True),
]


def sweep(q, k, v, lay, kv_len, rec, records, save):
    computed = float(lay.kv_counts.double().sum()) * lay.block_size**2
    useful = 4.0 * computed * q.shape[-1] * q.shape[2]
    rows = []
    for cfg in SWEEP_CONFIGS:
        try:
            ms = bench(lambda: run_ours(q, k, v, lay, kv_len, config=cfg))
            rows.append(dict(config=cfg, ms=round(ms, 3), useful_tflops=round(useful / ms / 1e9, 1)))
        except Exception as e:
            rows.append(dict(config=cfg, error=f"{type(e).__name__}: {str(e)[:200]}"))
        print("   sweep", rows[-1], flush=True)
    rec["sweep"] = rows
    save()


if __name__ == "__main__":
    main()
