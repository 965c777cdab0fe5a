"""Image quality metrics under the paper's evaluation protocol.

* PSNR: the prediction is clipped to [0, 1], both images are rounded to 8-bit
  levels (``round(255 x)``), the MSE is taken over all pixels and channels of
  one image, peak 255; one value per image, averaged over images.
* SSIM: Gaussian window 11x11, sigma 1.5, K1 = 0.01, K2 = 0.03, data range 255
  on the same 8-bit images, valid region only (no padding), mean over the map
  and the channels (the MATLAB / BasicSR value).
* LPIPS: AlexNet, version 0.1, on the same 8-bit images scaled to [-1, 1].
  The ``lpips`` package ships only the linear heads; the AlexNet trunk is
  torchvision's ImageNet checkpoint ``alexnet-owt-7be5be79.pth``, looked for in
  ``$TORCH_HOME/hub/checkpoints/`` and downloaded there when missing.
* RTF images are scored on rows and columns 4..363 (:data:`RTF_SCORE_CROP`).

Scores are computed on the images as given: crop any padding away first.
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import tempfile
import urllib.request
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import kornia
import torch
from torch import nn
from torchmetrics import Metric

PEAK = 255.0
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5  # kornia's Gaussian window always has sigma 1.5
RTF_SCORE_CROP: tuple[int, int] = (4, 364)
"""RTF scoring region: rows and columns 4..363 inclusive, as a ``(start, stop)`` slice."""

LPIPS_MODES = ("auto", "required", "off")
ALEXNET_FILENAME = "alexnet-owt-7be5be79.pth"
ALEXNET_URL = f"https://download.pytorch.org/models/{ALEXNET_FILENAME}"
ALEXNET_SHA256_PREFIX = "7be5be79"
DOWNLOAD_TIMEOUT_S = 30.0

METRIC_KEYS = ("psnr", "ssim", "lpips", "input_psnr", "input_ssim")


class MetricsError(RuntimeError):
    """A metric cannot be computed as configured (for example LPIPS required but unavailable)."""


# ----------------------------------------------------------------------------- helpers


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
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
    pred: torch.Tensor, target: torch.Tensor, crop: tuple[int, int] | None, quantize: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop, quantise to 8-bit levels (or just scale to [0, 255]) and promote to float64."""
    _check_pair(pred, target)
    pred, target = apply_score_crop(pred, crop), apply_score_crop(target, crop)
    if quantize:
        pred, target = quantize_8bit(pred), quantize_8bit(target)
    else:
        pred, target = pred * PEAK, target * PEAK
    dtype = torch.float32 if pred.device.type == "mps" else torch.float64
    return pred.to(dtype), target.to(dtype)


# ----------------------------------------------------------------------------- PSNR / SSIM


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


# ----------------------------------------------------------------------------- LPIPS

_lpips_models: dict[str, nn.Module] = {}
_lpips_failure: str | None = None
_lpips_warned = False


def reset_lpips_cache() -> None:
    """Forget the cached LPIPS networks and any earlier failure (and warn again next time)."""
    global _lpips_failure, _lpips_warned
    _lpips_models.clear()
    _lpips_failure = None
    _lpips_warned = False


