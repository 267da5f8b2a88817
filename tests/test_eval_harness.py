"""``ditaccel eval``: method specs, the harness end to end on the built-in model and on a saved
diffusers pipeline, resume, failed runs, and clear errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

import ditaccel
from ditaccel import Neighborhood, Radial, Schedule
from ditaccel.cli import main as cli_main
from ditaccel.method_spec import parse_method_spec, parse_method_specs

# Small settings: 8 frames of 32 x 32 pixels = an 8 x 8 x 8 token grid on the built-in model.
SMALL = ["--num-prompts", "2", "--seeds", "0", "--steps", "8", "--frames", "8", "--height", "32", "--width", "32",
         "--quiet", "--threads", "2"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# -- method specs --------------------------------------------------------------------------------
def test_specs_resolve_presets_configs_and_schedules():
    assert parse_method_spec("dense").is_dense
    assert parse_method_spec("radial").method == "radial"
    spec = parse_method_spec("radial(decay=0.5, block_size=64)")
    assert spec.method == Radial(decay=0.5, block_size=64) and spec.schedule is None
    spec = parse_method_spec("Neighborhood(window=(8, 8, 8), stride=[2, 2, 2], dense_steps=0.3, dense_layers=(0, 2))")
    assert spec.method == Neighborhood(window=(8, 8, 8), stride=(2, 2, 2))
    assert spec.schedule == Schedule(dense_steps=0.3, dense_layers=(0, 2))
    assert spec.patch_arguments() == {"method": spec.method, "schedule": spec.schedule}
    # On a model, schedule fields change only themselves in the family's default schedule.
    wan = parse_method_spec("radial(decay=0.5, dense_steps=0.3)").patch_arguments("wan")
    assert wan["schedule"] == Schedule(dense_steps=0.3, dense_layers=1)
    specs = parse_method_specs("radial, neighborhood(window=(0.5, 0.5, 1.0)),radial(decay=2.0)")
    assert [s.text for s in specs] == ["radial", "neighborhood(window=(0.5, 0.5, 1.0))", "radial(decay=2.0)"]


@pytest.mark.parametrize("text, words", [
    ("radiall", ["unknown method 'radiall'", "radial", "neighborhood", "dense"]),
    ("radial(decay=0.5", ["unbalanced"]),
    ("radial(0.5)", ["key=value"]),
    ("radial(dekay=0.5)", ["no parameter 'dekay'", "decay", "dense_steps"]),
    ("radial(decay=abs)", ["decay", "literal"]),
    ("radial(decay=-1.0)", ["decay"]),
    ("radial, radial", ["listed twice"]),
    ("dense(window=1)", ["configs take arguments"]),
])
def test_bad_specs_name_the_problem(text, words):
    with pytest.raises(ValueError) as info:
        parse_method_specs(text)
    for word in words:
        assert word in str(info.value)


# -- compute fraction ------------------------------------------------------------------------------
def test_compute_fraction_counts_every_call_dense_ones_as_one():
    from tiny_pipelines import build_wan

    case = build_wan()  # 3 steps, CFG: 2 calls per step, 2 layers
    with ditaccel.patch(case.pipe, Radial(decay=1.0, block_size=64), schedule=Schedule(dense_steps=1, dense_layers=1)) as handle:
        case.generate()
        summary = handle.summary()
        density = summary.rows[1]["block_density"]
    assert 0 < density < 1
    # Layer 0 always dense (6 calls), layer 1 dense in step 0 (2 calls) and sparse in steps 1-2 (4 calls).
    assert [r["calls"] for r in summary.rows] == [6, 6]
    assert summary.compute_fraction == pytest.approx((6 + 2 + 4 * density) / 12)


# -- the harness end to end ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def built_in_eval(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_built_in")
    code = cli_main(["eval", "--methods", "radial,neighborhood", "--out", str(out), *SMALL])
    assert code == 0
    return out


def test_eval_on_the_built_in_model_writes_every_output(built_in_eval):
    out = built_in_eval
    for name in ("results.json", "results.csv", "pareto.png", "report.md", "strips/radial.png", "strips/neighborhood.png"):
        assert (out / name).is_file(), name
    data = json.loads((out / "results.json").read_text())
    runs = data["runs"]
    # One record per prompt x seed x (dense, noise floor, radial, neighborhood), all finished.
    keys = sorted((r["method"], r["prompt_index"], r["seed"]) for r in runs)
    assert keys == sorted((m, p, 0) for m in ("dense", "noise floor", "radial", "neighborhood") for p in (0, 1))
    assert all(r["status"] == "ok" for r in runs)
    for r in runs:
        assert r["speed"]["end_to_end_s"] > 0 and r["speed"]["step_ms"] > 0 and r["speed"]["batch_size"] == 2
        assert 0 < r["compute_fraction"] <= 1
        q = r["quality"]
        assert 0 <= q["temporal_flickering"] <= 1 and q["dynamic_degree"] >= 0 and 0 <= q["motion_smoothness"] <= 1
        assert isinstance(q["colour_ok"], bool) and isinstance(q["motion_ok"], bool)
        if r["role"] != "reference":
            assert 0 < q["psnr"] <= 100 and -1 <= q["ssim"] <= 1
    radial = [r for r in runs if r["method"] == "radial"]
    assert all(r["compute_fraction"] < 1 for r in radial) and all(r["quality"]["psnr"] < 60 for r in radial)
    assert data["methods"]["radial"]["config"].startswith("Radial(decay=0.2")  # the Wan preset, resolved
    assert data["methods"]["radial"]["attention_share"] > 0
    assert data["environment"]["device"] and data["environment"]["torch"] == torch.__version__
    table = data["aggregates"]
    assert table["radial"]["psnr"]["ci95"][0] <= table["radial"]["psnr"]["mean"] <= table["radial"]["psnr"]["ci95"][1]
    assert table["noise floor"]["psnr"]["mean"] > table["radial"]["psnr"]["mean"]
    lines = (out / "results.csv").read_text().strip().splitlines()
    assert len(lines) == 1 + len(runs)
    assert (out / "pareto.png").read_bytes()[:8] == PNG_SIGNATURE
    report = (out / "report.md").read_text()
    assert "](pareto.png)" in report and "noise floor" in report and "| **radial** |" in report
    assert "strips/radial.png" in report


def test_dense_frames_are_kept_losslessly_and_resume_runs_only_what_is_missing(built_in_eval, tmp_path):
    import shutil

    out = tmp_path / "resumed"
    shutil.copytree(built_in_eval, out)
    before = json.loads((out / "results.json").read_text())["runs"]
    frames = np.load(out / "frames" / "dense" / "p000_s0.npy")
    assert frames.dtype == np.uint8 and frames.shape == (8, 32, 32, 3)
    code = cli_main(["eval", "--methods", "radial,neighborhood,neighborhood(window=(4, 4, 4))", "--out", str(out),
                     "--resume", *SMALL])
    assert code == 0
    after = json.loads((out / "results.json").read_text())["runs"]
    old = {(r["method"], r["prompt_index"]): r for r in before}
    for r in after:
        if r["method"] != "neighborhood(window=(4, 4, 4))":
            assert r == old[(r["method"], r["prompt_index"])]  # not run again: same timings, same scores
    new = [r for r in after if r["method"] == "neighborhood(window=(4, 4, 4))"]
    assert len(new) == 2 and all(r["status"] == "ok" for r in new)


def test_a_failing_method_is_recorded_and_the_others_go_on(tmp_path):
    # A window of 40 frames on an 8-frame grid fails in the first forward; radial still runs.
    code = cli_main(["eval", "--methods", "neighborhood(window=(40, 4, 4)),radial", "--out", str(tmp_path), "--no-floor",
                     "--no-profile", *SMALL])
    assert code == 1  # finished, with failed runs
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    failed = [r for r in runs if r["method"].startswith("neighborhood")]
    assert len(failed) == 2 and all(r["status"] == "failed" and "window" in r["error"] for r in failed)
    assert all(r["status"] == "ok" for r in runs if r["method"] == "radial")
    assert "Failed runs" in (tmp_path / "report.md").read_text()


def test_eval_scores_the_sparse_method_even_where_the_cost_model_would_run_dense(tmp_path, monkeypatch):
    # On a GPU the cost model runs small shapes dense; the study must score the method itself.
    calls = []
    real = ditaccel.patch
    monkeypatch.setattr(ditaccel, "patch", lambda *args, **kwargs: calls.append(kwargs) or real(*args, **kwargs))
    assert cli_main(["eval", "--methods", "radial", "--out", str(tmp_path), "--no-floor", "--no-profile", *SMALL]) == 0
    assert calls and all(c.get("force_sparse") is True for c in calls)
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert all(r["compute_fraction"] < 1.0 for r in runs if r["method"] == "radial")
    report = (tmp_path / "report.md").read_text()
    assert "force_sparse=True" in report
    # Without the profiling run the per-layer table is the last generation's: its 8 steps, not none.
    assert "0-1 / 2-7" in report


# -- a user's own pipeline directory ----------------------------------------------------------------
def test_eval_on_a_saved_diffusers_pipeline_with_prompt_embeddings(tmp_path):
    from safetensors.torch import save_file
    from tiny_pipelines import build_wan

    case = build_wan()
    model = tmp_path / "tiny_wan"
    case.pipe.save_pretrained(model)
    embeds = tmp_path / "prompts.safetensors"
    prompt = torch.randn(2, 16, 32, generator=torch.Generator().manual_seed(1))
    negative = torch.randn(2, 16, 32, generator=torch.Generator().manual_seed(2))
    save_file({"prompt_embeds": prompt, "negative_prompt_embeds": negative}, embeds,
              metadata={"prompts": json.dumps(["first", "second"])})
    out = tmp_path / "out"
    code = cli_main(["eval", "--model", str(model), "--prompts", str(embeds), "--methods", "radial(decay=1.0, block_size=64)",
                     "--steps", "3", "--frames", "17", "--height", "80", "--width", "144", "--batch-size", "2",
                     "--out", str(out), "--quiet"])
    assert code == 0
    data = json.loads((out / "results.json").read_text())
    assert {r["prompt"] for r in data["runs"]} == {"first", "second"}
    assert all(r["status"] == "ok" for r in data["runs"]), [r["error"] for r in data["runs"]]
    method = [r for r in data["runs"] if r["role"] == "method"]
    assert len(method) == 2 and all(np.isfinite(r["quality"]["psnr"]) for r in method)
    assert (out / "pareto.png").is_file()


def test_not_a_pipeline_directory_is_one_clear_line(tmp_path, capsys):
    assert cli_main(["eval", "--model", str(tmp_path), "--methods", "radial", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a diffusers pipeline directory" in err and str(tmp_path) in err


def test_unsupported_transformer_is_one_clear_line(tmp_path, capsys):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline",
                                                           "unet": ["diffusers", "UNet2DConditionModel"]}))
    assert cli_main(["eval", "--model", str(tmp_path), "--methods", "radial", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not supported" in err and "WanTransformer3DModel" in err


def test_bad_method_spec_on_the_command_line_exits_with_one_line(tmp_path, capsys):
    assert cli_main(["eval", "--methods", "radial(dekay=1)", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "dekay" in err


def test_prompt_following_lives_in_the_library_and_scores_rendered_clips_perfectly():
    from ditaccel.eval.prompt_following import score
    from ditaccel.pipelines.procedural_clips import held_out_prompts, parse_prompt, render_clips, specs_from_clip_specs

    prompts = held_out_prompts()[:6]
    clips = render_clips(specs_from_clip_specs([parse_prompt(p) for p in prompts]), torch.Generator().manual_seed(0))
    videos = list(((clips + 1) / 2).permute(0, 2, 3, 4, 1).numpy())
    rows, summary = score(prompts, videos)
    assert summary["colour_accuracy"] == 1.0 and summary["motion_accuracy"] == 1.0
    # A clip played backwards moves the other way.
    _, reversed_summary = score(prompts, [v[::-1] for v in videos])
    assert reversed_summary["motion_accuracy"] == 0.0


def test_environment_is_offline():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


def test_prompt_files_text_json_and_embeddings(tmp_path):
    from safetensors.torch import save_file

    from ditaccel.eval.prompts import batch_arguments, load_prompts

    (tmp_path / "p.txt").write_text("# comment\na red circle moving right\n\na blue square moving up\n")
    (tmp_path / "p.json").write_text(json.dumps(["one", "two", "three"]))
    assert [p.text for p in load_prompts(tmp_path / "p.txt")] == ["a red circle moving right", "a blue square moving up"]
    assert len(load_prompts(tmp_path / "p.json")) == 3 and len(load_prompts("held-out")) == 30
    save_file({"prompt_embeds": torch.randn(3, 4, 8)}, tmp_path / "e.safetensors")
    prompts = load_prompts(tmp_path / "e.safetensors")
    assert [p.text for p in prompts] == ["embedding 0", "embedding 1", "embedding 2"]
    args = batch_arguments(prompts[:2], {"prompt_embeds", "negative_prompt_embeds"}, guided=False)
    assert args["prompt_embeds"].shape == (2, 4, 8)
    with pytest.raises(ValueError, match="negative_prompt_embeds.*--guidance 1"):
        batch_arguments(prompts[:2], {"prompt_embeds", "negative_prompt_embeds"}, guided=True)
    (tmp_path / "bad.json").write_text(json.dumps({"a": 1}))
    with pytest.raises(ValueError, match="list of strings"):
        load_prompts(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="--prompts"):
        load_prompts(tmp_path / "missing.txt")
    save_file({"other": torch.randn(2, 3)}, tmp_path / "noembeds.safetensors")
    with pytest.raises(ValueError, match="prompt_embeds"):
        load_prompts(tmp_path / "noembeds.safetensors")


def test_the_noise_floor_backend_is_put_back(tmp_path):
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry
    from tiny_pipelines import build_wan

    from ditaccel.eval.harness import _attention_backend

    case = build_wan()
    processors = [m.processor for m in case.pipe.transformer.modules() if hasattr(getattr(m, "processor", None), "_attention_backend")]
    before = [p._attention_backend for p in processors]
    active = _AttentionBackendRegistry._active_backend
    with _attention_backend(case.pipe, "_native_math"):
        assert all(str(p._attention_backend.value) == "_native_math" for p in processors)
    assert [p._attention_backend for p in processors] == before
    assert _AttentionBackendRegistry._active_backend == active


def test_resume_with_other_settings_is_refused(built_in_eval, tmp_path, capsys):
    import shutil

    out = tmp_path / "other"
    shutil.copytree(built_in_eval, out)
    args = [a if a != "8" else "6" for a in SMALL]  # --steps 8 -> 6 (and --frames 8 -> 6)
    assert cli_main(["eval", "--methods", "radial", "--out", str(out), "--resume", *args]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "steps 8 -> 6" in err


def test_text_prompts_for_a_pipeline_without_text_encoder_is_one_clear_line(tmp_path, capsys):
    from tiny_pipelines import build_wan

    model = tmp_path / "tiny_wan"
    build_wan().pipe.save_pretrained(model)
    capsys.readouterr()  # save_pretrained's own notes about the missing components
    assert cli_main(["eval", "--model", str(model), "--methods", "radial", "--out", str(tmp_path / "o"), "--quiet"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ditaccel")]
    assert len(errors) == 1 and "without a text encoder" in errors[0] and "embeddings" in errors[0]
