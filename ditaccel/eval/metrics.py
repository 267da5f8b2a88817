"""Video quality metrics as pure functions: paired similarity (PSNR, SSIM) and weight-free
VBench-style dimensions (temporal flickering, dynamic degree, motion smoothness).

Every function takes videos shaped ``(F, H, W, 3)`` (RGB, frames first) holding floats in
[0, 1], as numpy arrays or torch tensors on any device; a single image ``(H, W, 3)`` is a
one-frame video. Every function first quantises the frames to uint8 with :func:`to_uint8`
(rounding, as a saved video would hold them), so scores do not depend on sub-LSB float noise
and agree with tools that read decoded video files. Paired metrics then scale the uint8
frames back to [0, 1].

The conventions follow the "common_metrics_on_video_quality" recipe that VideoSys vendors and
that the sparse-attention papers (SVG, SVG2, Radial, PAB) quote; see
``shared/notes/evaluation.md`` sections 1 and 4:

* PSNR: per frame, data range 1, mean of the per-frame dB values, each capped at
  :data:`PSNR_CAP_DB`.
* SSIM: per frame and RGB channel, 11x11 Gaussian window with sigma 1.5, K1 = 0.01,
  K2 = 0.03, data range 1, valid region only (a 5-pixel border cropped), mean over channels
  and frames.

The three VBench dimensions use classical stand-ins where VBench needs network weights;
:data:`PROXY_NOTES` names them so a report can print what was measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from .lpips import lpips  # LPIPS-AlexNet with weights found offline: its own module (weights, network, CLI)

__all__ = [
    "PROXY_NOTES",
    "PSNR_CAP_DB",
    "DynamicDegreeResult",
    "dynamic_degree",
    "dynamic_degree_details",
    "is_dynamic",
    "lpips",
    "motion_smoothness",
    "mse_per_frame",
    "psnr",
    "psnr_per_frame",
    "ssim",
    "ssim_per_frame",
    "temporal_flickering",
    "to_uint8",
]

PSNR_CAP_DB = 100.0
"""Per-frame PSNR ceiling in dB. VideoSys returns 100 dB when MSE < 1e-10; min(PSNR, 100) is the
same rule, since PSNR > 100 dB exactly when MSE < 1e-10. Identical frames get 100 dB, and so do
frames of more than ~150k values (e.g. 240x240x3) that differ by one LSB in a single value."""

PROXY_NOTES = {
    "psnr": "exact: per-frame PSNR (data range 1, capped at 100 dB), mean over frames",
    "ssim": "exact: torchmetrics Gaussian SSIM (11x11, sigma 1.5) per RGB channel, 5-px border cropped",
    "temporal_flickering": "exact: VBench formula on in-memory uint8 frames (VBench scores static videos only)",
    "dynamic_degree": "proxy: OpenCV DIS optical flow, preset MEDIUM (VBench: RAFT, 20 iterations)",
    "motion_smoothness": "proxy: DIS-flow midpoint interpolation of every interior frame (VBench: AMT-S)",
}
"""What each metric computes and, for proxies, what VBench uses instead."""

# Values may overshoot [0, 1] by float noise (a VAE decode, a resize); anything within a fraction
# of half an LSB (0.5 / 255 = 2e-3) quantises to 0 or 255 anyway, so it is accepted.
_RANGE_TOLERANCE = 1e-3

# SSIM window: 11x11 Gaussian, sigma 1.5 (Wang et al. 2004). torchmetrics derives the Gaussian
# kernel size from sigma as 2 * int(3.5 * sigma + 0.5) + 1 = 11, as scikit-image does.
_SSIM_SIGMA = 1.5
_SSIM_KERNEL = 11
_SSIM_BORDER = (_SSIM_KERNEL - 1) // 2
# Frames per SSIM chunk are chosen so a chunk holds about this many pixels; torchmetrics keeps
# some 25 full-size float maps per channel alive, so 4M pixels is ~1.2 GB in float32.
_SSIM_CHUNK_PIXELS = 4 * 2**20

# Elementwise passes over a video (quantisation, squared errors) go this many frames at a time.
_FRAMES_PER_PASS = 8

# VBench dynamic degree (vbench/dynamic_degree.py): a pair "moves" when its top-5% flow magnitude
# exceeds 6 px at a 256-px short side, scaled with the short side; a video is dynamic when at
# least round(4 * num_frames / 16) pairs move. VBench first subsamples to about 8 fps.
_MOTION_TOP_FRACTION = 0.05
_MOTION_THRESHOLD_PX_AT_256 = 6.0
_VBENCH_FPS = 8.0
# DIS refuses frames under 12 px; 16 px lets two of its 8-px patches fit on the short side.
_MIN_FLOW_SIDE = 16


# ---------------------------------------------------------------------------------------------
# Input checks and quantisation
# ---------------------------------------------------------------------------------------------


def _as_video(name: str, video) -> torch.Tensor:
    """Checks one input and returns it as a float tensor (F, H, W, 3) on its own device."""
    if isinstance(video, np.ndarray):
        if video.dtype.kind != "f":
            raise ValueError(
                f"{name} must hold floats in [0, 1], got a {video.dtype} array"
                + (" (divide uint8 frames by 255)" if video.dtype == np.uint8 else "")
            )
        if video.dtype not in (np.float16, np.float32, np.float64):  # longdouble: torch has none
            video = video.astype(np.float64)
        tensor = torch.from_numpy(np.ascontiguousarray(video))
    elif isinstance(video, torch.Tensor):
        if not video.is_floating_point():
            raise ValueError(
                f"{name} must hold floats in [0, 1], got a {video.dtype} tensor"
                + (" (divide uint8 frames by 255)" if video.dtype == torch.uint8 else "")
            )
        tensor = video.detach()
    else:
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(video).__name__}")
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 4:
        raise ValueError(
            f"{name} must have shape (F, H, W, 3) or (H, W, 3), got {tuple(video.shape)} (rank {video.ndim})"
        )
    if tensor.shape[-1] != 3:
        raise ValueError(f"{name} must have 3 RGB channels last, got shape {tuple(video.shape)}")
    if tensor.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(video.shape)}")
    low, high = (float(v) for v in torch.aminmax(tensor))  # NaN propagates to both
    if math.isnan(low) or math.isnan(high):
        raise ValueError(f"{name} contains NaN values")
    if low < -_RANGE_TOLERANCE or high > 1.0 + _RANGE_TOLERANCE:
        raise ValueError(f"{name} must hold values in [0, 1], got values in [{low:.4g}, {high:.4g}]")
    return tensor


def _quantise(tensor: torch.Tensor) -> torch.Tensor:
    # Round half to even, like np.rint; truncation (diffusers' export_to_video) biases every pixel
    # down by half an LSB on average. A few frames at a time: the float temporaries of a whole
    # 81-frame 720p video would take 1.8 GB in float64.
    out = torch.empty(tensor.shape, dtype=torch.uint8, device=tensor.device)
    for start in range(0, tensor.shape[0], _FRAMES_PER_PASS):
        chunk = tensor[start : start + _FRAMES_PER_PASS]
        if chunk.dtype in (torch.float16, torch.bfloat16):  # x * 255 needs more than 8-11 bits
            chunk = chunk.float()
        out[start : start + _FRAMES_PER_PASS] = torch.round(chunk * 255.0).clamp_(0, 255)
    return out


def _frames(name: str, video, *, min_frames: int = 1, min_side: int = 1) -> torch.Tensor:
    """Checked and quantised: uint8 tensor (F, H, W, 3) on the input's device."""
    frames = _quantise(_as_video(name, video))
    if frames.shape[0] < min_frames:
        raise ValueError(f"{name} must have at least {min_frames} frames, got {frames.shape[0]}")
    if min(frames.shape[1:3]) < min_side:
        raise ValueError(
            f"{name} frames must be at least {min_side}x{min_side} pixels, got {tuple(frames.shape[1:3])}"
        )
    return frames


