"""Argument checks in one place: every message names the parameter and the allowed values."""

from __future__ import annotations

from collections.abc import Sequence

SUPPORTED_BLOCK_SIZES = (64, 128)
SUPPORTED_HEAD_DIMS = (64, 128)


def triple(name: str, value, *, allow_fraction: bool = False) -> tuple:
    """A positive int (or, with allow_fraction, a float in (0, 1]) per grid dimension (t, h, w)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value, value, value)
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 3:
        raise TypeError(f"{name} must be a tuple of 3 values (t, h, w), got {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"{name} entries must be numbers, got {value!r}")
        if isinstance(v, float) and not float(v).is_integer():
            if not allow_fraction:
                raise TypeError(f"{name} entries must be integers >= 1, got {value!r}")
            if not 0.0 < v <= 1.0:
                raise ValueError(f"{name} fractions must be in (0, 1], got {value!r}")
            out.append(float(v))
            continue
        if isinstance(v, float) and allow_fraction and v == 1.0:
            out.append(1.0)  # 1.0 means the whole dimension
            continue
        if int(v) < 1:
            raise ValueError(f"{name} entries must be integers >= 1, got {value!r}")
        out.append(int(v))
    return tuple(out)


def bool_triple(name: str, value) -> tuple[bool, bool, bool]:
    if isinstance(value, bool):
        return (value, value, value)
    if not isinstance(value, Sequence) or len(value) != 3 or not all(isinstance(v, bool) for v in value):
        raise TypeError(f"{name} must be a bool or a tuple of 3 bools (t, h, w), got {value!r}")
    return tuple(value)


def block_size(value) -> int:
    if value not in SUPPORTED_BLOCK_SIZES or isinstance(value, bool):
        raise ValueError(f"block_size must be one of {SUPPORTED_BLOCK_SIZES}, got {value!r}")
    return int(value)


def number_in(name: str, value, low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number in {_interval(low, high, low_open, high_open)}, got {value!r}")
    bad = value < low or value > high or (low_open and value == low) or (high_open and value == high)
    if bad:
        raise ValueError(f"{name} must be in {_interval(low, high, low_open, high_open)}, got {value!r}")
    return float(value)


def choice(name: str, value, allowed: Sequence) -> object:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value


def head_dim(value: int) -> int:
    if value not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"head_dim {value} is not supported by the Triton kernel; supported: {SUPPORTED_HEAD_DIMS}")
    return value


def _interval(low, high, low_open, high_open) -> str:
    return f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"


def describe(x) -> str:
    """A value's kind for an error message: "torch.float32 tensor", "list", ..."""
    dtype = getattr(x, "dtype", None)
    return f"{dtype} tensor" if dtype is not None and hasattr(x, "shape") else type(x).__name__


def extra_kv(value, q):
    """The ``extra_kv=(k_extra, v_extra, kv_len)`` argument of the dynamic kernels (keys every query
    attends exactly, e.g. joint attention's text): k_extra and v_extra floating [B, M, H, D] on q's
    device with q's batch, heads and head dim; kv_len None or an integer [B] tensor (moved to q's
    device). Shapes and dtypes only: checking values would synchronise with the GPU."""
    if value is None:
        return None
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        raise ValueError(f"extra_kv must be a tuple (k_extra, v_extra, kv_len), got {describe(value)}"
                         + (f" of length {len(value)}" if isinstance(value, (tuple, list)) else ""))
    k_extra, v_extra, kv_len = value
    B, _, H, D = q.shape
    for name, x in (("k_extra", k_extra), ("v_extra", v_extra)):
        if not hasattr(x, "dtype") or not x.dtype.is_floating_point:
            raise ValueError(f"extra_kv: {name} must be a floating-point tensor [B, M, H, D], got {describe(x)}")
        if x.dim() != 4 or x.shape[0] != B or tuple(x.shape[2:]) != (H, D):
            raise ValueError(f"extra_kv: {name} must have shape [{B}, M, {H}, {D}] (q's batch, heads, head_dim), "
                             f"got {tuple(x.shape)}")
        if x.device != q.device:
            raise ValueError(f"extra_kv: {name} must be on q's device {q.device}, got {x.device}")
    if v_extra.shape != k_extra.shape:
        raise ValueError(f"extra_kv: k_extra and v_extra must have the same shape, got {tuple(k_extra.shape)} and "
                         f"{tuple(v_extra.shape)}")
    if kv_len is not None:
        dtype = getattr(kv_len, "dtype", None)
        if dtype is None or dtype.is_floating_point or dtype.is_complex or str(dtype) == "torch.bool":
            raise ValueError(f"extra_kv: kv_len must be None or an integer tensor [{B}], got {describe(kv_len)}")
        if tuple(kv_len.shape) != (B,):
            raise ValueError(f"extra_kv: kv_len must have shape [{B}] (one length per sample), got {tuple(kv_len.shape)}")
        kv_len = kv_len.to(q.device)
    return k_extra, v_extra, kv_len


def layer_indices(name: str, value) -> tuple[int, ...] | None:
    """None (all layers) or layer indices >= 0, as a sorted tuple."""
    if value is None:
        return None
    if isinstance(value, (int, str)) or not isinstance(value, Sequence) or not all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value):
        raise ValueError(f"{name} must be None (all) or a tuple of layer indices >= 0, got {value!r}")
    return tuple(sorted(set(value)))


def byte_cap(name: str, value) -> int | None:
    """None (no cap) or a number of bytes >= 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
        raise ValueError(f"{name} must be None (no cap) or a number of bytes >= 0, got {value!r}")
    return int(value)
