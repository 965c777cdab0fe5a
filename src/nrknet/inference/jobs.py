"""From input names to (source, target) pairs, under the rules that keep inputs safe.

* The output folder may not be an input folder, lie inside a folder given as
  input, or be the folder of an input file or the fixed part of a glob.
* Every file a run will write is planned before any is: each result, its side
  files and the files written once per run. None may replace an input file
  and no two may be the same file; either stops the run before it starts.
* Every file a run writes lies inside the output folder: a glob's ``..`` or a
  link out of it stops the run before it starts.
* Files inside the output folder that a glob matches are earlier outputs, not inputs.

A folder keeps its sub-folders in the output; a glob keeps the path below
its fixed part; a file goes straight into the output folder.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from nrknet.data.io import IMAGE_EXTENSIONS
from nrknet.errors import UsageError

__all__ = [
    "Job",
    "JobsError",
    "MissingInputError",
    "NoImagesError",
    "OutputClashError",
    "UnsafeOutputError",
    "collect_jobs",
    "existing_outputs",
    "side_file",
]


class JobsError(UsageError):
    """Inputs and an output folder that cannot make a run."""


class UnsafeOutputError(JobsError):
    """An output folder that is, or lies inside, an input folder."""


class NoImagesError(JobsError):
    """Inputs that name no image at all."""


class MissingInputError(JobsError):
    """Input names that are neither a file, a folder nor a glob pattern."""


class OutputClashError(JobsError):
    """A file the run would write twice, or write over an input file."""


def side_file(target: Path, suffix: str) -> Path:
    """Where a side file of the result ``target`` goes: ``NAME.EXT`` becomes ``NAME`` + ``suffix``."""
    return target.with_name(target.stem + suffix)


@dataclass
class Job:
    """One image to deblur: where it comes from and where its result and side files go.

    ``problem`` says why it cannot run (it is reported, the others go on).
    """

    source: Path
    target: Path
    problem: str | None = None
    side_files: tuple[Path, ...] = ()

    @property
    def outputs(self) -> tuple[Path, ...]:
        """Every file the job writes: its result, then its side files."""
        return (self.target, *self.side_files)


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _glob_base(pattern: str) -> Path:
    base = []
    for part in Path(pattern).parts:
        if glob.has_magic(part):
            break
        base.append(part)
    return Path(*base) if base else Path(".")


def _entries_of_glob(pattern: str, out_dir: Path) -> list[tuple[Path, Path]]:
    base = _glob_base(pattern)
    out_resolved = out_dir.resolve()
    if base.resolve() == out_resolved:
        raise UnsafeOutputError(f"output folder {out_dir} is the input folder of {pattern!r}")
    entries = []
    for match in sorted(Path(m) for m in glob.glob(pattern, recursive=True)):
        if not (match.is_file() and _is_image_name(match)):
            continue
        if _inside(match.resolve(), out_resolved):
            continue  # an earlier output, not an input
        # the path below the fixed part, without '..' (which would lead out of the output folder)
        relative = Path(os.path.relpath(os.path.normpath(match), os.path.normpath(base)))
        if relative.parts[:1] == ("..",):
            relative = Path(match.name)
        entries.append((match, relative))
    return entries


def collect_jobs(
    inputs: Sequence[str],
    out_dir: Path,
    *,
    side_suffixes: Sequence[str] = (),
    run_files: Mapping[str, str] | None = None,
) -> list[Job]:
    """Jobs for image files, folders (recursive) and globs; files of other types come first, with a problem.

    A glob may match nothing; any other name must exist.

    Each job also writes a side file per entry of ``side_suffixes`` (see
    :func:`side_file`); ``run_files`` maps the names of files written once
    into ``out_dir`` to what they are (for the error message).

    Raises :class:`MissingInputError` for names that do not exist,
    :class:`UnsafeOutputError` when ``out_dir`` would write into an input
    folder, :class:`OutputClashError` when a file would be written twice or
    over an input, and :class:`NoImagesError` when the inputs hold no image.
    """
    out_resolved = out_dir.resolve()
    entries: list[tuple[Path, Path]] = []  # (source, output path relative to out_dir)
    problems: list[Job] = []
    missing: list[str] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            if _inside(out_resolved, path.resolve()):
                raise UnsafeOutputError(
                    f"output folder {out_dir} is inside the input folder {path}"
                )
            files = sorted(p for p in path.rglob("*") if p.is_file() and _is_image_name(p))
            entries.extend((p, p.relative_to(path)) for p in files)
        elif path.is_file():
            if path.resolve().parent == out_resolved:
                raise UnsafeOutputError(
                    f"output folder {out_dir} is the folder of the input {path}"
                )
            if _is_image_name(path):
                entries.append((path, Path(path.name)))
            else:
                problem = "not a supported image file name (extension)"
                problems.append(Job(path, out_dir / path.name, problem))
        elif glob.has_magic(raw):
            entries.extend(_entries_of_glob(raw, out_dir))
        else:
            missing.append(raw)
    if missing:
        raise MissingInputError(f"no such file or folder: {', '.join(missing)}")
    if not entries and not problems:
        raise NoImagesError(f"no images found in {', '.join(inputs)}")
    return problems + _plan_outputs(entries, out_dir, side_suffixes, run_files or {})


def _plan_outputs(
    entries: list[tuple[Path, Path]],
    out_dir: Path,
    side_suffixes: Sequence[str],
    run_files: Mapping[str, str],
) -> list[Job]:
    """Jobs for ``entries``; raises :class:`OutputClashError` if a file would be written twice or over an input."""
    inputs = {source.resolve() for source, _ in entries}
    out_resolved = out_dir.resolve()
    writer_of = {(out_dir / name).resolve(): what for name, what in run_files.items()}
    jobs: list[Job] = []
    planned: set[tuple[Path, Path]] = set()
    for source, relative in entries:
        target = out_dir / relative
        if (source.resolve(), target.resolve()) in planned:
            continue  # the same file named twice, e.g. by a folder and by a glob inside it
        planned.add((source.resolve(), target.resolve()))
        job = Job(source, target, side_files=tuple(side_file(target, s) for s in side_suffixes))
        for path in job.outputs:
            key = path.resolve()
            if not _inside(key, out_resolved) or key == out_resolved:
                raise UnsafeOutputError(f"{path}, an output of {source}, lies outside {out_dir}")
            if key in inputs:
                raise OutputClashError(
                    f"{path}, an output of {source}, would replace an input file"
                )
            if key in writer_of:
                raise OutputClashError(f"{source} and {writer_of[key]} would both write {path}")
            writer_of[key] = str(source)
        jobs.append(job)
    return jobs


def existing_outputs(paths: Sequence[Path]) -> list[Path]:
    """The ``paths`` that exist already: a job with any is skipped unless outputs may be replaced."""
    return [p for p in paths if p.exists()]
