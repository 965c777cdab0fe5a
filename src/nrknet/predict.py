"""``nrknet-predict``: deblur photos of any size with a trained NRKNet checkpoint.

Usage::

    nrknet-predict INPUT... --out DIR [--ckpt MODEL] [options]

Without ``--ckpt`` the NRKNet shipped with the package is used
(``nrknet-synthetic``, trained on rendered data only; see
``docs/pretrained.md``), so ``--defocus-map`` and ``--figures`` work out of
the box: the bundled file itself, whatever the working directory holds; a log
line names the model used. ``--ckpt`` takes a
registry name or else a path (``./NAME`` for a file named like an entry). The
checkpoint is read as data; classes outside nrknet that it names are built
only with ``--trust-code`` (``docs/security.md``).

``INPUT`` is an image file, a folder (searched recursively for .png, .jpg,
.jpeg, .tif, .tiff and .bmp files) or a glob pattern (quote it; ``**`` is
recursive). A file or folder that does not exist stops the run before it
starts; a glob may match nothing, as long as some input holds an image.

Every result keeps its file name, format and bit depth in ``--out``; a
folder input keeps its sub-folders. Greyscale files come back greyscale
(Rec. 601 luma of the deblurred RGB), RGBA files keep their alpha channel
unchanged (grey + alpha files come back as RGBA: OpenCV writes no grey +
alpha format), JPEG files are written at quality 95 (``--jpeg-quality``). A JPEG
or PNG whose EXIF orientation turns it (as cameras store portrait photos) is
read as it is shown and written upright, without the tag, so the result and
its side files show the way the input does. Other metadata (EXIF, ICC
profiles) is not copied.

Side files: ``--defocus-map`` adds ``NAME.defocus.png`` (16-bit greyscale,
the effective blur radius in thousandths of a pixel, see
:mod:`nrknet.analysis.defocus`) and ``NAME.defocus_color.png`` (colour-mapped,
with a scale bar in pixels);
``--figures`` adds ``NAME.compare.png`` (input | output),
``NAME.coefficients.png`` (the full-scale coefficient maps of ``--levels``)
and, once per run, ``atoms.png`` (the learned kernels A_1 .. A_J).

Safety: the output folder may not be an input folder (or lie inside a folder
given as input, or be the folder of an input file); an input file is never
written; an existing output is skipped unless ``--overwrite``. Every file the
run will write (results, side files, ``atoms.png``) is planned before any is
written: two inputs that would write the same file (``photo.png`` and
``photo.jpg`` both have ``photo.defocus.png``), or an output that would
replace an input, stop the run with a usage error naming both.

Memory: images whose padded area fits one window (``tile + 2 overlap`` on a
side) are deblurred whole; larger ones tile by tile (see
:mod:`nrknet.inference.tiling`), so peak memory is bounded by the tile, not the photo.
Any size from 1 px a side: a side too short for the network's own
reflection padding (1 px for NRKNet, 1 or 2 px for the bundled U-Net) is
extended by repeating its last row or column, and the results are cropped back.

Speed: ``--accel`` switches the speed paths of :mod:`nrknet.accel` (``auto``:
on for the CPU, off elsewhere; ``on``; ``off``: the plain model).

Self-ensemble: ``--tta`` deblurs the eight flips and quarter turns of every
photo (each tiled as above), turns the results back and averages them
(:mod:`nrknet.inference.self_ensemble`); the side files are averaged too.

The work itself is done by :mod:`nrknet.inference`; this module parses the
options, reports errors and progress, and sets the exit status.

Exit status: 0 when every image was deblurred or skipped because its output
exists; 1 when any input was unreadable or failed (each is reported with its
path, the others still run); 2 for usage errors, found before the model
loads (bad options, an input that does not exist, no images found, an
``--out`` that is a file or unsafe, outputs that clash) or when it does (a
missing or invalid checkpoint).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nrknet.cli import add_model_options, reported
from nrknet.errors import UsageError

PROG = "nrknet-predict"
#: The model used without --ckpt: the NRKNet bundled with the package (nrknet/weights/files/). On
#: real defocused pairs it gains more than the bundled U-Net, in PSNR and SSIM (docs/pretrained.md).
DEFAULT_MODEL = "nrknet-synthetic"


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
    from nrknet.accel import ACCEL_MODES
    from nrknet.inference.tiling import DEFAULT_BLEND, DEFAULT_TILE

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Deblur defocused photos with an NRKNet checkpoint, at full resolution.",
        epilog="Exit status: 0 all done, 1 some inputs failed (reported and skipped), 2 usage error.",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image file, folder or glob")
    parser.add_argument("--out", "-o", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--ckpt",
        "-c",
        default=None,
        help="a name from the weights registry (e.g. nrknet-synthetic), or else a path "
        f"(./NAME for a file named like one); default: the bundled {DEFAULT_MODEL}, "
        "trained on rendered data",
    )
    parser.add_argument(
        "--half",
        action="store_true",
        help="float16 autocast (CUDA only; weights and the RKR operator stay float32)",
    )
    parser.add_argument(
        "--accel",
        default="auto",
        choices=ACCEL_MODES,
        help="faster implementation of the model (nrknet.accel): auto (default) is on for the CPU "
        "and off elsewhere",
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
    parser.add_argument(
        "--tta",
        action="store_true",
        help="self-ensemble: average the results of the eight flips and 90-degree rotations "
        "(eight times slower)",
    )
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
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    add_model_options(parser)
    return parser


def _parse_levels(text: str | None, num_maps: int) -> list[int]:
    from nrknet.analysis.defocus import representative_levels
    from nrknet.inference import SettingError, check_levels

    if text is None:
        return representative_levels(num_maps)
    try:
        levels = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--levels must be comma-separated integers, got {text!r}") from None
    try:
        check_levels(levels, num_maps)
    except SettingError as exc:
        raise UsageError(f"--levels {exc.expected}, got {text!r}") from None
    return levels


def _check_options(args) -> None:
    """Settings out of range stop the run before anything is read (same order as the options)."""
    from nrknet.inference import SettingError, check_tiling

    try:
        check_tiling(args.tile, args.overlap, args.blend, args.batch)
    except SettingError as exc:
        raise UsageError(f"--{exc.setting} {exc.expected}") from None
    if not 0 <= args.jpeg_quality <= 100:
        raise UsageError("--jpeg-quality must lie in 0..100")
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be a positive integer")


def _check_out_folder(out: Path) -> None:
    """``--out`` is a folder or does not exist yet; a file there would fail only at the first write."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    nearest = next((folder for folder in out.parents if folder.exists()), None)
    if nearest is not None and not nearest.is_dir():
        raise UsageError(f"--out {out} is inside {nearest}, which is a file, not a folder")


