"""Thin-lens defocus optics: colour encoding, circle of confusion, disk PSFs, layered rendering.

Optics
    Depth lies in ``DEPTH_RANGE`` = [1, 10] (arbitrary units). The circle of
    confusion radius is ``aperture * max_coc * |1/d - 1/d_focus| / (1/near - 1/far)``,
    so ``max_coc`` is the largest radius the generator can produce (focus at
    one end of the range, object at the other, full aperture). The
    point-spread function is a disk with area-coverage anti-aliasing,
    optionally elliptical and with a soft rim.

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
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

#: Depth range of every scene (near, far), arbitrary units.
DEPTH_RANGE = (1.0, 10.0)


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
