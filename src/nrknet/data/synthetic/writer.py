"""Writing a synthetic set to disk: DPDD layout, ``meta.json``, reuse of a finished set.

A set is rendered into a hidden temporary folder beside its destination and
renamed into place only once complete (:func:`nrknet.utils.atomic.atomic_path`),
``meta.json`` written last: a killed generation never leaves a set that looks
complete, and an existing set survives a failed regeneration.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from nrknet.data.io import NRKNetDataError
from nrknet.data.synthetic.render import DEPTH_PNG_SCALE, SynthSettings, render_pair
from nrknet.data.synthetic.scenes import PHOTO_SPLITS, TEXTURE_SPLITS
from nrknet.utils.atomic import atomic_path, remove_stale_temporaries

GENERATOR_NAME = "nrknet-synth"
META_FILE = "meta.json"
SPLIT_DIRS = {"train": "train_c", "val": "val_c", "test": "test_c"}
SUBFOLDERS = ("source", "target", "depth")


def _file_name(index: int) -> str:
    return f"{index:05d}.png"


def _write_png(path: Path, rgb_q: np.ndarray) -> None:
    img = rgb_q[:, :, ::-1] if rgb_q.ndim == 3 else rgb_q
    if not cv2.imwrite(str(path), np.ascontiguousarray(img)):
        raise OSError(f"cannot write {path}")


def _render_and_write(args: tuple[SynthSettings, str, int, str]) -> tuple[str, int, dict[str, Any]]:
    settings, split, index, folder = args
    pair = render_pair(settings, split, index)
    base = Path(folder) / SPLIT_DIRS[split]
    name = _file_name(index)
    _write_png(base / "source" / name, pair.blurry)
    _write_png(base / "target" / name, pair.sharp)
    _write_png(base / "depth" / name, pair.depth)
    return split, index, {"name": name, **pair.info}


def read_meta(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The ``meta.json`` of a generated set, or ``None`` if absent or unreadable."""
    path = Path(out_dir) / META_FILE
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def is_complete_dataset(out_dir: str | os.PathLike, settings: SynthSettings) -> bool:
    """Whether ``out_dir`` holds a finished set generated with exactly these settings."""
    out = Path(out_dir)
    meta = read_meta(out)
    if (
        not meta
        or meta.get("generator") != GENERATOR_NAME
        or meta.get("settings") != settings.as_meta()
    ):
        return False
    for split, n in settings.counts().items():
        for sub in SUBFOLDERS:
            folder = out / SPLIT_DIRS[split] / sub
            if not folder.is_dir() or len(list(folder.glob("*.png"))) != n:
                return False
    return True


def _files_not_written_by_the_generator(out: Path, meta: dict[str, Any]) -> list[Path]:
    """What in ``out`` the generation recorded in ``meta`` did not make: files, folders, links."""
    if not meta or not out.is_dir():
        return []
    written = {out / META_FILE}
    for split_dir, records in (meta.get("images") or {}).items():
        written.add(out / split_dir)
        for sub in SUBFOLDERS:
            written.add(out / split_dir / sub)
            written.update(out / split_dir / sub / _file_name(i) for i in range(len(records)))
    return sorted(p for p in out.rglob("*") if p not in written or p.is_symlink())


def _refuse_to_delete_foreign_files(out: Path, meta: dict[str, Any]) -> None:
    """Raise unless replacing ``out`` (a set made as ``meta`` records, or nothing) loses no one's files."""
    if not out.is_dir():
        return
    if meta.get("generator") != GENERATOR_NAME and any(out.iterdir()):
        raise NRKNetDataError(
            f"cannot generate into {out}: the folder is not empty and is not a synthetic set "
            f"made by {GENERATOR_NAME} (no {META_FILE}); choose a new or empty folder"
        )
    if foreign := _files_not_written_by_the_generator(out, meta):
        shown = ", ".join(str(p.relative_to(out)) for p in foreign[:3])
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise NRKNetDataError(
            f"cannot regenerate {out} with other settings: it holds files that "
            f"{GENERATOR_NAME} did not write ({shown}{more}), which replacing the set would "
            "delete; move them away or choose another folder"
        )