def _collect_jobs(args):
    """Every job, with every file the run will write planned, or a :class:`UsageError`."""
    from nrknet.inference import (
        ATOMS_FIGURE,
        UnsafeOutputError,
        collect_jobs,
        side_suffixes,
    )

    suffixes = side_suffixes(defocus_map=args.defocus_map, figures=args.figures)
    run_files = {ATOMS_FIGURE: "the kernels figure of --figures"} if args.figures else None
    try:
        return collect_jobs(args.inputs, args.out, side_suffixes=suffixes, run_files=run_files)
    except UnsafeOutputError as exc:
        raise UsageError(f"{exc}; choose another --out") from exc


def _load(args, say):
    """The model on its device and the autocast dtype, or a :class:`UsageError`."""
    from nrknet.inference import autocast_dtype_for, load_inference_model, resolve_device
    from nrknet.models.nrknet import has_blur_operator
    from nrknet.weights import bundled_checkpoint

    try:
        device = resolve_device(args.device)
    except ValueError:
        raise UsageError(f"--device {args.device} requested but CUDA is not available") from None
    if args.half and device.type != "cuda":
        say(f"{PROG}: warning: --half is ignored on the CPU (float32 is used)")
    ckpt = DEFAULT_MODEL if args.ckpt is None else args.ckpt
    # the default is the bundled file itself, whatever the working directory holds
    source = bundled_checkpoint(DEFAULT_MODEL) if args.ckpt is None else args.ckpt
    model = load_inference_model(
        source, device, accel=args.accel, trust_code=args.trust_code, option="--trust-code"
    )
    say(
        f"{PROG}: model {ckpt}"
        + (" (the default; choose another with --ckpt)" if args.ckpt is None else "")
    )
    if (args.defocus_map or args.figures) and not has_blur_operator(model):
        raise UsageError(
            f"--defocus-map and --figures need an NRKNet; {ckpt} holds a {type(model).__name__}, "
            "which has no blur kernels (choose an NRKNet with --ckpt, e.g. nrknet-synthetic)"
        )
    return model, device, autocast_dtype_for(device, args.half)


def run(args, console) -> Summary:
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from nrknet.inference import Deblurrer, deblur_file, existing_outputs, write_atoms_figure

    def say(message: str) -> None:
        console.print(message, markup=False, highlight=False, soft_wrap=True)

    _check_options(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    _check_out_folder(args.out)
    jobs = _collect_jobs(args)
    model, device, autocast_dtype = _load(args, say)
    deblurrer = Deblurrer(
        model,
        device=device,
        tile=args.tile,
        overlap=args.overlap,
        blend=args.blend,
        batch=args.batch,
        autocast_dtype=autocast_dtype,
        defocus=args.defocus_map,
        levels=_parse_levels(args.levels, model.num_maps) if args.figures else (),
        self_ensemble=args.tta,
    )
    summary = Summary()
    start = time.perf_counter()
    if args.figures:
        write_atoms_figure(model, args.out, overwrite=args.overwrite)

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

        def on_tiles(done: int, total: int) -> None:
            progress.update(tiles_task, completed=done, total=total)

        for job in jobs:
            progress.update(tiles_task, completed=0, total=None, description=f"{job.source.name}")
            if job.problem is not None:
                summary.failed.append((job.source, job.problem))
                say(f"{PROG}: skipped {job.source}: {job.problem}")
            elif not args.overwrite and (existing := existing_outputs(job.outputs)):
                summary.skipped_existing += 1
                say(f"{PROG}: skipped {job.source}: {existing[0]} exists (use --overwrite)")
            else:
                try:
                    deblur_file(
                        job.source,
                        job.target,
                        deblurrer,
                        figures=args.figures,
                        jpeg_quality=args.jpeg_quality,
                        progress=on_tiles,
                    )
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
    return _main(build_parser().parse_args(argv))


@reported(PROG, debug=lambda args: args.debug)
def _main(args: argparse.Namespace) -> int:
    from rich.console import Console

    try:
        summary = run(args, Console(stderr=True))
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
