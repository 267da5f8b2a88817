"""Render benchmarks/RESULTS.md from the committed JSON results.

Usage: python benchmarks/report.py [--results benchmarks/results] [--out benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import glob
import json
import os


def fmt(x, nd=2):
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def attention_section(path: str) -> list[str]:
    data = json.load(open(path))
    env, recs = data["env"], data["records"]
    # Files written before the xformers baseline have neither field: their table stays as it was.
    xformers = any("xformers_dense_ms" in r or "xformers_error" in r for r in recs)
    lines = [
        f"## Attention kernel: `{os.path.basename(path)}`",
        "",
        f"{env['gpu']}, torch {env['torch']}, Triton {env['triton']}, cuDNN {env.get('cudnn')}, "
        + (f"xformers {env.get('xformers') or 'not importable'}, " if xformers else "") + f"{env['date']}. "
        "bf16, batch 1, one attention call (all heads). `ours ms` = what the runtime does per call: q, k, v in "
        "the model's token order (video raster, text first or last), output in that order, every copy included; "
        "`kernel ms` = the kernel alone on tensors already in canonical order (what Flex gets); `token overhead` = "
        "ours / kernel - 1 (tiled layouts: the faster of reading key/value tiles in place as grid boxes and gathering "
        "q, k, v, chosen by the runtime on the first call; raster layouts: no copy). Tiled layouts on grids the tile "
        "divides run in a tile-order forward (`ditaccel/tile_order.py`): the call gets the video tokens tiled "
        "already, and `ours ms` adds its share of the forward's reorders (patch embedding output, rotary tables, "
        "final projection output of the shape's model, divided by its attention layers); `per-call path ms` is the "
        "same call in the model's token order (what runs with `tile_order=False`). Times are medians of "
        "`triton.testing.do_bench` over interleaved rounds (older files: one measurement). "
        "`useful TFLOP/s` = 4 x 128 x 128 x head_dim x heads x (computed blocks) / ours ms; "
        "cuDNN = SDPA forced to cuDNN, dense, on the unpadded tokens; Flex = FlexAttention (compiled) with "
        "`BlockMask.from_kv_blocks` built from the same LUT (whole blocks as full blocks, partial blocks with the "
        "same box test as mask_mod); `all-blocks` = our kernel with a dense LUT. Calls under 2 ms are also timed "
        "replayed from a CUDA graph (`graph`: the GPU's cost without the host's per-call launch latency, which a "
        "real forward hides behind other work)."
        + (" xformers = `xformers.ops.memory_efficient_attention`, dense, on the same unpadded tokens as cuDNN (in "
           "its own [B, N, H, D] layout), timed in the same interleaved rounds; the kernel it dispatched to is "
           "listed under the table." if xformers else ""),
        "",
        "| case | heads x dim | tokens | method | block density | partial blocks | token path | ours ms | per-call path ms | "
        "kernel ms | token overhead | useful TFLOP/s | useful / cuDNN rate | all-blocks TFLOP/s | cuDNN dense ms (TFLOP/s) | "
        + ("xformers dense ms (TFLOP/s) | " if xformers else "") + "Flex ms | vs cuDNN | "
        + ("vs xformers | " if xformers else "") + "vs Flex | rel L2 err |",
        "|---" * (19 + 2 * xformers) + "|",
    ]
    def graph_overhead(r) -> str:
        g = r.get("model_order_overhead_graph")
        return "" if g is None else f" (graph: {fmt(1000 * r['ours_graph_ms'], 0)} vs {fmt(1000 * r['kernel_canonical_graph_ms'], 0)} us, {fmt(100 * g, 1)}%)"

    def per_call(r) -> str:
        if r.get("model_order_ms") is None:
            return "="
        g = r.get("model_order_graph_ms")
        return fmt(r["model_order_ms"]) + ("" if g is None else f" (graph: {fmt(1000 * g, 0)} us)")

    def xformers_cells(r) -> tuple[str, str]:
        if not xformers:
            return "", ""
        if r.get("xformers_dense_ms") is None:
            return ("failed | " if r.get("xformers_error") else "- | "), "- | "
        return (f"{fmt(r['xformers_dense_ms'])} ({fmt(r.get('xformers_tflops'), 0)}) | ",
                f"{fmt(r.get('speedup_vs_xformers'))}x | ")

    for r in recs:
        overhead = r.get("model_order_overhead")
        xformers_ms, vs_xformers = xformers_cells(r)
        lines.append(
            f"| {r['case']} | {r['heads']}x{r['head_dim']} | {r['tokens']:,} | {r['method']} | {fmt(r['block_density'], 3)} | "
            f"{fmt(r.get('partial_fraction'), 2)} | {r.get('token_access', '-').replace('tiled: box or gather (timed) / chosen: ', 'tiled, ')} | "
            f"{fmt(r['ours_ms'])} | {per_call(r)} | {fmt(r.get('kernel_canonical_ms'))} | "
            f"{fmt(100 * overhead, 1) + '%' if overhead is not None else '-'}{graph_overhead(r)} | {fmt(r['useful_tflops'], 0)} | "
            f"{fmt(r.get('useful_vs_cudnn_rate'), 2)} | {fmt(r.get('ours_all_blocks_tflops'), 0)} | "
            f"{fmt(r['cudnn_dense_ms'])} ({fmt(r.get('cudnn_tflops'), 0)}) | {xformers_ms}{fmt(r.get('flex_ms'))} | "
            f"{fmt(r.get('speedup_vs_cudnn'))}x | {vs_xformers}{fmt(r.get('speedup_vs_flex'))}{'x' if r.get('speedup_vs_flex') else ''} | "
            f"{fmt(r.get('rel_l2_err'), 4) if r.get('rel_l2_err') is not None else '-'} |"
        )
    if xformers:
        ops, errors = {}, {}  # kernel -> cases, error -> (case, method)s, in record order
        for r in recs:
            if r.get("xformers_dense_ms") is not None:
                ops.setdefault(r.get("xformers_op") or "not reported", {})[r["case"]] = r.get("xformers_vs_cudnn_rel_l2")
            elif r.get("xformers_error"):
                # First line only: xformers lists every input and every refused kernel after it.
                error = r["xformers_error"].replace("`", "'").splitlines()[0].strip()
                errors.setdefault(error, []).append(r["case"])
        lines.append("")
        for op, cases in ops.items():
            checked = [e for e in cases.values() if e is not None]
            lines.append(f"xformers kernel `{op}`: {', '.join(cases)}"
                         + (f" (output against cuDNN's: rel L2 <= {max(checked):.1e})." if checked else "."))
        lines += [f"xformers failed on {', '.join(dict.fromkeys(where))}: {err}" for err, where in errors.items()]
    sweeps = [r for r in recs if r.get("sweep")]
    for r in sweeps:
        lines += ["", f"Kernel configs on {r['case']} / {r['method']}:", "", "| config | ms | useful TFLOP/s |", "|---|---|---|"]
        for s in r["sweep"]:
            lines.append(f"| {s['config']} | {fmt(s.get('ms'))} | {fmt(s.get('useful_tflops'), 0) if 'ms' in s else s.get('error', '')[:90]} |")
    return lines


def transformer_section(path: str) -> list[str]:
    data = json.load(open(path))
    lines = [
        f"## Wan2.1-14B transformer, one forward: `{os.path.basename(path)}`",
        "",
        f"{data['gpu']}, torch {data['torch']}, Triton {data['triton']}, diffusers {data['diffusers']}, {data['date']}. "
        f"{data['model']}, grid {data.get('grid')} = {data.get('tokens', 0):,} tokens, text 512. One forward = one "
        "denoising step (no CFG). "
        + (f"Method `{data['method']}` on every layer, tile {data.get('tile')} (divides the grid: "
           f"{data.get('tile_divides_grid')}), block density {data.get('block_density')}; `tile_order` = the default "
           "tile-order forward, `model_order` = the same patch with `tile_order=False` (tokens moved in every "
           "attention call). " if data.get("method") else
           "Radial: decay 0.2, attention sink; `first_layer_dense` keeps layer 0 dense (the paper's schedule). ")
        + "Compiled = diffusers' `compile_repeated_blocks(fullgraph=True)`. "
        + (f"Compile: {data.get('compile') or data.get('compile_error')}." if data.get("compile") or data.get("compile_error") else ""),
        "",
        "| mode | variant | forward ms | first call ms | peak GiB |",
        "|---|---|---|---|---|",
    ]
    for r in data["runs"]:
        if "forward_ms" in r:
            lines.append(f"| {r['mode']} | {r['variant']} | {fmt(r['forward_ms'], 1)} | {fmt(r['first_call_ms'], 0)} | {fmt(r['peak_gib'], 2)} |")
        else:
            lines.append(f"| {r['mode']} | {r['variant']} | error: {r.get('error', '')[:120]} | | |")
    if data.get("summary"):
        lines += ["", "| comparison | speedup over dense | peak memory / dense |", "|---|---|---|"]
        for k, v in data["summary"].items():
            if isinstance(v, dict):
                lines.append(f"| {k} | {fmt(v['speedup'])}x | {fmt(v['peak_vs_dense'], 3)} |")
            else:  # the tile-order forward against the same patch moving tokens per call
                lines.append(f"| {k} | {fmt(100 * v, 1)}% faster than per-call token moves | |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "RESULTS.md"))
    ap.add_argument("--notes", default=os.path.join(os.path.dirname(__file__), "results", "NOTES.md"))
    args = ap.parse_args()
    lines = ["# Benchmark results", "", "Generated by `benchmarks/report.py` from the JSON files in `benchmarks/results/`.", ""]
    for path in sorted(glob.glob(os.path.join(args.results, "attention_*.json"))):
        lines += attention_section(path) + [""]
    for path in sorted(glob.glob(os.path.join(args.results, "transformer_*.json"))):
        lines += transformer_section(path) + [""]
    if os.path.exists(args.notes):
        lines += [open(args.notes).read()]
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
