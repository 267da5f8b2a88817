"""What ``ditaccel eval`` writes: aggregates, results.json/.csv, pareto.png, frame strips, report.md.

Aggregates are per method over its prompt x seed runs: the mean and a bootstrap 95% interval
(2,000 resamples, fixed seed) of every score; for the unpaired scores (flickering, motion) also the
paired difference to the dense run of the same prompt and seed. Speed: mean seconds per video and
per denoising step, the speed-up against the dense reference measured in the same evaluation.
Everything here is recomputed from ``results.json`` alone (``write_report(load_result(dir), dir)``).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from .metrics import PROXY_NOTES

PAIRED = ("psnr", "ssim", "lpips")
UNPAIRED = ("temporal_flickering", "dynamic_degree", "motion_smoothness")
FOLLOWING = ("colour_ok", "motion_ok")
BOOTSTRAP_SAMPLES = 2000


def interval(values, groups=None) -> dict | None:
    """Mean and bootstrap 95% interval of ``values`` (None when empty). With ``groups`` (one label
    per value, e.g. the prompt) whole groups are resampled: the seeds of one prompt are not
    independent samples of the prompt set."""
    pairs = [(v, g) for v, g in zip(values, groups if groups is not None else range(len(values))) if v is not None]
    if not pairs:
        return None
    data = np.asarray([v for v, _ in pairs], dtype=np.float64)
    mean = float(data.mean())
    labels = list(dict.fromkeys(g for _, g in pairs))
    if len(labels) == 1:
        return {"mean": mean, "ci95": [mean, mean], "n": int(data.size)}
    index = {g: i for i, g in enumerate(labels)}
    sums = np.zeros(len(labels))
    counts = np.zeros(len(labels))
    for value, group in pairs:
        sums[index[group]] += value
        counts[index[group]] += 1
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(labels), size=(BOOTSTRAP_SAMPLES, len(labels)))
    means = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": mean, "ci95": [float(low), float(high)], "n": int(data.size)}


def aggregate(data: dict) -> dict[str, dict]:
    """Per method label (dense, noise floor, then the methods in order): scores, speed, compute."""
    runs = data["runs"]
    labels = list(dict.fromkeys(r["method"] for r in sorted(runs, key=_role_order)))
    dense = {(r["prompt_index"], r["seed"]): r for r in runs if r["role"] == "reference" and r["status"] == "ok"}
    dense_speed = _mean([r["speed"].get("seconds_per_video") for r in dense.values()])
    dense_step = _mean([r["speed"].get("step_ms") for r in dense.values()])
    table = {}
    for label in labels:
        mine = [r for r in runs if r["method"] == label]
        ok = [r for r in mine if r["status"] == "ok"]
        info = data.get("methods", {}).get(label, {})
        row = {"role": mine[0]["role"], "runs": len(ok), "failed": len(mine) - len(ok),
               "errors": sorted({r["error"] for r in mine if r["error"]})}
        prompts = [r["prompt_index"] for r in ok]
        for metric in PAIRED + UNPAIRED:
            row[metric] = interval([r["quality"].get(metric) for r in ok], prompts)
        for metric in UNPAIRED:
            deltas = []
            for r in ok:
                d = dense.get((r["prompt_index"], r["seed"]))
                v = r["quality"].get(metric)
                deltas.append(None if v is None or d is None or d["quality"].get(metric) is None else v - d["quality"][metric])
            row[f"{metric}_delta"] = interval(deltas, prompts)
        for metric in FOLLOWING:
            row[metric.replace("_ok", "_accuracy")] = interval(
                [float(r["quality"][metric]) if metric in r["quality"] else None for r in ok], prompts)
        row["dynamic_share"] = interval([None if r["quality"].get("dynamic") is None else float(r["quality"]["dynamic"])
                                         for r in ok], prompts)
        row["compute_fraction"] = interval([r["compute_fraction"] for r in ok], prompts)
        seconds = _mean([r["speed"].get("seconds_per_video") for r in ok])
        step = _mean([r["speed"].get("step_ms") for r in ok])
        row.update(seconds_per_video=seconds, step_ms=step,
                   speedup=dense_speed / seconds if seconds and dense_speed else None,
                   step_speedup=dense_step / step if step and dense_step else None,
                   attention_share=info.get("attention_share"), peak_memory_bytes=info.get("peak_memory_bytes"))
        table[label] = row
    return table


def pareto_front(points: list[tuple[str, float, float]], lower_x_better: bool) -> list[str]:
    """Labels of the points no other point beats in both x (cost or speed) and y (quality)."""
    front = []
    for label, x, y in points:
        beaten = any((x2 <= x if lower_x_better else x2 >= x) and y2 >= y and (x2, y2) != (x, y)
                     for _, x2, y2 in points)
        if not beaten:
            front.append(label)
    return front


def x_axis(data: dict) -> str:
    """"compute" (attention compute fraction) or "speedup": wall time says little on the built-in
    model (4,096 tokens, launch-bound) and on a CPU (the reference backend is not a fast path)."""
    choice = data["settings"].get("plot_x", "auto")
    if choice in ("compute", "speedup"):
        return choice
    from ..pipelines.loading import is_built_in

    return "compute" if is_built_in(data["settings"]["model"]) or data["environment"]["device_type"] != "cuda" else "speedup"


def plot_pareto(data: dict, table: dict, path: Path, metric: str = "psnr") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axis = x_axis(data)
    points, errors = [], {}
    for label, row in table.items():
        if row["role"] != "method" or row[metric] is None:
            continue
        x = row["compute_fraction"]["mean"] if axis == "compute" and row["compute_fraction"] else row["speedup"]
        if x is None:
            continue
        points.append((label, x, row[metric]["mean"]))
        errors[label] = row[metric]["ci95"]
    front = set(pareto_front(points, lower_x_better=axis == "compute"))
    # Points carry numbers; the legend on the right says which method each is (spec texts are long).
    fig, (ax, key) = plt.subplots(1, 2, figsize=(12, 5.5), gridspec_kw={"width_ratios": [2.2, 1]})
    for number, (label, x, y) in enumerate(points, 1):
        low, high = errors[label]
        on_front = label in front
        ax.errorbar([x], [y], yerr=[[y - low], [high - y]], fmt="o" if on_front else "s", ms=7 if on_front else 5,
                    color="tab:red" if on_front else "tab:blue", capsize=3, alpha=1.0 if on_front else 0.7)
        ax.annotate(str(number), (x, y), textcoords="offset points", xytext=(5, 3), fontsize=8)
    key.axis("off")
    listing = "\n".join(f"{n:>2}  {label}{'  *' if label in front else ''}" for n, (label, _, _) in enumerate(points, 1))
    key.text(0.0, 1.0, listing + "\n\n*  on the Pareto front", va="top", ha="left", family="monospace", fontsize=7.5,
             transform=key.transAxes)
    if front:
        line = sorted(((x, y) for label, x, y in points if label in front), key=lambda p: p[0])
        ax.plot([p[0] for p in line], [p[1] for p in line], "--", color="tab:red", lw=1, label="Pareto front")
    floor = table.get("noise floor", {}).get(metric)
    if points:
        low = min(errors[label][0] for label, _, _ in points)
        high = max(errors[label][1] for label, _, _ in points)
        margin = max(1.0, 0.1 * (high - low)) if metric == "psnr" else max(0.01, 0.1 * (high - low))
        top = high + margin
        if floor is not None and floor["mean"] <= high + 4 * margin:
            top = max(top, floor["mean"] + margin)
        ax.set_ylim(low - margin, top)
    if floor is not None:
        label = f"noise floor (dense vs dense): {_fmt(floor['mean'], metric)}"
        if points and floor["mean"] > ax.get_ylim()[1]:
            ax.annotate(label + " - above this scale", xy=(0.5, 0.985), xycoords="axes fraction", ha="center", va="top",
                        fontsize=8, color="dimgray")
        else:
            ax.axhline(floor["mean"], color="gray", ls=":", lw=1.5, label=label)
    dense_x = 1.0
    ax.axvline(dense_x, color="black", lw=0.8, alpha=0.4)
    ax.set_xlabel("attention compute fraction (computed video blocks / all, every call)" if axis == "compute"
                  else "speed-up over dense (end to end, same run)")
    ax.set_ylabel(f"{metric.upper()} vs dense" + (" (dB)" if metric == "psnr" else ""))
    if axis == "compute" and points:
        ax.set_xlim(max(0.0, min(x for _, x, _ in points) - 0.08), 1.02)
    env = data["environment"]
    ax.set_title(f"{data['settings']['model']} on {env['device']} ({env['dtype']}), "
                 f"{table.get('dense', {}).get('runs', 0)} prompt x seed pairs", fontsize=9)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_strip(path: Path, dense: np.ndarray, other: np.ndarray, max_frames: int = 8, scale: int = 2) -> Path:
    """Rows dense | method | |difference| x 4, columns evenly spaced frames (uint8 (F, H, W, 3))."""
    import imageio.v2 as imageio

    dense, other = np.asarray(dense), np.asarray(other)
    picks = np.unique(np.linspace(0, len(dense) - 1, min(max_frames, len(dense))).round().astype(int))
    diff = np.clip(np.abs(dense.astype(np.int16) - other.astype(np.int16)) * 4, 0, 255).astype(np.uint8)
    rows = [np.concatenate([v[f] for f in picks], axis=1) for v in (dense, other, diff)]
    image = np.concatenate(rows, axis=0)
    if scale > 1 and image.shape[0] < 512:
        image = image.repeat(scale, axis=0).repeat(scale, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.imwrite(path, image)
    return path


def strip_name(label: str) -> str:
    slug = "".join(c if c.isalnum() or c in "._-" else "_" for c in label).strip("_")
    return f"strips/{slug}.png"


def write_csv(data: dict, path: Path) -> Path:
    columns = ["method", "role", "prompt_index", "prompt", "seed", "status", "error", "compute_fraction",
               *PAIRED, *UNPAIRED, "dynamic", *FOLLOWING,
               "seconds_per_video", "end_to_end_s", "step_ms", "batch_size"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for r in data["runs"]:
            writer.writerow({**{k: r.get(k) for k in columns[:8]}, **{k: r["quality"].get(k) for k in (*PAIRED, *UNPAIRED, "dynamic", *FOLLOWING)},
                             **{k: r["speed"].get(k) for k in ("seconds_per_video", "end_to_end_s", "step_ms", "batch_size")}})
    return path


def write_markdown(data: dict, table: dict, path: Path) -> Path:
    s, env = data["settings"], data["environment"]
    axis = x_axis(data)
    floor = table.get("noise floor")
    lines = [
        f"# ditaccel eval: {s['model']}",
        "",
        f"{env['device']}, {env['dtype']}, torch {env['torch']}, triton {env['triton']}, diffusers {env['diffusers']}, {env['date']}.",
        f"{len(s['prompt_texts'])} prompts ({s['prompts']}) x seeds {list(s['seeds'])}, {s['steps']} steps, guidance {s['guidance']}, "
        f"batch {s['batch_size']}" + (f", {s['frames']} frames" if s.get("frames") else "")
        + (f", {s['height']}x{s['width']}" if s.get("height") else "") + ".",
        f"Reference: dense attention ({data['methods'].get('dense', {}).get('backend')}), same seed and scheduler. "
        "Methods run sparse on every shape (force_sparse=True), also where patch()'s cost model would run dense. "
        f"Noise floor: {data['methods'].get('noise floor', {}).get('what', 'not measured')}. "
        f"Frames scored {s['frames_scored']}.",
        "",
        "| method | compute | speed-up | s / video | step ms | attn share | PSNR dB | SSIM | LPIPS | flicker Δ | dyn. degree Δ (px) | smoothness Δ | colour / motion | failed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, row in table.items():
        following = ("-" if row["colour_accuracy"] is None else
                     f"{row['colour_accuracy']['mean']:.0%} / {row['motion_accuracy']['mean']:.0%}")
        lines.append("| " + " | ".join([
            f"**{label}**" if row["role"] == "method" else label,
            _fmt_interval(row["compute_fraction"], "{:.3f}", ci=False),
            # The floor runs another (often slower) SDPA kernel on purpose: its times say nothing.
            "-" if row["speedup"] is None or row["role"] == "floor" else f"{row['speedup']:.2f}x",
            "-" if row["seconds_per_video"] is None or row["role"] == "floor" else f"{row['seconds_per_video']:.3f}",
            "-" if row["step_ms"] is None or row["role"] == "floor" else f"{row['step_ms']:.1f}",
            "-" if row["attention_share"] is None else f"{row['attention_share']:.0%}",
            _fmt_interval(row["psnr"], "{:.2f}"),
            _fmt_interval(row["ssim"], "{:.4f}"),
            "no weights" if s.get("lpips_weights") is None and row["role"] != "reference" else _fmt_interval(row["lpips"], "{:.4f}"),
            *([_fmt_interval(row["temporal_flickering"], "{:.4f}"), _fmt_interval(row["dynamic_degree"], "{:.2f}"),
               _fmt_interval(row["motion_smoothness"], "{:.4f}")] if row["role"] == "reference" else
              [_fmt_interval(row["temporal_flickering_delta"], "{:+.4f}"), _fmt_interval(row["dynamic_degree_delta"], "{:+.2f}"),
               _fmt_interval(row["motion_smoothness_delta"], "{:+.4f}")]),
            following,
            str(row["failed"]),
        ]) + " |")
    lines += [
        "",
        "Scores are means over prompt x seed pairs with bootstrap 95% intervals in brackets (prompts resampled, each "
        "with all its seeds). PSNR is the mean of per-frame "
        "PSNR (identical frames count 100 dB); SSIM per RGB channel, 11x11 Gaussian window, sigma 1.5. "
        "Δ columns: the method's unpaired score minus the dense run's of the same prompt and seed (the dense row gives "
        "the absolute values). "
        f"Compute: video-video attention blocks computed over all (text rows and columns of joint attention, always "
        f"computed, are not counted), averaged over every patched attention call (dense steps and layers count 1). "
        f"The plot's x axis is {'the compute fraction' if axis == 'compute' else 'the measured end-to-end speed-up'}"
        + (" (on this model and device wall time says little: the built-in model is launch-bound at 4,096 tokens, and a "
           "CPU runs the exact reference backend, not a fast path)." if axis == "compute" else "."),
    ]
    if floor is not None and floor.get("psnr") is not None:
        lines.append(f"Noise floor: dense through {s['floor_backend']} against dense scores PSNR "
                     f"{_fmt(floor['psnr']['mean'], 'psnr')}, SSIM {floor['ssim']['mean']:.4f}: differences at that level are "
                     "what two equivalent dense paths already show on this device and dtype.")
    weights = s.get("lpips_weights")
    lines.append("LPIPS: " + (f"AlexNet v0.1, weights from {weights['source']} (sha256 {weights['sha256'][:12]}...)."
                              if weights else "no weights (see `python -m ditaccel.eval.lpips`)."))
    lines.append("Proxies: " + "; ".join(f"{k}: {v}" for k, v in PROXY_NOTES.items()) + ".")
    if (path.parent / "pareto.png").is_file():
        lines += ["", f"![PSNR vs {'attention compute' if axis == 'compute' else 'speed-up'}](pareto.png)", ""]
    strips = [(label, strip_name(label)) for label, row in table.items() if row["role"] == "method"
              and (path.parent / strip_name(label)).is_file()]
    if strips:
        lines.append("Frame strips (first prompt, first seed; rows: dense, method, |difference| x 4): "
                     + ", ".join(f"[{label}]({name})" for label, name in strips) + ".")
    failures = [(label, row["errors"]) for label, row in table.items() if row["errors"]]
    if failures:
        lines += ["", "Failed runs:"] + [f"- {label}: {'; '.join(errors)}" for label, errors in failures]
    for label, info in data.get("methods", {}).items():
        if info.get("summary"):
            lines += ["", f"<details><summary>{label}: per-layer summary</summary>", "", "```", info["summary"], "```", "</details>"]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_report(result, out: Path) -> dict:
    """Write results.json (with aggregates), results.csv, pareto.png and report.md into ``out``."""
    data = result.to_json() if hasattr(result, "to_json") else result
    table = aggregate(data)
    data = {**data, "aggregates": table}
    (out / "results.json").write_text(json.dumps(data, indent=1, default=str))
    write_csv(data, out / "results.csv")
    (out / "pareto.png").unlink(missing_ok=True)  # never link a plot of an earlier evaluation
    if any(row["role"] == "method" and row["psnr"] is not None for row in table.values()):
        plot_pareto(data, table, out / "pareto.png")
    write_markdown(data, table, out / "report.md")
    return table


def load_result(out: str | Path) -> dict:
    return json.loads((Path(out) / "results.json").read_text())


def _role_order(run: dict) -> int:
    return {"reference": 0, "floor": 1}.get(run["role"], 2)


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _fmt(value: float, metric: str) -> str:
    if metric == "psnr" and value >= 99.999:
        return "identical (100 dB cap)"
    return f"{value:.2f} dB" if metric == "psnr" else f"{value:.4f}"


def _fmt_interval(stat: dict | None, fmt: str, ci: bool = True) -> str:
    if stat is None or stat["mean"] is None or (isinstance(stat["mean"], float) and math.isnan(stat["mean"])):
        return "-"
    text = fmt.format(stat["mean"])
    if ci and stat["n"] > 1:
        text += " [" + fmt.format(stat["ci95"][0]) + ", " + fmt.format(stat["ci95"][1]) + "]"
    return text
