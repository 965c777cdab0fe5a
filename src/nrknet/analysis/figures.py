"""Drawing what the network believes: comparisons, atom kernels, defocus and coefficient maps.

The numbers drawn here (coefficient maps, the effective blur radius) come
from :mod:`nrknet.analysis.defocus`; this module only turns arrays into
uint8 RGB figures and files.

Files
    :func:`save_defocus_map` writes the radius as a 16-bit greyscale PNG
    (value = radius in thousandths of a pixel, so ``value / 1000`` is the
    radius in pixels; up to 65.535 px) and as a colour-mapped PNG with a scale
    bar (colours span 0 .. the 99th percentile of the map unless told).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from nrknet.analysis.defocus import representative_levels

__all__ = [
    "DEFOCUS_PNG_SCALE",
    "atom_kernels_figure",
    "coefficient_maps_figure",
    "colorize_defocus",
    "comparison_figure",
    "comparison_strip",
    "resize_for_figure",
    "save_defocus_map",
]

#: 16-bit defocus PNGs store ``round(radius_in_pixels * DEFOCUS_PNG_SCALE)``.
DEFOCUS_PNG_SCALE = 1000.0


def _to_uint8_rgb(img: torch.Tensor | np.ndarray) -> np.ndarray:
    """(3, H, W) tensor or (H, W, 3) / (H, W) array, float in [0, 1] (or uint8) -> (H, W, 3) uint8."""
    if isinstance(img, torch.Tensor):
        img = img.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.dtype == np.uint8:
        return img
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def comparison_strip(*images: torch.Tensor, gap: int = 4) -> np.ndarray:
    """Side-by-side (input | output | ground truth ...) of same-sized (3, H, W) images, uint8 RGB."""
    return _side_by_side([_to_uint8_rgb(im) for im in images], gap)


def _side_by_side(panels: Sequence[np.ndarray], gap: int) -> np.ndarray:
    """Join uint8 RGB panels left to right, top-aligned, on white, ``gap`` pixels apart."""
    height = max(p.shape[0] for p in panels)
    spacer = np.full((height, gap, 3), 255, np.uint8)
    parts = []
    for i, p in enumerate(panels):
        if i:
            parts.append(spacer)
        parts.append(np.pad(p, ((0, height - p.shape[0]), (0, 0), (0, 0)), constant_values=255))
    return np.concatenate(parts, axis=1)


def resize_for_figure(img: np.ndarray, max_side: int = 1024) -> np.ndarray:
    """Downscale (area averaging) so the longer side is at most ``max_side``; never upscales."""
    height, width = img.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return img
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    out = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    return out if out.ndim == img.ndim else out[..., None]


def _label(img: np.ndarray, text: str, bar: int) -> np.ndarray:
    """Put ``text`` in a white band of height ``bar`` above ``img`` (uint8 RGB)."""
    band = np.full((bar, img.shape[1], 3), 255, np.uint8)
    scale = bar / 30
    cv2.putText(
        band, text, (4, int(bar * 0.72)), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA
    )
    return np.concatenate([band, img], axis=0)


def comparison_figure(
    images: Sequence[torch.Tensor | np.ndarray],
    labels: Sequence[str] = ("input", "output", "ground truth"),
    max_side: int = 768,
    gap: int = 6,
) -> np.ndarray:
    """Labelled side-by-side figure (input / output / ground truth), each panel at most ``max_side``.

    Accepts (3, H, W) tensors or (H, W, 3) float or uint8 arrays of one size;
    returns uint8 RGB.
    """
    panels = [resize_for_figure(_to_uint8_rgb(im), max_side) for im in images]
    bar = max(18, min(40, panels[0].shape[0] // 12))
    labelled = [
        _label(p, labels[i] if i < len(labels) else f"image {i}", bar) for i, p in enumerate(panels)
    ]
    return _side_by_side(labelled, gap)


def _lut(cmap: str) -> np.ndarray:
    import matplotlib

    return (matplotlib.colormaps[cmap](np.linspace(0, 1, 256))[:, :3] * 255 + 0.5).astype(np.uint8)


def _text(img: np.ndarray, text: str, origin: tuple[int, int], scale: float = 0.4) -> None:
    thickness = max(1, int(round(scale * 1.5)))
    cv2.putText(
        img, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness, cv2.LINE_AA
    )


def atom_kernels_figure(
    atoms: torch.nn.Module,
    max_levels: int | None = None,
    dpi: int = 100,
    include_identity: bool = True,
    cell: int = 4,
) -> np.ndarray:
    """A grid of the effective atom kernels A_0 .. A_J (one row per colour channel), uint8 RGB.

    Each kernel is shown on the common support, magnified ``cell`` times,
    with its own colour scale (magma, 0 .. its peak), so the growth of the
    support with the level is visible. ``include_identity=False`` shows
    A_1 .. A_J only (the paper's supplementary figure). ``dpi`` is accepted
    for compatibility and ignored.
    """
    del dpi
    with torch.no_grad():
        kernels = atoms.effective_kernels().detach().float().cpu().numpy()
    first = 0 if include_identity else 1
    kernels = kernels[first:]
    levels, channels, size = kernels.shape[0], kernels.shape[1], kernels.shape[-1]
    if max_levels is not None:
        levels = min(levels, max_levels)
    lut = _lut("magma")
    side = size * cell
    gap, left, top = 6, 28, 34
    height = top + channels * (side + gap)
    width = left + levels * (side + gap)
    canvas = np.full((height, width, 3), 255, np.uint8)
    names = ["R", "G", "B"] if channels == 3 else ["all"]
    _text(canvas, "learned atom kernels", (left, 13), 0.45)
    for c in range(channels):
        y = top + c * (side + gap)
        _text(canvas, names[c], (4, y + side // 2 + 5))
        for j in range(levels):
            x = left + j * (side + gap)
            k = kernels[j, c]
            peak = float(k.max())
            index = (
                np.clip(k / peak * 255 + 0.5, 0, 255).astype(np.uint8)
                if peak > 0
                else k.astype(np.uint8) * 0
            )
            tile = np.repeat(np.repeat(lut[index], cell, axis=0), cell, axis=1)
            canvas[y : y + side, x : x + side] = tile
            if c == 0:
                _text(canvas, f"A{j + first}", (x + 2, top - 5), 0.35)
    return canvas


def colorize_defocus(
    radius: np.ndarray | torch.Tensor,
    vmax: float | None = None,
    cmap: str = "magma",
    bar: bool = True,
) -> np.ndarray:
    """Colour-map a radius map (H, W) to uint8 RGB, with a labelled scale bar on the right.

    Colours span ``0 .. vmax`` pixels (default: the map's 99th percentile,
    at least 0.1 px); the bar is labelled in pixels.
    """
    if isinstance(radius, torch.Tensor):
        radius = radius.detach().float().cpu().numpy()
    radius = np.asarray(radius, dtype=np.float32)
    radius = radius.reshape(radius.shape[-2:])  # drop batch and channel axes, keep a 1 px side
    if radius.ndim != 2:
        raise ValueError(f"expected an H x W radius map, got shape {radius.shape}")
    if vmax is None:
        finite = radius[np.isfinite(radius)]
        vmax = float(np.percentile(finite, 99)) if finite.size else 1.0
    vmax = max(float(vmax), 0.1)
    lut = _lut(cmap)
    index = np.clip(np.nan_to_num(radius) * (255.0 / vmax) + 0.5, 0, 255).astype(np.uint8)
    image = lut[index]
    if not bar:
        return image
    return np.concatenate([image, _scale_bar(image.shape[0], vmax, lut, unit_label="px")], axis=1)


def _scale_bar(
    height: int, vmax: float, lut: np.ndarray, low: float = 0.0, unit_label: str = ""
) -> np.ndarray:
    """A vertical colour bar from ``low`` to ``vmax`` with five tick labels, as tall as the image.

    ``unit_label`` (e.g. ``"px"``) follows the top label. Text and bar scale
    with the image height, so the bar stays legible on 24-megapixel maps.
    """
    unit = max(1.0, height / 400)
    bar_w = max(8, int(16 * unit))
    label_w = int(84 * unit)
    margin = max(6, int(8 * unit))
    panel = np.full((height, margin + bar_w + label_w, 3), 255, np.uint8)
    top, bottom = max(2, int(10 * unit)), height - max(2, int(10 * unit))
    if bottom - top < 2:
        return panel
    rows = np.linspace(255, 0, bottom - top).round().astype(np.int64)
    panel[top:bottom, margin : margin + bar_w] = lut[rows][:, None, :]
    scale = 0.4 * unit
    thickness = max(1, int(unit))
    span = vmax - low
    for k, value in enumerate(np.linspace(low, vmax, 5)):
        y = int(round(bottom - 1 - ((value - low) / span) * (bottom - top - 1)))
        tick_end = margin + bar_w + int(4 * unit)
        cv2.line(panel, (margin + bar_w, y), (tick_end, y), (0, 0, 0), thickness)
        if abs(span) >= 20:
            text = f"{value:.0f}"
        elif abs(span) >= 1:
            text = f"{value:.1f}"
        else:
            text = f"{value:.2g}"
        if k == 4 and unit_label:
            text += f" {unit_label}"
        baseline = min(max(y + int(5 * unit), int(12 * unit)), height - 2)
        _text(panel, text, (margin + bar_w + int(6 * unit), baseline), scale)
    return panel


def save_defocus_map(
    radius: np.ndarray | torch.Tensor,
    path16: str | Path,
    path_color: str | Path | None = None,
    vmax: float | None = None,
) -> tuple[Path, Path | None]:
    """Write a radius map (H, W) as a 16-bit PNG and, optionally, as a colour-mapped PNG.

    The 16-bit file stores ``round(radius * DEFOCUS_PNG_SCALE)`` (thousandths
    of a pixel). Both files are written atomically.
    """
    from nrknet.data.io import write_image

    if isinstance(radius, torch.Tensor):
        radius = radius.detach().float().cpu().numpy()
    radius = np.asarray(radius, dtype=np.float32)
    radius = radius.reshape(radius.shape[-2:])  # drop batch and channel axes, keep a 1 px side
    path16 = Path(path16)
    write_image(path16, radius * np.float32(DEFOCUS_PNG_SCALE / 65535.0), bit_depth=16)
    color_path = None
    if path_color is not None:
        color = colorize_defocus(radius, vmax=vmax)
        color_path = Path(path_color)
        write_image(color_path, color.astype(np.float32) / np.float32(255.0), bit_depth=8)
    return path16, color_path


def coefficient_maps_figure(
    gamma: torch.Tensor | np.ndarray,
    levels: Sequence[int] | None = None,
    level_names: Sequence[int] | None = None,
    max_side: int = 384,
    dpi: int = 100,
) -> np.ndarray:
    """Panels of coefficient maps Gamma_j, each with its own colour scale and bar, uint8 RGB.

    ``gamma`` is (J + 1, H, W) (or (1, J + 1, H, W)); ``levels`` picks maps
    (default: 0, J/4, J/2, 3J/4, J). ``level_names`` labels the panels when
    ``gamma`` already holds a selection (its channels are the levels named).
    Colours (viridis) span each map's 1st to 99th percentile. ``dpi`` is
    accepted for compatibility and ignored.
    """
    del dpi
    if isinstance(gamma, torch.Tensor):
        gamma = gamma.detach().float().cpu().numpy()
    gamma = np.asarray(gamma, dtype=np.float32)
    if gamma.ndim == 4:
        gamma = gamma[0]
    count = gamma.shape[0]
    if level_names is None:
        if levels is None:
            levels = representative_levels(count)
        maps = [gamma[j] for j in levels]
        names = list(levels)
    else:
        maps = [gamma[i] for i in range(count)]
        names = list(level_names)
    lut = _lut("viridis")
    panels = []
    for m, name in zip(maps, names, strict=True):
        m = resize_for_figure(m, max_side)
        m = m[..., 0] if m.ndim == 3 else m
        lo, hi = np.percentile(m, [1, 99]) if m.size else (0.0, 1.0)
        hi = hi if hi > lo else lo + 1e-6
        index = np.clip((m - lo) / (hi - lo) * 255 + 0.5, 0, 255).astype(np.uint8)
        panel = np.concatenate([lut[index], _scale_bar(m.shape[0], hi, lut, low=lo)], axis=1)
        bar = max(18, min(30, panel.shape[0] // 10))
        panels.append(_label(panel, f"Gamma_{name}", bar))
    height = max(p.shape[0] for p in panels)
    parts = []
    for i, p in enumerate(panels):
        if i:
            parts.append(np.full((height, 8, 3), 255, np.uint8))
        parts.append(np.pad(p, ((0, height - p.shape[0]), (0, 0), (0, 0)), constant_values=255))
    return np.concatenate(parts, axis=1)
