"""Tiled inference: deblur images of any size with memory bounded by the tile.

NRKNet is a multi-scale network (nearest-neighbour pyramid, a U-Net at every
scale, a ConvLSTM carried from scale to scale, 43x43 recursive atoms applied
several times), so a tile only reproduces the whole-image result if it is cut
the way the whole image is processed. The rules used here:

* **The same padded image.** The model reflect-pads the photo at its right and
  bottom edges to a multiple of :attr:`NRKNet.size_multiple` (16 for three
  scales), and to at least twice that. Tiles are cut from that padded image
  (the padding is rebuilt per tile, never materialised for the whole photo),
  and every window is at least twice the multiple on a side, so the network
  never pads a window again. An image that fits one window is passed to the
  network unpadded, which is exactly whole-image inference.
* **Aligned windows.** Every window starts at a multiple of the size multiple
  and has a size that is a multiple of it, so the sampling grids of the input
  pyramid, of the stride-2 convolutions, of the 2x2 pooling and of the
  resampling between scales coincide with the whole image's.
* **Real borders stay borders.** A window that reaches the image border is not
  padded by us: the network pads it layer by layer exactly as it pads the
  whole image. Only the internal edges of a window are artificial.
* **Context margin and blending.** Each tile owns a *core* region; its window
  adds ``overlap`` pixels of context on every side that has a neighbour. The
  output is blended with separable linear ramps of width ``blend`` centred on
  the core boundaries; the ramps of neighbouring tiles sum to one, so the
  weights form an exact partition of unity and no normalisation buffer is
  needed. Pixels in a ramp are still at least ``overlap - blend / 2`` pixels
  away from the artificial edge of every window that contributes to them.

Default overlap, chosen by measurement. Largest absolute difference between
tiled and whole-image inference (blend 32, float32, CPU; randomly initialised
models; outputs span about -0.7 .. 4.7; tile 96 on 400x464 for width 8, tile 64
on 320x384 for width 64, so most tile edges are artificial):

    overlap             16      32      48      64      80      96      128
    width 8             8.5e-3  1.1e-3  1.6e-5  4.1e-6  1.4e-6  9.5e-7  9.5e-7
    width 8, stressed   -       2.4e-3  4.8e-5  8.6e-6  2.9e-6  1.4e-6  9.5e-7
    width 64            3.3e-2  2.5e-3  5.8e-5  1.8e-5  -       1.4e-6  9.5e-7

("stressed": the widest atoms the 3-tap softmax allows, taps ~[0.45, 0.1, 0.45],
a ConvLSTM forget gate biased open by +3 and mixing weights growing six-fold
towards the widest level, to mimic a trained model that relies on large
blur.) The error falls about tenfold per 16 pixels of margin and reaches the
float32 rounding floor (~1e-6) near 96. 1e-4 is met from 48; the default,
:data:`DEFAULT_OVERLAP` = 128 (112 px of context left after the 16 px
half-ramp), keeps a factor of more than two in margin for trained weights
whose effective receptive field may be wider than a random network's. It also
exceeds the full-resolution radius of the largest atom seen at quarter scale
(21 px x 4 = 84 px). The theoretical receptive field (U-Net and three atom
passes at quarter scale, the ConvLSTM carried through the scales) is several
hundred pixels, but its far part carries negligible weight.
`benchmarks/bench_predict.py` repeats the sweep.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from nrknet.ops.padding import reflect_pad
from nrknet.utils.checks import number

__all__ = [
    "DEFAULT_BLEND",
    "DEFAULT_OVERLAP",
    "DEFAULT_TILE",
    "Tile",
    "TilePlan",
    "blend_weights",
    "default_overlap",
    "plan_tiles",
    "predict_tiled",
    "tiled_apply",
]

#: Default core size of a tile, in pixels (rounded up to the model's size multiple).
DEFAULT_TILE = 512
#: Default width of the blending ramp between neighbouring tiles, in pixels.
DEFAULT_BLEND = 32
#: Default context margin on each side of a tile for the reference model (3 scales, J = 21).
DEFAULT_OVERLAP = 128


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def default_overlap(model: torch.nn.Module | None = None, blend: int = DEFAULT_BLEND) -> int:
    """Context margin (pixels on each side of a tile) that makes seams invisible.

    ``context + blend / 2`` rounded up to the size multiple, with 112 px of
    context for the reference configuration (3 scales, atoms of radius 21 or
    less), which gives 128 with the default blend (see the module notes for
    the measurements). The context grows in proportion to the coarsest
    scale's factor ``2^(S-1) / 4`` and to the atom radius beyond 21, since
    both widen the receptive field.
    """
    multiple = 16
    context = 112
    if model is not None:
        multiple = int(getattr(model, "size_multiple", 16))
        scales = int(getattr(model, "num_scales", 3))
        blur = getattr(model, "blur", None)
        atoms = getattr(blur, "atoms", None)
        radius = int(getattr(atoms, "max_radius", 21))
        # 112 px for 3 scales and radius 21; grows with the coarsest scale and the atom support.
        context = max(112, math.ceil(112 * (2 ** (scales - 1) / 4) * max(radius, 21) / 21))
    return _round_up(context + blend // 2, multiple)


@dataclass(frozen=True)
class Tile:
    """One tile, in coordinates of the padded image: window (network input) and core (owned output)."""

    y0: int
    y1: int
    x0: int
    x1: int
    core_y0: int
    core_y1: int
    core_x0: int
    core_x1: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0


@dataclass(frozen=True)
class TilePlan:
    """How an image is cut: its size, padded size, the tiles and the blending ramp."""

    height: int
    width: int
    padded_height: int
    padded_width: int
    tiles: tuple[Tile, ...]
    blend: int

    @property
    def whole(self) -> bool:
        """True when a single window covers the whole (padded) image."""
        return len(self.tiles) == 1

    def __len__(self) -> int:
        return len(self.tiles)


def _axis_cores(size: int, tile: int, multiple: int) -> list[tuple[int, int]]:
    """Split ``[0, size)`` into balanced cores of at most ``tile``, aligned to ``multiple``."""
    count = max(1, -(-size // tile))
    units = size // multiple
    base, extra = divmod(units, count)
    cores, start = [], 0
    for i in range(count):
        length = (base + (1 if i < extra else 0)) * multiple
        cores.append((start, start + length))
        start += length
    return [c for c in cores if c[1] > c[0]]


def plan_tiles(
    height: int,
    width: int,
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    multiple: int = 16,
    blend: int | None = None,
    whole_if_fits: bool = True,
    min_size: int | None = None,
) -> TilePlan:
    """Cut an image of ``height`` x ``width`` into aligned, overlapping tiles.

    ``tile`` is the side of the core each tile owns and ``overlap`` the
    context added on each side, so a window is at most ``tile + 2 overlap``
    pixels wide; both are rounded up to ``multiple``. With ``whole_if_fits``
    an image whose padded area is at most a window's area is processed whole
    (one tile). ``blend`` (default :data:`DEFAULT_BLEND`) is the width of the
    ramps between neighbouring cores, capped at ``2 overlap`` and at the
    shortest core; ``blend = 0`` crops the cores without blending.
    ``min_size`` (default ``2 multiple``, the smallest input NRKNet runs
    without padding it further) is the least padded size and window side.
    """
    number("height", height, minimum=1, integer=True)
    number("width", width, minimum=1, integer=True)
    number("tile", tile, minimum=1, integer=True)
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    tile = _round_up(tile, multiple)
    overlap = _round_up(overlap, multiple)
    min_size = _round_up(2 * multiple if min_size is None else max(min_size, 1), multiple)
    padded_h = max(_round_up(height, multiple), min_size)
    padded_w = max(_round_up(width, multiple), min_size)
    window = tile + 2 * overlap
    if whole_if_fits and padded_h * padded_w <= window * window:
        rows, cols = [(0, padded_h)], [(0, padded_w)]
    else:
        rows = _axis_cores(padded_h, tile, multiple)
        cols = _axis_cores(padded_w, tile, multiple)
    blend = DEFAULT_BLEND if blend is None else blend
    shortest = min(min(b - a for a, b in rows), min(b - a for a, b in cols))
    blend = max(0, min(blend, 2 * overlap, shortest))
    blend -= blend % 2

    def window(start: int, stop: int, size: int) -> tuple[int, int]:
        lo, hi = max(0, start - overlap), min(size, stop + overlap)
        if hi - lo < min_size:  # the network would pad a smaller window itself
            hi = min(size, lo + min_size)
            lo = max(0, hi - min_size)
        return lo, hi

    tiles = tuple(
        Tile(*window(r0, r1, padded_h), *window(c0, c1, padded_w), r0, r1, c0, c1)
        for r0, r1 in rows
        for c0, c1 in cols
    )
    return TilePlan(height, width, padded_h, padded_w, tiles, blend)


def _ramp(start: int, stop: int, core0: int, core1: int, size: int, blend: int) -> torch.Tensor:
    """1-D blending weight over ``[start, stop)`` for the core ``[core0, core1)`` of an axis of ``size``."""
    x = torch.arange(start, stop, dtype=torch.float32) + 0.5
    w = torch.ones_like(x)
    half = blend / 2
    if blend > 0:
        if core0 > 0:
            w = torch.minimum(w, ((x - (core0 - half)) / blend).clamp(0, 1))
        if core1 < size:
            w = torch.minimum(w, (((core1 + half) - x) / blend).clamp(0, 1))
    else:
        w = ((x >= core0) & (x < core1)).float()
    return w


def blend_weights(plan: TilePlan, tile: Tile) -> torch.Tensor:
    """Weights (h, w) of ``tile``'s window; over all tiles of ``plan`` they sum to one per pixel."""
    wy = _ramp(tile.y0, tile.y1, tile.core_y0, tile.core_y1, plan.padded_height, plan.blend)
    wx = _ramp(tile.x0, tile.x1, tile.core_x0, tile.core_x1, plan.padded_width, plan.blend)
    return wy[:, None] * wx[None, :]


