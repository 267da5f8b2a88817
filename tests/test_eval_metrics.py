"""ditaccel.eval.metrics against independent references: scikit-image for PSNR/SSIM, a few-line
VBench formula for temporal flickering, synthetic motion with known magnitude for the flow
proxies. Inputs are made here with fixed seeds; the tests take ~10 s on 2 cores, plus imports."""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from ditaccel.eval import metrics


def _ref_uint8(video: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(video * 255.0), 0, 255).astype(np.uint8)


def _textured(rng, frames: int, height: int, width: int) -> np.ndarray:
    """Smooth random RGB frames with fine detail, values inside [0.05, 0.95]."""
    smooth = gaussian_filter(rng.standard_normal((frames, height, width, 3)), (0, 3, 3, 0))
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    detail = 0.05 * rng.standard_normal(smooth.shape)
    return np.clip(0.1 + 0.8 * smooth + detail, 0.05, 0.95)


def _noisy(rng, video: np.ndarray, sigma_lsb: float) -> np.ndarray:
    return np.clip(video + rng.normal(0.0, sigma_lsb / 255.0, video.shape), 0.0, 1.0)


def _texture(rng, size: int) -> np.ndarray:
    """Periodic random texture with detail at several scales (roughly a natural spectrum)."""
    t = sum(s * gaussian_filter(rng.standard_normal((size, size, 3)), (s, s, 0), mode="wrap") for s in (1, 2, 4, 8))
    return 0.07 + 0.86 * (t - t.min()) / (t.max() - t.min())


def _translating(texture: np.ndarray, offsets) -> np.ndarray:
    """Frames of the texture shifted by (o, o) px, one offset per frame."""
    return np.stack([np.roll(texture, (int(o), int(o)), axis=(0, 1)) for o in offsets])


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(0)
    ref = _textured(rng, 3, 56, 72)
    return _noisy(rng, ref, 6.0), ref


# ---------------------------------------------------------------------------------------------
# Quantisation
# ---------------------------------------------------------------------------------------------


def test_to_uint8_rounds_and_keeps_shape():
    x = np.array([[[0.0, 0.6 / 255, 1.4 / 255], [254.6 / 255, 1.0, 0.5]]])  # (1, 2, 3): one image
    out = metrics.to_uint8(x)
    assert out.dtype == np.uint8 and out.shape == x.shape
    np.testing.assert_array_equal(out, [[[0, 1, 1], [255, 255, 128]]])  # 127.5 rounds half to even
    video = np.stack([x, x])
    assert metrics.to_uint8(video).shape == (2, 1, 2, 3)
    # float noise just outside [0, 1] is accepted and clipped
    np.testing.assert_array_equal(metrics.to_uint8(np.array([[[-1e-4, 1 + 1e-4, 0.0]]])), [[[0, 255, 0]]])


# ---------------------------------------------------------------------------------------------
# PSNR and SSIM
# ---------------------------------------------------------------------------------------------


def test_psnr_matches_skimage(pair):
    a, b = pair
    a8, b8 = _ref_uint8(a), _ref_uint8(b)
    per_frame = [peak_signal_noise_ratio(b8[i], a8[i], data_range=255) for i in range(len(a))]
    np.testing.assert_allclose(metrics.psnr_per_frame(a, b), per_frame, atol=1e-4)
    assert metrics.psnr(a, b) == pytest.approx(np.mean(per_frame), abs=1e-4)
    mse = metrics.mse_per_frame(a, b)
    np.testing.assert_allclose(10 * np.log10(1 / mse), per_frame, atol=1e-4)


def test_ssim_matches_skimage_valid_region(pair):
    a, b = pair
    a8, b8 = _ref_uint8(a) / 255.0, _ref_uint8(b) / 255.0
    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=-1)
    per_frame = [structural_similarity(a8[i], b8[i], **kw) for i in range(len(a))]
    ours = metrics.ssim_per_frame(a, b)
    np.testing.assert_allclose(ours, per_frame, atol=1e-4)
    assert metrics.ssim(a, b, frames_per_chunk=2) == pytest.approx(np.mean(per_frame), abs=1e-4)
    np.testing.assert_allclose(metrics.ssim_per_frame(a, b, frames_per_chunk=1), ours)  # chunking changes nothing


