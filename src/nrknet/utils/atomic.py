"""Atomic writes: every file and folder the framework writes appears whole or not at all.

A writer gets a temporary path next to the destination (same file system, so
the final ``os.replace`` is atomic), writes there, and the temporary is renamed
over the destination only when the writer finished without error. A crash, a
kill or a full disk leaves the old content or nothing, never a truncated file
that looks complete. A replaced file keeps its permissions. Temporaries are
hidden and name their writer (``.NAME.<pid>-<host>-<random>.tmp``), so
:func:`remove_stale_temporaries` can clear what a killed process left, and
only that: a temporary whose writer still runs, or ran on another machine
sharing the folder, is left alone.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

TMP_SUFFIX = ".tmp"


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def temporary_sibling(path: Path) -> Path:
    """A fresh hidden name in ``path``'s folder: ``.NAME.<pid>-<host>-<random>.tmp``."""
    token = f"{os.getpid()}-{_host_tag()}-{uuid.uuid4().hex[:8]}"
    return path.with_name(f".{path.name}.{token}{TMP_SUFFIX}")


def writer_has_ended(temporary: Path) -> bool:
    """Whether the process that wrote ``temporary`` has ended (or is this one), as far as can be told.

    A temporary of another machine, or whose name records no writer, counts
    as still being written: it is never removed from here.
    """
    token = temporary.name[: -len(TMP_SUFFIX)].rsplit(".", 1)[-1]
    parts = token.split("-")  # <pid>-<host>-<random>, or <pid>-<random> as older versions wrote
    if len(parts) not in (2, 3) or not parts[0].isdigit():
        return False
    if len(parts) == 3 and parts[1] != _host_tag():
        return False
    pid = int(parts[0])
    if pid == os.getpid():  # a leftover of an earlier process with this id
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # e.g. no permission to signal it: it exists
        return False
    return False


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write ``path`` through; rename it into place on success.

    Works for files and for folders: when the writer leaves a folder at the
    temporary path, an existing destination folder is moved aside, replaced,
    then deleted. On any exception the temporary is removed and the
    destination is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        if tmp.is_dir():
            _replace_folder(tmp, path)
        else:
            if fsync and tmp.exists():
                _fsync_file(tmp)
            if path.is_file():
                shutil.copymode(path, tmp)
            os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def _replace_folder(tmp: Path, path: Path) -> None:
    if path.exists():
        old = temporary_sibling(path)
        os.replace(path, old)
        os.replace(tmp, path)
        _remove(old)
    else:
        os.replace(tmp, path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **kwargs) -> Iterator[IO]:
    """``open(path, mode)`` whose content replaces ``path`` only when the block succeeds."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_open writes whole files; mode must start with 'w', got {mode!r}")
    with atomic_path(path, fsync=False) as tmp, open(tmp, mode, **kwargs) as f:
        if Path(path).is_file():  # the replaced file's permissions, before any content is written
            os.fchmod(f.fileno(), stat.S_IMODE(os.stat(path).st_mode))
        yield f
        f.flush()
        os.fsync(f.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    with atomic_open(path, "w", encoding=encoding) as f:
        f.write(text)
    return Path(path)


def remove_stale_temporaries(folder: str | os.PathLike, name: str = "*") -> list[Path]:
    """Delete the temporaries that ended writers left for ``name`` (a glob) in ``folder``.

    A temporary whose writer still runs, or that another machine wrote, is kept
    (:func:`writer_has_ended`).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = sorted(p for p in folder.glob(f".{name}.*{TMP_SUFFIX}") if writer_has_ended(p))
    for p in stale:
        _remove(p)
    return stale
