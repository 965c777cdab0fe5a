"""Deblurring one image of any size: tiling, precision and the optional defocus and coefficient maps."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from nrknet.errors import ConfigError, DataError
from nrknet.inference.self_ensemble import DIHEDRAL_GROUP, self_ensemble
from nrknet.inference.tiling import DEFAULT_BLEND, DEFAULT_TILE, default_overlap, tiled_apply
from nrknet.inference.windows import WindowFunction
from nrknet.models.nrknet import NRKNet

__all__ = [
    "Deblurred",
    "Deblurrer",
    "SettingError",
    "check_levels",
    "check_tiling",
    "smallest_side",
]


class SettingError(ConfigError):
    """A setting outside its range: ``setting`` names it, ``expected`` says what it must be."""

    def __init__(self, setting: str, expected: str, got: object = None) -> None:
        self.setting = setting
        self.expected = expected
        super().__init__(f"{setting} {expected}" + ("" if got is None else f", got {got!r}"))


def check_tiling(tile: int, overlap: int | None, blend: int, batch: int) -> None:
    """Raise :class:`SettingError` for the first tiling setting out of range (``overlap=None``: measured)."""
    for setting, value in (("tile", tile), ("batch", batch)):
        if value < 1:
            raise SettingError(setting, "must be a positive integer")
    if overlap is not None and overlap < 0:
        raise SettingError("overlap", "must be >= 0")
    if blend < 0:
        raise SettingError("blend", "must be >= 0")


def check_levels(levels: Sequence[int], num_maps: int) -> None:
    """Raise :class:`SettingError` unless ``levels`` is a non-empty selection of ``0 .. num_maps - 1``."""
    if not levels or any(not 0 <= j < num_maps for j in levels):
        raise SettingError("levels", f"must lie in 0..{num_maps - 1}", got=list(levels))


def smallest_side(model: torch.nn.Module) -> int:
    """The fewest pixels a side of an image must have for ``model`` to run on it.

    Networks reflect-pad their input, which needs more pixels than the pad.
    NRKNet pads in as many mirror steps as it takes: 2 pixels. A network that
    pads in one step to its size multiple ``m`` (the U-Net baseline) pads by up
    to ``m - 1``: ``m // 2 + 1`` pixels.
    """
    if isinstance(model, NRKNet):
        return 2
    return int(getattr(model, "size_multiple", 1)) // 2 + 1


@dataclass
class Deblurred:
    """One image's results: H x W (x C) float32 views of one buffer."""

    rgb: np.ndarray
    #: Effective blur radius in pixels (see :mod:`nrknet.analysis.defocus`), when asked for.
    defocus: np.ndarray | None
    #: Full-scale coefficient maps, one channel per entry of ``levels``, when asked for.
    coefficients: np.ndarray | None
    levels: list[int]


class Deblurrer:
    """Deblur H x W x 3 float32 images with ``model`` on ``device``, tile by tile when they are large.

    Images whose padded area fits one window (``tile + 2 overlap`` on a side)
    run whole; larger ones run in tiles of ``tile`` pixels with ``overlap``
    pixels of context (default: measured for the model, see
    :func:`nrknet.inference.tiling.default_overlap`) blended over ``blend`` pixels,
    ``batch`` tiles per forward pass, so memory is bounded by the tile.
    ``defocus`` adds the effective blur radius, ``levels`` the coefficient
    maps of those levels; ``autocast_dtype`` runs the network under autocast.
    ``self_ensemble`` averages the (tiled) results of the eight flips and
    quarter turns of the image (:mod:`nrknet.inference.self_ensemble`).
    A side shorter than :func:`smallest_side` is extended by repeating its
    last row or column for the network and cropped back in the results.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        device: torch.device,
        tile: int = DEFAULT_TILE,
        overlap: int | None = None,
        blend: int = DEFAULT_BLEND,
        batch: int = 1,
        autocast_dtype: torch.dtype | None = None,
        defocus: bool = False,
        levels: Sequence[int] = (),
        self_ensemble: bool = False,
    ) -> None:
        check_tiling(tile, overlap, blend, batch)
        self.self_ensemble = self_ensemble
        self.smallest_side = smallest_side(model)
        if levels:
            check_levels(levels, model.num_maps)
        self.window = WindowFunction(
            model, defocus=defocus, levels=levels, autocast_dtype=autocast_dtype
        )
        self.settings = dict(
            tile=tile,
            overlap=default_overlap(model, blend) if overlap is None else overlap,
            multiple=getattr(model, "size_multiple", 1),
            blend=blend,
            batch=batch,
            device=device,
        )

    @property
    def defocus(self) -> bool:
        return self.window.defocus

    @property
    def levels(self) -> list[int]:
        return self.window.levels

    def __call__(
        self, rgb: np.ndarray, progress: Callable[[int, int], None] | None = None
    ) -> Deblurred:
        """Deblur ``rgb`` (H x W x 3 floats in [0, 1], computed in float32); ``progress(done, total)``
        follows the tiles."""
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise DataError(f"Deblurrer: expected an H x W x 3 RGB image, got shape {rgb.shape}")
        if rgb.dtype.kind != "f":
            raise DataError(
                f"Deblurrer: expected float values in [0, 1], got dtype {rgb.dtype} "
                "(divide 8-bit images by 255, 16-bit ones by 65535, or read them with read_image)"
            )
        rgb = rgb.astype(np.float32, copy=False)
        height, width = rgb.shape[:2]
        grow_h, grow_w = self.smallest_side - height, self.smallest_side - width
        if grow_h > 0 or grow_w > 0:
            # Too thin for the network's own reflection padding; larger images are left as they are.
            rgb = np.pad(rgb, ((0, max(grow_h, 0)), (0, max(grow_w, 0)), (0, 0)), mode="edge")
        if self.self_ensemble:
            result = self._self_ensemble(rgb, progress)
        else:
            result = tiled_apply(
                self.window, rgb, self.window.channels, progress=progress, **self.settings
            )
        result = result[:height, :width]
        extra = 3
        defocus = None
        if self.defocus:
            defocus = result[..., extra]
            extra += 1
        coefficients = result[..., extra:] if self.levels else None
        return Deblurred(result[..., :3], defocus, coefficients, list(self.levels))

    def _self_ensemble(
        self, rgb: np.ndarray, progress: Callable[[int, int], None] | None
    ) -> np.ndarray:
        """The whole tiled deblur per transform, so every transform sees the image exactly as one pass does."""
        passes = len(DIHEDRAL_GROUP)
        done_passes = 0

        def deblur(image: torch.Tensor) -> torch.Tensor:
            nonlocal done_passes
            offset = done_passes
            done_passes += 1

            def tiles_done(done: int, total: int) -> None:
                progress(offset * total + done, passes * total)

            result = tiled_apply(
                self.window,
                image,
                self.window.channels,
                progress=None if progress is None else tiles_done,
                **self.settings,
            )
            return torch.from_numpy(result).permute(2, 0, 1)

        image = torch.from_numpy(rgb).permute(2, 0, 1)
        return self_ensemble(deblur, image).permute(1, 2, 0).contiguous().numpy()
