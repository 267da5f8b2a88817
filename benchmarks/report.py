"""Render benchmarks/RESULTS.md from the committed JSON results.

Usage: python benchmarks/report.py [--results benchmarks/results] [--out benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re


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
        + (f" Note: {env['note']}." if env.get("note") else "")
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


def dynamic_section(path: str) -> list[str]:
    """The dynamic methods' rows (benchmarks/attention.py --methods piecewise,pyramid,topk)."""
    data = json.load(open(path))
    env, recs = data["env"], data["records"]
    lines = [
        f"## Dynamic methods, one attention call: `{os.path.basename(path)}`",
        "",
        f"{env['gpu']}, torch {env['torch']}, Triton {env['triton']}, cuDNN {env.get('cudnn')}, {env['date']}. bf16, batch 1, "
        "q, k, v from smooth random fields with 3-D rotary (`benchmarks/fidelity.py`'s synthetic inputs), each method's "
        "preset for the case's family. `ours ms` = the call as the runtime makes it in a tile-order forward (video "
        "tokens tiled already; text keys extra, text queries dense): `overhead ms` (statistics and selection, or "
        "importance, levels, pooling and LUT) + `kernel ms`; `computed` = dense-equivalent compute of the exact and "
        "pooled blocks (piecewise: exact blocks plus one summary key per other block); `exact rate` (top-k) = its "
        "kernel's time per computed block against cuDNN's per block. cuDNN = SDPA forced to cuDNN, dense, same "
        "tokens, same run. Medians of interleaved rounds.",
        "",
        "| case | method | config | computed | levels 1/2/4/8/skip | ours ms | overhead ms (share) | kernel ms | "
        "cuDNN dense ms | vs cuDNN | exact rate vs cuDNN |",
        "|---" * 11 + "|",
    ]
    for r in recs:
        share = r.get("level_share")
        levels = "/".join(f"{share[k]:.2f}" for k in ("1", "2", "4", "8", "0")) if share else "-"
        lines.append(
            f"| {r['case']} | {r['method']} | `{r['config']}` | {fmt(r['computed_fraction'], 3)} | {levels} | "
            f"{fmt(r['ours_ms'])} | {fmt(r['overhead_ms'])} ({fmt(100 * r['overhead_share'], 0)}%) | {fmt(r['kernel_ms'])} | "
            f"{fmt(r['cudnn_dense_ms'])} | {fmt(r['speedup_vs_cudnn'])}x | {fmt(r.get('exact_rate_vs_cudnn'))} |")
    if data.get("checks"):
        lines += ["", "Triton against the reference backend, bf16, on the same selection: "
                  + "; ".join(f"{c['method']} rel L2 {c['rel_l2_err']:.1e} ({'passed' if c['passed'] else 'FAILED'}, "
                              f"<= {c['tolerance']})" for c in data["checks"])
                  + f" ({data['checks'][0]['tokens']:,} tokens x {data['checks'][0]['heads']} heads)."]
    return lines


def external_section(path: str) -> list[str]:
    """PISA's and PSA's own kernels (benchmarks/external_kernels.py), never committed into our tree."""
    data = json.load(open(path))
    env = data["env"]
    lines = [
        f"## The papers' own kernels: `{os.path.basename(path)}`",
        "",
        f"{env['gpu']}, torch {env['torch']}, Triton {env['triton']}, {env['date']}. PISA "
        f"({env['pisa']['repo']} @ {env['pisa']['commit'][:8]}) and PSA ({env['psa']['repo']} @ {env['psa']['commit'][:8]}), "
        "imported at run time from a verbatim copy outside git; inputs as above, in PSA's Gilbert curve order. "
        "`ms` = the public entry point's whole call, `kernel ms` its main Triton kernel alone, cuDNN in the same run. "
        "`rel L2 vs dense` = the whole output against cuDNN's (these are approximations).",
        "",
        "| case | kernel | settings | computed | ms | kernel ms | cuDNN ms | vs cuDNN | rel L2 vs dense |",
        "|---" * 9 + "|",
    ]
    for r in data["records"]:
        settings = ", ".join(f"{k}={v}" for k, v in r.get("settings", {}).items() if k not in ("layout", "backend", "scale"))
        lines.append(f"| {r['case']} | {r['kernel']} | {settings or '-'} | {fmt(r.get('density'), 3)} | {fmt(r.get('ms'))} | "
                     f"{fmt(r.get('kernel_ms'))} | {fmt(r.get('cudnn_ms'))} | {fmt(r.get('speedup'))}x | "
                     f"{fmt(r.get('rel_l2_vs_cudnn'), 3)} |")
    return lines


