"""The command line: ``generate`` writes playable videos and prints its summary (on the built-in
model and on a saved diffusers pipeline), ``bench`` prints its ratio, and bad arguments exit
non-zero with one line naming the argument."""

from __future__ import annotations

import json

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from ditaccel.cli import main


def decoded(path) -> np.ndarray:
    """The mp4 decoded back: (frames, height, width, 3) uint8."""
    return np.stack(imageio.mimread(path, memtest=False))


def test_generate_writes_a_playable_mp4_and_prints_the_summary(tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    rc = main(["generate", "--prompt", "a blue square moving up", "--method", "dense", "--steps", "1", "--frames", "4",
               "--size", "32", "--scale", "2", "--out", str(out), "--quiet", "--device", "cpu"])
    assert rc == 0
    video = decoded(out)
    assert video.shape == (4, 64, 64, 3)
    assert video.std() > 1  # an image, not a blank frame
    strip = imageio.imread(tmp_path / "clip_frames.png")
    assert strip.shape[:2] == (32, 4 * 32)
    printed = capsys.readouterr().out
    assert "dense: " in printed and "for 1 steps on cpu" in printed and str(out) in printed


def test_generate_compare_writes_both_videos_and_reports_speed_quality_and_layers(tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    rc = main(["generate", "--method", "radial", "--cache", "broadcast(period=2, window=(0.0, 1.0))", "--compare",
               "--steps", "3", "--frames", "8", "--scale", "1", "--out", str(out), "--quiet", "--device", "cpu"])
    assert rc == 0
    assert decoded(out).shape == decoded(tmp_path / "clip_dense.mp4").shape == (8, 64, 64, 3)
    printed = capsys.readouterr().out
    assert "blocks.1.attn1" in printed  # the per-layer table
    assert "radial + broadcast(period=2, window=(0.0, 1.0))" in printed
    assert "speed-up" in printed and "PSNR" in printed and "SSIM" in printed
    assert "reused" in printed  # Broadcast reused outputs


def test_generate_on_a_saved_diffusers_pipeline_with_prompt_embeddings(tmp_path, capsys):
    from safetensors.torch import save_file
    from tiny_pipelines import build_wan

    model = tmp_path / "tiny_wan"
    build_wan().pipe.save_pretrained(model)
    embeds = tmp_path / "prompt.safetensors"
    save_file({"prompt_embeds": torch.randn(1, 16, 32), "negative_prompt_embeds": torch.randn(1, 16, 32)}, embeds,
              metadata={"prompts": json.dumps(["a test prompt"])})
    out = tmp_path / "wan.mp4"
    rc = main(["generate", "--model", str(model), "--prompt-file", str(embeds), "--method", "piecewise(density=0.5)",
               "--schedule", "dense_steps=1", "--compare", "--steps", "3", "--frames", "17", "--height", "80",
               "--width", "144", "--out", str(out), "--quiet", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    assert decoded(out).shape == (17, 80, 144, 3)
    printed = capsys.readouterr().out
    assert "piecewise(density=0.5) [dense_steps=1]" in printed and "PSNR" in printed
    # Text prompts need the text encoder this pipeline was saved without: one line says so.
    assert main(["generate", "--model", str(model), "--prompt", "a cat", "--out", str(out), "--quiet"]) == 2
    assert "--prompt-file" in capsys.readouterr().err


def test_bench_prints_the_ratio_and_the_attention_share(capsys):
    rc = main(["bench", "--method", "radial", "--frames", "8", "--device", "cpu", "--repeats", "1"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "ratio" in printed and "x" in printed.split("ratio")[1].splitlines()[0]
    assert "attention layers:" in printed and "attention compute" in printed


@pytest.mark.parametrize("argv, names", [
    (["generate", "--steps", "-1"], "--steps"),
    (["generate", "--size", "-5"], "--size"),
    (["generate", "--fps", "0"], "--fps"),
    (["bench", "--repeats", "0"], "--repeats"),
    (["generate", "--frames", "many"], "--frames"),
    (["generate", "--method", "radial(decay=-1)"], "decay"),
    (["generate", "--method", "fast"], "unknown method 'fast'"),
    (["generate", "--method", "radial", "--cache", "radial"], "--cache"),
    (["generate", "--schedule", "dense_every=2"], "--schedule"),
    (["generate", "--method", "dense", "--compare"], "--compare"),
    (["generate", "--model", "/no/such/pipeline"], "--model"),
    (["generate", "--dtype", "float8"], "--dtype"),
    (["generate", "--method", "neighborhood(window=(99, 99, 99))", "--steps", "2", "--frames", "8"], "window"),
    (["bench", "--method", "radial + broadcast"], "cache"),
    (["bench", "--method", "dense"], "no sparse method"),
])
def test_bad_arguments_exit_non_zero_with_one_line(argv, names, capsys, tmp_path):
    extra = ["--quiet", "--out", str(tmp_path / "x.mp4")] if argv[0] == "generate" else []
    try:
        rc = main([*argv, "--device", "cpu", *extra])
    except SystemExit as error:  # argparse's own checks (types, choices)
        rc = error.code
    assert rc != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert names in err


@pytest.mark.parametrize("out", ["outputs/clip", "clip.png"])
def test_generate_refuses_an_out_that_is_not_a_video_file_before_generating(out, capsys, monkeypatch):
    # --out names the video file; a directory-like path used to fail in the writer after the whole run.
    import ditaccel.cli as cli

    monkeypatch.setattr(cli, "_session", lambda *args, **kwargs: pytest.fail("generated before checking --out"))
    rc = main(["generate", "--method", "radial", "--device", "cpu", "--quiet", "--out", out])
    assert rc != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--out" in err and ".mp4" in err


def test_argparse_errors_are_one_line_too(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--seed", "x"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--seed" in err


def test_generate_nproc_2_runs_ulysses_on_two_processes_and_matches_one(tmp_path, capfd):
    """--nproc 2: torchrun starts two CPU ranks (gloo) under diffusers' Ulysses context parallelism;
    rank 0 writes the video, which matches the one-process video of the same seed."""
    from safetensors.torch import save_file
    from tiny_pipelines import build_wan

    model = tmp_path / "tiny_wan"
    build_wan().pipe.save_pretrained(model)
    embeds = tmp_path / "prompt.safetensors"
    save_file({"prompt_embeds": torch.randn(1, 16, 32), "negative_prompt_embeds": torch.randn(1, 16, 32)}, embeds)
    # 13 frames -> 4 x 5 x 9 = 180 latent tokens: an even split over 2 ranks.
    common = ["--model", str(model), "--prompt-file", str(embeds), "--method", "radial(decay=0.5, block_size=64)",
              "--steps", "2", "--frames", "13", "--height", "80", "--width", "144", "--quiet", "--device", "cpu"]
    assert main(["generate", *common, "--out", str(tmp_path / "one.mp4")]) == 0
    capfd.readouterr()
    assert main(["generate", *common, "--nproc", "2", "--out", str(tmp_path / "two.mp4")]) == 0, capfd.readouterr().err
    assert "x 2 ranks (Ulysses context parallelism)" in capfd.readouterr().out  # rank 0's report, from torchrun
    one, two = decoded(tmp_path / "one.mp4"), decoded(tmp_path / "two.mp4")
    assert one.shape == two.shape == (13, 80, 144, 3)
    assert np.abs(one.astype(int) - two.astype(int)).mean() < 0.5
    assert not (tmp_path / "two_dense.mp4").exists()
