"""LPIPS (AlexNet, version 0.1) on the 8-bit images of the evaluation protocol.

The ``lpips`` package ships only the linear heads; the AlexNet trunk is
torchvision's ImageNet checkpoint ``alexnet-owt-7be5be79.pth``, looked for in
``$TORCH_HOME/hub/checkpoints/`` and downloaded there when missing. When it
cannot be had, LPIPS is reported as unavailable (``auto``) or is an error
(``required``), with a message saying where to put the file.
"""

from __future__ import annotations

import copy
import glob
import hashlib
import urllib.request
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from nrknet.errors import ConfigError
from nrknet.metrics.image_quality import PEAK, apply_score_crop, check_pair, quantize_8bit
from nrknet.utils.atomic import atomic_open, remove_stale_temporaries
from nrknet.utils.checks import choice
from nrknet.utils.safe_load import read_checkpoint

LPIPS_MODES = ("auto", "required", "off")
ALEXNET_FILENAME = "alexnet-owt-7be5be79.pth"
ALEXNET_URL = f"https://download.pytorch.org/models/{ALEXNET_FILENAME}"
#: torchvision publishes the first 8 digits in the file name; the file is pinned by all 64.
ALEXNET_SHA256 = "7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02"
DOWNLOAD_TIMEOUT_S = 30.0


class MetricsError(ConfigError):
    """A metric cannot be computed as configured (for example LPIPS required but unavailable)."""


_lpips_models: dict[str, nn.Module] = {}
_lpips_failure: str | None = None
_lpips_warned = False


def check_lpips_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`LPIPS_MODES`, else a ``ConfigError`` naming ``metrics.lpips``."""
    return choice("metrics.lpips", mode, LPIPS_MODES)


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
    """Download ``url`` to ``dest``, atomically; a download whose SHA-256 is not
    :data:`ALEXNET_SHA256` raises and never lands at ``dest``."""
    digest = hashlib.sha256()
    remove_stale_temporaries(dest.parent, glob.escape(dest.name))  # of interrupted downloads
    with atomic_open(dest, "wb") as out:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != ALEXNET_SHA256:
            raise OSError(f"checksum mismatch for {url}")


def _check_alexnet_file(path: Path) -> None:
    """Refuse a file at the AlexNet weights' place that is not torchvision's (checked at every use)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != ALEXNET_SHA256:
        raise MetricsError(
            f"{path} has sha256 {digest.hexdigest()}, not that of torchvision's "
            f"{ALEXNET_FILENAME} ({ALEXNET_SHA256}); delete it and it is downloaded again"
        )


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

    state = read_checkpoint(path)
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
    if check_lpips_mode(mode) == "off":
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
                _check_alexnet_file(path)
                _lpips_models["cpu"] = _build_lpips(path)
            if key not in _lpips_models:
                _lpips_models[key] = copy.deepcopy(_lpips_models["cpu"]).to(device)
            return _lpips_models[key]
        except Exception as exc:  # no network, unreadable file, ...
            reason = (str(exc).strip().splitlines() or [""])[0]
            _lpips_failure = f"{type(exc).__name__}: {reason}. {_how_to_provide(path)}"
    if mode == "required":
        raise MetricsError(f"LPIPS is required but unavailable ({_lpips_failure})")
    if not _lpips_warned:
        _lpips_warned = True
        warnings.warn(
            f"LPIPS unavailable, reported as None/NaN ({_lpips_failure}; metrics.lpips=off "
            "leaves it out)",
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
    check_pair(pred, target)
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