def pipeline_section(path: str) -> list[str]:
    """benchmarks/pipeline.py: the 50-step pipeline (part a) or the step kinds and schedules (part b)."""
    data = json.load(open(path))
    head = (f"{data['gpu']}, torch {data['torch']}, Triton {data['triton']}, diffusers {data['diffusers']}, {data['date']}. "
            f"{data['model']}, {data['height']}x{data['width']}, {data['frames']} frames, {data['steps']} steps, bf16.")
    if data["part"] == "steps":
        lines = [f"## Wan2.1-14B 720p, step kinds and 50-step totals: `{os.path.basename(path)}`", "",
                 head + " One transformer forward of each kind, measured in one run (the first call of each kind "
                 "is a warm-up); a schedule's total = 2 forwards per step (CFG) x the kinds its steps take by the "
                 "runtime's rules (radial preset: first 24% of steps dense, layer 0 dense; Broadcast defaults: "
                 "period 2 in (0.25, 0.85); ResidualReuse: refresh every 5th sparse step).", "",
                 "| step kind | forward s |", "|---|---|"]
        lines += [f"| {k} | {fmt(v['ms'] / 1e3)} |" if "ms" in v else f"| {k} | error: {v.get('error', '')[:100]} |"
                  for k, v in data["kinds"].items()]
        lines += ["", "| schedule | step kinds | 50-step total s | vs dense |", "|---|---|---|---|"]
        for name, entry in data["schedules"].items():
            kinds = ", ".join(f"{k} {n}" for k, n in entry["step_kinds"].items())
            lines.append(f"| {name} | {kinds} | {fmt(entry['total_seconds'], 0)} | {fmt(entry.get('speedup_vs_dense'))}x |")
        return lines
    lines = [f"## Whole pipeline, 50 steps: `{os.path.basename(path)}`", "",
             head + f" Scheduler {data['scheduler']}, guidance {data['guidance']} (two calls per step), prompt "
             "embeddings given, latents out: the denoising loop's wall time after a 4-step warm-up of the same "
             f"combination, all in one run. VAE decode alone: "
             + (f"{fmt(data['vae_decode_seconds'])} s." if "vae_decode_seconds" in data else "not reached (the run was cut short)."), "",
             "| combination | seconds | vs dense | attention compute | cache peak GiB | peak GiB | latents rel L2 vs dense |",
             "|---|---|---|---|---|---|---|"]
    # A run cut short has no speed-ups filled in: they come from its dense row, as pipeline.py makes them.
    dense = next((r["seconds"] for r in data["runs"] if r["combination"] == "dense" and "seconds" in r), None)
    for r in data["runs"]:
        if "seconds" not in r:
            lines.append(f"| {r['combination']} | error: {r.get('error', '')[:100]} | | | | | |")
            continue
        cache = r.get("cache_peak_bytes")
        speedup = r.get("speedup_vs_dense") or (dense / r["seconds"] if dense else None)
        lines.append(f"| {r['combination']} | {fmt(r['seconds'], 1)} | {fmt(speedup)}x | "
                     f"{fmt(r.get('attention_compute'), 3)} | {fmt(cache / 2**30) if cache is not None else '-'} | "
                     f"{fmt(r.get('peak_gib'))} | {fmt(r.get('latent_rel_l2_vs_dense'), 4)} |")
    # A data-dependent cache whose latents equal dense's skipped nothing: say so next to the table.
    idle = [r["combination"] for r in data["runs"]
            if r["combination"].startswith("first_block_cache") and r.get("latent_rel_l2_vs_dense") == 0]
    if idle:
        lines += ["", f"{', '.join(idle)}: latents equal to dense's, so no step was skipped. FirstBlockCache skips a step "
                  "when the first block's output changes by less than its threshold (0.05) between steps; with random "
                  "weights it changes by more at every step, so this row measures its overhead only."]
    return lines