def test_numpy_and_torch_inputs_agree(pair):
    a, b = pair
    ta, tb = torch.from_numpy(a).float().requires_grad_(), torch.from_numpy(b).float()
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    assert metrics.psnr(ta, tb) == metrics.psnr(a32, b32)
    assert metrics.ssim(ta, tb) == metrics.ssim(a32, b32)
    assert metrics.temporal_flickering(ta) == metrics.temporal_flickering(a32)
    # a mixed pair works too
    assert metrics.psnr(a32, tb) == metrics.psnr(a32, b32)


def test_identical_inputs_give_cap_and_ssim_one(pair):
    a, _ = pair
    np.testing.assert_array_equal(metrics.psnr_per_frame(a, a), metrics.PSNR_CAP_DB)
    assert metrics.psnr(a, a) == metrics.PSNR_CAP_DB == 100.0
    assert metrics.ssim(a, a) == pytest.approx(1.0, abs=1e-6)
    # a single image is a one-frame video
    assert metrics.psnr(a[0], a[0]) == 100.0


def test_more_noise_scores_lower():
    rng = np.random.default_rng(1)
    ref = _textured(rng, 2, 48, 64)
    scores = [(metrics.psnr(_noisy(rng, ref, s), ref), metrics.ssim(_noisy(rng, ref, s), ref)) for s in (1, 3, 9, 27)]
    psnrs, ssims = zip(*scores)
    assert all(x > y for x, y in zip(psnrs, psnrs[1:])), psnrs
    assert all(x > y for x, y in zip(ssims, ssims[1:])), ssims


# ---------------------------------------------------------------------------------------------
# VBench-style dimensions
# ---------------------------------------------------------------------------------------------


def test_temporal_flickering_formula():
    rng = np.random.default_rng(2)
    video = _textured(rng, 5, 32, 40)
    u = _ref_uint8(video).astype(np.int32)
    per_pair = [(255.0 - np.abs(u[t + 1] - u[t]).mean()) / 255.0 for t in range(len(u) - 1)]
    assert metrics.temporal_flickering(video) == pytest.approx(np.mean(per_pair), abs=1e-12)
    assert metrics.temporal_flickering(np.repeat(video[:1], 4, axis=0)) == 1.0


@pytest.mark.parametrize("step", [1, 2, 4, 8, 16])
def test_dynamic_degree_measures_translation(step):
    texture = _texture(np.random.default_rng(3), 256)
    motion = metrics.dynamic_degree(_translating(texture, step * np.arange(4)))
    true = step * np.sqrt(2.0)
    assert abs(motion / true - 1) < 0.10, (motion, true)


def test_dynamic_degree_still_and_decision():
    texture = _texture(np.random.default_rng(4), 256)
    still = _translating(texture, [0] * 6)
    assert metrics.dynamic_degree(still) < 0.1
    assert not metrics.is_dynamic(still)
    moving = _translating(texture, 8 * np.arange(6))  # 11.3 px per frame, threshold 6 px at 256
    details = metrics.dynamic_degree_details(moving)
    assert details.threshold == 6.0 and details.required_pairs == round(4 * 6 / 16)
    assert details.moving_pairs == 5 and details.is_dynamic and metrics.is_dynamic(moving)
    slow = _translating(texture, 2 * np.arange(6))  # 2.8 px per frame: below the threshold
    assert not metrics.is_dynamic(slow)


def test_dynamic_degree_fps_subsamples_like_vbench():
    texture = _texture(np.random.default_rng(5), 128)
    video = _translating(texture, 2 * np.arange(9))
    every = metrics.dynamic_degree_details(video)
    at_16fps = metrics.dynamic_degree_details(video, fps=16)  # keep every 2nd frame
    assert at_16fps.frame_interval == 2 and len(at_16fps.pair_motion) == 4
    assert at_16fps.motion == pytest.approx(2 * every.motion, rel=0.1)


