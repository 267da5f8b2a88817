"""Bad input raises a clear error that names the parameter and the allowed values."""

from __future__ import annotations

import pytest
import torch

import ditaccel
from ditaccel.plugins.sparse_attention import SparseAttention


@pytest.mark.parametrize(
    "make,error,words",
    [
        (lambda: ditaccel.Neighborhood(window=(3, 3, 3), stride=(1, 4, 1)), ValueError, ["stride", "window"]),
        (lambda: ditaccel.Neighborhood(window=(0, 3, 3)), ValueError, ["window", ">= 1"]),
        (lambda: ditaccel.Neighborhood(window=(3, 3)), TypeError, ["window", "3 values"]),
        (lambda: ditaccel.Neighborhood(window=(1.5, 0.5, 0.5)), ValueError, ["window", "(0, 1]"]),
        (lambda: ditaccel.Neighborhood(causal="yes"), TypeError, ["causal", "bool"]),
        (lambda: ditaccel.Neighborhood(tile=(2, 8, 4)), ValueError, ["tile", "block_size"]),
        (lambda: ditaccel.Neighborhood(block_size=100), ValueError, ["block_size", "64", "128"]),
        (lambda: ditaccel.Radial(decay=-0.2), ValueError, ["decay", "(0.0, inf]"]),
        (lambda: ditaccel.Radial(decay="big"), TypeError, ["decay"]),
        (lambda: ditaccel.Radial(spatial="diagonal"), ValueError, ["spatial", "raster", "tiled"]),
        (lambda: ditaccel.Radial(sink="yes"), TypeError, ["sink"]),
        (lambda: ditaccel.Schedule(dense_steps=1.5), ValueError, ["dense_steps", "[0, 1)"]),
        (lambda: ditaccel.Schedule(dense_steps=-2), ValueError, ["dense_steps", ">= 0"]),
        (lambda: ditaccel.Schedule(dense_layers=(0, -1)), ValueError, ["dense_layers"]),
        (lambda: ditaccel.Schedule(dense_layers="first"), TypeError, ["dense_layers"]),
    ],
)
def test_config_errors(make, error, words):
    with pytest.raises(error) as info:
        make()
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_window_larger_than_grid():
    with pytest.raises(ValueError, match=r"window\*dilation must be <= the grid size.*grid \(T', H', W'\)=\(2, 8, 8\)"):
        ditaccel.Neighborhood(window=(3, 3, 3)).build_layout((2, 8, 8))


def test_dilation_times_window_larger_than_grid():
    with pytest.raises(ValueError, match=r"window\*dilation"):
        ditaccel.Neighborhood(window=(2, 5, 3), dilation=(1, 2, 1)).build_layout((4, 9, 9))


def test_grid_does_not_match_sequence():
    q = torch.randn(1, 100, 2, 16)
    with pytest.raises(ValueError, match="does not match the sequence"):
        SparseAttention(ditaccel.Neighborhood(window=(1, 3, 3), block_size=64))(q, q, q, (2, 7, 7))


def test_bad_text_position():
    q = torch.randn(1, 98, 2, 16)
    with pytest.raises(ValueError, match="text_position must be one of"):
        SparseAttention(ditaccel.Neighborhood(window=(1, 3, 3), block_size=64))(q, q, q, (2, 7, 7), text_position="middle")


class NotADiT(torch.nn.Module):
    def forward(self, x):
        return x


def test_unsupported_model_lists_supported_ones():
    with pytest.raises(TypeError, match="unsupported model NotADiT.*WanTransformer3DModel"):
        ditaccel.patch(NotADiT(), "radial")


def test_unknown_preset_lists_presets():
    from tiny_pipelines import build_wan

    pipe = build_wan().pipe
    with pytest.raises(ValueError, match=r"unknown method or preset 'fast'.*\['neighborhood', 'piecewise', 'pyramid', 'radial', 'topk'\]"):
        ditaccel.patch(pipe, "fast")
    with pytest.raises(TypeError, match="method must be a preset name"):
        ditaccel.patch(pipe, 42)
    with pytest.raises(TypeError, match="schedule must be a ditaccel.Schedule"):
        ditaccel.patch(pipe, "radial", schedule={"dense_steps": 3})
    with pytest.raises(TypeError, match="cache must be None, ditaccel.Broadcast or ditaccel.ResidualReuse, or a diffusers cache config"):
        ditaccel.patch(pipe, "radial", cache="broadcast")
    with pytest.raises(ValueError, match="needs a method, a cache, or both"):
        ditaccel.patch(pipe, None)
    assert not ditaccel.is_patched(pipe)  # nothing half-installed after the errors


def test_not_a_pipeline():
    with pytest.raises(TypeError, match="expected a diffusers pipeline"):
        ditaccel.patch("pipe", "radial")


def test_bad_backend():
    q = torch.randn(1, 128, 1, 16)
    layout = ditaccel.Neighborhood(window=(1, 3, 3)).build_layout((2, 8, 8))
    from ditaccel.kernels import block_sparse_attention

    with pytest.raises(ValueError, match="backend must be one of"):
        block_sparse_attention(q, q, q, layout, backend="cuda")


def test_cpu_fallback_warns_once(monkeypatch):
    from ditaccel.kernels import attention

    monkeypatch.setattr(attention, "_warned_fallback", False)
    layout = ditaccel.Neighborhood(window=(1, 3, 3)).build_layout((2, 8, 8))
    q = torch.randn(1, 128, 1, 16)
    with pytest.warns(RuntimeWarning, match="reference backend"):
        attention.block_sparse_attention(q, q, q, layout)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        attention.block_sparse_attention(q, q, q, layout)  # no second warning
