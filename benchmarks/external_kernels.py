"""Side-by-side timing of the original research kernels of PISA (piecewise sparse attention) and PSA
(pyramid sparse attention) against cuDNN dense SDPA, on a GPU, at the video shapes we patch.

The external code is NOT part of this repository: it is imported at run time from ``.ext/`` (a verbatim
copy of the upstream packages, kept out of git by ``.git/info/exclude``; see ``.ext/SOURCES.md``):

  - PISA: github.com/xie-lab-ml/piecewise-sparse-attention @ PISA_COMMIT, package ``piecewise_attn``;
    entry point ``piecewise_sparse_attention(q, k, v, density, block_size, scale=None, use_bias=False)``
    on [B, H, T, D]: block statistics (fused_chunk_reduce), block scores + top-k selection, and the
    Triton kernel (exact attention on the selected blocks, 0th + 1st order Taylor on the rest) in one call.
  - PSA: github.com/ziplab/Pyramid-Sparse-Attention @ PSA_COMMIT, package ``psa_triton``; entry point
    the plug-and-play ``PSAAttention(PSAConfig(...))(q, k, v)`` on [B, H, L, D]: sampled block-importance
    pooling (Triton), multi-level mask (transfer_attn_to_mask), and the pyramid Triton kernel (pooling
    of K/V to 2x/4x/8x included) in one call.

Per case (``wan14b_720p``: 40 heads x 128, 75,600 video tokens; ``hunyuan_720p``: 24 heads x 128,
118,800 video tokens, its text tokens left out for every kernel) and per variant it records, bf16 on
CUDA, each time the median of ``--rounds`` interleaved rounds of
``triton.testing.do_bench(fn, warmup=50, rep=300, return_mode="median")``:

  - ms: the public entry point's whole call (statistics / importance + selection / mask + kernel);
  - kernel_ms: the main sparse Triton kernel's launch alone, re-launched with the very arguments the
    entry point gave it (captured by wrapping the module-level JIT object during one call);
    overhead_ms = ms - kernel_ms;
  - cudnn_ms: ``F.scaled_dot_product_attention`` under ``sdpa_kernel(SDPBackend.CUDNN_ATTENTION)`` on the
    same tensors; speedup = cudnn_ms / ms, kernel_speedup = cudnn_ms / kernel_ms;
  - density: the share of dense attention FLOPs the kernel computes (PISA: top_k / blocks for the exact
    part; PSA: its own calc_density_newtype, sum over levels of blocks / level);
  - with --check: rel_l2_vs_cudnn, ||o - o_cudnn|| / ||o_cudnn|| over the whole output (a sanity number;
    these are approximations).

Variants: pisa (density 0.15, block 64, use_bias=False: its defaults), pisa_bias (the same with
use_bias=True, as its Flux processor calls it), psa_wan14b (its Wan2.1-14B preset: thresholdbound
0.4/0.5/0.6/0.8, blocks m128/n128, tile 32, new_mask_type; minimum full share 6% = transfer_attn_to_mask's
default min_full_attn_ratio), psa_topk (PSAConfig() defaults: topk 10%/5%/0%/20% full/2x/4x/8x, m128/n64).
Not modelled: PSA's dense warm-up steps (this is a sparse step) and its logging / density statistics.

Inputs: q, k, v from benchmarks/fidelity.py's synthetic_inputs (smooth random fields with Wan's 3-D
rotary; sigma 2, seed 0, own 0.5), bf16, in Gilbert-curve token order (PSA's GilbertRearranger, the
order of its Wan presets; applied once, outside the timing, the same tensors for every kernel).
``--inputs random`` uses N(0, 1) instead, ``--order raster`` keeps raster order.

Usage (repo root, GPU machine):
    PYTHONPATH=.ext:$PYTHONPATH python benchmarks/external_kernels.py --out DIR [--check] [--cases ...]
Writes DIR/external_kernels_<gpu>.json ({"env", "records"}) and prints a table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
import traceback

import torch
import torch.nn.functional as F

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
EXT_DIR = os.path.join(REPO_ROOT, ".ext")

PISA_REPO = "github.com/xie-lab-ml/piecewise-sparse-attention"
PISA_COMMIT = "8604494f6660045d6f477f9dcb56b334d06b932c"  # 2026-02-05
PSA_REPO = "github.com/ziplab/Pyramid-Sparse-Attention"
PSA_COMMIT = "be122cfb7f32010682b1d70534670e5ef150a93d"  # 2026-01-24
# git blob ids at those commits, to confirm that .ext holds them verbatim
UPSTREAM_BLOBS = {
    "piecewise_attn/kernels/piecewise_sparse_attn_tma.py": "a2e350ed5fcd040b097a66ed780e4030180a30a2",
    "psa_triton/attention.py": "fb49f833ec2af074550a6e6c93dee729f31ae6f0",
    "psa_triton/kernels/psa_kernel.py": "7359bd6259b0ea72b1fe67e47b7bea3f1c2cbb69",
    "psa_triton/kernels/attn_pooling_kernel.py": "9323b2bc6c54842ad76a8819af34109af7ace276",
    "psa_triton/utils/transfer_attn_to_mask.py": "b558e331649a9d69443599153b315faf830d4cf4",
}

CASES = {
    "wan14b_720p": dict(heads=40, head_dim=128, grid=(21, 45, 80), text_note="no text tokens (Wan self-attention)"),
    "hunyuan_720p": dict(heads=24, head_dim=128, grid=(33, 45, 80),
                         text_note="HunyuanVideo's text tokens (256 padded) ignored: every kernel, cuDNN too, gets the 118,800 video tokens only"),
}

PISA_DENSITY, PISA_BLOCK = 0.15, 64
PSA_WAN14B = dict(block_m=128, block_n=128, tile_n=32, mask_mode="thresholdbound", attn_impl="new_mask_type", use_sim_mask=False,
                  mask_ratios={1: (0.0, 0.4), 2: (0.4, 0.5), 4: (0.5, 0.6), 8: (0.6, 0.8), 0: (0.8, 1.0)})
PSA_MIN_FULL = 0.06  # transfer_attn_to_mask(min_full_attn_ratio=0.06): PSAAttention leaves the default


def _git_blob_id(path: str) -> str | None:
    try:
        data = open(path, "rb").read()
    except OSError:
        return None
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def ext_provenance() -> dict:
    out = {}
    for rel, blob in UPSTREAM_BLOBS.items():
        got = _git_blob_id(os.path.join(EXT_DIR, rel))
        out[rel] = "verbatim" if got == blob else f"DIFFERS (blob {got}, upstream {blob})"
    return out


def import_external():
    """Import both packages (from PYTHONPATH, else from <repo>/.ext). Returns (pisa, psa, errors)."""
    errors = {}
    if EXT_DIR not in sys.path:
        sys.path.append(EXT_DIR)
    pisa = psa = None
    try:
        import piecewise_attn.kernels.piecewise_sparse_attn_tma as pisa  # noqa: F811
    except Exception as e:  # keep going: the other one may still run
        errors["pisa_import"] = f"{type(e).__name__}: {e}"
    try:
        import psa_triton.attention as psa  # noqa: F811
    except Exception as e:
        errors["psa_import"] = f"{type(e).__name__}: {e}"
    return pisa, psa, errors


def set_triton_allocator():
    """PISA builds TMA descriptors on the device (tl.make_tensor_descriptor), which Triton >= 3.4 backs
    with scratch memory from triton.set_allocator; upstream sets none in the files we use."""
    import triton

    def alloc(size: int, alignment: int, stream):
        return torch.empty(size, dtype=torch.int8, device="cuda")

    triton.set_allocator(alloc)


class _Capture:
    """Stands in for a module-level JIT kernel during one call: records the launch, runs the real one."""

    def __init__(self, kernel):
        self.kernel, self.calls = kernel, []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.calls.append((grid, args, kwargs))
            return self.kernel[grid](*args, **kwargs)
        return launch


def captured_launch(module, name: str, call):
    """Runs ``call()`` with ``module.<name>`` wrapped; returns (call's result, fn re-launching the kernel
    with the captured arguments)."""
    real = getattr(module, name)
    cap = _Capture(real)
    setattr(module, name, cap)
    try:
        out = call()
    finally:
        setattr(module, name, real)
    if len(cap.calls) != 1:
        raise RuntimeError(f"expected one launch of {name}, saw {len(cap.calls)}")
    grid, args, kwargs = cap.calls[0]
    return out, lambda: real[grid](*args, **kwargs)


def rel_l2(o: torch.Tensor, ref: torch.Tensor) -> float:
    o, ref = o.float(), ref.float()
    return float((o - ref).norm() / ref.norm())


def build_variants(q, k, v, pisa, psa, ref=None, which=None) -> dict:
    """Each variant: dict(full=fn, kernel=fn, settings, source, density, first_call_s, rel_l2_vs_cudnn)
    or dict(error=..., settings, source). q, k, v [B, H, N, D]; ``ref`` the dense output (for --check)."""
    variants = {}
    N = q.shape[2]

    def add(name, settings, source, make):
        if which is not None and name not in which:
            return
        rec = dict(settings=settings, source=source)
        try:
            t0 = time.time()
            rec.update(make())
            if q.is_cuda:
                torch.cuda.synchronize()
            rec["first_call_s"] = round(time.time() - t0, 2)
        except Exception as e:
            rec["error"] = f"{type(e).__name__}: {e}"
            rec["traceback"] = traceback.format_exc(limit=6)
            print(f"  {name}: ERROR {rec['error']}", flush=True)
        variants[name] = rec

    pisa_source = dict(repo=PISA_REPO, commit=PISA_COMMIT, path="piecewise_attn/kernels/piecewise_sparse_attn_tma.py",
                       entry="piecewise_attn.piecewise_sparse_attention(q, k, v, density, block_size, use_bias=...)",
                       kernel="piecewise_sparse_attention_fwd_kernel (autotuned)")
    for name, bias in (("pisa", False), ("pisa_bias", True)):
        settings = dict(density=PISA_DENSITY, block_size=PISA_BLOCK, use_bias=bias, scale="D**-0.5 (default)",
                        layout="[B, H, T, D]")

        def make(bias=bias):
            if pisa is None:
                raise RuntimeError("piecewise_attn not importable")
            call = lambda: pisa.piecewise_sparse_attention(q, k, v, density=PISA_DENSITY, block_size=PISA_BLOCK, use_bias=bias)
            out, kernel = captured_launch(pisa, "piecewise_sparse_attention_fwd_kernel", call)
            NT = math.ceil(N / PISA_BLOCK)
            top_k = max(1, int(PISA_DENSITY * NT))
            r = dict(full=call, kernel=kernel, density=top_k / NT, blocks=NT, top_k=top_k)
            if ref is not None:
                r["rel_l2_vs_cudnn"] = rel_l2(out, ref)
            return r

        add(name, settings, pisa_source, make)

    psa_source = dict(repo=PSA_REPO, commit=PSA_COMMIT, path="src/psa_triton/attention.py, kernels/psa_kernel.py, "
                      "kernels/attn_pooling_kernel.py, utils/transfer_attn_to_mask.py",
                      entry="psa_triton.PSAAttention(PSAConfig(...))(q, k, v)", kernel="psa_kernel._fwd_kernel")
    presets = {
        "psa_wan14b": ("configs/attention_config.yaml Wan2.1_14b.psa_balanced (rearrange Gilbert; warmup_steps 15 not modelled)",
                       PSA_WAN14B),
        "psa_topk": ("PSAConfig() defaults = README's plug-and-play topk preset", {}),
    }
    for name, (preset, kw) in presets.items():
        settings = dict(preset=preset)

        def make(kw=kw, settings=settings):
            if psa is None:
                raise RuntimeError("psa_triton not importable")
            from psa_triton.kernels import psa_kernel
            from psa_triton.utils.transfer_attn_to_mask import calc_density_newtype

            cfg = psa.PSAConfig(**kw)
            settings.update(block_m=cfg.block_m, block_n=cfg.block_n, tile_n=cfg.tile_n, mask_mode=cfg.mask_mode,
                            mask_ratios={str(a): list(b) for a, b in cfg.mask_ratios.items()}, attn_impl=cfg.attn_impl,
                            use_sim_mask=cfg.use_sim_mask, min_full_attn_ratio=PSA_MIN_FULL if "threshold" in cfg.mask_mode else None,
                            layout="[B, H, L, D]")
            module = psa.PSAAttention(cfg)
            call = lambda: module(q, k, v)
            # the mask of the captured call, for its density (PSA's own FLOP-share statistic)
            seen, inner = {}, module.sparse_attention_fn

            def spy(q_, k_, v_, mask, sm_scale):
                seen["mask"] = mask
                return inner(q_, k_, v_, mask, sm_scale)

            module.sparse_attention_fn = spy
            torch.manual_seed(0)  # the importance pass samples tokens with torch.rand
            try:
                out, kernel = captured_launch(psa_kernel, "_fwd_kernel", call)
            finally:
                module.sparse_attention_fn = inner
            mask = seen.pop("mask")
            density, _ = calc_density_newtype(mask)
            r = dict(full=call, kernel=kernel, density=float(density), q_blocks=int(mask.shape[2]),
                     k_blocks=int(mask.shape[3]) - len(cfg.mask_ratios))
            if ref is not None:
                r["rel_l2_vs_cudnn"] = rel_l2(out, ref)
            return r

        add(name, settings, psa_source, make)
    return variants


def make_inputs(grid, H, D, kind: str, order: str):
    """q, k, v [1, H, N, D] bf16 on CUDA. Returns (q, k, v, inputs_note, order_note)."""
    N = math.prod(grid)
    note = None
    if kind == "synthetic":
        try:
            sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
            from fidelity import synthetic_inputs

            q, k, v = synthetic_inputs(grid, H, D, 2.0, 0, 0.5, device="cuda")  # fp32 [1, N, H, D]
            note = "fidelity.synthetic_inputs(grid, heads, head_dim, sigma=2.0, seed=0, own=0.5), fp32 -> bf16"
        except Exception as e:
            print(f"synthetic inputs failed ({type(e).__name__}: {e}); using random", flush=True)
            kind, note = "random", f"random N(0,1) (synthetic_inputs failed: {type(e).__name__}: {e})"
    if kind == "random":
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v = (torch.randn(1, N, H, D, device="cuda", generator=g) for _ in range(3))
        note = note or "random N(0,1), seed 0"
    q, k, v = (x.to(torch.bfloat16).transpose(1, 2).contiguous() for x in (q, k, v))
    order_note = "raster (t, h, w)"
    if order == "gilbert":
        try:
            from psa_triton.utils.rearranger import GilbertRearranger

            T, Hh, W = grid
            q, k, v = (x.contiguous() for x in GilbertRearranger(W, Hh, T, text_length=0).rearrange(q, k, v))
            order_note = "gilbert3d (psa_triton GilbertRearranger, width/height/depth = grid w/h/t), applied once outside timing"
        except Exception as e:
            order_note = f"raster (t, h, w): Gilbert order failed: {type(e).__name__}: {e}"
    return q, k, v, note, order_note


def bench(fn) -> float:
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=50, rep=300, return_mode="median"))


def gpu_name() -> str:
    name = torch.cuda.get_device_name()
    for tag in ("H100", "H200", "A100", "B200", "L40S"):
        if tag in name:
            return tag.lower()
    return name.replace(" ", "_").lower()


def run_case(case: str, args, pisa, psa, records: list, env: dict, save):
    cfg = CASES[case]
    H, D, grid = cfg["heads"], cfg["head_dim"], cfg["grid"]
    N = math.prod(grid)
    print(f"\n== {case}: heads {H}, head_dim {D}, tokens {N} (grid {grid})", flush=True)
    t0 = time.time()
    q, k, v, inputs_note, order_note = make_inputs(grid, H, D, args.inputs, args.order)
    print(f"  inputs ready ({time.time() - t0:.1f}s): {inputs_note}; order: {order_note}", flush=True)

    from torch.nn.attention import SDPBackend, sdpa_kernel

    def cudnn():
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return F.scaled_dot_product_attention(q, k, v)

    ref = cudnn().float() if args.check else None
    which = set(args.variants.split(",")) if args.variants else None
    variants = build_variants(q, k, v, pisa, psa, ref=ref, which=which)
    del ref
    torch.cuda.empty_cache()

    fns = {"cudnn": cudnn}
    for name, var in variants.items():
        if "error" not in var:
            fns[f"{name}/full"] = var["full"]
            fns[f"{name}/kernel"] = var["kernel"]
    per = {n: [] for n in fns}
    bench_errors = {}
    for r in range(args.rounds):
        for n in list(fns):
            if n in bench_errors:
                continue
            try:
                per[n].append(round(bench(fns[n]), 4))
            except Exception as e:
                bench_errors[n] = f"{type(e).__name__}: {e}"
                print(f"  {n}: bench ERROR {bench_errors[n]}", flush=True)
        print(f"  round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {v[-1]:.2f}" for n, v in per.items() if v), flush=True)
    med = {n: (sorted(v)[len(v) // 2] if v else None) for n, v in per.items()}
    cudnn_ms = med["cudnn"]

    common = dict(case=case, tokens=N, heads=H, head_dim=D, grid=list(grid), text=cfg["text_note"], dtype="bfloat16",
                  device=env["gpu"], inputs=inputs_note, token_order=order_note, cudnn_ms=cudnn_ms, cudnn_ms_rounds=per["cudnn"])
    if "cudnn" in bench_errors:
        common["cudnn_error"] = bench_errors["cudnn"]
    records.append(dict(common, kernel="cudnn_dense", ms=cudnn_ms, ms_rounds=per["cudnn"], speedup=1.0 if cudnn_ms else None,
                        settings=dict(backend="torch SDPA, sdpa_kernel(SDPBackend.CUDNN_ATTENTION)", layout="[B, H, N, D]")))
    for name, var in variants.items():
        rec = dict(common, kernel=name, settings=var["settings"], source=var["source"])
        for key in ("density", "blocks", "top_k", "q_blocks", "k_blocks", "first_call_s", "rel_l2_vs_cudnn", "error", "traceback"):
            if key in var:
                rec[key] = var[key]
        if "error" not in var:
            ms, kms = med.get(f"{name}/full"), med.get(f"{name}/kernel")
            rec.update(ms=ms, ms_rounds=per[f"{name}/full"], kernel_ms=kms, kernel_ms_rounds=per[f"{name}/kernel"])
            if ms is not None and kms is not None:
                rec["overhead_ms"] = round(ms - kms, 4)
            if cudnn_ms is not None:
                rec["speedup"] = round(cudnn_ms / ms, 3) if ms else None
                rec["kernel_speedup"] = round(cudnn_ms / kms, 3) if kms else None
            for part in ("full", "kernel"):
                if f"{name}/{part}" in bench_errors:
                    rec[f"{part}_bench_error"] = bench_errors[f"{name}/{part}"]
        records.append(rec)
    save()


def print_table(records: list):
    cols = ("case", "kernel", "ms", "kernel_ms", "cudnn_ms", "speedup", "kernel_speedup", "density", "rel_l2_vs_cudnn")
    print("\n" + " | ".join(f"{c:>14}" for c in cols))
    for r in records:
        cells = []
        for c in cols:
            x = r.get(c)
            cells.append(f"{x:>14.4g}" if isinstance(x, float) else f"{str(x if x is not None else '-'):>14}")
        line = " | ".join(cells)
        if r.get("error"):
            line += f"  ERROR {r['error'][:120]}"
        print(line)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--variants", default="", help="comma list of pisa,pisa_bias,psa_wan14b,psa_topk (default all)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (median kept)")
    ap.add_argument("--check", action="store_true", help="also rel L2 of each output against cuDNN dense SDPA")
    ap.add_argument("--inputs", choices=("synthetic", "random"), default="synthetic")
    ap.add_argument("--order", choices=("gilbert", "raster"), default="gilbert")
    ap.add_argument("--tag", default="", help="suffix of the output file name")
    args = ap.parse_args()
    assert torch.cuda.is_available(), "needs a CUDA GPU"
    import triton

    t_start = time.time()
    torch.manual_seed(0)
    os.makedirs(args.out, exist_ok=True)
    pisa, psa, import_errors = import_external()
    set_triton_allocator()
    env = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__, cudnn=torch.backends.cudnn.version(),
               date=time.strftime("%Y-%m-%d"), pisa=dict(repo=PISA_REPO, commit=PISA_COMMIT), psa=dict(repo=PSA_REPO, commit=PSA_COMMIT),
               ext_files=ext_provenance(), import_errors=import_errors, rounds=args.rounds,
               timing='triton.testing.do_bench(fn, warmup=50, rep=300, return_mode="median"), median of interleaved rounds',
               harness="triton.set_allocator(torch.empty int8 on cuda) set before any call (PISA's device-side TMA descriptors)")
    print(json.dumps(env, indent=1), flush=True)
    path = os.path.join(args.out, f"external_kernels_{gpu_name()}{args.tag}.json")
    records: list[dict] = []

    def save():
        with open(path, "w") as f:
            json.dump({"env": env, "records": records}, f, indent=1)

    for case in args.cases.split(","):
        try:
            run_case(case, args, pisa, psa, records, env, save)
        except Exception as e:  # e.g. out of memory: record and go on with the next case
            traceback.print_exc()
            records.append(dict(case=case, kernel="(case)", error=f"{type(e).__name__}: {e}"))
        torch.cuda.empty_cache()  # the case's tensors went with run_case's frame
        save()
    print_table(records)
    print(f"\nwrote {path} ({time.time() - t_start:.0f}s)")


if __name__ == "__main__":
    main()
