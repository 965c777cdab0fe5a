"""Synthetic defocus pairs: sharp scenes with depth, blurred by thin-lens optics.

Scenes
    * ``photo``: a crop of one of the colour photographs bundled with
      scikit-image, with a depth map made of image segments (SLIC superpixels),
      each at its own depth, plus a planar slope; or a tilted plane alone.
    * ``dead_leaves``: a textured background plane occluded by random discs,
      ellipses, rotated rectangles and polygons, painted far to near, each
      filled with a texture cut from the photographs and placed at its own
      depth (some with a slope of their own).
    * ``stereo`` (test split only): the Middlebury motorcycle pair shipped
      with scikit-image, with depth taken from its real disparity map.

  The source photographs are split disjointly between train, val and test
  (:data:`PHOTO_SPLITS`, :data:`TEXTURE_SPLITS`), so no test image, texture or
  stereo scene is ever seen in training.

Optics
    Depth lies in ``DEPTH_RANGE`` = [1, 10] (arbitrary units). The circle of
    confusion radius is ``aperture * max_coc * |1/d - 1/d_focus| / (1/near - 1/far)``,
    so ``max_coc`` is the largest radius the generator can produce (focus at
    one end of the range, object at the other, full aperture). Each image
    draws its focus distance (usually the depth of a random visible point, so
    something is in focus), an aperture in [0.4, 1] (a draw whose largest
    blur radius stays under ``min(1, max_coc / 4)`` px is refocused on the
    scene's far end, or behind a very shallow scene, see
    :func:`ensure_visible_blur`) and a point-spread
    function shape: a disk with area-coverage anti-aliasing, mildly elliptical
    and with a slightly soft rim.

Rendering
    In linear light: undo the sRGB curve, split the scene into ``num_layers``
    layers of equal inverse-depth width, blur each layer's premultiplied colour
    and its matte with the layer's PSF, composite far to near with the
    "over" operator, add optional Poisson-Gaussian noise and re-apply the sRGB
    curve. Each layer is first extended a little under the nearer layers that
    border it (as far as their blur radius, filled with the layer's nearby
    colours), because a blurred foreground edge lets the background behind it
    show through; the composite is finally divided by the accumulated matte,
    which closes any remaining gap. A near out-of-focus object thus spreads
    over an in-focus background (its edge blurred on both sides), and a sharp
    near object stays sharp in front of a blurred background.

Every image is rendered from its own random generator seeded by
``(seed, split, index)``, so the files do not depend on the order of
generation or on the number of worker processes.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import shutil
import sys
import time
import traceback
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from nrknet.data.io import NRKNetDataError

__all__ = [
    "DEPTH_RANGE",
    "PHOTO_SPLITS",
    "RENDERER_VERSION",
    "SPLIT_DIRS",
    "TEXTURE_SPLITS",
    "RenderedPair",
    "Scene",
    "SynthSettings",
    "add_sensor_noise",
    "coc_radius",
    "convolve",
    "dead_leaves_scene",
    "default_max_coc",
    "disk_psf",
    "generate_dataset",
    "is_complete_dataset",
    "linear_to_srgb",
    "load_photo",
    "main",
    "make_scene",
    "photo_scene",
    "render_defocus",
    "render_pair",
    "srgb_to_linear",
    "stereo_scene",
]

#: Bump when a change alters the rendered files; stored sets are then regenerated.
RENDERER_VERSION = 2  # 2: every pair reaches a minimum blur (ensure_visible_blur)
GENERATOR_NAME = "nrknet-synth"
META_FILE = "meta.json"

#: Depth range of every scene (near, far), arbitrary units.
DEPTH_RANGE = (1.0, 10.0)
#: Depth maps are written as 16-bit PNG in thousandths of a depth unit.
DEPTH_PNG_SCALE = 1000.0

SPLIT_DIRS = {"train": "train_c", "val": "val_c", "test": "test_c"}
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}

#: Colour photographs (scikit-image bundled data) used as scenes and textures, per split.
PHOTO_SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("astronaut", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry"),
    "val": ("chelsea",),
    "test": ("motorcycle_left", "motorcycle_right", "retina"),
}
#: Extra textures for dead-leaves shapes only (greyscale ones get a random tint), per split.
TEXTURE_SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("brick", "grass", "colorwheel"),
    "val": ("gravel",),
    "test": ("camera", "moon"),
}
#: Scene kinds and their probabilities, per split.
SCENE_KINDS: dict[str, dict[str, float]] = {
    "train": {"dead_leaves": 0.6, "photo": 0.4},
    "val": {"dead_leaves": 0.6, "photo": 0.4},
    "test": {"dead_leaves": 0.4, "photo": 0.3, "stereo": 0.3},
}


# --------------------------------------------------------------------------- colour


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] to linear light (IEC 61966-2-1)."""
    x = np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """Linear light in [0, 1] to sRGB encoding (IEC 61966-2-1); clips to [0, 1]."""
    x = np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * x ** (1.0 / 2.4) - 0.055).astype(np.float32)


# --------------------------------------------------------------------------- optics


def default_max_coc(size: int) -> float:
    """Largest circle-of-confusion radius for ``size`` px images: 12 px at 256, proportional."""
    return 12.0 * size / 256.0