def alexnet_weights_path() -> Path:
    """Where torchvision keeps the AlexNet checkpoint: ``$TORCH_HOME/hub/checkpoints/``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILENAME


def _fetch(url: str, dest: Path, timeout: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Download ``url`` to ``dest`` (atomically, checking torchvision's SHA-256 prefix)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=dest.name, suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as tmp, urllib.request.urlopen(url, timeout=timeout) as response:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                tmp.write(chunk)
        if not digest.hexdigest().startswith(ALEXNET_SHA256_PREFIX):
            raise OSError(f"checksum mismatch for {url}")
        os.replace(tmp_name, dest)
    finally:
        if os.path.exists(tmp_name):
            os.remove(tmp_name)


def _how_to_provide(path: Path) -> str:
    return (
        f"LPIPS needs torchvision's AlexNet ImageNet weights: put {ALEXNET_FILENAME} into "
        f"{path.parent} (that is $TORCH_HOME/hub/checkpoints/; get it from {ALEXNET_URL}), "
        "or run once with internet access so that it is downloaded there"
    )


def _build_lpips(path: Path) -> nn.Module:
    """LPIPS (AlexNet, v0.1) with the trunk read from ``path``, in eval mode, frozen, on the CPU.

    ``path`` holds a torchvision AlexNet state dict; only its ``features.*``
    entries (the convolutional trunk) are used, the classifier may be absent.
    """
    import lpips as lpips_pkg

    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise MetricsError(f"{path} does not hold a state dict")
    with warnings.catch_warnings():
        # pnet_rand=True builds the trunk without torchvision's download; it is filled in below.
        warnings.simplefilter("ignore")
        model = lpips_pkg.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False)
    layers = [
        (index, layer)
        for slice_ in (
            model.net.slice1,
            model.net.slice2,
            model.net.slice3,
            model.net.slice4,
            model.net.slice5,
        )
        for index, layer in slice_.named_children()
    ]
    expected = {
        f"features.{index}.{name}" for index, layer in layers for name in layer.state_dict()
    }
    found = {k for k in state if isinstance(k, str) and k.startswith("features.")}
    if found != expected:
        raise MetricsError(
            f"{path} is not a torchvision AlexNet checkpoint "
            f"(missing {sorted(expected - found)}, unexpected {sorted(found - expected)})"
        )
    for index, layer in layers:
        prefix = f"features.{index}."
        layer.load_state_dict(
            {
                k[len(prefix) :]: v
                for k, v in state.items()
                if k in expected and k.startswith(prefix)
            }
        )
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def get_lpips_model(
    device: torch.device | str = "cpu", mode: str = "auto", download: bool = True
) -> nn.Module | None:
    """The LPIPS network on ``device``, built on first use and cached; ``None`` when unavailable.

    ``mode``: ``auto`` warns once and returns ``None`` when the AlexNet weights
    cannot be had; ``required`` raises :class:`MetricsError` instead; ``off``
    always returns ``None``. With ``download`` a missing checkpoint is fetched
    once into ``$TORCH_HOME/hub/checkpoints/`` (a failure is remembered, see
    :func:`reset_lpips_cache`).
    """
    global _lpips_failure, _lpips_warned
    if mode not in LPIPS_MODES:
        raise ValueError(f"unknown LPIPS mode {mode!r}; expected one of {', '.join(LPIPS_MODES)}")
    if mode == "off":
        return None
    key = str(torch.device(device))
    if key in _lpips_models:
        return _lpips_models[key]
    if _lpips_failure is None:
        path = alexnet_weights_path()
        try:
            if not path.is_file():
                if not download:
                    raise FileNotFoundError(f"{path} does not exist and downloading is disabled")
                _fetch(ALEXNET_URL, path)
            if "cpu" not in _lpips_models:
                _lpips_models["cpu"] = _build_lpips(path)
            if key not in _lpips_models:
                _lpips_models[key] = copy.deepcopy(_lpips_models["cpu"]).to(device)
            return _lpips_models[key]
        except Exception as exc:  # no network, unreadable file, ...
            _lpips_failure = f"{type(exc).__name__}: {exc}. {_how_to_provide(path)}"
    if mode == "required":
        raise MetricsError(f"LPIPS is required but unavailable ({_lpips_failure})")
    if not _lpips_warned:
        _lpips_warned = True
        warnings.warn(
            f"LPIPS unavailable, reported as None/NaN ({_lpips_failure})",
            RuntimeWarning,
            stacklevel=2,
        )
    return None


@torch.no_grad()
def lpips_distance(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    crop: tuple[int, int] | None = None,
    quantize: bool = True,
    mode: str = "auto",
    download: bool = True,
) -> torch.Tensor | None:
    """LPIPS (AlexNet, v0.1) of each image of a batch, shape ``(N,)``; ``None`` when unavailable.

    Both images are clipped and rounded to 8-bit levels like for PSNR
    (``quantize=False`` only clips), then scaled to [-1, 1].
    """
    _check_pair(pred, target)
    model = get_lpips_model(pred.device, mode, download)
    if model is None:
        return None
    pred, target = apply_score_crop(pred, crop), apply_score_crop(target, crop)
    if quantize:
        pred, target = quantize_8bit(pred) / PEAK, quantize_8bit(target) / PEAK
    else:
        pred, target = pred.clamp(0, 1), target.clamp(0, 1)
    pred, target = pred.float() * 2 - 1, target.float() * 2 - 1
    return model(pred, target).flatten().to(torch.float64)


# ----------------------------------------------------------------------------- accumulator


def _to_float(value: torch.Tensor) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def is_distributed() -> bool:
    """Whether this process is one of several in an initialised process group (DDP)."""
    return (
        torch.distributed.is_available()
        and torch.distributed.is_initialized()
        and torch.distributed.get_world_size() > 1
    )


def _drop_sampler_repeats(rows: list[dict]) -> list[dict]:
    """Drop exact repeats (same name and scores): what a distributed sampler adds to even out
    its shards. Distinct images that share a name are kept."""
    seen, kept = set(), []
    for row in rows:
        key = tuple(sorted((k, repr(v)) for k, v in row.items()))
        if key not in seen:
            seen.add(key)
            kept.append(row)
    return kept


class ImageQualityMetrics(Metric):
    """Per-image PSNR / SSIM / LPIPS, and those of the blurry input, accumulated over a test set.

    ``update(pred, target, names, blurry=None)`` scores a batch; ``per_image()``
    lists one dict per image (``name``, ``psnr``, ``ssim``, ``lpips``,
    ``input_psnr``, ``input_ssim``; ``None`` where not computed);
    ``summary()`` gives the means over images and ``count``. ``lpips`` is
    ``None`` when LPIPS is ``off`` or unavailable (see :func:`get_lpips_model`);
    the blurry input's LPIPS is not computed.

    A torchmetrics ``Metric``: it follows its module's device. Under DDP,
    ``summary()`` and ``per_image()`` gather the images of all processes and
    drop the repeats that a distributed sampler adds to even out the shards
    (same name, same scores), so every process gets the single-device result;
    ``compute()`` keeps torchmetrics' plain gathering (repeats included).
    """

    full_state_update = False
    higher_is_better = None

    def __init__(
        self,
        lpips: str = "auto",
        score_crop: Sequence[int] | None = None,
        download: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if lpips not in LPIPS_MODES:
            raise ValueError(
                f"unknown LPIPS mode {lpips!r}; expected one of {', '.join(LPIPS_MODES)}"
            )
        self.lpips_mode = lpips
        self.score_crop = None if score_crop is None else tuple(int(c) for c in score_crop)
        self.download = download
        for key in METRIC_KEYS:
            self.add_state(key, default=[], dist_reduce_fx="cat")
        self.names: list[str] = []

    def update(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        names: Sequence[str] | None = None,
        blurry: torch.Tensor | None = None,
    ) -> None:
        """Score a batch ``(N, 3, H, W)`` in [0, 1]; ``names`` identify the images in ``per_image()``."""
        _check_pair(pred, target)
        count = pred.shape[0]
        if names is None:
            names = [f"image_{len(self.names) + i:05d}" for i in range(count)]
        names = [str(n) for n in names]
        if len(names) != count:
            raise ValueError(f"{len(names)} names for a batch of {count} images")
        crop = self.score_crop
        nan = torch.full((count,), float("nan"), dtype=torch.float64, device=pred.device)
        values = {
            "psnr": psnr(pred, target, crop=crop),
            "ssim": ssim(pred, target, crop=crop),
            "lpips": nan,
            "input_psnr": nan,
            "input_ssim": nan,
        }
        distance = lpips_distance(
            pred, target, crop=crop, mode=self.lpips_mode, download=self.download
        )
        if distance is not None:
            values["lpips"] = distance
        if blurry is not None:
            _check_pair(blurry, target)
            values["input_psnr"] = psnr(blurry, target, crop=crop)
            values["input_ssim"] = ssim(blurry, target, crop=crop)
        for key, value in values.items():
            getattr(self, key).append(value.to(device=self.device, dtype=torch.float64))
        self.names.extend(names)

    def _values(self, key: str) -> torch.Tensor:
        state = getattr(self, key)
        if isinstance(state, torch.Tensor):  # already concatenated by a distributed sync
            return state.flatten()
        if not state:
            return torch.zeros(0, dtype=torch.float64, device=self.device)
        return torch.cat(state)

    def compute(self) -> dict[str, torch.Tensor]:
        """Means over images (NaN where a metric was never computed), and ``count``."""
        result = {}
        for key in METRIC_KEYS:
            values = self._values(key)
            result[key] = values.nanmean() if values.numel() else values.new_tensor(float("nan"))
        result["count"] = torch.tensor(self._values("psnr").numel(), device=self.device)
        return result

    def summary(self) -> dict[str, float | int | None]:
        """Means over images as Python numbers (``None`` for metrics not available), and ``count``."""
        if not is_distributed():
            result = self.compute()
            summary: dict[str, float | int | None] = {
                key: _to_float(result[key]) for key in METRIC_KEYS
            }
            summary["count"] = int(result["count"])
            return summary
        rows = self.per_image()
        summary = {}
        for key in METRIC_KEYS:
            values = [row[key] for row in rows if row[key] is not None]
            summary[key] = math.fsum(values) / len(values) if values else None
        summary["count"] = len(rows)
        return summary

    def per_image(self) -> list[dict[str, float | str | None]]:
        """One dict per image, in the order of ``update`` calls (under DDP: all processes'
        images, repeats dropped, in the order of the shards)."""
        rows = self._local_rows()
        if not is_distributed():
            return rows
        gathered: list[list[dict] | None] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, rows)
        return _drop_sampler_repeats(
            [
                row
                for i in range(max(map(len, gathered)))
                for part in gathered
                for row in part[i : i + 1]
            ]
        )

    def _local_rows(self) -> list[dict[str, float | str | None]]:
        columns = {key: self._values(key).tolist() for key in METRIC_KEYS}
        rows = []
        for i, name in enumerate(self.names):
            row: dict[str, float | str | None] = {"name": name}
            for key in METRIC_KEYS:
                value = columns[key][i]
                row[key] = None if math.isnan(value) else value
            rows.append(row)
        return rows

    def reset(self) -> None:
        super().reset()
        self.names = []
