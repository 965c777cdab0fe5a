"""``resolve_checkpoint``: a path as is, or a registry name fetched and converted once into a cache."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from nrknet.checkpoint import CheckpointError
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
    """Where the RGB nrknet checkpoint converted from a reference file is kept."""
    return (home or cache_home()) / "weights" / entry.name / f"{entry.name}.ckpt"


def resolve_checkpoint(
    name_or_path: str | os.PathLike,
    registry: Registry | None = None,
    home: str | os.PathLike | None = None,
    progress: bool = True,
) -> Path:
    """A local nrknet checkpoint for ``name_or_path``.

    An existing path is returned as is. A registry name is downloaded into the
    cache (``$NRKNET_HOME``, default ``~/.cache/nrknet``) on first use, its
    sha256 checked where known, converted once when it is the authors' format,
    and reused afterwards without any network access.
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    registry = registry if registry is not None else default_registry()
    entry = registry.get(str(name_or_path))
    if entry is None:
        names = ", ".join(registry) or "none"
        raise CheckpointError(
            f"checkpoint not found: {name_or_path} is neither a file nor a known name (known: {names})"
        )
    home = Path(home).expanduser() if home is not None else cache_home()
    if entry.kind == "bundled":
        source = entry.bundled_path
        if not source.is_file():
            raise CheckpointError(
                f"weights '{entry.name}': the bundled file {source} is missing from the installation"
            )
        if entry.sha256 is not None and (actual := sha256_of(source)) != entry.sha256.lower():
            raise CheckpointError(
                f"weights '{entry.name}': the bundled file {source} has sha256 {actual}, "
                f"not the expected {entry.sha256.lower()}; reinstall the package"
            )
    else:
        source = _fetch(entry, home, progress)
    if entry.format == "nrknet":
        return source
    return _converted(entry, source, home)


def _fetch(entry: WeightsEntry, home: Path, progress: bool) -> Path:
    target = download_path(entry, home)
    if target.is_file() or converted_path(entry, home).is_file():
        return target
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
    """The cached RGB checkpoint of a reference file, converted on first use."""
    from nrknet.checkpoint import read_checkpoint, save_model
    from nrknet.convert import REFERENCE_TO_OURS, from_official

    target = converted_path(entry, home)
    if target.is_file():
        return target
    if entry.sha256 is not None and (actual := sha256_of(source)) != entry.sha256.lower():
        raise CheckpointError(
            f"{source}: sha256 {actual} is not the expected {entry.sha256.lower()} of weights "
            f"'{entry.name}'; delete it and try again"
        )
    state = read_checkpoint(source)
    model = from_official(state)
    ours = model.state_dict()
    check_shapes(entry, {ref: ours[key] for ref, key in REFERENCE_TO_OURS.items()}, source)
    save_model(model, target, source=entry.name, converted_from="reference")
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
