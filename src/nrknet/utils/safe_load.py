"""The one reader of files that hold weights or checkpoints: tensors and plain data, never code.

Every checkpoint, converted weight file, download and bundled model is read
by :func:`read_checkpoint`, which unpickles with ``weights_only=True``:
tensors, numbers, strings, lists and dicts come back, and a file that asks
for anything else (the way a pickle runs code) is refused with one line that
names the file and says why. See ``docs/security.md``.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import torch

from nrknet.errors import CheckpointError

__all__ = ["read_checkpoint"]


def read_checkpoint(
    path: str | os.PathLike, *, map_location: Any = "cpu", mmap: bool = False
) -> Any:
    """The content of a PyTorch file at ``path``, read with ``weights_only=True``.

    Raises :class:`~nrknet.errors.CheckpointError` (one line: the file, and
    missing, a folder, empty, not a PyTorch file, or holding objects beyond
    tensors and plain data).
    """
    path = Path(path)
    if path.is_dir():
        found = sorted(str(p) for p in (path / "checkpoints").glob("*.ckpt"))
        hint = f" (a run folder: give one of {', '.join(found)})" if found else ""
        raise CheckpointError(f"{path} is a folder, not a checkpoint file{hint}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        mmap = mmap and zipfile.is_zipfile(path)  # torch maps only its zip format
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - truncated, foreign or hostile files fail in many ways
        raise CheckpointError(f"cannot read checkpoint {path}: {_why(path, exc)}") from exc


def _why(path: Path, exc: Exception) -> str:
    """Why ``torch.load`` could not read ``path``, in a few words."""
    if path.stat().st_size == 0:
        return "the file is empty"
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            pickled = f.read(1) == b"\x80"  # the pickle protocol marker of torch's legacy format
        if not pickled:
            return "not a PyTorch file (corrupt, truncated or another format)"
    text = str(exc)
    if "Weights only load failed" not in text:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return lines[0].split(". ")[0] if lines else type(exc).__name__
    # torch's report spans paragraphs of advice around the unpickler's own reason
    text = text.split("Unpickler error:", 1)[-1]
    reasons = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith(("Check the documentation", "Weights only"))
    ]
    reason = reasons[0].split(". ")[0].rstrip(".") if reasons else "unsupported content"
    return (
        f"it holds objects beyond tensors and plain data ({reason}); it was not loaded, "
        "since unpickling them could run code"
    )
