"""``nrknet-predict``: deblur photos of any size with a trained NRKNet checkpoint.

Usage::

    nrknet-predict INPUT... --out DIR --ckpt MODEL.ckpt [options]

``INPUT`` is an image file, a folder (searched recursively for .png, .jpg,
.jpeg, .tif, .tiff and .bmp files) or a glob pattern (quote it; ``**`` is
recursive). Every result keeps its file name, format and bit depth in
``--out``; a folder input keeps its sub-folders. Greyscale files come back
greyscale (Rec. 601 luma of the deblurred RGB), RGBA files keep their alpha
channel unchanged, JPEG files are written at quality 95 (``--jpeg-quality``).

Side files: ``--defocus-map`` adds ``NAME.defocus.png`` (16-bit greyscale,
the effective blur radius in thousandths of a pixel, see :mod:`nrknet.viz`)
and ``NAME.defocus_color.png`` (colour-mapped, with a scale bar in pixels);
``--figures`` adds ``NAME.compare.png`` (input | output),
``NAME.coefficients.png`` (the full-scale coefficient maps of ``--levels``)
and, once per run, ``atoms.png`` (the learned kernels A_1 .. A_J).

Safety: the output folder may not be an input folder (or lie inside a folder
given as input, or be the folder of an input file); an input file is never
written; an existing output is skipped unless ``--overwrite``.

Memory: images whose padded area fits one window (``tile + 2 overlap`` on a
side) are deblurred whole; larger ones tile by tile (see
:mod:`nrknet.tiling`), so peak memory is bounded by the tile, not the photo.

Exit status: 0 when every image was deblurred or skipped because its output
exists; 1 when any input was unreadable or failed (each is reported with its
path, the others still run); 2 for usage errors (bad options, missing or
invalid checkpoint, unsafe output folder, no images found).
"""

from __future__ import annotations

import argparse
import glob
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PROG = "nrknet-predict"
DEFOCUS_SUFFIX = ".defocus.png"
DEFOCUS_COLOR_SUFFIX = ".defocus_color.png"
COMPARE_SUFFIX = ".compare.png"
COEFFICIENTS_SUFFIX = ".coefficients.png"
ATOMS_FIGURE = "atoms.png"


class UsageError(Exception):
    """A problem that stops the run before any image is processed (exit status 2)."""


@dataclass
class Job:
    """One image to deblur: where it comes from and where its result goes."""

    source: Path
    target: Path
    problem: str | None = None


@dataclass
class Summary:
    done: int = 0
    skipped_existing: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def exit_status(self) -> int:
        return 1 if self.failed else 0


