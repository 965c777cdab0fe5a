"""A checkpoint ready for inference: on its device, in eval mode, with the speed paths switched on."""

from __future__ import annotations

import os

import torch

from nrknet.accel import accelerate
from nrknet.models.nrknet import NRKNet
from nrknet.weights import resolve_checkpoint
from nrknet.weights.checkpoint import CheckpointError, load_model

__all__ = ["autocast_dtype_for", "load_inference_model", "resolve_device"]


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else the CPU; otherwise any name :class:`torch.device` takes.

    Raises :class:`ValueError` when a CUDA device is asked for and CUDA is not available.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device


def autocast_dtype_for(device: torch.device, half: bool) -> torch.dtype | None:
    """float16 when ``half`` on CUDA; ``None`` (plain float32) otherwise.

    Half precision means autocast: the weights and the RKR operator stay
    float32. The CPU always runs float32, where float16 is slow.
    """
    return torch.float16 if half and device.type == "cuda" else None


def load_inference_model(
    ckpt: str | os.PathLike,
    device: torch.device,
    accel: str | bool = "auto",
    *,
    trust_code: bool = False,
    option: str = "trust_code=true",
) -> NRKNet:
    """Load ``ckpt`` onto ``device`` in eval mode, accelerated per ``accel`` (see :mod:`nrknet.accel`).

    ``ckpt`` is a name of the weights registry (a ``str``) or a path
    (:func:`nrknet.weights.resolve_checkpoint`); classes outside nrknet are
    built only with ``trust_code`` (:func:`nrknet.weights.checkpoint.load_model`).

    Raises :class:`CheckpointError` for any file this version cannot rebuild
    a model from, naming the file.
    """
    try:
        model = load_model(
            resolve_checkpoint(ckpt), map_location="cpu", trust_code=trust_code, option=option
        )
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. a model config this version cannot build
        raise CheckpointError(f"cannot load checkpoint {ckpt}: {exc}") from exc
    model = model.eval().to(device=device)
    return accelerate(model, accel, device=device)
