"""PyTorch datasets of blurry/sharp pairs (and blurry-only images) with paired augmentation.

Items are dicts of float32 RGB tensors in [0, 1], channels first:
``{"blurry": 3xHxW, "sharp": 3xHxW, "name": str}`` (``BlurryOnlyDataset``:
no ``"sharp"``). A dataset's ``score_crop`` attribute (``None`` or
``(start, stop)``, applied to rows and columns) tells the evaluation which
region to score; the images themselves are never cropped for it.

Bad files: at construction every file is probed (header and end markers
only, see :func:`~nrknet.data.io.probe_image`), so missing, empty, truncated
and non-image files and pairs of different sizes are found before training
starts. With ``on_bad_image="raise"`` (default) the first problem raises; with
``"skip"`` unreadable pairs are dropped with a warning and listed in
``dataset.skipped`` as ``(path, reason)`` (pairs of different sizes always
raise). A file that passes the probe but fails to decode later is handled the
same way when loaded: ``"skip"`` then warns and serves the next good item
(that late skip is recorded only in the process that loaded it, e.g. a
DataLoader worker).

``cache="ram"`` decodes every image once into shared memory (see
:mod:`nrknet.data.cache`); crops, flips and values are then the same as when
decoding from disk with the same random numbers.

Random numbers: ``dataset[i]`` augments with the global torch RNG;
``dataset[SampleKey(i, seed)]`` (what the training sampler of
:mod:`nrknet.data.resumable` yields) with a generator seeded from ``seed``, so
the item is the same in any process and after any resumption.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from nrknet.data.cache import SharedImageCache, check_cache_mode, unit_float_tensor
from nrknet.data.io import (
    ImageInfo,
    ImageReadError,
    NRKNetDataError,
    SizeMismatchError,
    probe_image,
    read_image,
)
from nrknet.data.layouts import (
    RTF_SCORE_CROP,
    Pair,
    find_dpdd_root,
    list_images,
    scan_cuhk,
    scan_dpdd,
    scan_lfdof,
    scan_realdof,
    scan_rtf,
    split_lfdof_scenes,
)
from nrknet.data.resumable import SampleKey
from nrknet.utils.checks import number

__all__ = [
    "RTF_SCORE_CROP",
    "BlurryOnlyDataset",
    "Pair",
    "PairedImageDataset",
    "find_dpdd_root",
    "list_images",
    "make_test_dataset",
    "paired_crop",
    "paired_flips",
    "scan_cuhk",
    "scan_dpdd",
    "scan_lfdof",
    "scan_realdof",
    "scan_rtf",
    "split_lfdof_scenes",
]

_ON_BAD = ("raise", "skip")


def _check_on_bad(value: str) -> str:
    if value not in _ON_BAD:
        raise ValueError(f"on_bad_image must be 'raise' or 'skip', got {value!r}")
    return value


def _crop_hw(crop_size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if crop_size is None:
        return None
    if isinstance(crop_size, int | np.integer):
        h = w = number("crop_size", int(crop_size), minimum=1, integer=True)
    else:
        h, w = (
            number(f"crop_size[{i}]", int(v), minimum=1, integer=True)
            for i, v in enumerate(crop_size)
        )
    return h, w


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


def _pad_reflect(img: np.ndarray, h: int, w: int) -> np.ndarray:
    ph, pw = max(h - img.shape[0], 0), max(w - img.shape[1], 0)
    if ph == 0 and pw == 0:
        return img
    pad = ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0))
    mode = "reflect" if min(img.shape[:2]) > 1 else "edge"
    return np.pad(img, pad, mode=mode)


def paired_crop(
    images: Sequence[np.ndarray],
    size: tuple[int, int],
    *,
    random: bool,
    pad_if_smaller: bool = True,
    name: str = "",
    generator: torch.Generator | None = None,
) -> list[np.ndarray]:
    """Crop HxWxC arrays of equal size at the same place (random or central).

    Images smaller than ``size`` are reflection-padded (centred) first, unless
    ``pad_if_smaller`` is false, in which case :class:`NRKNetDataError` is
    raised naming ``name`` and both sizes. Random offsets come from
    ``generator`` (default: the global torch RNG).
    """
    h, w = size
    ih, iw = images[0].shape[:2]
    if ih < h or iw < w:
        if not pad_if_smaller:
            raise NRKNetDataError(
                f"image {name or '?'} is {iw}x{ih} (WxH), smaller than the crop {w}x{h}; "
                "use a smaller data.crop_size or data.pad_if_smaller=true"
            )
        images = [_pad_reflect(im, h, w) for im in images]
        ih, iw = images[0].shape[:2]
    if random:
        y = int(torch.randint(0, ih - h + 1, (1,), generator=generator))
        x = int(torch.randint(0, iw - w + 1, (1,), generator=generator))
    else:
        y, x = (ih - h) // 2, (iw - w) // 2
    return [im[y : y + h, x : x + w] for im in images]


def _draw_flips(generator: torch.Generator | None = None) -> tuple[bool, bool, int]:
    """Horizontal flip, vertical flip and number of 90-degree turns, drawn in this order."""
    hflip = bool(torch.rand((), generator=generator) < 0.5)
    vflip = bool(torch.rand((), generator=generator) < 0.5)
    return hflip, vflip, int(torch.randint(0, 4, (1,), generator=generator))


def paired_flips(
    tensors: Sequence[torch.Tensor], generator: torch.Generator | None = None
) -> list[torch.Tensor]:
    """Apply the same random horizontal flip, vertical flip and 90-degree rotation to CxHxW tensors.

    Exact (``torch.flip`` / ``torch.rot90``). The rotation is applied only to
    square images, so a batch of equal-sized crops keeps its shape; the random
    numbers are drawn either way.
    """
    hflip, vflip, k = _draw_flips(generator)
    out = []
    for t in tensors:
        if hflip:
            t = torch.flip(t, dims=(-1,))
        if vflip:
            t = torch.flip(t, dims=(-2,))
        if k and t.shape[-1] == t.shape[-2]:
            t = torch.rot90(t, k, dims=(-2, -1))
        out.append(t.contiguous())
    return out


def _flip_view(img: np.ndarray, hflip: bool, vflip: bool, k: int) -> np.ndarray:
    """:func:`paired_flips` on an HxWxC array, as a view: the one copy is made when converting."""
    if hflip:
        img = img[:, ::-1]
    if vflip:
        img = img[::-1]
    if k and img.shape[0] == img.shape[1]:
        img = np.rot90(img, k, axes=(0, 1))
    return img


def _probe_cached(path: Path, cache: dict[Path, ImageInfo | ImageReadError]) -> ImageInfo:
    if path not in cache:
        try:
            cache[path] = probe_image(path)
        except ImageReadError as exc:
            cache[path] = exc
    result = cache[path]
    if isinstance(result, ImageReadError):
        raise result
    return result


class PairedImageDataset(Dataset):
    """Blurry/sharp image pairs as float32 RGB tensors in [0, 1].

    Args:
        pairs: ``(blurry_path, sharp_path, name)`` tuples.
        crop_size: ``None`` for whole images, or an int / ``(h, w)``: a random
            crop when ``augment``, else a central crop.
        augment: random crop position plus the same random horizontal flip,
            vertical flip and 90-degree rotation for both images.
        on_bad_image: ``"raise"`` or ``"skip"`` (see the module docstring).
        score_crop: ``(start, stop)`` rows/columns to score, stored as the
            ``score_crop`` attribute for the evaluation (not applied here).
        pad_if_smaller: reflection-pad images smaller than the crop (else raise).
        check_files: probe every file at construction (default); turn off
            only for trusted data when start-up time matters.
        cache: ``"none"`` (decode on every access) or ``"ram"`` (decode once
            into shared memory at construction, with a progress bar).
        cache_workers: threads decoding while the cache is filled.
    """

    def __init__(
        self,
        pairs: Sequence[Pair | tuple[str | os.PathLike, str | os.PathLike, str]],
        crop_size: int | Sequence[int] | None = None,
        augment: bool = False,
        on_bad_image: str = "raise",
        score_crop: tuple[int, int] | None = None,
        pad_if_smaller: bool = True,
        check_files: bool = True,
        cache: str = "none",
        cache_workers: int = 1,
    ) -> None:
        self.on_bad_image = _check_on_bad(on_bad_image)
        check_cache_mode(cache)
        self.crop_size = _crop_hw(crop_size)
        self.augment = bool(augment)
        self.score_crop = tuple(int(v) for v in score_crop) if score_crop is not None else None
        self.pad_if_smaller = bool(pad_if_smaller)
        self.skipped: list[tuple[str, str]] = []
        all_pairs = [(Path(b), Path(s), str(n)) for b, s, n in pairs]
        self.pairs: list[Pair] = self._validate(all_pairs) if check_files else all_pairs
        self.cache: SharedImageCache | None = None
        if cache == "ram" and self.pairs:
            self.cache = self._fill_cache(cache_workers)
        if not self.pairs:
            raise NRKNetDataError(
                "no usable image pairs"
                + (f" ({len(self.skipped)} skipped as unreadable)" if self.skipped else "")
            )

    def _validate(self, pairs: list[Pair]) -> list[Pair]:
        cache: dict[Path, ImageInfo | ImageReadError] = {}
        good: list[Pair] = []
        for b, s, name in pairs:
            try:
                ib = _probe_cached(b, cache)
                is_ = _probe_cached(s, cache)
            except ImageReadError as exc:
                if self.on_bad_image == "raise":
                    raise
                self._skip(str(exc.path), exc.reason, warn=False)
                continue
            if (ib.width, ib.height) != (is_.width, is_.height):
                raise SizeMismatchError(
                    f"pair {name!r} has different sizes: blurry {b} is {ib.width}x{ib.height}, "
                    f"sharp {s} is {is_.width}x{is_.height} (WxH)"
                )
            good.append((b, s, name))
        if self.skipped:
            warnings.warn(
                f"skipped {len(self.skipped)} unreadable image pair(s), e.g. "
                f"{self.skipped[0][0]}: {self.skipped[0][1]}",
                stacklevel=3,
            )
        return good

    def _fill_cache(self, workers: int) -> SharedImageCache:
        cache = SharedImageCache(
            (p for b, s, _ in self.pairs for p in (b, s)),
            workers=workers,
            on_bad_image=self.on_bad_image,
        )
        if cache.failed:
            for path, reason in cache.failed.items():
                self._skip(str(path), reason)
            self.pairs = [p for p in self.pairs if p[0] in cache and p[1] in cache]
        return cache

    def _read_pair(self, b_path: Path, s_path: Path) -> tuple[np.ndarray, np.ndarray]:
        """Both images as HxWx3 arrays: float32 from disk, or the file's integers from the cache."""
        if self.cache is None:
            return read_image(b_path), read_image(s_path)
        return self.cache[b_path], self.cache[s_path]

    def _skip(self, path: str, reason: str, warn: bool = True) -> None:
        self.skipped.append((path, reason))
        if warn:
            warnings.warn(f"skipping unreadable image {path}: {reason}", stacklevel=3)

    @property
    def names(self) -> list[str]:
        return [p[2] for p in self.pairs]

    def fingerprint(self) -> str:
        """The sha256 of its pairs' names and file contents, in order: equal on two machines
        exactly when they read the same images (a rendered set is made again on each)."""
        digest = hashlib.sha256()
        for blurry, sharp, name in self.pairs:
            digest.update(name.encode())
            for path in (blurry, sharp):
                with open(path, "rb") as f:
                    digest.update(hashlib.file_digest(f, "sha256").digest())
        return digest.hexdigest()

    def __len__(self) -> int:
        return len(self.pairs)

    def _load(self, index: int, generator: torch.Generator | None) -> dict[str, Any]:
        b_path, s_path, name = self.pairs[index]
        blurry, sharp = self._read_pair(b_path, s_path)
        if blurry.shape != sharp.shape:
            raise SizeMismatchError(
                f"pair {name!r} has different sizes: blurry {b_path} is "
                f"{blurry.shape[1]}x{blurry.shape[0]}, sharp {s_path} is "
                f"{sharp.shape[1]}x{sharp.shape[0]} (WxH)"
            )
        if self.crop_size is not None:
            blurry, sharp = paired_crop(
                [blurry, sharp],
                self.crop_size,
                random=self.augment,
                pad_if_smaller=self.pad_if_smaller,
                name=str(b_path),
                generator=generator,
            )
        if self.augment:
            flips = _draw_flips(generator)
            blurry, sharp = _flip_view(blurry, *flips), _flip_view(sharp, *flips)
        # Cached integers are converted only now, and only the crop.
        to_chw = _to_tensor if self.cache is None else unit_float_tensor
        return {"blurry": to_chw(blurry), "sharp": to_chw(sharp), "name": name}

    def __getitem__(self, key: int | SampleKey) -> dict[str, Any]:
        index, generator = key, None
        if isinstance(key, SampleKey):
            index, generator = key.index, torch.Generator().manual_seed(key.augment_seed)
        if self.on_bad_image == "raise":
            return self._load(index, generator)
        for attempt in range(len(self.pairs)):
            i = (index + attempt) % len(self.pairs)
            try:
                return self._load(i, generator)
            except ImageReadError as exc:
                self._skip(str(exc.path), exc.reason)
        raise NRKNetDataError("every image pair of the dataset is unreadable")


