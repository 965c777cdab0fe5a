"""Every file written for one image: the result in its own format, plus the requested side files.

Side files of ``NAME.EXT``: ``NAME.defocus.png`` (16-bit, the effective blur
radius in thousandths of a pixel) and ``NAME.defocus_color.png`` (colour-mapped,
with a scale bar) for the defocus map; ``NAME.compare.png`` (input | output)
and ``NAME.coefficients.png`` (the chosen coefficient maps) for the figures;
once per output folder, ``atoms.png`` (the learned kernels A_1 .. A_J).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from nrknet.analysis.figures import (
    atom_kernels_figure,
    coefficient_maps_figure,
    comparison_figure,
    resize_for_figure,
    save_defocus_map,
)
from nrknet.data.io import read_image_full, write_image
from nrknet.inference.deblur import Deblurrer
from nrknet.inference.jobs import side_file

__all__ = [
    "ATOMS_FIGURE",
    "COEFFICIENTS_SUFFIX",
    "COMPARE_SUFFIX",
    "DEFOCUS_COLOR_SUFFIX",
    "DEFOCUS_SUFFIX",
    "deblur_file",
    "output_paths",
    "side_file",
    "side_suffixes",
    "write_atoms_figure",
]

DEFOCUS_SUFFIX = ".defocus.png"
DEFOCUS_COLOR_SUFFIX = ".defocus_color.png"
COMPARE_SUFFIX = ".compare.png"
COEFFICIENTS_SUFFIX = ".coefficients.png"
ATOMS_FIGURE = "atoms.png"
#: Longest side of a panel in the comparison and coefficient figures.
COMPARE_SIDE = 768
COEFFICIENT_SIDE = 384


def side_suffixes(*, defocus_map: bool = False, figures: bool = False) -> list[str]:
    """The name endings of the side files written beside each result (see :func:`side_file`)."""
    suffixes = []
    if defocus_map:
        suffixes += [DEFOCUS_SUFFIX, DEFOCUS_COLOR_SUFFIX]
    if figures:
        suffixes += [COMPARE_SUFFIX, COEFFICIENTS_SUFFIX]
    return suffixes


def output_paths(target: Path, *, defocus_map: bool = False, figures: bool = False) -> list[Path]:
    """Every file written for the result ``target``: itself, then the requested side files."""
    suffixes = side_suffixes(defocus_map=defocus_map, figures=figures)
    return [target, *(side_file(target, suffix) for suffix in suffixes)]


def _write_figure(path: Path, figure: np.ndarray) -> None:
    write_image(path, figure.astype(np.float32) / 255)


def deblur_file(
    source: Path,
    target: Path,
    deblurrer: Deblurrer,
    *,
    figures: bool = False,
    jpeg_quality: int = 95,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Deblur ``source`` into ``target`` (same format, bit depth, channels and alpha) with its side files.

    The defocus files are written when ``deblurrer`` computes the defocus
    map; ``figures`` needs a ``deblurrer`` built with coefficient levels.
    Raises on any failure (an unreadable input, a failed write).
    """
    if figures and not deblurrer.levels:
        raise ValueError("figures need the coefficient maps: build the Deblurrer with levels")
    image = read_image_full(source, upright=True)  # the result has no EXIF orientation to turn it
    preview = resize_for_figure(image.rgb, COMPARE_SIDE) if figures else None
    result = deblurrer(image.rgb, progress)
    alpha, bit_depth, channels = image.alpha, image.bit_depth, image.channels_in_file
    del image  # the input is no longer needed while the outputs are encoded
    write_image(
        target,
        result.rgb,
        bit_depth=bit_depth,
        alpha=alpha,
        greyscale=channels == 1,
        jpeg_quality=jpeg_quality,
    )
    if result.defocus is not None:
        save_defocus_map(
            result.defocus,
            side_file(target, DEFOCUS_SUFFIX),
            side_file(target, DEFOCUS_COLOR_SUFFIX),
        )
    if figures:
        panels = [preview, resize_for_figure(result.rgb, COMPARE_SIDE)]
        _write_figure(
            side_file(target, COMPARE_SUFFIX), comparison_figure(panels, ("input", "output"))
        )
        maps = np.stack(
            [
                resize_for_figure(result.coefficients[..., i], COEFFICIENT_SIDE)
                for i in range(len(result.levels))
            ]
        )
        figure = coefficient_maps_figure(maps, level_names=result.levels)
        _write_figure(side_file(target, COEFFICIENTS_SUFFIX), figure)


def write_atoms_figure(model: torch.nn.Module, out_dir: Path, *, overwrite: bool = False) -> Path:
    """Write ``out_dir/atoms.png`` (the learned kernels A_1 .. A_J) unless it exists and not ``overwrite``."""
    path = out_dir / ATOMS_FIGURE
    if overwrite or not path.exists():
        _write_figure(path, atom_kernels_figure(model.blur.atoms, include_identity=False))
    return path