def build_parser() -> argparse.ArgumentParser:
    from nrknet.tiling import DEFAULT_BLEND, DEFAULT_TILE

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Deblur defocused photos with an NRKNet checkpoint, at full resolution.",
        epilog="Exit status: 0 all done, 1 some inputs failed (reported and skipped), 2 usage error.",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image file, folder or glob")
    parser.add_argument("--out", "-o", required=True, type=Path, help="output folder")
    parser.add_argument("--ckpt", "-c", required=True, type=Path, help="NRKNet checkpoint")
    parser.add_argument(
        "--device",
        default="auto",
        choices=("auto", "cpu", "cuda"),
        help="default: cuda if available",
    )
    parser.add_argument(
        "--half",
        action="store_true",
        help="float16 autocast (CUDA only; weights and the RKR operator stay float32)",
    )
    parser.add_argument(
        "--tile",
        type=int,
        default=DEFAULT_TILE,
        help=f"core side of a tile in pixels (default {DEFAULT_TILE})",
    )
    parser.add_argument(
        "--overlap",
        type=int,
        default=None,
        help="context pixels added on each side of a tile (default: measured for the model, 128 for the reference)",
    )
    parser.add_argument(
        "--blend",
        type=int,
        default=DEFAULT_BLEND,
        help=f"width of the blending ramp between tiles (default {DEFAULT_BLEND})",
    )
    parser.add_argument("--batch", type=int, default=1, help="tiles per forward pass (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument(
        "--defocus-map",
        action="store_true",
        help="also write NAME.defocus.png (16-bit, radius in 1/1000 px) and NAME.defocus_color.png",
    )
    parser.add_argument(
        "--figures",
        action="store_true",
        help="also write NAME.compare.png, NAME.coefficients.png and atoms.png",
    )
    parser.add_argument(
        "--levels",
        default=None,
        help="coefficient levels shown by --figures, comma-separated (default 0,J/4,J/2,3J/4,J)",
    )
    parser.add_argument("--jpeg-quality", type=int, default=95, help="JPEG quality (default 95)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


# --------------------------------------------------------------------------- inputs


def _is_image_name(path: Path) -> bool:
    from nrknet.data.io import IMAGE_EXTENSIONS

    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _glob_base(pattern: str) -> Path:
    parts = Path(pattern).parts
    base = []
    for part in parts:
        if glob.has_magic(part):
            break
        base.append(part)
    return Path(*base) if base else Path(".")


def collect_jobs(inputs: Sequence[str], out_dir: Path) -> list[Job]:
    """Resolve inputs to jobs; raises :class:`UsageError` for unsafe output folders or no images."""
    out_resolved = out_dir.resolve()
    entries: list[tuple[Path, Path]] = []  # (source, relative output path)
    problems: list[Job] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            folder = path.resolve()
            if _inside(out_resolved, folder):
                raise UsageError(
                    f"output folder {out_dir} is inside the input folder {path}; choose another --out"
                )
            files = sorted(p for p in path.rglob("*") if p.is_file() and _is_image_name(p))
            entries.extend((p, p.relative_to(path)) for p in files)
        elif path.is_file():
            if path.resolve().parent == out_resolved:
                raise UsageError(
                    f"output folder {out_dir} is the folder of the input {path}; choose another --out"
                )
            if _is_image_name(path):
                entries.append((path, Path(path.name)))
            else:
                problems.append(
                    Job(path, out_dir / path.name, "not a supported image file name (extension)")
                )
        elif glob.has_magic(raw):
            base = _glob_base(raw)
            if base.resolve() == out_resolved:
                raise UsageError(
                    f"output folder {out_dir} is the input folder of {raw!r}; choose another --out"
                )
            matches = sorted(Path(m) for m in glob.glob(raw, recursive=True))
            for m in matches:
                if not (m.is_file() and _is_image_name(m)):
                    continue
                if _inside(m.resolve(), out_resolved):
                    continue  # an earlier output, not an input
                try:
                    rel = m.relative_to(base)
                except ValueError:
                    rel = Path(m.name)
                entries.append((m, rel))
        else:
            problems.append(Job(path, out_dir / path.name, "no such file or folder"))
    if not entries and not problems:
        raise UsageError(f"no images found in {', '.join(inputs)}")
    sources = {p.resolve() for p, _ in entries}
    jobs: list[Job] = []
    seen: dict[Path, Path] = {}
    for source, rel in entries:
        target = out_dir / rel
        key = target.resolve()
        problem = None
        if key in sources:
            problem = f"its output {target} would replace an input file"
        elif key in seen:
            problem = f"same output {target} as {seen[key]}"
        else:
            seen[key] = source
        jobs.append(Job(source, target, problem))
    return problems + jobs


# --------------------------------------------------------------------------- model


def _resolve_device(name: str, half: bool, warn) -> tuple[object, object]:
    """The device, and the autocast dtype (``None``: plain float32)."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda requested but CUDA is not available")
    autocast_dtype = None
    if half:
        if name == "cuda":
            autocast_dtype = torch.float16
        else:
            warn("--half is ignored on the CPU (float32 is used)")
    return torch.device(name), autocast_dtype


def _parse_levels(text: str | None, num_maps: int) -> list[int]:
    if text is None:
        last = num_maps - 1
        return sorted({0, last // 4, last // 2, (3 * last) // 4, last})
    try:
        levels = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--levels must be comma-separated integers, got {text!r}") from None
    bad = [j for j in levels if not 0 <= j < num_maps]
    if bad or not levels:
        raise UsageError(f"--levels must lie in 0..{num_maps - 1}, got {text!r}")
    return levels


class WindowFunction:
    """What runs on every tile: the deblurred image plus, on request, the defocus radius and chosen Gamma maps.

    Output channels: RGB (3), then the radius (1) if ``defocus``, then one
    channel per level in ``levels``. With ``autocast_dtype`` the model runs under
    autocast in that dtype (outputs stay float32).
    """

    def __init__(
        self,
        model,
        defocus: bool = False,
        levels: Sequence[int] = (),
        autocast_dtype=None,
    ) -> None:
        from nrknet.viz import atom_second_moments, level_gains

        self.model = model
        self.autocast_dtype = autocast_dtype
        self.defocus = defocus
        self.levels = list(levels)
        if defocus:
            self.moments = atom_second_moments(model.blur.atoms)
            self.gains = level_gains(model.blur)

    @property
    def channels(self) -> int:
        return 3 + int(self.defocus) + len(self.levels)

    def __call__(self, x):
        import torch

        if self.autocast_dtype is None:
            return self._run(x)
        with torch.autocast(x.device.type, dtype=self.autocast_dtype):
            return self._run(x).float()

    def _run(self, x):
        import torch

        from nrknet.viz import blur_radius_from_coefficients, capture_coefficients

        if not self.defocus and not self.levels:
            return self.model(x)
        with capture_coefficients(self.model) as captured:
            y = self.model(x)
        # Gamma covers the input as padded by the network (right and bottom only).
        gamma = captured.pop("gamma")[..., : y.shape[-2], : y.shape[-1]]
        parts = [y]
        if self.defocus:
            parts.append(blur_radius_from_coefficients(gamma, self.moments, self.gains).to(y.dtype))
        if self.levels:
            parts.append(gamma[:, self.levels].to(y.dtype))
        del gamma
        return torch.cat(parts, dim=1)


# --------------------------------------------------------------------------- running


def _sidecar(target: Path, suffix: str) -> Path:
    return target.with_name(target.stem + suffix)


def outputs_of(job: Job, args) -> list[Path]:
    """Every file written for ``job`` (the image, then the requested side files)."""
    paths = [job.target]
    if args.defocus_map:
        paths += [_sidecar(job.target, DEFOCUS_SUFFIX), _sidecar(job.target, DEFOCUS_COLOR_SUFFIX)]
    if args.figures:
        paths += [_sidecar(job.target, COMPARE_SUFFIX), _sidecar(job.target, COEFFICIENTS_SUFFIX)]
    return paths


def process_image(
    job: Job, args, model, window_fn: WindowFunction, settings: dict, on_tiles
) -> None:
    """Deblur one file and write its outputs; raises on any failure."""
    from nrknet.data.io import read_image_full, write_image
    from nrknet.tiling import tiled_apply
    from nrknet.viz import (
        coefficient_maps_figure,
        comparison_figure,
        resize_for_figure,
        save_defocus_map,
    )

    image = read_image_full(job.source)
    preview = resize_for_figure(image.rgb, 768) if args.figures else None
    result = tiled_apply(
        window_fn,
        image.rgb,
        window_fn.channels,
        progress=on_tiles,
        **settings,
    )
    alpha, bit_depth, channels = image.alpha, image.bit_depth, image.channels_in_file
    del image
    write_image(
        job.target,
        result[..., :3],
        bit_depth=bit_depth,
        alpha=alpha,
        greyscale=channels == 1,
        jpeg_quality=args.jpeg_quality,
    )
    extra = 3
    if args.defocus_map:
        save_defocus_map(
            result[..., extra],
            _sidecar(job.target, DEFOCUS_SUFFIX),
            _sidecar(job.target, DEFOCUS_COLOR_SUFFIX),
        )
        extra += 1
    if args.figures:
        figure = comparison_figure(
            [preview, resize_for_figure(result[..., :3], 768)], ("input", "output")
        )
        write_image(_sidecar(job.target, COMPARE_SUFFIX), figure.astype(np.float32) / 255)
        maps = np.stack(
            [resize_for_figure(result[..., extra + i], 384) for i in range(len(window_fn.levels))]
        )
        figure = coefficient_maps_figure(maps, level_names=window_fn.levels)
        write_image(_sidecar(job.target, COEFFICIENTS_SUFFIX), figure.astype(np.float32) / 255)


def run(args, console) -> Summary:
    import torch

    from nrknet.checkpoint import CheckpointError, load_model
    from nrknet.data.io import write_image
    from nrknet.tiling import default_overlap
    from nrknet.viz import atom_kernels_figure

    def say(message: str) -> None:
        console.print(message, markup=False, highlight=False, soft_wrap=True)

    for name in ("tile", "batch"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name} must be a positive integer")
    if args.overlap is not None and args.overlap < 0:
        raise UsageError("--overlap must be >= 0")
    if args.blend < 0:
        raise UsageError("--blend must be >= 0")
    if not 0 <= args.jpeg_quality <= 100:
        raise UsageError("--jpeg-quality must lie in 0..100")
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError("--threads must be a positive integer")
        torch.set_num_threads(args.threads)
    jobs = collect_jobs(args.inputs, args.out)
    device, autocast_dtype = _resolve_device(
        args.device, args.half, lambda m: say(f"{PROG}: warning: {m}")
    )
    try:
        model = load_model(args.ckpt, map_location="cpu")
    except CheckpointError as exc:
        raise UsageError(str(exc)) from exc
    except Exception as exc:  # noqa: BLE001 - e.g. a model config this version cannot build
        raise UsageError(f"cannot load checkpoint {args.ckpt}: {exc}") from exc
    model = model.eval().to(device=device)
    levels = _parse_levels(args.levels, model.num_maps) if args.figures else []
    window_fn = WindowFunction(
        model, defocus=args.defocus_map, levels=levels, autocast_dtype=autocast_dtype
    )
    overlap = default_overlap(model, args.blend) if args.overlap is None else args.overlap
    settings = dict(
        tile=args.tile,
        overlap=overlap,
        multiple=model.size_multiple,
        blend=args.blend,
        batch=args.batch,
        device=device,
    )
    summary = Summary()
    start = time.perf_counter()
    if args.figures:
        atoms_path = args.out / ATOMS_FIGURE
        if args.overwrite or not atoms_path.exists():
            fig = atom_kernels_figure(model.blur.atoms, include_identity=False)
            write_image(atoms_path, fig.astype(np.float32) / 255)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=args.quiet,
        transient=True,
    )
    with progress:
        files_task = progress.add_task("files", total=len(jobs))
        tiles_task = progress.add_task("tiles", total=None)
        for job in jobs:
            progress.update(tiles_task, completed=0, total=None, description=f"{job.source.name}")
            if job.problem is not None:
                summary.failed.append((job.source, job.problem))
                say(f"{PROG}: skipped {job.source}: {job.problem}")
            elif not args.overwrite and (
                existing := [p for p in outputs_of(job, args) if p.exists()]
            ):
                summary.skipped_existing += 1
                say(f"{PROG}: skipped {job.source}: {existing[0]} exists (use --overwrite)")
            else:

                def on_tiles(done: int, total: int) -> None:
                    progress.update(tiles_task, completed=done, total=total)

                try:
                    process_image(job, args, model, window_fn, settings, on_tiles)
                    summary.done += 1
                except Exception as exc:  # noqa: BLE001 - report, skip, go on with the others
                    reason = str(exc) or type(exc).__name__
                    summary.failed.append((job.source, reason))
                    say(f"{PROG}: failed {job.source}: {reason}")
                    if args.debug:
                        say(traceback.format_exc())
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
            progress.advance(files_task)
    summary.seconds = time.perf_counter() - start
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    from rich.console import Console

    parser = build_parser()
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    try:
        summary = run(args, console)
    except UsageError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    failed = len(summary.failed)
    print(
        f"{PROG}: {summary.done} done, {summary.skipped_existing} skipped (output exists), "
        f"{failed} failed, {summary.seconds:.1f} s"
    )
    if failed:
        for path, reason in summary.failed:
            print(f"  failed: {path}: {reason}", file=sys.stderr)
    return summary.exit_status


if __name__ == "__main__":
    sys.exit(main())