def caches_plot(steps_path: str, eval_dirs: dict[str, str], out: str) -> str | None:
    """PSNR on the built-in model (the caches' quality studies, ``eval_dirs``: legend label -> harness
    output folder) against the modelled 50-step speed-up at Wan2.1-14B 720p (pipeline_steps_*.json),
    for the combinations both measured: which one to pick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = json.load(open(steps_path))["schedules"]
    fig, ax = plt.subplots(figsize=(8.4, 5.0))
    drawn = False
    for k, ((label, eval_dir), marker) in enumerate(zip(eval_dirs.items(), "os^D")):
        table = json.load(open(os.path.join(eval_dir, "results.json")))["aggregates"]
        points = [(name, entry["speedup_vs_dense"], table[name]["psnr"]) for name, entry in steps.items()
                  if name in table and entry.get("speedup_vs_dense") and table[name].get("psnr")]
        for i, (name, speedup, psnr) in enumerate(points):
            low, high = psnr["ci95"]
            ax.errorbar(speedup, psnr["mean"], yerr=[[psnr["mean"] - low], [high - psnr["mean"]]], fmt=marker, capsize=3,
                        color=f"C{k}", label=label if i == 0 else None)
            short = re.sub(r"taylorseer_cache\(use_lite_mode=True, cache_interval=(\d+), disable_cache_before_step=(\d+)\)",
                           r"TaylorSeer lite (every \1, after \2)", name)
            ax.annotate(short, (speedup, psnr["mean"]), textcoords="offset points", xytext=(6, 4), fontsize=7)
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("50-step speed-up over dense, Wan2.1-14B 720p (H200 step kinds)")
    ax.set_ylabel("PSNR vs dense, built-in model (dB, 95% CI)")
    ax.set_title("Sparse attention and caching: quality against speed", fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


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


def families_section(path: str) -> list[str]:
    """benchmarks/families.py: every family at two resolutions, default patch and force_sparse."""
    data = json.load(open(path))
    lines = [
        f"## Every family, a few layers at real width: `{os.path.basename(path)}`",
        "",
        f"{data['gpu']}, torch {data['torch']}, diffusers {data['diffusers']}, {data['date']}. diffusers' own transformer "
        f"class of each family at its real width, {data['layers']} blocks of each kind, random {data['dtype'].removeprefix('torch.')} "
        "weights, batch 1, text at the family's usual length. One forward; `dense ms` = "
        + (data.get("dense_timing") or "the unpatched model timed right before the variant (median)")
        + ", `patched ms` = the same forward patched (median after one untimed forward, which "
        "calibrates the cost model). `default` = `patch()` as a user calls it (the cost model decides per shape); "
        "`forced` = `force_sparse=True`. `full_window` = a window covering the whole grid (block density 1). The target: "
        "the default patch >= 0.98x of dense everywhere."
        + ("" if data.get("dense_timing") else " Forwards under ~25 ms (LTX-Video, FLUX here) drift by several percent "
           "between back-to-back dense timings of the same model in one run."),
        "",
        "| family | resolution | grid | method | block density | dense ms | default: patched ms | ran | default vs dense | "
        "forced: patched ms | forced vs dense |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows: dict = {}
    for r in data["records"]:
        if "error" in r:
            lines.append(f"| {r.get('family')} | {r.get('resolution', '-')} | | {r.get('variant', '-')} | error: {r['error'][:100]} | | | | | | |")
            continue
        rows.setdefault((r["family"], r["resolution"], r["variant"]), {})[r["force_sparse"]] = r
    for (family, resolution, variant), pair in rows.items():
        d, f = pair.get(False), pair.get(True)
        base = d or f
        lines.append(
            f"| {family} | {resolution} | {'x'.join(map(str, base['grid']))} | {variant} | {fmt(base.get('block_density'), 2)} | "
            f"{fmt(base['dense_ms'])} | {fmt(d['forward_ms']) if d else '-'} | {d['ran'] if d else '-'} | "
            f"{fmt(d['ratio_vs_dense'], 3) + 'x' if d else '-'} | {fmt(f['forward_ms']) if f else '-'} | "
            f"{fmt(f['ratio_vs_dense'], 3) + 'x' if f else '-'} |")
    reasons = {}
    for (family, resolution, variant), pair in rows.items():
        if pair.get(False) and pair[False]["ran"] == "dense":
            reasons.setdefault(pair[False]["decision"].split(":")[1].strip(), []).append(f"{family} {resolution} {variant}")
    lines += [""] + [f"Ran dense ({reason}): {', '.join(where)}." for reason, where in reasons.items()]
    return lines


def presets_section(path: str) -> list[str]:
    """benchmarks/probes/neighborhood_presets.py: candidate windows per family, one attention call."""
    data = json.load(open(path))
    lines = [
        f"## The neighbourhood preset per family, one attention call: `{os.path.basename(path)}`",
        "",
        f"{data['gpu']}, torch {data['torch']}, {data['date']}. bf16, batch 1, each family's heads x head_dim and text "
        "tokens at its position; the runtime's call on random q, k, v in the model's token order (the per-call path, "
        "token movement included) against SDPA on the same tensors, medians of 5 interleaved rounds. "
        "`tile_a_b` = `Neighborhood(window=(a, b, b), stride=\"tile\")`, `preset_stride2` = the earlier preset "
        "(window (0.375, 0.75, 0.75), stride 2). `partial` = share of computed blocks the kernel masks. "
        + (f"{data['note']}." if data.get("note") else ""),
        "",
        "| family | resolution | candidate | window | stride | tile | block density | partial | sparse ms | dense ms | speedup |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["records"]:
        if "error" in r:
            lines.append(f"| {r['family']} | {r['resolution']} | {r['candidate']} | error: {r['error'][:100]} | | | | | | | |")
            continue
        lines.append(
            f"| {r['family']} | {r['resolution']} | {r['candidate']} | {tuple(r['window'])} | {tuple(r['stride'])} | "
            f"{tuple(r['tile'])} | {fmt(r['block_density'], 3)} | {fmt(r['partial_fraction'], 2)} | {fmt(r['sparse_ms'])} | "
            f"{fmt(r['dense_ms'])} | {fmt(r['speedup'])}x |")
    return lines


# The caches' quality studies on the built-in model (harness output folders), as the plot labels them.
CACHE_STUDIES = {"H200, 20 steps, 30 prompts x 2 seeds": "eval_tiny_video_caches",
                 "H200, 50 steps, 30 prompts x 2 seeds": "eval_tiny_video_taylorseer"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "RESULTS.md"))
    ap.add_argument("--notes", default=os.path.join(os.path.dirname(__file__), "results", "NOTES.md"))
    args = ap.parse_args()
    lines = ["# Benchmark results", "", "Generated by `benchmarks/report.py` from the JSON files in `benchmarks/results/`.", ""]
    for path in sorted(glob.glob(os.path.join(args.results, "attention_*.json"))):
        dynamic = any("overhead_ms" in r for r in json.load(open(path))["records"])
        lines += (dynamic_section(path) if dynamic else attention_section(path)) + [""]
    for path in sorted(glob.glob(os.path.join(args.results, "external_kernels_*.json"))):
        lines += external_section(path) + [""]
    for path in sorted(glob.glob(os.path.join(args.results, "transformer_*.json"))):
        lines += transformer_section(path) + [""]
    for path in sorted(glob.glob(os.path.join(args.results, "families_*.json"))):
        lines += families_section(path) + [""]
    for path in sorted(glob.glob(os.path.join(args.results, "neighborhood_presets_*.json"))):
        lines += presets_section(path) + [""]
    for path in sorted(glob.glob(os.path.join(args.results, "pipeline_*.json"))):
        lines += pipeline_section(path) + [""]
        gpu = os.path.basename(path).rsplit("_", 1)[-1].removesuffix(".json")
        studies = {label: os.path.join(args.results, folder) for label, folder in CACHE_STUDIES.items()
                   if os.path.isdir(os.path.join(args.results, folder))}
        if "_steps_" in path and studies:
            plot = caches_plot(path, studies, os.path.join(args.results, f"caches_quality_vs_speedup_{gpu}.png"))
            if plot:
                lines += [f"![quality against 50-step speed-up]({os.path.relpath(plot, os.path.dirname(args.out))})", ""]
    if os.path.exists(args.notes):
        lines += [open(args.notes).read()]
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
