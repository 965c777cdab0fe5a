"""From input names to (source, target) pairs, under the rules that keep inputs safe.

* The output folder may not be an input folder, lie inside a folder given as
  input, or be the folder of an input file or the fixed part of a glob.
* No output may replace an input file, and no two inputs may share an output.
* Files inside the output folder that a glob matches are earlier outputs, not inputs.

A folder keeps its sub-folders in the output; a glob keeps the path below
its fixed part; a file goes straight into the output folder.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nrknet.data.io import IMAGE_EXTENSIONS

__all__ = [
    "Job",
    "JobsError",
    "NoImagesError",
    "UnsafeOutputError",
    "collect_jobs",
    "existing_outputs",
]


class JobsError(ValueError):
    """Inputs and an output folder that cannot make a run."""


class UnsafeOutputError(JobsError):
    """An output folder that is, or lies inside, an input folder."""


class NoImagesError(JobsError):
    """Inputs that name no image at all."""


@dataclass
class Job:
    """One image to deblur: where it comes from and where its result goes.

    ``problem`` says why it cannot run (it is reported, the others go on).
    """

    source: Path
    target: Path
    problem: str | None = None


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
        try:
            relative = match.relative_to(base)
        except ValueError:
            relative = Path(match.name)
        entries.append((match, relative))
    return entries


def collect_jobs(inputs: Sequence[str], out_dir: Path) -> list[Job]:
    """Jobs for image files, folders (recursive) and globs; unusable inputs come first, with a problem.

    Raises :class:`UnsafeOutputError` when ``out_dir`` would write into an
    input folder and :class:`NoImagesError` when the inputs hold no image.
    """
    out_resolved = out_dir.resolve()
    entries: list[tuple[Path, Path]] = []  # (source, output path relative to out_dir)
    problems: list[Job] = []
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
            problems.append(Job(path, out_dir / path.name, "no such file or folder"))
    if not entries and not problems:
        raise NoImagesError(f"no images found in {', '.join(inputs)}")
    return problems + _assign_targets(entries, out_dir)


def _assign_targets(entries: list[tuple[Path, Path]], out_dir: Path) -> list[Job]:
    """Jobs for ``entries``; one whose target is an input or another's target gets a problem."""
    sources = {source.resolve() for source, _ in entries}
    jobs: list[Job] = []
    first_source_of: dict[Path, Path] = {}
    for source, relative in entries:
        target = out_dir / relative
        key = target.resolve()
        problem = None
        if key in sources:
            problem = f"its output {target} would replace an input file"
        elif key in first_source_of:
            problem = f"same output {target} as {first_source_of[key]}"
        else:
            first_source_of[key] = source
        jobs.append(Job(source, target, problem))
    return jobs


def existing_outputs(paths: Sequence[Path]) -> list[Path]:
    """The ``paths`` that exist already: a job with any is skipped unless outputs may be replaced."""
    return [p for p in paths if p.exists()]