def test_dynamic_degree_at_64px_and_its_limit():
    # the built-in model's 64x64 clips: accurate for small motion (VBench's threshold is 1.5 px),
    # DIS's pyramid cannot reach motion of a third of the frame
    texture = _texture(np.random.default_rng(6), 64)
    for step in (1, 2, 4):
        motion = metrics.dynamic_degree(_translating(texture, step * np.arange(4)))
        assert abs(motion / (step * np.sqrt(2.0)) - 1) < 0.10, (step, motion)
    large = metrics.dynamic_degree(_translating(texture, 16 * np.arange(4)))
    assert large < 0.8 * 16 * np.sqrt(2.0)
    assert metrics.dynamic_degree_details(_translating(texture, [0, 0, 0])).threshold == 1.5


def test_motion_smoothness_ranks_smooth_above_jittered():
    texture = _texture(np.random.default_rng(7), 128)
    smooth = metrics.motion_smoothness(_translating(texture, 4 * np.arange(8)))
    assert smooth > 0.99
    assert metrics.motion_smoothness(_translating(texture, [0] * 4)) == pytest.approx(1.0, abs=1e-4)
    rng = np.random.default_rng(8)
    for _ in range(2):
        # same start, end and mean speed (4 px per frame), positions jittered by up to 2 px
        offsets = 4 * np.arange(8) + np.r_[0, rng.choice([-2, -1, 1, 2], 6), 0]
        jittered = metrics.motion_smoothness(_translating(texture, offsets))
        assert jittered < smooth - 0.01, (smooth, jittered, offsets)


def test_proxy_notes_cover_every_metric():
    assert set(metrics.PROXY_NOTES) == {"psnr", "ssim", "temporal_flickering", "dynamic_degree", "motion_smoothness"}
    assert "RAFT" in metrics.PROXY_NOTES["dynamic_degree"] and "AMT" in metrics.PROXY_NOTES["motion_smoothness"]


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------

_OK = np.full((3, 16, 16, 3), 0.5)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: metrics.psnr(np.zeros((16, 16)), np.zeros((16, 16))), r"a must have shape \(F, H, W, 3\)"),
        (lambda: metrics.psnr(_OK, np.zeros((1, 3, 16, 16, 3))), r"b must have shape"),
        (lambda: metrics.psnr(np.zeros((2, 16, 16, 4)), np.zeros((2, 16, 16, 4))), "a must have 3 RGB channels"),
        (lambda: metrics.ssim(_OK, _OK[:2]), "a and b must have the same shape"),
        (lambda: metrics.psnr(_OK * 3, _OK), r"a must hold values in \[0, 1\]"),
        (lambda: metrics.psnr(_OK, _OK - 0.6), r"b must hold values in \[0, 1\]"),
        (lambda: metrics.psnr(_OK, np.full_like(_OK, np.nan)), "b contains NaN"),
        (lambda: metrics.psnr(_OK, np.full_like(_OK, np.inf)), r"b must hold values in \[0, 1\]"),
        (lambda: metrics.psnr((_OK * 255).astype(np.uint8), _OK), "a must hold floats.*uint8.*divide"),
        (lambda: metrics.ssim(_OK[:, :10], _OK[:, :10]), "a frames must be at least 11x11"),
        (lambda: metrics.ssim(_OK, _OK, frames_per_chunk=0), "frames_per_chunk must be a positive int"),
        (lambda: metrics.temporal_flickering(_OK[:1]), "video must have at least 2 frames"),
        (lambda: metrics.temporal_flickering(_OK[0]), "video must have at least 2 frames"),
        (lambda: metrics.dynamic_degree(_OK[:1]), "video must have at least 2 frames"),
        (lambda: metrics.dynamic_degree(_OK[:, :12]), "video frames must be at least 16x16"),
        (lambda: metrics.dynamic_degree(_OK[:2], fps=24), "video must have at least 2 frames after"),
        (lambda: metrics.is_dynamic(_OK, fps=0), "fps must be a positive number"),
        (lambda: metrics.motion_smoothness(_OK[:2]), "video must have at least 3 frames"),
        (lambda: metrics.to_uint8(torch.zeros(2, 3, 8, 8)), r"video must have 3 RGB channels"),
    ],
)
def test_bad_input_raises_value_error_naming_the_parameter(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_non_array_input_raises_type_error():
    with pytest.raises(TypeError, match="a must be a numpy array or a torch tensor"):
        metrics.psnr([[0.5]], _OK)
