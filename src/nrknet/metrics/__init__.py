"""Image quality metrics under the paper's evaluation protocol.

* :mod:`~nrknet.metrics.image_quality`: 8-bit quantisation, the score crop, PSNR, SSIM,
  MAE and the optional full-precision (16-bit) PSNR;
* :mod:`~nrknet.metrics.lpips`: LPIPS (AlexNet, v0.1) and where its weights come from;
* :mod:`~nrknet.metrics.aggregate`: :class:`ImageQualityMetrics`, the per-image
  scores of a test set and their means (:func:`summarize_rows` for any subset of rows).
"""

from nrknet.metrics.aggregate import METRIC_KEYS, ImageQualityMetrics, summarize_rows
from nrknet.metrics.image_quality import (
    PEAK,
    RTF_SCORE_CROP,
    SSIM_SIGMA,
    SSIM_WINDOW,
    apply_score_crop,
    mae,
    psnr,
    psnr_full_precision,
    quantize_8bit,
    ssim,
)
from nrknet.metrics.lpips import (
    ALEXNET_FILENAME,
    ALEXNET_SHA256,
    ALEXNET_URL,
    DOWNLOAD_TIMEOUT_S,
    LPIPS_MODES,
    MetricsError,
    alexnet_weights_path,
    get_lpips_model,
    lpips_distance,
    reset_lpips_cache,
)

__all__ = [
    "ALEXNET_FILENAME",
    "ALEXNET_SHA256",
    "ALEXNET_URL",
    "DOWNLOAD_TIMEOUT_S",
    "LPIPS_MODES",
    "METRIC_KEYS",
    "PEAK",
    "RTF_SCORE_CROP",
    "SSIM_SIGMA",
    "SSIM_WINDOW",
    "ImageQualityMetrics",
    "MetricsError",
    "alexnet_weights_path",
    "apply_score_crop",
    "get_lpips_model",
    "lpips_distance",
    "mae",
    "psnr",
    "psnr_full_precision",
    "quantize_8bit",
    "reset_lpips_cache",
    "ssim",
    "summarize_rows",
]
