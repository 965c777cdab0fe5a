"""Decoded training images held once in shared memory (``data.cache=ram``).

Every image is decoded once into one flat shared-memory buffer
(``torch.Tensor.share_memory_``), in the sample type it has on disk (uint8
or uint16, RGB). DataLoader workers read that buffer without a copy of their
own: forked workers inherit the mapping, and spawned workers receive the
tensor by handle (torch pickles shared tensors that way), never its bytes.

The buffer is sized from the file headers before anything is decoded and
checked against the memory available (RAM and, on Linux, ``/dev/shm``, which
backs torch's shared memory); :class:`CacheTooLargeError` is raised when it
would not fit, keeping :data:`MEMORY_MARGIN_FRACTION` of the RAM (at least
:data:`MIN_MEMORY_MARGIN` bytes) free for the model and the workers.

Images are decoded with :func:`~nrknet.data.io.read_image_full` and turned
back into integers: ``round(v * max)`` recovers the file's samples exactly
(float32 holds ``k / 65535`` to far better than half a level), so converting
a cached crop to float gives the very values the decoding path produces.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import torch
from rich.progress import Progress

from nrknet.data.io import ImageReadError, NRKNetDataError, probe_image, read_image_full

__all__ = [
    "CACHE_MODES",
    "MEMORY_MARGIN_FRACTION",
    "MIN_MEMORY_MARGIN",
    "CacheTooLargeError",
    "SharedImageCache",
    "check_cache_mode",
    "unit_float_tensor",
]

CACHE_MODES = ("none", "ram")
MEMORY_MARGIN_FRACTION = 0.10
MIN_MEMORY_MARGIN = 1 << 30
SHM_DIR = Path("/dev/shm")
_MAX_VALUE = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}

log = logging.getLogger("nrknet.data")


class CacheTooLargeError(NRKNetDataError):
    """The decoded images would not fit in the memory available for ``data.cache=ram``."""


def check_cache_mode(value: str) -> str:
    if value not in CACHE_MODES:
        raise ValueError(f"data.cache must be 'none' or 'ram', got {value!r}")
    return value


def unit_float_tensor(samples: np.ndarray) -> torch.Tensor:
    """HxWxC uint8/uint16 samples (any strides) as a contiguous CxHxW float32 tensor in [0, 1].

    The same arithmetic as the decoder (a float32 division by 255 or 65535), in one pass.
    """
    out = np.empty((samples.shape[2], *samples.shape[:2]), dtype=np.float32)
    np.divide(
        samples.transpose(2, 0, 1), np.float32(_MAX_VALUE[samples.dtype]), out=out, dtype=np.float32
    )
    return torch.from_numpy(out)


def _gib(n: float) -> str:
    return f"{n / (1 << 30):.2f} GiB"


@dataclass(frozen=True)
class _Slot:
    offset: int
    reserved: int
    shape: tuple[int, int, int] = (0, 0, 3)
    dtype: str = "u1"


def _available_memory() -> tuple[int, int, int | None]:
    """(available RAM, total RAM, free space of /dev/shm or None where there is none)."""
    vm = psutil.virtual_memory()
    shm = shutil.disk_usage(SHM_DIR).free if SHM_DIR.is_dir() else None
    return int(vm.available), int(vm.total), shm


def check_fits(required: int) -> None:
    """Raise :class:`CacheTooLargeError` unless ``required`` bytes fit, keeping the margin free."""
    available, total, shm = _available_memory()
    margin = max(MIN_MEMORY_MARGIN, int(MEMORY_MARGIN_FRACTION * total))
    if required > available - margin:
        raise CacheTooLargeError(
            f"data.cache=ram: the decoded training images need {_gib(required)} but only "
            f"{_gib(available)} of memory is available and {_gib(margin)} is kept free; "
            "set data.cache=none or use a smaller training set"
        )
    if shm is not None and required > shm:
        raise CacheTooLargeError(
            f"data.cache=ram: the decoded training images need {_gib(required)} but {SHM_DIR} "
            f"has only {_gib(shm)} free (in a container, raise --shm-size); set data.cache=none"
        )


class SharedImageCache:
    """Decoded images in one shared-memory buffer, looked up by path.

    Args:
        paths: image files (duplicates are stored once).
        workers: threads decoding in parallel while filling.
        on_bad_image: ``"raise"`` on the first unreadable file, or ``"skip"``:
            record it in :attr:`failed` (path -> reason) and go on.
        progress: show a progress bar while filling.
    """

    def __init__(
        self,
        paths: Iterable[str | os.PathLike],
        *,
        workers: int = 1,
        on_bad_image: str = "raise",
        progress: bool = True,
    ) -> None:
        self.failed: dict[Path, str] = {}
        self._on_bad_image = on_bad_image
        self._slots: dict[Path, _Slot] = {}
        offset = 0
        for path in dict.fromkeys(Path(p) for p in paths):
            try:
                info = probe_image(path)
            except ImageReadError as exc:
                self._fail(exc)
                continue
            reserved = int(info.width or 0) * int(info.height or 0) * 3
            reserved *= 2 if info.bit_depth in (16, None) else 1  # not told: 2 to be safe
            self._slots[path] = _Slot(offset, reserved)
            offset += reserved
        self.nbytes = offset  # reserved from the headers: exact for PNG, JPEG and BMP
        check_fits(self.nbytes)
        log.info(
            "data.cache=ram: decoding %d images (%s) into shared memory",
            len(self._slots),
            _gib(offset),
        )
        # Pages of the buffer are committed only when written, so an over-estimate costs nothing.
        self._buffer = torch.empty(max(offset, 1), dtype=torch.uint8).share_memory_()
        self._array: np.ndarray | None = None
        self._fill(max(1, int(workers)), progress)

    def _fail(self, exc: ImageReadError) -> None:
        if self._on_bad_image == "raise":
            raise exc
        self.failed[exc.path] = exc.reason

    def _fill(self, workers: int, progress: bool) -> None:
        start = time.perf_counter()
        with (
            ThreadPoolExecutor(workers) as pool,
            Progress(disable=not progress, transient=True) as bar,
        ):
            task = bar.add_task("caching images in RAM", total=len(self._slots))
            jobs = {
                pool.submit(self._decode_into, path, slot): path
                for path, slot in self._slots.items()
            }
            for job in as_completed(jobs):
                path = jobs[job]
                try:
                    self._slots[path] = job.result()
                except ImageReadError as exc:
                    del self._slots[path]
                    if self._on_bad_image == "raise":
                        pool.shutdown(cancel_futures=True)  # do not decode the rest first
                    self._fail(exc)
                bar.advance(task)
        log.info(
            "data.cache=ram: %d images (%s) in shared memory in %.1f s",
            len(self._slots),
            _gib(sum(np.prod(s.shape) * np.dtype(s.dtype).itemsize for s in self._slots.values())),
            time.perf_counter() - start,
        )

    def _decode_into(self, path: Path, slot: _Slot) -> _Slot:
        image = read_image_full(path)
        dtype = np.dtype(np.uint8 if image.bit_depth == 8 else np.uint16)
        nbytes = image.rgb.size * dtype.itemsize
        if nbytes > slot.reserved:
            raise ImageReadError(path, "decoded size differs from the size in the file header")
        target = self.array[slot.offset : slot.offset + nbytes].view(dtype).reshape(image.rgb.shape)
        np.rint(image.rgb * np.float32(_MAX_VALUE[dtype]), out=image.rgb)
        target[...] = image.rgb
        return _Slot(slot.offset, slot.reserved, image.rgb.shape, dtype.str)

    @property
    def array(self) -> np.ndarray:
        """The whole buffer as flat uint8 (a view, made once per process)."""
        if self._array is None:
            self._array = self._buffer.numpy()
        return self._array

    def __getstate__(self) -> dict:
        # The numpy view would pickle its bytes; the shared tensor pickles by handle.
        return {**self.__dict__, "_array": None}

    def __contains__(self, path: object) -> bool:
        return Path(path) in self._slots  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self._slots)

    def __getitem__(self, path: str | os.PathLike) -> np.ndarray:
        """The image at ``path``: HxWx3 RGB uint8 or uint16 (a read-only view into the buffer)."""
        slot = self._slots[Path(path)]
        size = int(np.prod(slot.shape)) * np.dtype(slot.dtype).itemsize
        view = self.array[slot.offset : slot.offset + size].view(slot.dtype).reshape(slot.shape)
        view.flags.writeable = False
        return view
