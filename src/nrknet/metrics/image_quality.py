"""PSNR, SSIM and MAE under the paper's evaluation protocol.

* PSNR: the prediction is clipped to [0, 1], both images are rounded to 8-bit
  levels (``round(255 x)``), the MSE is taken over all pixels and channels of
  one image, peak 255; one value per image, averaged over images.
* SSIM: Gaussian window 11x11, sigma 1.5, K1 = 0.01, K2 = 0.03, data range 255
  on the same 8-bit images, valid region only (no padding), mean over the map
  and the channels (the MATLAB / BasicSR value).
* MAE: mean absolute difference over all pixels and channels of the same
  8-bit images, on the [0, 1] scale (the Restormer / IFAN value).
* 16-bit PSNR (optional): PSNR of the clipped full-precision images, peak 1,
  for test sets read at 16 bits.
* RTF images are scored on rows and columns 4..363 (:data:`RTF_SCORE_CROP`).

Scores are computed on the images as given: crop any padding away first.
"""

from __future__ import annotations

import kornia
import torch

PEAK = 255.0
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5  # kornia's Gaussian window always has sigma 1.5
RTF_SCORE_CROP: tuple[int, int] = (4, 364)
"""RTF scoring region: rows and columns 4..363 inclusive, as a ``(start, stop)`` slice."""


def check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``pred`` and ``target`` are batches ``(N, C, H, W)`` of one shape."""
    if pred.dim() != 4:
        raise ValueError(f"expected a batch (N, C, H, W), got shape {tuple(pred.shape)}")
    if pred.shape != target.shape:
        raise ValueError(
            f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape"
        )


def quantize_8bit(x: torch.Tensor) -> torch.Tensor:
    """Clip to [0, 1] and round to 8-bit levels: ``round(255 x)`` as floats in [0, 255]."""
    return torch.round(x.clamp(0.0, 1.0) * PEAK)


def apply_score_crop(img: torch.Tensor, crop: tuple[int, int] | None) -> torch.Tensor:
    """Crop rows and columns to ``img[..., start:stop, start:stop]``; ``None`` leaves ``img`` as is.

    ``crop`` follows Python slice semantics, so :data:`RTF_SCORE_CROP` ``(4, 364)``
    keeps rows and columns 4..363 inclusive (360 x 360 for RTF's images).
    """
    if crop is None:
        return img
    start, stop = (int(c) for c in crop)
    if not 0 <= start < stop:
        raise ValueError(f"score crop must be (start, stop) with 0 <= start < stop, got {crop}")
    height, width = img.shape[-2:]
    if stop > height or stop > width:
        raise ValueError(f"score crop {crop} exceeds the image size {height}x{width}")
    return img[..., start:stop, start:stop]


def _prepare(
    pred: torch.Tensor,
    target: torch.Tensor,
    crop: tuple[int, int] | None,
    quantize: bool,
    peak: float = PEAK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop, quantise to 8-bit levels (or just scale to [0, ``peak``]) and promote to float64
    (float32 on MPS, which has no float64)."""
    check_pair(pred, target)
    pred, target = apply_score_crop(pred, crop), apply_score_crop(target, crop)
    dtype = torch.float32 if pred.device.type == "mps" else torch.float64
    if quantize:
        return quantize_8bit(pred).to(dtype), quantize_8bit(target).to(dtype)
    # promoted before scaling, so that full-precision (16-bit) differences stay exact
    return pred.to(dtype) * peak, target.to(dtype) * peak


@torch.no_grad()
def psnr(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    crop: tuple[int, int] | None = None,
    quantize: bool = True,
) -> torch.Tensor:
    """PSNR in dB of each image of a batch, shape ``(N,)``.

    ``pred`` and ``target`` are ``(N, C, H, W)`` in [0, 1]. Both are clipped and
    rounded to 8-bit levels (``quantize=False`` skips this), the MSE is taken
    over each image's pixels and channels, peak 255. Identical images give
    ``inf``.
    """
    pred, target = _prepare(pred, target, crop, quantize)
    mse = (pred - target).square().flatten(1).mean(dim=1)
    return 10.0 * torch.log10(PEAK**2 / mse)


@torch.no_grad()
def ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    crop: tuple[int, int] | None = None,
    quantize: bool = True,
) -> torch.Tensor:
    """SSIM of each image of a batch, shape ``(N,)`` (the MATLAB / BasicSR value).

    Gaussian window 11x11 with sigma 1.5, K1 = 0.01, K2 = 0.03, data range 255,
    computed on the 8-bit rounded images (``quantize=False`` skips rounding)
    over the valid region only (no padding), averaged over positions and
    channels. Equals scikit-image's ``structural_similarity`` with
    ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=255``, whose mean also covers the valid region only.
    """
    pred, target = _prepare(pred, target, crop, quantize)
    if min(pred.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(
            f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {tuple(pred.shape[-2:])}"
        )
    ssim_map = kornia.metrics.ssim(
        pred, target, SSIM_WINDOW, max_val=PEAK, eps=0.0, padding="valid"
    )
    return ssim_map.flatten(1).mean(dim=1)


@torch.no_grad()
def mae(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    crop: tuple[int, int] | None = None,
    quantize: bool = True,
) -> torch.Tensor:
    """Mean absolute error of each image of a batch on the [0, 1] scale, shape ``(N,)``.

    Computed on the 8-bit rounded images like PSNR (``quantize=False`` skips
    rounding), over each image's pixels and channels, then divided by 255.
    """
    pred, target = _prepare(pred, target, crop, quantize)
    return (pred - target).abs().flatten(1).mean(dim=1) / PEAK


@torch.no_grad()
def psnr_full_precision(
    pred: torch.Tensor, target: torch.Tensor, *, crop: tuple[int, int] | None = None
) -> torch.Tensor:
    """PSNR in dB of each image of a batch without 8-bit rounding, shape ``(N,)``.

    Both images are clipped to [0, 1] and compared at full precision (float64;
    float32 on MPS), peak 1: the PSNR of 16-bit test sets as read.
    """
    pred, target = _prepare(pred.clamp(0.0, 1.0), target.clamp(0.0, 1.0), crop, False, peak=1.0)
    mse = (pred - target).square().flatten(1).mean(dim=1)
    return -10.0 * torch.log10(mse)