@contextlib.contextmanager
def _progress(enabled: bool, total: int, description: str) -> Iterator[Callable[[], None]]:
    if not enabled or total == 0:
        yield lambda: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda: bar.advance(task)


def generate_dataset(
    out_dir: str | os.PathLike,
    settings: SynthSettings,
    *,
    workers: int = 1,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """Generate the set ``settings`` describe in DPDD layout under ``out_dir``; return its path.

    Layout: ``{train_c,val_c,test_c}/{source,target,depth}/NNNNN.png`` (source
    is blurry, target sharp, depth 16-bit in thousandths of a depth unit) and
    ``meta.json`` (settings plus per-image scene kind, focus, aperture, PSF
    shape and CoC range).

    If ``out_dir`` already holds a complete set with the same settings it is
    reused as is (unless ``force``). A set generated here with other settings
    is regenerated and replaced. A non-empty folder that is not a generated
    set is never touched: :class:`~nrknet.data.io.NRKNetDataError` is raised.

    Generation is atomic: files are rendered into a temporary sibling folder
    that is renamed into place only once complete (``meta.json`` written
    last), so an interrupted run never leaves a set that looks complete.
    ``workers`` > 1 renders in that many processes (same files). Processes that
    generate into one parent folder at once (the jobs of a parallel sweep) take
    turns: the first renders, the others then find the set complete.
    """
    out = Path(out_dir).expanduser().absolute()
    if not force and is_complete_dataset(out, settings):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    # a lock on the parent folder itself, so that nothing is left behind in it
    lock = os.open(out.parent, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and is_complete_dataset(out, settings):
            return out
        return _generate(out, settings, workers=workers, progress=progress)
    finally:
        os.close(lock)  # releases the lock


def _generate(out: Path, settings: SynthSettings, *, workers: int, progress: bool) -> Path:
    if out.exists() and not out.is_dir():
        raise NRKNetDataError(f"cannot generate into {out}: it exists and is not a folder")
    previous = read_meta(out) or {}
    _refuse_to_delete_foreign_files(out, previous)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out.parent, glob.escape(out.name))  # of generations that were killed
    start = time.perf_counter()
    with atomic_path(out) as tmp:
        for split in SPLIT_DIRS:
            for sub in SUBFOLDERS:
                (tmp / SPLIT_DIRS[split] / sub).mkdir(parents=True)
        jobs = [
            (settings, split, i, str(tmp))
            for split, n in settings.counts().items()
            for i in range(n)
        ]
        images: dict[str, list[dict[str, Any]]] = {split: [] for split in SPLIT_DIRS}
        with _progress(progress, len(jobs), f"rendering {len(jobs)} pairs") as advance:
            if workers > 1 and len(jobs) > 1:
                with ProcessPoolExecutor(max_workers=int(workers)) as pool:
                    for split, _, rec in pool.map(_render_and_write, jobs, chunksize=2):
                        images[split].append(rec)
                        advance()
            else:
                for job in jobs:
                    split, _, rec = _render_and_write(job)
                    images[split].append(rec)
                    advance()
        meta = {
            "generator": GENERATOR_NAME,
            "settings": settings.as_meta(),
            "layout": {
                "splits": SPLIT_DIRS,
                "source": "blurry (rendered)",
                "target": "sharp",
                "depth": f"uint16 PNG, depth * {DEPTH_PNG_SCALE:g}",
            },
            "photo_splits": {k: list(v) for k, v in PHOTO_SPLITS.items()},
            "texture_splits": {k: list(v) for k, v in TEXTURE_SPLITS.items()},
            "elapsed_s": round(time.perf_counter() - start, 3),
            "images": {SPLIT_DIRS[k]: v for k, v in images.items()},
        }
        # Written last, inside the temporary folder: it is what marks a set complete.
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
        # again just before the old set is replaced: files put there while this one rendered
        _refuse_to_delete_foreign_files(out, previous)
    return out