def _reflect_index(start: int, stop: int, size: int) -> torch.Tensor:
    """Indices ``start..stop-1`` with those past ``size`` reflected (single reflection)."""
    idx = torch.arange(start, stop)
    return torch.where(idx >= size, 2 * (size - 1) - idx, idx)


def _window(image: torch.Tensor, plan: TilePlan, tile: Tile) -> torch.Tensor:
    """The window of ``tile`` from ``image`` (C, H, W) as a (1, C, h, w) batch.

    The whole-image path reflect-pads the right and bottom edges up to the
    padded size; a window reaching past the original edge gets the same
    pixels, gathered from the image by reflected indices.
    """
    height, width = plan.height, plan.width
    if tile.y1 <= height and tile.x1 <= width:
        return image[:, tile.y0 : tile.y1, tile.x0 : tile.x1].unsqueeze(0)
    pad_h, pad_w = plan.padded_height - height, plan.padded_width - width
    if height <= pad_h or width <= pad_w:
        # Thinner than its padding: pad the whole (thin) image as the network would, then cut.
        return reflect_pad(image.unsqueeze(0), (0, pad_w, 0, pad_h))[
            ..., tile.y0 : tile.y1, tile.x0 : tile.x1
        ]
    rows = _reflect_index(tile.y0, tile.y1, height)
    cols = _reflect_index(tile.x0, tile.x1, width)
    return image[:, rows][:, :, cols].unsqueeze(0)


