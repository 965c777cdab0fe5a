"""Sharp scenes with depth for the synthetic renderer, drawn from disjoint photographs per split.

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
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from nrknet.data.synthetic.optics import DEPTH_RANGE
from nrknet.utils.checks import choice

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
    kinds = SCENE_KINDS[choice("split", split, SCENE_KINDS)]
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