def _frame_pair(a, b, *, min_side: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    fa = _frames("a", a, min_side=min_side)
    fb = _frames("b", b, min_side=min_side)
    if fa.shape != fb.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if fa.device != fb.device:
        fb = fb.to(fa.device)
    return fa, fb


def to_uint8(video) -> np.ndarray:
    """Quantises frames in [0, 1] to uint8 the way a saved video holds them.

    Args:
        video: floats in [0, 1], shape ``(F, H, W, 3)`` or ``(H, W, 3)``; numpy or torch.

    Returns:
        ``round(video * 255)`` clipped to [0, 255] (round half to even), as a numpy uint8 array
        of the input's shape.
    """
    rank = getattr(video, "ndim", None)
    frames = _frames("video", video)
    out = frames.cpu().numpy()
    return out[0] if rank == 3 else out


# ---------------------------------------------------------------------------------------------
# Paired metrics
# ---------------------------------------------------------------------------------------------


def mse_per_frame(a, b) -> np.ndarray:
    """Mean squared error per frame on uint8-quantised frames scaled to [0, 1].

    For the "PSNR of the mean MSE" aggregation, ``10 * log10(1 / mse_per_frame(a, b).mean())``.

    Args:
        a: the video under test, floats in [0, 1], shape ``(F, H, W, 3)`` or ``(H, W, 3)``.
        b: the reference video (e.g. the dense run), same shape as ``a``.

    Returns:
        float64 array of shape ``(F,)``.
    """
    fa, fb = _frame_pair(a, b)
    sse = torch.empty(fa.shape[0], dtype=torch.int64, device=fa.device)
    for start in range(0, fa.shape[0], _FRAMES_PER_PASS):
        stop = start + _FRAMES_PER_PASS
        diff = fa[start:stop].to(torch.int32) - fb[start:stop].to(torch.int32)
        sse[start:stop] = (diff * diff).sum(dim=(1, 2, 3), dtype=torch.int64)  # exact integer sums
    return sse.cpu().numpy().astype(np.float64) / (255.0**2 * fa[0].numel())


def psnr_per_frame(a, b) -> np.ndarray:
    """PSNR in dB per frame, data range 1, on uint8-quantised frames scaled to [0, 1].

    Identical frames (MSE 0) and any frame above :data:`PSNR_CAP_DB` get exactly
    :data:`PSNR_CAP_DB` (100 dB), VideoSys's rule. Equal to scikit-image's
    ``peak_signal_noise_ratio(a_uint8, b_uint8, data_range=255)`` per frame, below the cap.

    Args:
        a: the video under test, floats in [0, 1], shape ``(F, H, W, 3)`` or ``(H, W, 3)``.
        b: the reference video, same shape as ``a``.

    Returns:
        float64 array of shape ``(F,)``.
    """
    mse = mse_per_frame(a, b)
    with np.errstate(divide="ignore"):
        db = 10.0 * np.log10(1.0 / mse)
    return np.minimum(db, PSNR_CAP_DB)


def psnr(a, b) -> float:
    """Mean over frames of the per-frame PSNR (dB, data range 1, each capped at 100 dB).

    This is the papers' aggregation (the mean of per-frame dB values), not the PSNR of the
    mean MSE; see :func:`psnr_per_frame` and :func:`mse_per_frame`.

    Args:
        a: the video under test, floats in [0, 1], shape ``(F, H, W, 3)`` or ``(H, W, 3)``.
        b: the reference video, same shape as ``a``.
    """
    return float(psnr_per_frame(a, b).mean())


def ssim_per_frame(a, b, *, frames_per_chunk: int | None = None) -> np.ndarray:
    """SSIM per frame: per RGB channel, valid region only, averaged over channels.

    Gaussian window 11x11, sigma 1.5, K1 = 0.01, K2 = 0.03, data range 1, population
    covariance, on uint8-quantised frames scaled to [0, 1]. The SSIM map comes from
    torchmetrics (``structural_similarity_index_measure`` with ``gaussian_kernel=True``), which
    reflect-pads the frames so its map covers the whole frame, border included; torchmetrics has
    no option to drop that border, so this function crops ``(11 - 1) // 2 = 5`` pixels on each
    side of the map before averaging. That is the papers' "valid region" recipe and what
    scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1.0, channel_axis=-1)`` computes. torchmetrics' own
    mean over the padded map differs from it by 1e-4 to 3e-4 at 480x832 and by ~2e-3 at 64x64.

    Computed on the inputs' device in float32 (within 1e-5 of scikit-image's float64; float64
    would be exact but its depthwise convolution is ~40x slower on CPU), ``frames_per_chunk``
    frames at a time (default: as many as fit in about 4M pixels, 4 frames at 720x1280), so
    long videos need bounded memory.

    Args:
        a: the video under test, floats in [0, 1], shape ``(F, H, W, 3)`` or ``(H, W, 3)``,
            with H and W at least 11.
        b: the reference video, same shape as ``a``.
        frames_per_chunk: frames per torchmetrics call; ``None`` picks it from the frame size.

    Returns:
        float64 array of shape ``(F,)``.
    """
    # torchmetrics imports transformers at package import (seconds): pay it only when used
    from torchmetrics.functional.image import structural_similarity_index_measure

    fa, fb = _frame_pair(a, b, min_side=_SSIM_KERNEL)
    num_frames, height, width, _ = fa.shape
    if frames_per_chunk is None:
        frames_per_chunk = max(1, _SSIM_CHUNK_PIXELS // (height * width))
    elif isinstance(frames_per_chunk, bool) or not isinstance(frames_per_chunk, int) or frames_per_chunk < 1:
        raise ValueError(f"frames_per_chunk must be a positive int or None, got {frames_per_chunk!r}")
    b_ = _SSIM_BORDER
    scores = []
    for start in range(0, num_frames, frames_per_chunk):
        # (chunk, H, W, 3) uint8 -> (chunk, 3, H, W) float in [0, 1]
        xa = fa[start : start + frames_per_chunk].permute(0, 3, 1, 2).float().div_(255.0)
        xb = fb[start : start + frames_per_chunk].permute(0, 3, 1, 2).float().div_(255.0)
        _, ssim_map = structural_similarity_index_measure(
            xa,
            xb,
            gaussian_kernel=True,
            sigma=_SSIM_SIGMA,
            kernel_size=_SSIM_KERNEL,
            data_range=1.0,
            k1=0.01,
            k2=0.03,
            reduction="none",
            return_full_image=True,
        )
        valid = ssim_map[:, :, b_ : height - b_, b_ : width - b_]
        scores.append(valid.double().mean(dim=(1, 2, 3)).cpu())
    return torch.cat(scores).numpy()


def ssim(a, b, *, frames_per_chunk: int | None = None) -> float:
    """Mean over frames of :func:`ssim_per_frame` (Gaussian 11x11, sigma 1.5, valid region).

    Args:
        a: the video under test, floats in [0, 1], shape ``(F, H, W, 3)`` or ``(H, W, 3)``,
            with H and W at least 11.
        b: the reference video, same shape as ``a``.
        frames_per_chunk: frames per torchmetrics call; ``None`` picks it from the frame size.
    """
    return float(ssim_per_frame(a, b, frames_per_chunk=frames_per_chunk).mean())


# ---------------------------------------------------------------------------------------------
# VBench-style dimensions (one video each, no weights)
# ---------------------------------------------------------------------------------------------


def temporal_flickering(video) -> float:
    """VBench temporal flickering: ``1 - mean |frame[t+1] - frame[t]| / 255`` on uint8 frames.

    The mean runs over all pixels, channels and consecutive pairs. VBench averages
    ``(255 - MAE_t) / 255`` over pairs, which is the same number. Exact, not a proxy, given the
    same frames; VBench scores it on static videos only, where it measures flicker; on moving
    videos it mostly measures motion.

    Args:
        video: floats in [0, 1], shape ``(F, H, W, 3)`` with F >= 2.

    Returns:
        score in [0, 1], 1 for a still video.
    """
    frames = _frames("video", video, min_frames=2)
    total = 0.0
    for t in range(frames.shape[0] - 1):  # pair by pair: bounded memory on long videos
        diff = frames[t + 1].to(torch.int16) - frames[t].to(torch.int16)
        total += float(diff.abs().sum(dtype=torch.int64))
    mean_abs = total / ((frames.shape[0] - 1) * frames[0].numel())
    return 1.0 - mean_abs / 255.0


@dataclass(frozen=True)
class DynamicDegreeResult:
    """Per-pair motion of one video and VBench's dynamic / static decision."""

    pair_motion: tuple[float, ...]  # top-5% mean flow magnitude per consecutive pair, px
    threshold: float  # px: 6 * min(H, W) / 256
    required_pairs: int  # round(4 * num_frames / 16), num_frames after fps subsampling
    moving_pairs: int  # pairs whose motion exceeds the threshold
    frame_interval: int  # frames skipped to reach ~8 fps (1 when fps is None)

    @property
    def motion(self) -> float:
        """Mean of ``pair_motion``: the video's motion score in pixels per (sampled) frame."""
        return float(np.mean(self.pair_motion))

    @property
    def is_dynamic(self) -> bool:
        """VBench's decision: at least ``required_pairs`` pairs move (VBench's check_move)."""
        return len(self.pair_motion) > 0 and self.moving_pairs >= self.required_pairs


def _dis() -> cv2.DISOpticalFlow:
    return cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)


def _gray(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def dynamic_degree_details(video, *, fps: float | None = None) -> DynamicDegreeResult:
    """Per-pair motion and VBench's dynamic-video decision, with DIS flow standing in for RAFT.

    A proxy for VBench's dynamic degree. For each consecutive pair of frames, dense optical flow
    from OpenCV DIS (preset MEDIUM, on grayscale uint8 frames at their own resolution); the pair's
    motion is the mean of the largest 5% of flow magnitudes (VBench's statistic, on RAFT flow in
    VBench). The video is dynamic when at least ``required_pairs = round(4 * F / 16)`` pairs have
    motion strictly above ``6 * min(H, W) / 256`` px, F counting the frames after subsampling, as
    VBench's ``check_move`` does (so a 2- or 3-frame video needs 0 or 1 pair; Python's round
    halves to even: round(0.5) = 0 makes every 2-frame video dynamic, as in VBench).

    Accuracy on rigidly translating random textures (d px per frame in x and y, magnitude
    d * sqrt(2); 18 textures of three spectra per frame size, opencv-python-headless 5.1): DIS
    is exact to <0.5% inside the frame but overshoots where new content enters at the frame
    edge, and the top-5% statistic picks those pixels, so the score reads a few percent high.
    DIS's pyramid stops once its coarsest level is about four 8-px patches wide, so its reach
    scales with the frame: motion up to about a tenth of the short side is measured within
    ~11%; larger motion can be badly under-estimated. Worst errors (median) per magnitude:

    ========  ===========  ==========  ==========  ===============  ===============
    frame     1.4 px       2.8 px      5.7 px      11.3 px          22.6 px
    ========  ===========  ==========  ==========  ===============  ===============
    64x64     +8% (+4%)    +4% (+2%)   +7% (+3%)   -71% (-1%)       -82% (-65%)
    128x128   +7% (+3%)    +1% (+1%)   +1% (0%)    +11% (+3%)       -61% (0%)
    256x256   +5% (+3%)    +2% (+1%)   +3% (+2%)   +5% (+3%)        +11% (+6%)
    ========  ===========  ==========  ==========  ===============  ===============

    VBench's threshold (1.5 px at 64x64, 3 px at 128x128, 11 px at 480p) lies inside the
    accurate range, so the decision is robust; a large motion score on a small frame is a lower
    bound. Small frames are not upsampled: on one 64x64 texture a 4x upsampling fixed 22.6 px
    (-8%) but read 5.7-11.3 px 20-40% high.

    Args:
        video: floats in [0, 1], shape ``(F, H, W, 3)`` with F >= 2 after subsampling and
            H, W >= 16.
        fps: the video's frame rate; when given, keep every ``round(fps / 8)``-th frame first, as
            VBench does; ``None`` uses every frame.
    """
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float)) or not fps > 0):
        raise ValueError(f"fps must be a positive number or None, got {fps!r}")
    frames = _frames("video", video, min_frames=2, min_side=_MIN_FLOW_SIDE)
    interval = 1 if fps is None else max(1, round(fps / _VBENCH_FPS))
    frames = frames[::interval].cpu().numpy()
    if frames.shape[0] < 2:
        raise ValueError(
            f"video must have at least 2 frames after keeping every {interval}-th (fps={fps}), "
            f"got {frames.shape[0]}"
        )
    num_frames, height, width, _ = frames.shape
    dis = _dis()
    top_k = max(1, int(height * width * _MOTION_TOP_FRACTION))
    pair_motion = []
    gray_prev = _gray(frames[0])
    for t in range(1, num_frames):
        gray_next = _gray(frames[t])
        flow = dis.calc(gray_prev, gray_next, None)
        magnitude = np.hypot(flow[..., 0], flow[..., 1]).ravel()
        pair_motion.append(float(np.partition(magnitude, magnitude.size - top_k)[-top_k:].mean()))
        gray_prev = gray_next
    threshold = _MOTION_THRESHOLD_PX_AT_256 * min(height, width) / 256.0
    return DynamicDegreeResult(
        pair_motion=tuple(pair_motion),
        threshold=threshold,
        required_pairs=round(4 * num_frames / 16.0),
        moving_pairs=sum(m > threshold for m in pair_motion),
        frame_interval=interval,
    )