def coc_radius(
    depth: np.ndarray | float,
    focus: float,
    max_coc: float,
    *,
    aperture: float = 1.0,
    depth_range: tuple[float, float] = DEPTH_RANGE,
    signed: bool = False,
) -> np.ndarray | float:
    """Thin-lens circle-of-confusion radius in pixels.

    ``r = aperture * max_coc * |1/depth - 1/focus| / (1/near - 1/far)``: zero at
    the focus distance and ``max_coc`` at full aperture for an object at one
    end of ``depth_range`` with focus at the other. With ``signed`` the sign
    is kept (positive in front of the focal plane).
    """
    near, far = depth_range
    if not 0 < near < far:
        raise ValueError(f"depth_range must satisfy 0 < near < far, got {depth_range}")
    scale = aperture * max_coc / (1.0 / near - 1.0 / far)
    d = np.asarray(depth, dtype=np.float64)
    r = scale * (1.0 / d - 1.0 / float(focus))
    if not signed:
        r = np.abs(r)
    return float(r) if r.ndim == 0 else r.astype(np.float32)


def disk_psf(
    radius: float,
    *,
    aspect: float = 1.0,
    angle: float = 0.0,
    softness: float = 0.0,
    supersample: int | None = None,
) -> np.ndarray:
    """A normalised disk (pillbox) point-spread function of the given radius in pixels.

    Each pixel holds the fraction of its area inside the disk, estimated on a
    ``supersample`` x ``supersample`` grid (default: finer for small disks),
    so the edge is anti-aliased.
    ``aspect`` <= 1 makes an ellipse of the same area (semi-axes
    ``radius / sqrt(aspect)`` and ``radius * sqrt(aspect)``) rotated by
    ``angle`` radians; ``softness`` > 0 replaces the hard rim by a linear
    ramp that wide (in pixels). The kernel is odd-sized, centred, point
    symmetric and sums to 1. Radii up to 0.5 px give the identity ``[[1]]``
    (the disk then fits inside one pixel).
    """
    if not math.isfinite(radius) or radius < 0:
        raise ValueError(f"radius must be a finite number >= 0, got {radius}")
    if not 0 < aspect <= 1:
        raise ValueError(f"aspect must be in (0, 1], got {aspect}")
    if softness < 0:
        raise ValueError(f"softness must be >= 0, got {softness}")
    if radius <= 0.5 and softness == 0:
        return np.ones((1, 1), dtype=np.float32)
    semi_major = radius / math.sqrt(aspect)
    half = int(math.ceil(semi_major + softness / 2 + 0.5))
    n = 2 * half + 1
    ss = int(supersample) if supersample else int(np.clip(64 // (radius + 1), 8, 32))
    offsets = (np.arange(ss) + 0.5) / ss - 0.5
    coords = (np.arange(n) - half)[:, None] + offsets[None, :]  # (n, ss)
    coords = coords.reshape(-1)
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    c, s = math.cos(angle), math.sin(angle)
    u = c * xx + s * yy
    v = -s * xx + c * yy
    # Distance in "radius units": equals `radius` on the ellipse boundary.
    rho = np.sqrt((u * math.sqrt(aspect)) ** 2 + (v / math.sqrt(aspect)) ** 2)
    if softness > 0:
        inside = np.clip((radius - rho) / softness + 0.5, 0.0, 1.0)
    else:
        inside = (rho <= radius).astype(np.float64)
    k = inside.reshape(n, ss, n, ss).mean(axis=(1, 3))
    total = k.sum()
    if total <= 0:
        return np.ones((1, 1), dtype=np.float32)
    k = k / total
    # Trim rows/columns that are zero all round (keeps the kernel square and centred).
    rows = np.nonzero(k.sum(axis=1) > 0)[0]
    cols = np.nonzero(k.sum(axis=0) > 0)[0]
    trim = min(int(rows[0]), n - 1 - int(rows[-1]), int(cols[0]), n - 1 - int(cols[-1]))
    if trim > 0:
        k = k[trim:-trim, trim:-trim]
    return (k / k.sum()).astype(np.float32)


_BORDERS = {"reflect": cv2.BORDER_REFLECT_101, "symmetric": cv2.BORDER_REFLECT}


def convolve(image: np.ndarray, kernel: np.ndarray, border: str = "reflect") -> np.ndarray:
    """Convolve each channel of ``image`` (HxW or HxWxC, C <= 4) with ``kernel``.

    ``border``: ``"reflect"`` (mirror without repeating the edge pixel),
    ``"symmetric"`` (mirror with it) or ``"wrap"`` (periodic, so the mean is
    preserved exactly).
    """
    img = np.ascontiguousarray(image, dtype=np.float32)
    k = np.ascontiguousarray(kernel[::-1, ::-1], dtype=np.float32)  # filter2D correlates
    if k.shape == (1, 1):
        return img * k[0, 0]
    if border == "wrap":
        ph, pw = k.shape[0] // 2, k.shape[1] // 2
        h, w = img.shape[:2]
        if ph > h or pw > w:
            reps = (math.ceil(ph / h) * 2 + 1, math.ceil(pw / w) * 2 + 1)
            tiled = np.tile(img, reps + (1,) * (img.ndim - 2))
            oy, ox = (reps[0] // 2) * h - ph, (reps[1] // 2) * w - pw
            padded = tiled[oy : oy + h + 2 * ph, ox : ox + w + 2 * pw]
        else:
            pad = [(ph, ph), (pw, pw)] + [(0, 0)] * (img.ndim - 2)
            padded = np.pad(img, pad, mode="wrap")
        out = cv2.filter2D(np.ascontiguousarray(padded), -1, k, borderType=cv2.BORDER_CONSTANT)
        out = out[ph : ph + h, pw : pw + w]
    elif border in _BORDERS:
        out = cv2.filter2D(img, -1, k, borderType=_BORDERS[border])
    else:
        raise ValueError(f"border must be 'reflect', 'symmetric' or 'wrap', got {border!r}")
    if img.ndim == 3 and out.ndim == 2:
        out = out[:, :, None]
    return out


def render_defocus(
    image: np.ndarray,
    depth: np.ndarray,
    focus: float,
    *,
    max_coc: float,
    aperture: float = 1.0,
    depth_range: tuple[float, float] = DEPTH_RANGE,
    num_layers: int = 16,
    psf_aspect: float = 1.0,
    psf_angle: float = 0.0,
    psf_softness: float = 0.0,
    border: str = "reflect",
    linear: bool = False,
    return_info: bool = False,
) -> np.ndarray | tuple[np.ndarray, dict[str, Any]]:
    """Render the defocused version of a sharp image with a per-pixel depth map.

    ``image`` is float HxWx3 in [0, 1], sRGB-encoded unless ``linear``; the
    result is in the same encoding. The scene is cut into at most
    ``num_layers`` layers of equal inverse-depth width (empty ones skipped);
    each layer is blurred with a disk of the radius :func:`coc_radius` gives
    at the layer's mean inverse depth, then the layers are composited far to
    near (see the module docstring). A constant depth is a single layer, so
    the result is exactly the sharp image convolved with one disk in linear
    light. With ``return_info`` a dict with the per-pixel CoC range and the
    layer radii is returned too.
    """
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be HxWx3, got shape {img.shape}")
    depth = np.asarray(depth, dtype=np.float64)
    if depth.shape != img.shape[:2]:
        raise ValueError(f"depth shape {depth.shape} does not match image {img.shape[:2]}")
    if not np.all(np.isfinite(depth)) or depth.min() <= 0:
        raise ValueError("depth must be finite and > 0 everywhere")
    if not (math.isfinite(focus) and focus > 0):
        raise ValueError(f"focus must be a finite distance > 0, got {focus}")
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")

    lin = img if linear else srgb_to_linear(img)
    inv = 1.0 / depth
    lo, hi = float(inv.min()), float(inv.max())
    if hi - lo <= 1e-9 * max(hi, 1.0):
        labels = np.zeros(inv.shape, dtype=np.int32)
    else:
        labels = np.floor((inv - lo) / (hi - lo) * num_layers).astype(np.int32)
        np.clip(labels, 0, num_layers - 1, out=labels)

    counts = np.bincount(labels.ravel())
    sums = np.bincount(labels.ravel(), weights=inv.ravel())
    present = [int(layer) for layer in np.nonzero(counts)[0]]
    radii = [
        float(
            coc_radius(
                counts[layer] / sums[layer],
                focus,
                max_coc,
                aperture=aperture,
                depth_range=depth_range,
            )
        )
        for layer in present
    ]

    height, width_px = labels.shape
    acc = np.zeros_like(lin)
    acc_a = np.zeros(lin.shape[:2], dtype=np.float32)
    for i, layer in enumerate(present):  # label 0 is the farthest
        full_mask = labels == layer
        kernel = disk_psf(radii[i], aspect=psf_aspect, angle=psf_angle, softness=psf_softness)
        # Extend the layer under the nearer layers that border it, far enough for their
        # blurred edges to let it show through: the part of a background that a blurred
        # foreground edge partially reveals is unknown, so it is filled with nearby
        # colours of the same layer.
        ext_width = math.ceil(max(radii[i + 1 :])) + 1 if i + 1 < len(present) else 0
        # Work inside the layer's bounding box grown by the extension and the kernel: the
        # layer is zero beyond it, so the result equals a whole-image computation.
        if border == "wrap":
            y0, y1, x0, x1 = 0, height, 0, width_px
        else:
            bx, by, bw, bh = cv2.boundingRect(full_mask.view(np.uint8))
            margin = ext_width + kernel.shape[0] // 2 + 1
            y0, y1 = max(by - margin, 0), min(by + bh + margin, height)
            x0, x1 = max(bx - margin, 0), min(bx + bw + margin, width_px)
        roi = (slice(y0, y1), slice(x0, x1))
        mask = full_mask[roi]
        alpha = mask.astype(np.float32)
        colour = lin[roi] * alpha[:, :, None]
        if ext_width:
            dist = cv2.distanceTransform((~mask).view(np.uint8), cv2.DIST_L2, 5)
            ext = (dist <= ext_width) & (labels[roi] > layer)
            if ext.any():
                box = (2 * ext_width + 1, 2 * ext_width + 1)
                num = cv2.boxFilter(
                    colour, -1, box, normalize=False, borderType=cv2.BORDER_REFLECT_101
                )
                den = cv2.boxFilter(
                    alpha, -1, box, normalize=False, borderType=cv2.BORDER_REFLECT_101
                )
                ext &= den > 0.5
                alpha[ext] = 1.0
                colour[ext] = num[ext] / den[ext][:, None]
        if kernel.shape == (1, 1):
            col_b, a_b = colour, alpha
        else:
            blurred = convolve(np.concatenate([colour, alpha[:, :, None]], axis=2), kernel, border)
            col_b = blurred[:, :, :3]
            a_b = np.clip(blurred[:, :, 3], 0.0, 1.0)
        acc[roi] = col_b + (1.0 - a_b)[:, :, None] * acc[roi]
        acc_a[roi] = a_b + (1.0 - a_b) * acc_a[roi]
    out = acc / np.maximum(acc_a, 1e-8)[:, :, None]
    out = np.clip(out, 0.0, None).astype(np.float32)
    if not linear:
        out = linear_to_srgb(out)
    if not return_info:
        return out
    coc = coc_radius(depth, focus, max_coc, aperture=aperture, depth_range=depth_range)
    info = {
        "coc_min": float(np.min(coc)),
        "coc_max": float(np.max(coc)),
        "layer_radii": [round(r, 4) for r in radii],
    }
    return out, info


def add_sensor_noise(
    linear: np.ndarray, shot: float, read: float, rng: np.random.Generator
) -> np.ndarray:
    """Poisson-Gaussian sensor noise in linear light (Gaussian approximation).

    The noise variance at intensity ``x`` is ``shot**2 * x + read**2``: ``shot``
    is the standard deviation of the signal-dependent part at full scale and
    ``read`` that of the constant part.
    """
    if shot <= 0 and read <= 0:
        return linear
    var = shot**2 * np.clip(linear, 0.0, None) + read**2
    noisy = linear + rng.standard_normal(linear.shape).astype(np.float32) * np.sqrt(var)
    return np.clip(noisy, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------- source photographs


@functools.cache
def load_photo(name: str) -> np.ndarray:
    """A bundled scikit-image photograph as float32 sRGB HxWx3 (greyscale ones HxW)."""
    import skimage.data as skdata

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name in ("motorcycle_left", "motorcycle_right"):
            left, right, _ = skdata.stereo_motorcycle()
            img = left if name == "motorcycle_left" else right
        else:
            img = getattr(skdata, name)()
    img = np.asarray(img)
    if name == "retina":  # the fundus is a disk on black: keep its central square
        h, w = img.shape[:2]
        img = img[int(0.2 * h) : int(0.8 * h), int(0.2 * w) : int(0.8 * w)]
    out = img.astype(np.float32) / 255.0
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=1)
def _motorcycle_inverse_depth() -> np.ndarray:
    """Inverse depth of the motorcycle scene from its disparity (depth ~ 1/disparity).

    Invalid disparities (inf, nan, <= 0) take the value of the nearest valid
    pixel; the 1st-99th percentile disparity range maps linearly onto the
    inverse-depth range of :data:`DEPTH_RANGE`.
    """
    import skimage.data as skdata
    from scipy import ndimage

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, _, disp = skdata.stereo_motorcycle()
    disp = np.asarray(disp, dtype=np.float64)
    valid = np.isfinite(disp) & (disp > 0)
    if not valid.all():
        idx = ndimage.distance_transform_edt(~valid, return_distances=False, return_indices=True)
        disp = disp[tuple(idx)]
    lo, hi = np.percentile(disp[valid], [1, 99])
    t = np.clip((disp - lo) / (hi - lo), 0.0, 1.0)
    near, far = DEPTH_RANGE
    inv = 1.0 / far + t * (1.0 / near - 1.0 / far)
    inv = inv.astype(np.float32)
    inv.setflags(write=False)
    return inv


def _random_square_crop(
    shape: tuple[int, ...], size: int, rng: np.random.Generator, min_frac: float = 0.35
) -> tuple[int, int, int]:
    """(y, x, side) of a random square crop, as large as ``size`` where possible."""
    h, w = shape[:2]
    m = min(h, w)
    lo = min(m, max(size, int(min_frac * m)))
    side = int(rng.integers(lo, m + 1))
    y = int(rng.integers(0, h - side + 1))
    x = int(rng.integers(0, w - side + 1))
    return y, x, side


def _resize(img: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    if img.shape[0] == size and img.shape[1] == size:
        return np.array(img)
    if nearest:
        interp = cv2.INTER_NEAREST
    else:
        interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_CUBIC
    out = cv2.resize(np.ascontiguousarray(img), (size, size), interpolation=interp)
    return np.clip(out, 0.0, 1.0) if not nearest else out


def _photo_crop(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    img = load_photo(name)
    y, x, side = _random_square_crop(img.shape, size, rng)
    crop = _resize(img[y : y + side, x : x + side], size)
    if crop.ndim == 2:  # greyscale texture: give it a random tint
        tint = rng.uniform(0.35, 1.0, size=3).astype(np.float32)
        crop = crop[:, :, None] * tint[None, None, :]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop, dtype=np.float32)


def _inv_range() -> tuple[float, float]:
    near, far = DEPTH_RANGE
    return 1.0 / far, 1.0 / near


def _slope(size: int, rng: np.random.Generator, span: float) -> np.ndarray:
    """A zero-mean linear ramp in a random direction whose values span at most ``span``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1) - 0.5
    theta = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(theta) * xx + np.sin(theta) * yy) / math.sqrt(2.0)  # within [-0.5, 0.5]
    return (span * ramp).astype(np.float32)


def _plane(size: int, rng: np.random.Generator, lo: float, hi: float, span: float) -> np.ndarray:
    """Inverse depth of a random tilted plane inside [lo, hi], varying by at most ``span``."""
    span = min(span, hi - lo)
    centre = rng.uniform(lo + span / 2, hi - span / 2)
    return centre + _slope(size, rng, span)


# --------------------------------------------------------------------------- scenes


@dataclass
class Scene:
    """A sharp sRGB image (float32 HxWx3 in [0, 1]) with its depth map (float32 HxW)."""

    sharp: np.ndarray
    depth: np.ndarray
    kind: str
    sources: list[str] = field(default_factory=list)


def photo_scene(size: int, rng: np.random.Generator, photos: Sequence[str]) -> Scene:
    """A photograph crop with layered (superpixel) depth plus a slope, or a tilted plane."""
    from skimage.segmentation import slic

    name = photos[int(rng.integers(len(photos)))]
    sharp = _photo_crop(name, size, rng)
    lo, hi = _inv_range()
    if rng.random() < 0.3:
        inv = _plane(size, rng, lo, hi, span=rng.uniform(0.2, 1.0) * (hi - lo))
    else:
        small = cv2.resize(sharp, (128, 128), interpolation=cv2.INTER_AREA) if size > 128 else sharp
        labels = slic(
            small,
            n_segments=int(rng.integers(4, 16)),
            compactness=float(rng.uniform(5, 20)),
            start_label=0,
            channel_axis=-1,
        )
        if labels.shape[0] != size:
            labels = cv2.resize(
                labels.astype(np.int32), (size, size), interpolation=cv2.INTER_NEAREST
            )
        levels = rng.uniform(lo, hi, size=int(labels.max()) + 1).astype(np.float32)
        inv = levels[labels] + _slope(size, rng, span=rng.uniform(0, 0.15) * (hi - lo))
    inv = np.clip(inv, lo, hi)
    return Scene(sharp=sharp, depth=(1.0 / inv).astype(np.float32), kind="photo", sources=[name])


def _shape_mask(size: int, rng: np.random.Generator, radius: float) -> np.ndarray:
    """An anti-aliased random shape (disc, ellipse, rotated rectangle or polygon), uint8 0..255."""
    mask = np.zeros((size, size), dtype=np.uint8)
    shift = 4
    one = 1 << shift
    cx, cy = rng.uniform(-0.1, 1.1, size=2) * size
    kind = rng.choice(["disc", "ellipse", "rect", "polygon"], p=[0.3, 0.2, 0.25, 0.25])
    if kind in ("disc", "ellipse"):
        ax = radius
        ay = radius if kind == "disc" else radius * rng.uniform(0.3, 1.0)
        cv2.ellipse(
            mask,
            (int(cx * one), int(cy * one)),
            (max(int(ax * one), 1), max(int(ay * one), 1)),
            float(rng.uniform(0, 180)),
            0,
            360,
            255,
            -1,
            cv2.LINE_AA,
            shift,
        )
    else:
        if kind == "rect":
            w, h = 2 * radius * rng.uniform(0.4, 1.0, size=2)
            pts = cv2.boxPoints(((cx, cy), (w, h), float(rng.uniform(0, 180))))
        else:
            n = int(rng.integers(3, 9))
            ang = np.sort(rng.uniform(0, 2 * np.pi, size=n))
            rad = radius * rng.uniform(0.5, 1.0, size=n)
            pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], axis=1)
        cv2.fillPoly(mask, [np.round(pts * one).astype(np.int32)], 255, cv2.LINE_AA, shift)
    return mask


def dead_leaves_scene(
    size: int, rng: np.random.Generator, photos: Sequence[str], textures: Sequence[str] = ()
) -> Scene:
    """Random occluding shapes over a textured slanted background, painted far to near."""
    pool = list(photos) + list(textures)
    lo, hi = _inv_range()
    n_tex = 4
    tex_names = [pool[int(rng.integers(len(pool)))] for _ in range(n_tex)]
    tex = [_photo_crop(name, size, rng) for name in tex_names]
    # Background: a photo texture on a far, tilted plane.
    sharp = tex[0].copy()
    inv = _plane(size, rng, lo, lo + 0.5 * (hi - lo), span=rng.uniform(0.0, 0.3) * (hi - lo))

    n_shapes = int(rng.integers(10, 50))
    r_min, r_max = 0.04 * size, 0.4 * size
    u = rng.random(n_shapes)
    radii = 1.0 / (1.0 / r_min - u * (1.0 / r_min - 1.0 / r_max))  # p(r) ~ r^-2
    depths = np.sort(rng.uniform(lo, hi, size=n_shapes))  # far (small 1/d) first
    for radius, inv_shape in zip(radii, depths, strict=True):
        mask = _shape_mask(size, rng, float(radius))
        x0, y0, bw, bh = cv2.boundingRect(mask)
        if bw == 0 or bh == 0:
            continue
        y1, x1 = y0 + bh, x0 + bw
        m = mask[y0:y1, x0:x1].astype(np.float32) / 255.0
        if rng.random() < 0.1:  # a flat colour with a gentle gradient
            base = rng.uniform(0.05, 0.95, size=3).astype(np.float32)
            grad = np.linspace(-0.1, 0.1, x1 - x0, dtype=np.float32)[None, :, None]
            fill = np.clip(base[None, None, :] + grad, 0, 1) * np.ones_like(sharp[y0:y1, x0:x1])
        else:
            src = tex[int(rng.integers(1, n_tex))]
            dy, dx = (int(v) for v in rng.integers(0, size, size=2))
            src = np.roll(src, (dy, dx), axis=(0, 1))
            gain = rng.uniform(0.75, 1.25, size=3).astype(np.float32)
            fill = np.clip(src[y0:y1, x0:x1] * gain, 0, 1)
        sharp[y0:y1, x0:x1] = sharp[y0:y1, x0:x1] * (1 - m[:, :, None]) + fill * m[:, :, None]
        shape_inv = np.full(m.shape, inv_shape, dtype=np.float32)
        if rng.random() < 0.3:  # a slanted shape
            shape_inv = shape_inv + _slope(size, rng, span=0.1 * (hi - lo))[y0:y1, x0:x1]
        region = inv[y0:y1, x0:x1]
        region[m >= 0.5] = shape_inv[m >= 0.5]
    inv = np.clip(inv, lo, hi)
    return Scene(
        sharp=np.clip(sharp, 0, 1).astype(np.float32),
        depth=(1.0 / inv).astype(np.float32),
        kind="dead_leaves",
        sources=sorted(set(tex_names)),
    )


def stereo_scene(size: int, rng: np.random.Generator) -> Scene:
    """A crop of the Middlebury motorcycle (left view) with depth from its disparity."""
    img = load_photo("motorcycle_left")
    inv = _motorcycle_inverse_depth()
    y, x, side = _random_square_crop(img.shape, size, rng, min_frac=0.5)
    sharp = _resize(img[y : y + side, x : x + side], size)
    inv_c = _resize(inv[y : y + side, x : x + side], size, nearest=True)
    if rng.random() < 0.5:
        sharp, inv_c = sharp[:, ::-1], inv_c[:, ::-1]
    lo, hi = _inv_range()
    inv_c = np.clip(inv_c, lo, hi)
    return Scene(
        sharp=np.ascontiguousarray(sharp, dtype=np.float32),
        depth=np.ascontiguousarray(1.0 / inv_c, dtype=np.float32),
        kind="stereo",
        sources=["motorcycle_left"],
    )


def make_scene(split: str, size: int, rng: np.random.Generator, kind: str | None = None) -> Scene:
    """A random scene for ``split`` ("train", "val" or "test") drawn from that split's sources."""
    if split not in SPLIT_DIRS:
        raise ValueError(f"split must be one of {sorted(SPLIT_DIRS)}, got {split!r}")
    kinds = SCENE_KINDS[split]
    if kind is None:
        names = list(kinds)
        kind = names[int(rng.choice(len(names), p=[kinds[k] for k in names]))]
    elif kind not in kinds:
        raise ValueError(f"scene kind {kind!r} is not used in the {split} split")
    if kind == "photo":
        return photo_scene(size, rng, PHOTO_SPLITS[split])
    if kind == "dead_leaves":
        return dead_leaves_scene(size, rng, PHOTO_SPLITS[split], TEXTURE_SPLITS[split])
    return stereo_scene(size, rng)


# --------------------------------------------------------------------------- dataset generation


@dataclass(frozen=True)
class SynthSettings:
    """Everything that determines a generated set (stored in ``meta.json``)."""

    num_train: int = 64
    num_val: int = 8
    num_test: int = 16
    size: int = 256
    seed: int = 0
    max_coc: float | None = None
    bit_depth: int = 8
    noise: float = 0.0
    read_noise: float = 0.0
    num_layers: int = 16

    def resolved(self) -> SynthSettings:
        """Validate, and fill ``max_coc`` from the image size when it is ``None``."""
        for name in ("num_train", "num_val", "num_test"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value < 0:
                raise NRKNetDataError(f"{name} must be a whole number >= 0, got {value!r}")
        if self.num_train + self.num_val + self.num_test == 0:
            raise NRKNetDataError("nothing to generate: num_train, num_val and num_test are all 0")
        if not isinstance(self.size, int | np.integer) or self.size < 32:
            raise NRKNetDataError(f"size must be a whole number of pixels >= 32, got {self.size!r}")
        if self.bit_depth not in (8, 16):
            raise NRKNetDataError(f"bit_depth must be 8 or 16, got {self.bit_depth!r}")
        max_coc = default_max_coc(self.size) if self.max_coc is None else float(self.max_coc)
        if not math.isfinite(max_coc) or max_coc < 0:
            raise NRKNetDataError(f"max_coc must be a number of pixels >= 0, got {self.max_coc!r}")
        if max_coc > self.size / 2:
            raise NRKNetDataError(
                f"max_coc {max_coc:g} is too large for {self.size} px images (at most {self.size / 2:g})"
            )
        for name in ("noise", "read_noise"):
            value = float(getattr(self, name))
            if not math.isfinite(value) or not 0 <= value <= 0.5:
                raise NRKNetDataError(f"{name} must be in [0, 0.5], got {getattr(self, name)!r}")
        if not isinstance(self.num_layers, int | np.integer) or not 1 <= self.num_layers <= 256:
            raise NRKNetDataError(f"num_layers must be in 1..256, got {self.num_layers!r}")
        return SynthSettings(
            num_train=int(self.num_train),
            num_val=int(self.num_val),
            num_test=int(self.num_test),
            size=int(self.size),
            seed=int(self.seed),
            max_coc=max_coc,
            bit_depth=int(self.bit_depth),
            noise=float(self.noise),
            read_noise=float(self.read_noise),
            num_layers=int(self.num_layers),
        )

    def counts(self) -> dict[str, int]:
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}

    def as_meta(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "renderer_version": RENDERER_VERSION,
            "depth_range": list(DEPTH_RANGE),
        }


@dataclass
class RenderedPair:
    """One generated pair: images quantised as written, depth in 16-bit units, metadata."""

    blurry: np.ndarray
    sharp: np.ndarray
    depth: np.ndarray
    info: dict[str, Any]


def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), _SPLIT_IDS[split], int(index)]))


