"""Model checkpoints: one format for trained, converted and exported models.

A checkpoint is a Lightning-style dict: ``state_dict`` with ``model.``-prefixed
keys plus an ``nrknet`` entry carrying the model's constructor arguments, so
the network can be rebuilt without Hydra or Lightning.
"""

from __future__ import annotations

import importlib
import os
import zipfile
from pathlib import Path
from typing import Any

import torch

from nrknet.models.nrknet import NRKNet
from nrknet.utils.atomic import atomic_open

MODEL_PREFIX = "model."


class CheckpointError(ValueError):
    """A file that is not a usable NRKNet checkpoint."""


def read_checkpoint(path: str | os.PathLike, **load_options: Any) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True, **load_options)``; one line on failure.

    The error says what is wrong with the file (missing, a folder, empty, not
    a PyTorch file) instead of torch's multi-line unpickler report.
    """
    path = Path(path)
    if path.is_dir():
        found = sorted(str(p) for p in (path / "checkpoints").glob("*.ckpt"))
        hint = f" (a run folder: give one of {', '.join(found)})" if found else ""
        raise CheckpointError(f"{path} is a folder, not a checkpoint file{hint}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    options = {"map_location": "cpu", "weights_only": True, **load_options}
    try:
        return torch.load(path, **options)
    except Exception as exc:  # noqa: BLE001 - truncated or foreign files fail in many ways
        raise CheckpointError(f"cannot read checkpoint {path}: {load_failure(path, exc)}") from exc


def load_failure(path: Path, exc: Exception) -> str:
    """Why ``torch.load`` could not read ``path``, in a few words."""
    if path.stat().st_size == 0:
        return "the file is empty"
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            pickled = f.read(1) == b"\x80"  # the pickle protocol marker of torch's legacy format
        if not pickled:
            return "not a PyTorch file (corrupt, truncated or another format)"
    text = str(exc)
    # torch's weights_only report spans many lines around the unpickler's own reason
    marker = "Unpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reason = lines[0].split(". ")[0] if lines else type(exc).__name__
    return f"not a checkpoint of plain tensors ({reason})" if marker in str(exc) else reason


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """Write with ``torch.save`` to a temporary file in the same folder, then rename.

    A crash or a full disk leaves either the old file or none, never a
    truncated one that looks complete.
    """
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def save_model(model: torch.nn.Module, path: str | os.PathLike, **extra: Any) -> None:
    """Save ``model`` as a checkpoint the whole framework loads."""
    state = {MODEL_PREFIX + k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_torch_save(
        {"state_dict": state, "nrknet": {"model_config": dict(model.config), **extra}}, path
    )


def model_class(config: dict[str, Any]) -> type[torch.nn.Module]:
    """The class a checkpoint's model config describes: its ``_target_``, or NRKNet when it has none."""
    target = config.pop("_target_", None)
    if target is None:
        return NRKNet
    module_name, _, name = str(target).rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise CheckpointError(f"cannot import the model class {target!r}: {exc}") from exc


def load_model(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> torch.nn.Module:
    """Rebuild the model of a checkpoint written by training or ``nrknet-convert``.

    An NRKNet unless the stored config names another class in ``_target_``
    (the U-Net baseline, :mod:`nrknet.models.unet_baseline`).
    """
    path = Path(path)
    ckpt = read_checkpoint(path, map_location=map_location, weights_only=False)
    meta = ckpt.get("nrknet") if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict) or "model_config" not in meta or "state_dict" not in ckpt:
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
        cls = model_class(config)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    try:  # custom components (atoms, coefficient_head) are rebuilt from their Hydra _target_
        model = cls(**config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild the model it describes: {exc}") from exc
    state = {
        k[len(MODEL_PREFIX) :]: v
        for k, v in ckpt["state_dict"].items()
        if k.startswith(MODEL_PREFIX)
    }
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{path}: weights do not fit the {cls.__name__} it describes ({config}); "
            f"missing: {', '.join(result.missing_keys) or 'none'}; unexpected: {', '.join(result.unexpected_keys) or 'none'}"
        )
    return model