def dynamic_degree(video, *, fps: float | None = None) -> float:
    """Motion score in pixels per frame: mean over consecutive pairs of the top-5% DIS flow
    magnitude. A proxy for VBench's dynamic degree (which uses RAFT flow and reports the binary
    decision, see :func:`is_dynamic`); details in :func:`dynamic_degree_details`.

    Args:
        video: floats in [0, 1], shape ``(F, H, W, 3)`` with F >= 2 and H, W >= 16.
        fps: when given, subsample to ~8 fps first as VBench does; ``None`` uses every frame.
    """
    return dynamic_degree_details(video, fps=fps).motion


def is_dynamic(video, *, fps: float | None = None) -> bool:
    """VBench's dynamic-video decision on DIS flow (proxy for RAFT); see
    :func:`dynamic_degree_details`. VBench's dynamic degree of a set of videos is the fraction
    for which this is True.

    Args:
        video: floats in [0, 1], shape ``(F, H, W, 3)`` with F >= 2 and H, W >= 16.
        fps: when given, subsample to ~8 fps first as VBench does; ``None`` uses every frame.
    """
    return dynamic_degree_details(video, fps=fps).is_dynamic


def _warp(frame: np.ndarray, grid_x: np.ndarray, grid_y: np.ndarray, flow: np.ndarray, step: float) -> np.ndarray:
    """Backward warp: output(x) = frame(x - step * flow(x)), bilinear, edges replicated."""
    map_x = grid_x - step * flow[..., 0]
    map_y = grid_y - step * flow[..., 1]
    return cv2.remap(frame, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def motion_smoothness(video) -> float:
    """Frame-interpolation score ``1 - mean |prediction - frame| / 255``, a weight-free proxy for
    VBench's motion smoothness (which interpolates with the AMT-S network).

    Every interior frame t is predicted from frames t-1 and t+1 alone: DIS flow (preset MEDIUM,
    grayscale) both ways between them, each neighbour warped half way to the midpoint
    (``prev(x - F_fw(x) / 2)`` and ``next(x - F_bw(x) / 2)``, bilinear ``cv2.remap``), the two
    averaged. The absolute error against the true frame, over all pixels and RGB channels, is
    averaged over interior frames. Motion at constant speed is predicted well; jerky motion,
    stutter and flicker are not. Absolute values differ from AMT's (occlusions and large motion
    hurt a classical interpolator more), so compare videos with each other, not with VBench
    numbers.

    Args:
        video: floats in [0, 1], shape ``(F, H, W, 3)`` with F >= 3 and H, W >= 16.

    Returns:
        score in [0, 1], 1 when every interior frame is predicted exactly.
    """
    frames_u8 = _frames("video", video, min_frames=3, min_side=_MIN_FLOW_SIDE).cpu().numpy()
    num_frames, height, width, _ = frames_u8.shape
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    dis = _dis()
    gray = [_gray(f) for f in frames_u8]
    errors = []
    for t in range(1, num_frames - 1):
        flow_fw = dis.calc(gray[t - 1], gray[t + 1], None)
        flow_bw = dis.calc(gray[t + 1], gray[t - 1], None)
        # warp in float so the prediction is not rounded to uint8 twice
        from_prev = _warp(frames_u8[t - 1].astype(np.float32), grid_x, grid_y, flow_fw, 0.5)
        from_next = _warp(frames_u8[t + 1].astype(np.float32), grid_x, grid_y, flow_bw, 0.5)
        prediction = 0.5 * (from_prev + from_next)
        errors.append(float(np.abs(prediction - frames_u8[t].astype(np.float32)).mean()))
    return 1.0 - float(np.mean(errors)) / 255.0
