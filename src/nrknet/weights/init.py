"""``init_from``: start training from the weights of a checkpoint (optimizer, schedule and epoch stay fresh).

Three kinds of file are read: a Lightning checkpoint of this project or an
``nrknet-convert`` output (both ``state_dict`` with ``model.``-prefixed keys),
and the authors' ``.pth`` (converted on the fly, BGR to RGB).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nrknet.utils.config import config_differences
from nrknet.weights.checkpoint import MODEL_PREFIX, CheckpointError, read_checkpoint

log = logging.getLogger("nrknet.weights")

# Modules that moved when the package took its present folders: a checkpoint written
# before records the old paths in its settings, and a resume compares them as the new.
MOVED_MODULES = {
    "nrknet.module": "nrknet.training.module",
    "nrknet.losses": "nrknet.training.losses",
    "nrknet.schedules": "nrknet.training.schedules",
    "nrknet.callbacks": "nrknet.training.callbacks",
    "nrknet.ema": "nrknet.training.ema",
    "nrknet.batch_log": "nrknet.training.batch_log",
    "nrknet.wandb_logger": "nrknet.training.wandb_logger",
    "nrknet.restarts": "nrknet.training.restarts",
    "nrknet.compile_regions": "nrknet.accel.compile",
    "nrknet.tiling": "nrknet.inference.tiling",
    "nrknet.checkpoint": "nrknet.weights.checkpoint",
    "nrknet.viz": "nrknet.analysis.figures",
    "nrknet.reporting": "nrknet.analysis.reporting",
}


def current_targets(recorded: Any) -> Any:
    """``recorded`` with every ``_target_`` of a moved module written as its present path."""
    if isinstance(recorded, dict):
        return {
            key: _current_target(value) if key == "_target_" else current_targets(value)
            for key, value in recorded.items()
        }
    if isinstance(recorded, list):
        return [current_targets(value) for value in recorded]
    return recorded


def _current_target(target: Any) -> Any:
    if not isinstance(target, str):
        return target
    module, _, name = target.rpartition(".")
    return f"{MOVED_MODULES[module]}.{name}" if module in MOVED_MODULES else target


@dataclass
class LoadReport:
    """What ``load_weights`` did: the keys it loaded and the three kinds it could not."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # "key: file shape vs model shape"

    @property
    def complete(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def problems(self) -> str:
        return "; ".join(
            f"{label}: {', '.join(keys)}"
            for label, keys in (
                ("missing", self.missing),
                ("unexpected", self.unexpected),
                ("shape mismatch", self.mismatched),
            )
            if keys
        )


def read_model_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The network's state dict (our names, RGB) from any of the three supported files."""
    path = Path(path)
    ckpt = read_checkpoint(path)
    inner = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if isinstance(inner, dict) and any(str(k).startswith(MODEL_PREFIX) for k in inner):
        return {k[len(MODEL_PREFIX) :]: v for k, v in inner.items() if k.startswith(MODEL_PREFIX)}
    from nrknet.weights.reference import from_official

    try:
        return from_official(ckpt).state_dict()
    except CheckpointError as exc:
        raise CheckpointError(
            f"{path} is neither an nrknet checkpoint (state_dict with '{MODEL_PREFIX}' keys) "
            f"nor the authors' weights ({exc})"
        ) from exc


def load_weights(
    model: nn.Module, path: str | os.PathLike, strict: bool = True, setting: str = "init_from"
) -> LoadReport:
    """Copy the weights of ``path`` into ``model``.

    ``strict``: every key must be present on both sides with the same shape,
    otherwise nothing is loaded and one line names the file and the keys.
    Otherwise the tensors that fit are loaded and the rest is logged.
    """
    weights = read_model_weights(path)
    own = model.state_dict()
    report = LoadReport(
        missing=sorted(k for k in own if k not in weights),
        unexpected=sorted(k for k in weights if k not in own),
    )
    fitting = {}
    for key, value in weights.items():
        if key not in own:
            continue
        if value.shape != own[key].shape:
            report.mismatched.append(
                f"{key} {tuple(value.shape)} vs {tuple(own[key].shape)} in the model"
            )
        else:
            fitting[key] = value
    report.loaded = sorted(fitting)
    report.mismatched.sort()
    if strict and not report.complete:
        raise CheckpointError(
            f"{setting}={path}: the weights do not fit the model; {report.problems()} "
            f"(set init_strict=false to load only what fits)"
        )
    model.load_state_dict(fitting, strict=False)
    log.info("%s: loaded %d of %d tensors from %s", setting, len(fitting), len(own), path)
    if not report.complete:
        for label, keys in (
            ("missing from the file (left as initialised)", report.missing),
            ("unexpected (ignored)", report.unexpected),
            ("shape mismatch (left as initialised)", report.mismatched),
        ):
            if keys:
                log.warning("%s: %s: %s", setting, label, ", ".join(keys))
    return report


def apply_init_from(
    model: nn.Module, init_from: str | None, strict: bool = True, resume: str | None = None
) -> LoadReport | None:
    """``init_from`` (a path or a registry name) loaded into ``model``, unless the run resumes.

    A resumed run takes its weights from the resumed checkpoint, so a requeued
    fine-tuning job continues where it stopped instead of starting over.
    """
    if not init_from:
        return None
    if resume is not None:
        log.info("resuming from %s: init_from=%s is not applied", resume, init_from)
        return None
    from nrknet.weights.cache import resolve_checkpoint

    return load_weights(model, resolve_checkpoint(init_from), strict=strict)


def require_training_state(path: str | os.PathLike, setting: str = "ckpt_path") -> str:
    """``path`` if it can resume a run; a one-line error if it holds weights only, is no
    checkpoint, or holds objects beyond tensors and plain data (never unpickled)."""
    try:
        ckpt = read_checkpoint(path, mmap=True)
    except CheckpointError as exc:
        raise CheckpointError(f"{setting}: {exc}") from exc
    if not (isinstance(ckpt, dict) and "state_dict" in ckpt and "optimizer_states" in ckpt):
        raise CheckpointError(
            f"{setting}={path} holds weights only, no training state to resume; "
            f"start from its weights with init_from={path}"
        )
    return str(path)


def require_same_run(
    model: nn.Module,
    path: str | os.PathLike,
    settings: dict[str, Any] | None = None,
    setting: str = "ckpt_path",
) -> None:
    """A one-line error when the checkpoint to resume is not a run of ``model`` with ``settings``.

    Resuming restores every tensor as it was; a checkpoint of another width,
    depth or variant cannot be resumed, only used as a start (``init_from``).
    ``settings`` (resolved config groups, e.g. ``{"loss": {...}}``) must equal
    those the checkpoint recorded, where it recorded them.
    """
    ckpt = read_checkpoint(path, mmap=True)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        return
    recorded = ckpt.get("nrknet") or {}
    stored = {k: v for k, v in ckpt["state_dict"].items() if str(k).startswith(MODEL_PREFIX)}
    own = {MODEL_PREFIX + k: v for k, v in model.state_dict().items()}
    differing = sorted(
        k for k in stored.keys() | own.keys()
        if k not in stored or k not in own or stored[k].shape != own[k].shape
    )  # fmt: skip
    if differing:
        changes = config_differences(
            recorded.get("model_config") or {}, dict(getattr(model, "config", {})), "model"
        )
        what = _described(changes) or f"{len(differing)} tensors differ, e.g. {differing[0]}"
        raise CheckpointError(
            f"{setting}={path} holds another network ({what}); resume with the settings it was "
            f"trained with, or start from its weights with init_from={path} init_strict=false"
        )
    trained_with = current_targets(recorded.get("run_settings"))
    if settings is None or not trained_with:  # not asked, or recorded before settings were
        return
    changes = [
        change
        for group in settings
        if group in trained_with
        for change in config_differences(trained_with[group], settings[group], group)
    ]
    if changes:
        raise CheckpointError(
            f"{setting}={path} was trained with other settings ({_described(changes)}); resume "
            "with the settings it was trained with, or set resume_check=false to continue with these"
        )


def _described(changes: list[tuple[str, Any, Any]], shown: int = 4) -> str:
    text = "; ".join(
        f"{key}={old} in the checkpoint, {new} here" for key, old, new in changes[:shown]
    )
    return text + (" ..." if len(changes) > shown else "")