class BlurryOnlyDataset(Dataset):
    """Blurry images without ground truth (CUHK-BD): items ``{"blurry", "name"}``."""

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        on_bad_image: str = "raise",
        check_files: bool = True,
    ) -> None:
        self.on_bad_image = _check_on_bad(on_bad_image)
        self.score_crop = None
        self.skipped: list[tuple[str, str]] = []
        self.paths: list[Path] = []
        for p in map(Path, paths):
            if check_files:
                try:
                    probe_image(p)
                except ImageReadError as exc:
                    if self.on_bad_image == "raise":
                        raise
                    self.skipped.append((str(exc.path), exc.reason))
                    continue
            self.paths.append(p)
        if self.skipped:
            warnings.warn(
                f"skipped {len(self.skipped)} unreadable image(s), e.g. "
                f"{self.skipped[0][0]}: {self.skipped[0][1]}",
                stacklevel=2,
            )
        if not self.paths:
            raise NRKNetDataError("no usable images")

    @property
    def names(self) -> list[str]:
        return [p.stem for p in self.paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        for attempt in range(len(self.paths)):
            path = self.paths[(index + attempt) % len(self.paths)]
            try:
                return {"blurry": _to_tensor(read_image(path)), "name": path.stem}
            except ImageReadError as exc:
                if self.on_bad_image == "raise":
                    raise
                self.skipped.append((str(exc.path), exc.reason))
                warnings.warn(f"skipping unreadable image {path}: {exc.reason}", stacklevel=2)
        raise NRKNetDataError("every image of the dataset is unreadable")


#: Each kind of test set and how its pairs are found under its root; ``options`` are the
#: keyword arguments of :func:`make_test_dataset` not used otherwise (each scanner takes its own).
TEST_SET_SCANNERS: dict[str, Callable[[str | os.PathLike, dict[str, Any]], list]] = {
    "dpdd": lambda root, options: scan_dpdd(root, options.pop("split", "test")),
    "lfdof": lambda root, options: scan_lfdof(root, "test", options.pop("list_file", None)),
    "realdof": lambda root, options: scan_realdof(root),
    "rtf": lambda root, options: scan_rtf(root, options.pop("subset", "0")),
    "synthetic": lambda root, options: scan_dpdd(root, options.pop("split", "test")),
}
TEST_SET_KINDS = tuple(TEST_SET_SCANNERS)


def make_test_dataset(
    kind: str,
    root: str | os.PathLike,
    *,
    on_bad_image: str = "raise",
    check_files: bool = True,
    **options: Any,
) -> PairedImageDataset:
    """The test set of a benchmark: ``kind`` is one of :data:`TEST_SET_KINDS`.

    RTF gets ``score_crop`` :data:`RTF_SCORE_CROP`. ``options``: ``split``
    (DPDD/synthetic, default ``"test"``), ``list_file`` (LFDOF), ``subset``
    (RTF, default ``"0"``) and ``score_crop`` (overrides the default).
    """
    kind = str(kind).lower()
    if kind not in TEST_SET_SCANNERS:
        raise ValueError(
            f"unknown test set kind {kind!r}; expected {', '.join(TEST_SET_KINDS[:-1])} or "
            f"{TEST_SET_KINDS[-1]}"
        )
    score_crop = options.pop("score_crop", RTF_SCORE_CROP if kind == "rtf" else None)
    pairs = TEST_SET_SCANNERS[kind](root, options)
    if options:
        raise ValueError(f"unexpected options for a {kind} test set: {sorted(options)}")
    return PairedImageDataset(
        pairs, on_bad_image=on_bad_image, score_crop=score_crop, check_files=check_files
    )