def _quantise(x: np.ndarray, bit_depth: int) -> np.ndarray:
    maxv = 255 if bit_depth == 8 else 65535
    q = np.floor(np.clip(x, 0.0, 1.0) * maxv + 0.5)
    return q.astype(np.uint8 if bit_depth == 8 else np.uint16)


def minimum_blur(max_coc: float) -> float:
    """Largest blur radius (px) every rendered pair must reach: 1 px, or ``max_coc / 4`` if smaller."""
    return min(1.0, max_coc / 4.0)


def ensure_visible_blur(
    inverse_depth: np.ndarray, focus: float, aperture: float, max_coc: float
) -> tuple[float, float]:
    """Adjust a draw whose largest blur radius stays under :func:`minimum_blur`.

    A scene of narrow depth with the focus inside it can come out with no
    visible blur, and an identical pair scores an infinite PSNR. Such a draw
    is refocused on the scene's farthest point (its near end is then the most
    blurred; the background stays sharp) with the aperture opened as far as
    needed; a scene too shallow even at full aperture is focused behind it
    (towards the far end of ``DEPTH_RANGE``), so that all of it is blurred.
    """
    near_inv, far_inv = float(inverse_depth.max()), float(inverse_depth.min())
    target = minimum_blur(max_coc)
    largest = max(
        coc_radius(1.0 / near_inv, focus, max_coc, aperture=aperture),
        coc_radius(1.0 / far_inv, focus, max_coc, aperture=aperture),
    )
    if largest >= target:
        return focus, aperture
    near, far = DEPTH_RANGE
    per_inverse_depth = max_coc / (1.0 / near - 1.0 / far)  # radius at full aperture
    spread = per_inverse_depth * (near_inv - far_inv)
    if spread >= target:
        return 1.0 / far_inv, min(1.0, max(aperture, target / spread))
    focus_inv = max(1.0 / far, near_inv - target / per_inverse_depth)
    return 1.0 / focus_inv, 1.0


