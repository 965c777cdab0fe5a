"""Named weights: what ``registry.yaml`` says about each known checkpoint."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nrknet.errors import CheckpointError

REGISTRY_FILE = Path(__file__).with_name("registry.yaml")
#: What a weights name is made of: letters, digits, ``.``, ``_`` and ``-``, starting with a
#: letter or digit, so that it is never a path and stays one folder inside the cache.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
KINDS = ("download", "bundled")
FORMATS = ("reference", "nrknet")


@dataclass(frozen=True)
class WeightsEntry:
    """One named checkpoint (see the header of ``registry.yaml`` for the fields)."""

    name: str
    kind: str
    format: str
    filename: str
    description: str = ""
    url: str | None = None
    page: str | None = None
    sha256: str | None = None
    model: Mapping[str, Any] = field(default_factory=dict)
    files_dir: Path | None = None  # where bundled files live

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v) for k, v in (self.model.get("shapes") or {}).items()}

    @property
    def bundled_path(self) -> Path:
        if self.files_dir is None:
            raise CheckpointError(f"weights '{self.name}': bundled entry without a files folder")
        return self.files_dir / self.filename


class Registry:
    """The entries of one registry file; bundled files are looked up in ``files/`` beside it."""

    def __init__(self, entries: Mapping[str, WeightsEntry], source: Path | None = None) -> None:
        self.entries = dict(entries)
        self.source = source

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def get(self, name: str) -> WeightsEntry | None:
        return self.entries.get(name)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike = REGISTRY_FILE) -> Registry:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise CheckpointError(f"cannot read the weights registry {path}: {exc}") from exc
        raw = data.get("entries") if isinstance(data, dict) else None
        if not isinstance(raw, dict):
            raise CheckpointError(f"{path}: expected a mapping 'entries: {{NAME: {{...}}}}'")
        files_dir = path.parent / "files"
        return cls(
            {name: _parse_entry(path, name, spec, files_dir) for name, spec in raw.items()},
            source=path,
        )


def _parse_entry(path: Path, name: Any, spec: Any, files_dir: Path) -> WeightsEntry:
    where = f"{path}: entry '{name}'"
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise CheckpointError(
            f"{where}: a name is a plain word of letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit)"
        )
    if not isinstance(spec, dict):
        raise CheckpointError(f"{where}: expected a mapping of fields, got {type(spec).__name__}")
    known = set(WeightsEntry.__dataclass_fields__) - {"name", "files_dir"}
    if unknown := sorted(set(spec) - known):
        raise CheckpointError(f"{where}: unknown field(s) {', '.join(unknown)}")
    if spec.get("kind") not in KINDS:
        raise CheckpointError(f"{where}: kind must be one of {', '.join(KINDS)}")
    if spec.get("format") not in FORMATS:
        raise CheckpointError(f"{where}: format must be one of {', '.join(FORMATS)}")
    if not isinstance(spec.get("filename"), str) or not NAME_PATTERN.fullmatch(spec["filename"]):
        raise CheckpointError(
            f"{where}: filename must be a plain file name (letters, digits, '.', '_', '-')"
        )
    sha = spec.get("sha256")
    if sha is not None and (len(str(sha)) != 64 or not _is_hex(str(sha))):
        raise CheckpointError(f"{where}: sha256 must be 64 hex digits or null")
    return WeightsEntry(name=name, files_dir=files_dir, **spec)


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True


_default: Registry | None = None


def default_registry() -> Registry:
    """The registry that ships with the package (read once)."""
    global _default
    if _default is None:
        _default = Registry.from_yaml(REGISTRY_FILE)
    return _default
