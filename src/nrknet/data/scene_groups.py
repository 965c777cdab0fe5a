"""Scene groups of a test set: DPDD's indoor and outdoor scenes, scored as results of their own.

Restormer's DPDD download ships ``indoor_labels.npy`` and ``outdoor_labels.npy``:
1-based indices into the natural-sorted list of ``test_c`` images (``2.png``
before ``10.png``). They are used when they sit in the DPDD root, next to
``test_c/``. ``data.scene_groups`` names list files instead, one per group:

* ``.npy``: an array of 1-based indices;
* any other file: text, one or more entries per line (separated by spaces or
  commas; blank lines and ``#`` comments ignored), each a 1-based index or the
  file name of a ``test_c/source`` image, with or without its extension.

A scene belongs to at most one group; images in no group are scored in the
whole set only. Groups are returned as the image names (the ``name`` of the
per-image scores), so images dropped as unreadable leave the others' groups
intact.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from nrknet.data.io import NRKNetDataError
from nrknet.data.layouts import DPDD_SPLITS, Pair, find_dpdd_root

log = logging.getLogger(__name__)

#: Group name -> the label file Restormer's DPDD download ships, looked for in the DPDD root.
DPDD_LABEL_FILES = {"indoor": "indoor_labels.npy", "outdoor": "outdoor_labels.npy"}

#: Group name -> the names of its images.
SceneGroups = dict[str, frozenset[str]]


class SceneGroupError(NRKNetDataError):
    """A scene-group list is unreadable, malformed or does not fit its test set."""


def dpdd_scene_groups(
    root: str | os.PathLike,
    pairs: Sequence[Pair],
    lists: Mapping[str, str | os.PathLike] | None = None,
    look_for_labels: bool = True,
) -> SceneGroups | None:
    """The scene groups of the DPDD test ``pairs`` (in :func:`scan_dpdd` order), or ``None``.

    ``lists`` maps a group name to its list file (relative paths: to the
    working folder, else to the DPDD root). Without it, and with
    ``look_for_labels``, the :data:`DPDD_LABEL_FILES` in the DPDD root are
    used; when neither is there the split is absent and a log line says so.
    """
    base = find_dpdd_root(root)
    if lists is None:
        if not look_for_labels:
            return None
        lists = _default_label_files(base)
        if lists is None:
            return None
    elif not isinstance(lists, Mapping) or not lists:
        raise SceneGroupError(
            "data.scene_groups must map a group name to a list file (.npy or text), "
            f"e.g. {{indoor: indoor.npy, outdoor: outdoor.txt}}; got {lists!r}"
        )
    names = [name for _, _, name in pairs]
    where = base / DPDD_SPLITS["test"] / "source"
    groups: SceneGroups = {}
    owner: dict[str, Path] = {}
    for group, given in lists.items():
        path = _resolve(Path(str(given)).expanduser(), base)
        members = read_group_list(path, names, where)
        for other, other_path in owner.items():
            shared = members & groups[other]
            if shared:
                raise SceneGroupError(
                    f"scene groups {other!r} ({other_path}) and {group!r} ({path}) share "
                    f"{len(shared)} image(s), e.g. {min(shared)}; a scene belongs to one group"
                )
        groups[str(group)] = members
        owner[str(group)] = path
    return groups


def _default_label_files(base: Path) -> dict[str, Path] | None:
    found = {group: base / name for group, name in DPDD_LABEL_FILES.items()}
    present = [path for path in found.values() if path.is_file()]
    if not present:
        log.info(
            "DPDD test: no indoor/outdoor split (looked for %s; set data.scene_groups to use other lists)",
            " and ".join(str(path) for path in found.values()),
        )
        return None
    if len(present) < len(found):
        missing = [str(path) for path in found.values() if not path.is_file()]
        raise SceneGroupError(
            f"DPDD scene labels: found {present[0]} but not {', '.join(missing)}; "
            "put both label files in the DPDD root, or neither"
        )
    return found


def _resolve(path: Path, base: Path) -> Path:
    if path.is_absolute() or path.exists():
        return path
    return base / path


def read_group_list(path: Path, names: Sequence[str], where: Path) -> frozenset[str]:
    """The names of the images a list file selects among ``names`` (the test images in
    natural-sorted order, found in ``where``); a :class:`SceneGroupError` naming the file
    when it is unreadable, empty, or selects an image that is not there."""
    entries = _read_npy(path) if path.suffix.lower() == ".npy" else _read_text(path)
    if not entries:
        raise SceneGroupError(f"scene group list {path} lists no images")
    stems = set(names)
    members = set()
    for entry in entries:
        if isinstance(entry, int):
            if not 1 <= entry <= len(names):
                raise SceneGroupError(
                    f"scene group list {path}: index {entry} is out of range; expected 1-based "
                    f"indices 1..{len(names)} into the natural-sorted images of {where}"
                )
            members.add(names[entry - 1])
            continue
        stem = entry if entry in stems else Path(entry).stem
        if stem not in stems:
            raise SceneGroupError(
                f"scene group list {path}: {entry!r} is not one of the {len(names)} images of {where}"
            )
        members.add(stem)
    return frozenset(members)


def _read_npy(path: Path) -> list[int]:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SceneGroupError(f"cannot read scene group list {path}: {exc}") from None
    values = np.asarray(array).ravel()
    integral = values.dtype.kind in "iu" or (
        values.dtype.kind == "f"
        and np.all(np.isfinite(values))
        and np.all(values == values.round())
    )
    if not integral:
        raise SceneGroupError(
            f"scene group list {path}: expected an array of 1-based integer indices, "
            f"got dtype {values.dtype}"
        )
    return [int(v) for v in values]


def _read_text(path: Path) -> list[int | str]:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise SceneGroupError(f"cannot read scene group list {path}: {reason}") from None
    entries: list[int | str] = []
    for line in lines:
        line = line.split("#", 1)[0]
        for token in re.split(r"[,\s]+", line.strip()):
            if token:
                entries.append(int(token) if token.isdigit() else token)
    return entries