def render_pair(settings: SynthSettings, split: str, index: int) -> RenderedPair:
    """Render pair ``index`` of ``split``; depends only on (settings, split, index)."""
    s = settings.resolved()
    rng = _image_rng(s.seed, split, index)
    scene = make_scene(split, s.size, rng)
    sharp_q = _quantise(scene.sharp, s.bit_depth)
    sharp = sharp_q.astype(np.float32) / (255.0 if s.bit_depth == 8 else 65535.0)
    inv = 1.0 / scene.depth.astype(np.float64)
    if rng.random() < 0.75:  # focus on a random visible point
        focus = 1.0 / float(inv.flat[int(rng.integers(inv.size))])
    else:
        focus = 1.0 / float(rng.uniform(inv.min(), inv.max()))
    aperture = float(rng.uniform(0.4, 1.0))
    focus, aperture = ensure_visible_blur(inv, focus, aperture, s.max_coc)
    psf = {
        "aspect": float(rng.uniform(0.8, 1.0)),
        "angle": float(rng.uniform(0.0, np.pi)),
        "softness": float(rng.uniform(0.0, 1.0) * s.size / 256.0),
    }
    blurred_lin, info = render_defocus(
        srgb_to_linear(sharp),
        scene.depth,
        focus,
        max_coc=s.max_coc,
        aperture=aperture,
        num_layers=s.num_layers,
        psf_aspect=psf["aspect"],
        psf_angle=psf["angle"],
        psf_softness=psf["softness"],
        linear=True,
        return_info=True,
    )
    if s.noise > 0 or s.read_noise > 0:
        blurred_lin = add_sensor_noise(blurred_lin, s.noise, s.read_noise, rng)
    blurry_q = _quantise(linear_to_srgb(blurred_lin), s.bit_depth)
    depth_q = np.clip(np.rint(scene.depth * DEPTH_PNG_SCALE), 0, 65535).astype(np.uint16)
    meta = {
        "kind": scene.kind,
        "sources": scene.sources,
        "focus": round(focus, 6),
        "aperture": round(aperture, 6),
        "psf": {k: round(v, 6) for k, v in psf.items()},
        "coc_min": round(info["coc_min"], 4),
        "coc_max": round(info["coc_max"], 4),
        "layers": len(info["layer_radii"]),
    }
    return RenderedPair(blurry=blurry_q, sharp=sharp_q, depth=depth_q, info=meta)


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
    s = settings.resolved()
    if not meta or meta.get("generator") != GENERATOR_NAME or meta.get("settings") != s.as_meta():
        return False
    for split, n in s.counts().items():
        for sub in ("source", "target", "depth"):
            folder = out / SPLIT_DIRS[split] / sub
            if not folder.is_dir() or len(list(folder.glob("*.png"))) != n:
                return False
    return True


