"""Model checkpoints: one format for trained, converted and exported models.

A checkpoint is a Lightning-style dict: ``state_dict`` with ``model.``-prefixed
keys plus an ``nrknet`` entry carrying the model's constructor arguments, so
the network can be rebuilt without Hydra or Lightning.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from nrknet.errors import CheckpointError
from nrknet.models.nrknet import NRKNet
from nrknet.models.trust import recorded_targets, trusted_class
from nrknet.utils.atomic import atomic_open
from nrknet.utils.safe_load import read_checkpoint

__all__ = [
    "MODEL_PREFIX",
    "CheckpointError",
    "atomic_torch_save",
    "load_model",
    "model_checkpoint",
    "model_class",
    "read_checkpoint",
    "save_model",
]

MODEL_PREFIX = "model."


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """Write with ``torch.save`` to a temporary file in the same folder, then rename.

    A crash or a full disk leaves either the old file or none, never a
    truncated one that looks complete.
    """
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def model_checkpoint(model: torch.nn.Module, **extra: Any) -> dict[str, Any]:
    """The checkpoint of ``model`` (weights and constructor arguments) as a dict of plain data."""
    state = {MODEL_PREFIX + k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {"state_dict": state, "nrknet": {"model_config": dict(model.config), **extra}}


def save_model(model: torch.nn.Module, path: str | os.PathLike, **extra: Any) -> None:
    """Save ``model`` as a checkpoint the whole framework loads."""
    atomic_torch_save(model_checkpoint(model, **extra), path)


def model_class(
    config: dict[str, Any], *, trust_code: bool = False, option: str = "trust_code=true"
) -> type[torch.nn.Module]:
    """The class a checkpoint's model config describes: its ``_target_``, or NRKNet when it has none.

    Every ``_target_`` in the config, nested ones included, is checked by
    :func:`nrknet.models.trust.trusted_class` before anything is built; the
    top-level one is removed from ``config``.
    """
    for setting, target in recorded_targets(config):
        trusted_class(target, trust_code=trust_code, setting=setting, option=option)
    target = config.pop("_target_", None)
    if target is None:
        return NRKNet
    return trusted_class(target, trust_code=trust_code, setting="model", option=option)


def load_model(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    *,
    trust_code: bool = False,
    option: str = "trust_code=true",
) -> torch.nn.Module:
    """Rebuild the model of a checkpoint written by training or ``nrknet-convert``.

    An NRKNet unless the stored config names another class in ``_target_``
    (the U-Net baseline, :mod:`nrknet.models.unet_baseline`). The file is read
    as data (:func:`read_checkpoint`), and a class outside nrknet is built
    only with ``trust_code`` (``option`` is how the caller's user says so).
    """
    path = Path(path)
    ckpt = read_checkpoint(path, map_location=map_location)
    meta = ckpt.get("nrknet") if isinstance(ckpt, dict) else None
    if (
        not isinstance(meta, dict)
        or not isinstance(meta.get("model_config"), dict)
        or not isinstance(ckpt.get("state_dict"), dict)
    ):
        hint = ""
        if isinstance(ckpt, dict) and any(
            str(k).startswith(("GCM.", "RKR.", "module.GCM")) for k in ckpt
        ):
            hint = " It looks like a reference-implementation checkpoint: convert it with `nrknet-convert IN.pth OUT.ckpt`."
        raise CheckpointError(
            f"{path} is not an NRKNet checkpoint (no 'nrknet' model config).{hint}"
        )
    config = dict(meta["model_config"])
    try:
        cls = model_class(config, trust_code=trust_code, option=option)
    except CheckpointError as exc:
        raise type(exc)(f"{path}: {exc}") from exc
    try:  # custom components (atoms, coefficient_head) are rebuilt from their Hydra _target_
        model = cls(**config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild the model it describes: {exc}") from exc
    state = {
        k[len(MODEL_PREFIX) :]: v
        for k, v in ckpt["state_dict"].items()
        if str(k).startswith(MODEL_PREFIX)
    }
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{path}: weights do not fit the {cls.__name__} it describes; "
            f"missing: {', '.join(result.missing_keys) or 'none'}; unexpected: {', '.join(result.unexpected_keys) or 'none'}"
        )
    return model
