"""``resolve_checkpoint``: a registry name fetched, checked and converted into a cache, or a path.

A name of the registry (a plain word such as ``nrknet-synthetic``) always
means that entry, whatever files the working directory holds; anything else
is a path, so a file named like an entry is given as ``./nrknet-synthetic``.
Every file taken from the registry is checked against its sha256 each time it
is used, not only when it was downloaded.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import torch

from nrknet.errors import CheckpointError
from nrknet.weights.download import DownloadError, download, sha256_of
from nrknet.weights.registry import Registry, WeightsEntry, default_registry

log = logging.getLogger("nrknet.weights")

HOME_ENV = "NRKNET_HOME"


def cache_home() -> Path:
    """``$NRKNET_HOME``, or ``~/.cache/nrknet``."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".cache" / "nrknet").expanduser()


def download_path(entry: WeightsEntry, home: Path | None = None) -> Path:
    """Where the file of a download entry is kept (and where to put it by hand)."""
    return (home or cache_home()) / "weights" / entry.name / entry.filename


def converted_path(entry: WeightsEntry, home: Path | None = None) -> Path:
    """Where the RGB nrknet checkpoint converted from a reference file is written."""
    return (home or cache_home()) / "weights" / entry.name / f"{entry.name}.ckpt"


def bundled_checkpoint(name: str, registry: Registry | None = None) -> Path:
    """The file of the bundled weights ``name``, checked against its sha256."""
    registry = registry if registry is not None else default_registry()
    entry = registry.get(name)
    if entry is None or entry.kind != "bundled":
        raise CheckpointError(f"no bundled weights named {name!r}")
    return _verified(entry, entry.bundled_path, "reinstall the package")


def resolve_checkpoint(
    name_or_path: str | os.PathLike,
    registry: Registry | None = None,
    home: str | os.PathLike | None = None,
    progress: bool = True,
) -> Path:
    """A local nrknet checkpoint for ``name_or_path``: a registry name (a ``str``), else a path.

    A name is downloaded into the cache (``$NRKNET_HOME``, default
    ``~/.cache/nrknet``) on first use and reused afterwards without any network
    access; its sha256 is checked at every use where the registry knows it, and
    a file in the authors' format is converted (again at every use, from the
    checked file). Anything that is not a name is a path and must exist.
    """
    registry = registry if registry is not None else default_registry()
    entry = registry.get(name_or_path) if isinstance(name_or_path, str) else None
    if entry is None:
        path = Path(name_or_path).expanduser()
        if path.exists():
            return path
        names = ", ".join(registry) or "none"
        raise CheckpointError(
            f"checkpoint not found: {name_or_path} is neither a file nor a known name (known: {names})"
        )
    home = Path(home).expanduser() if home is not None else cache_home()
    if entry.kind == "bundled":
        source = bundled_checkpoint(entry.name, registry)
    else:
        source = _fetch(entry, home, progress)
    if entry.format == "nrknet":
        return source
    return _converted(entry, source, home)


def _verified(entry: WeightsEntry, path: Path, remedy: str) -> Path:
    """``path``, once it exists and has the sha256 the registry gives for ``entry`` (if any)."""
    bundled = entry.kind == "bundled"
    if not path.is_file():
        where = "is missing from the installation" if bundled else "is missing"
        raise CheckpointError(f"weights '{entry.name}': the file {path} {where}; {remedy}")
    if entry.sha256 is not None and (actual := sha256_of(path)) != entry.sha256.lower():
        expected = entry.sha256.lower()
        if bundled:
            raise CheckpointError(
                f"weights '{entry.name}': the bundled file {path} has sha256 {actual}, "
                f"not the expected {expected}; {remedy}"
            )
        raise CheckpointError(
            f"{path}: sha256 {actual} is not the expected {expected} of weights "
            f"'{entry.name}'; {remedy}"
        )
    return path


def _fetch(entry: WeightsEntry, home: Path, progress: bool) -> Path:
    target = download_path(entry, home)
    if target.is_file():
        return _verified(entry, target, "delete it, and it is downloaded again")
    if entry.url is None:
        raise CheckpointError(
            f"weights '{entry.name}' have no known download link: get {entry.filename} from "
            f"{entry.page or 'its authors'} and put it at {target}"
        )
    log.info("downloading weights '%s' from %s to %s", entry.name, entry.url, target)
    try:
        download(entry.url, target, sha256=entry.sha256, progress=progress)
    except DownloadError as exc:
        raise CheckpointError(f"{exc}; download it by other means and put it at {target}") from exc
    return target


def _converted(entry: WeightsEntry, source: Path, home: Path) -> Path:
    """The RGB checkpoint of a reference file, converted from the checked file at every use.

    The conversion is deterministic; the cached file is rewritten only when its
    bytes differ (the first time, or after it was changed), so a converted file
    is never trusted for being there.
    """
    from nrknet.utils.atomic import atomic_write_bytes
    from nrknet.weights.checkpoint import model_checkpoint, read_checkpoint
    from nrknet.weights.reference import REFERENCE_TO_OURS, from_official

    target = converted_path(entry, home)
    model = from_official(read_checkpoint(source))
    ours = model.state_dict()
    check_shapes(entry, {ref: ours[key] for ref, key in REFERENCE_TO_OURS.items()}, source)
    buffer = io.BytesIO()
    torch.save(model_checkpoint(model, source=entry.name, converted_from="reference"), buffer)
    if not target.is_file() or target.read_bytes() != buffer.getvalue():
        atomic_write_bytes(target, buffer.getvalue())
        log.info("converted %s to %s", source, target)
    return target


def check_shapes(entry: WeightsEntry, state: dict[str, torch.Tensor], source: Path) -> None:
    """Fail in one line when the tensors (by the file's own names) are not those the registry announces."""
    expected = entry.shapes
    if not expected:
        return
    wrong = [
        f"{key} {tuple(state[key].shape) if key in state else 'missing'} (expected {shape})"
        for key, shape in expected.items()
        if key not in state or tuple(state[key].shape) != shape
    ]
    if wrong:
        raise CheckpointError(
            f"{source} does not hold the weights '{entry.name}' announces: {'; '.join(wrong)}"
        )