def _batches(plan: TilePlan, batch: int) -> Iterator[list[Tile]]:
    """Consecutive tiles of equal window shape, at most ``batch`` at a time."""
    group: list[Tile] = []
    for tile in plan.tiles:
        if group and (len(group) == batch or group[0].shape != tile.shape):
            yield group
            group = []
        group.append(tile)
    if group:
        yield group


def tiled_apply(
    fn: Callable[[torch.Tensor], torch.Tensor],
    image: np.ndarray | torch.Tensor,
    out_channels: int,
    *,
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    multiple: int = 16,
    blend: int | None = None,
    batch: int = 1,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    whole_if_fits: bool = True,
    progress: Callable[[int, int], None] | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Apply a dense image-to-image ``fn`` tile by tile and blend the results.

    ``image`` is an H x W x C numpy array (or a C x H x W tensor), float32;
    ``fn`` maps a batch (N, C, h, w) on ``device`` in ``dtype`` to (N,
    ``out_channels``, h, w). Returns an H x W x ``out_channels`` float32 numpy
    array (``out`` if given), accumulated on the CPU so memory is bounded by
    the tile, not the image. ``progress(done, total)`` is called after every
    batch of tiles. Runs under :func:`torch.inference_mode`.
    """
    if isinstance(image, np.ndarray):
        if image.ndim != 3:
            raise ValueError(f"expected an H x W x C array, got shape {image.shape}")
        source = torch.from_numpy(image).permute(2, 0, 1)
    else:
        if image.dim() != 3:
            raise ValueError(f"expected a C x H x W tensor, got shape {tuple(image.shape)}")
        source = image
    height, width = source.shape[-2:]
    plan = plan_tiles(height, width, tile, overlap, multiple, blend, whole_if_fits)
    if out is None:
        out = np.zeros((height, width, out_channels), np.float32)
    elif out.shape != (height, width, out_channels):
        raise ValueError(f"out has shape {out.shape}, expected {(height, width, out_channels)}")
    else:
        out.fill(0)
    target = torch.from_numpy(out)
    device = torch.device(device)
    done = 0
    with torch.inference_mode():
        if plan.whole:
            # The unpadded image: the network pads it exactly as it pads any input.
            x = source.unsqueeze(0).to(device=device, dtype=dtype)
            y = fn(x.contiguous(memory_format=torch.contiguous_format))
            del x
            target[...] = y[0].to(device="cpu", dtype=torch.float32).permute(1, 2, 0)
            del y
            if progress is not None:
                progress(1, 1)
            return out
        for group in _batches(plan, max(1, batch)):
            # Standard (NCHW) layout whatever the source's strides (an HWC array gives channels-last views).
            x = torch.cat([_window(source, plan, t) for t in group])
            x = x.to(device=device, dtype=dtype).contiguous(memory_format=torch.contiguous_format)
            y = fn(x)
            del x
            y = y.to(device="cpu", dtype=torch.float32)
            for i, t in enumerate(group):
                h1, w1 = min(t.y1, height), min(t.x1, width)
                part = y[i, :, : h1 - t.y0, : w1 - t.x0]
                weights = blend_weights(plan, t)[: h1 - t.y0, : w1 - t.x0]
                target[t.y0 : h1, t.x0 : w1] += (part * weights).permute(1, 2, 0)
            del y
            done += len(group)
            if progress is not None:
                progress(done, len(plan))
    return out


def predict_tiled(
    model: torch.nn.Module,
    blurry: torch.Tensor,
    tile: int = DEFAULT_TILE,
    overlap: int | None = None,
    blend: int | None = None,
    batch: int = 1,
    whole_if_fits: bool = True,
) -> torch.Tensor:
    """Deblur a batch (N, 3, H, W) tile by tile; same result as ``model(blurry)`` up to ~1e-4.

    ``overlap`` defaults to :func:`default_overlap` of the model. Runs on the
    device and in the dtype of ``blurry``; the model must be in eval mode.
    """
    if blurry.dim() != 4:
        raise ValueError(f"expected a batch (N, C, H, W), got shape {tuple(blurry.shape)}")
    overlap = default_overlap(model) if overlap is None else overlap
    multiple = int(getattr(model, "size_multiple", 16))
    outputs = []
    for image in blurry:
        result = tiled_apply(
            model,
            image.detach().cpu().float(),
            image.shape[0],
            tile=tile,
            overlap=overlap,
            multiple=multiple,
            blend=blend,
            batch=batch,
            device=blurry.device,
            dtype=blurry.dtype,
            whole_if_fits=whole_if_fits,
        )
        outputs.append(torch.from_numpy(result).permute(2, 0, 1))
    return torch.stack(outputs).to(device=blurry.device, dtype=blurry.dtype)