def _cleanup_stale(out: Path) -> None:
    """Remove temporary folders left by generations whose process no longer runs."""
    stale = [*out.parent.glob(f".{out.name}.tmp-*"), *out.parent.glob(f".{out.name}.old-*")]
    for tmp in stale:
        try:
            pid = int(tmp.name.rsplit("-", 2)[-2])
        except (ValueError, IndexError):
            continue
        alive = True
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            alive = False
        except (PermissionError, OSError):
            alive = True
        if not alive or pid == os.getpid():
            shutil.rmtree(tmp, ignore_errors=True)


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
    *,
    num_train: int = 64,
    num_val: int = 8,
    num_test: int = 16,
    size: int = 256,
    seed: int = 0,
    max_coc: float | None = None,
    bit_depth: int = 8,
    noise: float = 0.0,
    read_noise: float = 0.0,
    num_layers: int = 16,
    workers: int = 1,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """Generate a synthetic set in DPDD layout under ``out_dir``; return its path.

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
    ``workers`` > 1 renders in that many processes (same files).
    """
    settings = SynthSettings(
        num_train=num_train,
        num_val=num_val,
        num_test=num_test,
        size=size,
        seed=seed,
        max_coc=max_coc,
        bit_depth=bit_depth,
        noise=noise,
        read_noise=read_noise,
        num_layers=num_layers,
    ).resolved()
    out = Path(out_dir).expanduser().absolute()
    if not force and is_complete_dataset(out, settings):
        return out
    if out.exists():
        if not out.is_dir():
            raise NRKNetDataError(f"cannot generate into {out}: it exists and is not a folder")
        ours = (read_meta(out) or {}).get("generator") == GENERATOR_NAME
        if not ours and any(out.iterdir()):
            raise NRKNetDataError(
                f"cannot generate into {out}: the folder is not empty and is not a synthetic set "
                f"made by {GENERATOR_NAME} (no {META_FILE}); choose a new or empty folder"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    _cleanup_stale(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    start = time.perf_counter()
    try:
        tmp.mkdir()
        for split in SPLIT_DIRS:
            for sub in ("source", "target", "depth"):
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
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# --------------------------------------------------------------------------- command line


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(message)


def _build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="nrknet-synth",
        description="Render a synthetic defocus-deblurring set in DPDD layout "
        "(train_c/val_c/test_c with source=blurry, target=sharp, depth) plus meta.json.",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--train", type=int, default=64, help="training pairs (default 64)")
    p.add_argument("--val", type=int, default=8, help="validation pairs (default 8)")
    p.add_argument("--test", type=int, default=16, help="test pairs (default 16)")
    p.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    p.add_argument("--seed", type=int, default=0, help="global seed (default 0)")
    p.add_argument(
        "--max-coc",
        type=float,
        default=None,
        help="largest circle-of-confusion radius in px (default 12 * size / 256)",
    )
    p.add_argument("--bit-depth", type=int, choices=(8, 16), default=8, help="PNG bit depth")
    p.add_argument(
        "--noise",
        type=float,
        default=0.0,
        help="shot-noise std at full scale, linear light (default 0)",
    )
    p.add_argument("--read-noise", type=float, default=0.0, help="read-noise std (default 0)")
    p.add_argument("--layers", type=int, default=16, help="depth layers (default 16)")
    p.add_argument("--workers", type=int, default=1, help="rendering processes (default 1)")
    p.add_argument("--force", action="store_true", help="regenerate even if a matching set exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``nrknet-synth``; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args_list
    try:
        args = _build_parser().parse_args(args_list)
        if args.workers < 1:
            raise NRKNetDataError(f"--workers must be >= 1, got {args.workers}")
        settings = SynthSettings(
            num_train=args.train,
            num_val=args.val,
            num_test=args.test,
            size=args.size,
            seed=args.seed,
            max_coc=args.max_coc,
            bit_depth=args.bit_depth,
            noise=args.noise,
            read_noise=args.read_noise,
            num_layers=args.layers,
        ).resolved()
        reused = not args.force and is_complete_dataset(args.out, settings)
        start = time.perf_counter()
        out = generate_dataset(
            args.out,
            **{k: v for k, v in asdict(settings).items()},
            workers=args.workers,
            progress=not args.quiet,
            force=args.force,
        )
        total = sum(settings.counts().values())
        if reused:
            print(f"{out}: complete set with these settings already present, reused")
        else:
            print(f"wrote {total} pairs to {out} in {time.perf_counter() - start:.1f} s")
        return 0
    except _UsageError as exc:
        print(f"nrknet-synth: error: {exc} (see --help)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nrknet-synth: interrupted; no partial set was left behind", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            traceback.print_exc()
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"nrknet-synth: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
