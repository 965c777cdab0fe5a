"""Reading and writing images: float32 RGB in [0, 1], 8- and 16-bit files.

Everything goes through OpenCV with ``IMREAD_UNCHANGED`` so 16-bit PNG/TIFF
keep their precision and alpha channels are kept. Reading never returns
``None`` and never crashes on a bad file: any problem (missing, empty,
truncated, not an image, unsupported sample type) raises
:class:`ImageReadError` naming the path.

That mode ignores the EXIF orientation of JPEG and PNG files (TIFF files are
turned by OpenCV itself). ``upright=True`` applies it here, as OpenCV's
colour reads do, so the pixels come out as a viewer shows the file.

:func:`probe_image` has Pillow read only the header of a PNG, JPEG or BMP
file, and checks its last bytes (a BMP: its declared size), to get its size
and catch truncated files cheaply, which lets the datasets validate thousands
of files at scan time without decoding them. A header Pillow refuses is
decoded by OpenCV before the file is called corrupt: Pillow is the stricter
reader (a bad checksum in an ancillary PNG chunk, a large text chunk).
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from PIL import BmpImagePlugin, ExifTags, Image, JpegImagePlugin, PngImagePlugin

from nrknet.errors import DataError
from nrknet.utils.atomic import atomic_write_bytes

__all__ = [
    "IMAGE_EXTENSIONS",
    "DatasetLayoutError",
    "ImageInfo",
    "ImageReadError",
    "ImageWriteError",
    "LoadedImage",
    "NRKNetDataError",
    "PairingError",
    "SizeMismatchError",
    "decode_image",
    "exif_orientation",
    "probe_image",
    "read_image",
    "read_image_full",
    "write_image",
]

#: File name endings recognised as images when scanning folders (lower case).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"

# What Pillow raises for a header it cannot read.
_PILLOW_ERRORS = (OSError, SyntaxError, ValueError, IndexError, TypeError, struct.error)

# Pillow's header readers for probe_image by the file's first bytes, with the error for a header
# they refuse. The plugin classes, not Image.open: that one refuses images over Pillow's pixel
# limit, which OpenCV decodes.
_HEADER_READERS = {
    _PNG_SIGNATURE: (PngImagePlugin.PngImageFile, "png", "truncated or corrupt PNG header"),
    _JPEG_SOI: (JpegImagePlugin.JpegImageFile, "jpeg", "corrupt JPEG header"),
    b"BM": (BmpImagePlugin.BmpImageFile, "bmp", "corrupt BMP header"),
}

_WRITE_FORMATS = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".bmp": "bmp",
}


#: Every problem with input data (files, folders, pairs): the data kind of :mod:`nrknet.errors`.
NRKNetDataError = DataError


class ImageReadError(NRKNetDataError):
    """An image file that cannot be read: missing, empty, truncated or not an image."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}")


class ImageWriteError(NRKNetDataError):
    """An image that cannot be written (unsupported format or option, or an I/O failure)."""


class DatasetLayoutError(NRKNetDataError):
    """A dataset root that is missing or does not have the expected folder tree."""


class PairingError(NRKNetDataError):
    """Blurry and sharp files that do not pair up (different counts or names)."""


class SizeMismatchError(NRKNetDataError):
    """The blurry and sharp images of a pair have different sizes."""


@dataclass(frozen=True)
class ImageInfo:
    """What :func:`probe_image` learns from a file's header."""

    path: Path
    width: int | None
    height: int | None
    format: str
    bit_depth: int | None = None  #: 8 or 16 bits a sample, as decoded


@dataclass
class LoadedImage:
    """A decoded image plus what is needed to write a result in the same form.

    ``rgb`` is float32 HxWx3 in [0, 1]; ``alpha`` is float32 HxW in [0, 1] or
    ``None``; ``bit_depth`` is 8 or 16; ``channels_in_file`` is 1, 3 or 4.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    bit_depth: int
    channels_in_file: int
    path: Path | None = None

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])


# --------------------------------------------------------------------------- reading


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except IsADirectoryError:
        raise ImageReadError(path, "is a folder, not a file") from None
    except OSError as exc:
        raise ImageReadError(path, exc.strerror or str(exc)) from None
    if not data:
        raise ImageReadError(path, "file is empty")
    return data


def _check_complete(path: Path, head: bytes, tail: bytes) -> None:
    """Catch truncated PNG and JPEG files (first bytes, last 4096), which decoders may accept."""
    if head.startswith(_PNG_SIGNATURE) and _PNG_IEND not in tail[-64:]:
        raise ImageReadError(path, "truncated PNG (no IEND chunk at the end)")
    # Some cameras append padding or metadata after the end-of-image marker.
    if head.startswith(_JPEG_SOI) and _JPEG_EOI not in tail:
        raise ImageReadError(path, "truncated JPEG (no end-of-image marker)")


def decode_image(
    data: bytes, path: str | os.PathLike = "<memory>", *, upright: bool = False
) -> LoadedImage:
    """Decode encoded image bytes; see :func:`read_image_full` for the result and ``upright``."""
    path = Path(path)
    if not data:
        raise ImageReadError(path, "file is empty")
    _check_complete(path, data, data[-4096:])
    img = _imdecode(data, path)
    if img is None:
        raise ImageReadError(path, "not a readable image (unknown format or corrupt data)")
    if upright:
        img = _turn_upright(img, exif_orientation(data))
    return _to_loaded(img, path)


def _imdecode(data: bytes, path: Path) -> np.ndarray | None:
    """OpenCV's decoding of ``data`` as stored (no conversion); None where it reads no image."""
    try:
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        if "CV_IO_MAX_IMAGE_PIXELS" in str(exc):
            raise ImageReadError(
                path,
                "more pixels than OpenCV decodes by default (2^30); raise the limit with the "
                "environment variable OPENCV_IO_MAX_IMAGE_PIXELS",
            ) from None
        raise ImageReadError(
            path, f"decoder failed ({str(exc).strip().splitlines()[-1]})"
        ) from None
    return None if img is None or img.size == 0 else img


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation (1 to 8) of encoded JPEG or PNG bytes; 1 (as stored) if there is none."""
    if not data.startswith((_JPEG_SOI, _PNG_SIGNATURE)):
        return 1  # TIFF files are turned by OpenCV itself
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header, not the pixels
            value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except _PILLOW_ERRORS:
        return 1  # unreadable metadata: the pixels as stored
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _turn_upright(img: np.ndarray, orientation: int) -> np.ndarray:
    """Mirror and turn stored pixels as EXIF ``orientation`` says (the steps of OpenCV's reader)."""
    if orientation >= 5:  # 5 to 8 store rows as columns
        img = img.swapaxes(0, 1)
    if orientation in (3, 4, 7, 8):
        img = img[::-1]
    if orientation in (2, 3, 6, 7):
        img = img[:, ::-1]
    return img


def _to_loaded(img: np.ndarray, path: Path) -> LoadedImage:
    if img.dtype == np.uint8:
        maxv, bit_depth = 255.0, 8
    elif img.dtype == np.uint16:
        maxv, bit_depth = 65535.0, 16
    else:
        raise ImageReadError(path, f"unsupported sample type {img.dtype} (expected 8- or 16-bit)")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4):
        raise ImageReadError(
            path, f"unsupported image shape {img.shape} (expected 1, 3 or 4 channels)"
        )
    channels = int(img.shape[2])
    data = img.astype(np.float32) / np.float32(maxv)
    alpha = None
    if channels == 1:
        rgb = np.repeat(data, 3, axis=2)
    elif channels == 3:
        rgb = data[:, :, ::-1]
    else:
        rgb = data[:, :, 2::-1]
        alpha = np.ascontiguousarray(data[:, :, 3])
    return LoadedImage(
        rgb=np.ascontiguousarray(rgb, dtype=np.float32),
        alpha=alpha,
        bit_depth=bit_depth,
        channels_in_file=channels,
        path=path,
    )


def read_image_full(path: str | os.PathLike, *, upright: bool = False) -> LoadedImage:
    """Read an image file with its alpha channel, bit depth and channel count.

    ``upright`` applies the EXIF orientation of a JPEG or PNG file, so the
    pixels are those a viewer shows (the file's own sizes may be swapped).
    Raises :class:`ImageReadError` for any file that cannot be fully decoded.
    """
    path = Path(path)
    return decode_image(_read_bytes(path), path, upright=upright)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as float32 HxWx3 RGB in [0, 1].

    8-bit samples are divided by 255 and 16-bit ones by 65535 (full precision
    kept); greyscale becomes three equal channels; an alpha channel is dropped.
    Raises :class:`ImageReadError` for any file that cannot be fully decoded.
    """
    return read_image_full(path).rgb


# --------------------------------------------------------------------------- probing


def probe_image(path: str | os.PathLike) -> ImageInfo:
    """Return a file's size and bit depth from its header, checking it is present and complete.

    Pillow reads the header of PNG, JPEG and BMP files without decoding the pixels; other
    formats, and a header Pillow refuses, are decoded in full. Raises :class:`ImageReadError`.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise ImageReadError(path, "is not a regular file")
        if size == 0:
            raise ImageReadError(path, "file is empty")
        with path.open("rb") as f:
            head = f.read(4096)
            f.seek(max(0, size - 4096))
            _check_complete(path, head, f.read())
            declared = int.from_bytes(head[2:6], "little") if head.startswith(b"BM") else 0
            if size < declared:
                raise ImageReadError(path, f"truncated BMP ({size} of {declared} bytes)")
            f.seek(0)
            info = _read_header(path, head, f)
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except OSError as exc:
        raise ImageReadError(path, exc.strerror or str(exc)) from None
    if info is not None:
        return info
    img = read_image_full(path)
    image_format = path.suffix.lower().lstrip(".") or "image"
    return ImageInfo(path, img.width, img.height, image_format, img.bit_depth)


def _read_header(path: Path, head: bytes, f: BinaryIO) -> ImageInfo | None:
    """A PNG, JPEG or BMP file's header as Pillow reads it from ``f``; None for other formats."""
    for signature, (reader, image_format, corrupt) in _HEADER_READERS.items():
        if head.startswith(signature):
            try:
                image = reader(f)
            except _PILLOW_ERRORS:
                # Pillow is stricter than the decoder that reads the pixels (a bad checksum in an
                # ancillary chunk, a large compressed text chunk): the decoder has the last word.
                f.seek(0)
                img = _imdecode(f.read(), path)
                if img is None:
                    raise ImageReadError(path, corrupt) from None
                bit_depth = 16 if img.dtype == np.uint16 else 8
                return ImageInfo(path, img.shape[1], img.shape[0], image_format, bit_depth)
            # Pillow keeps 16-bit grey as mode 'I;16' but narrows 16-bit colour to 'RGB' or
            # 'RGBA'; the raw mode it would unpack ('I;16B', 'RGB;16B', ...) tells.
            bit_depth = 16 if image.format == "PNG" and ";16" in image.tile[0][3] else 8
            return ImageInfo(path, image.width, image.height, image_format, bit_depth)
    return None


# --------------------------------------------------------------------------- writing


def _quantise(x: np.ndarray, bit_depth: int) -> np.ndarray:
    maxv = 255 if bit_depth == 8 else 65535
    # float32 and in place: a 24-megapixel image would otherwise take several GiB of temporaries.
    q = np.array(x, dtype=np.float32, copy=True)
    np.nan_to_num(q, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
    np.clip(q, 0.0, 1.0, out=q)
    q *= maxv
    q += 0.5
    np.floor(q, out=q)
    return q.astype(np.uint8 if bit_depth == 8 else np.uint16)


def write_image(
    path: str | os.PathLike,
    rgb: np.ndarray,
    bit_depth: int = 8,
    alpha: np.ndarray | None = None,
    greyscale: bool = False,
    jpeg_quality: int = 95,
) -> Path:
    """Write float RGB in [0, 1] (HxWx3, or HxW for greyscale) to ``path``.

    The format follows the extension (png, jpg/jpeg, tif/tiff, bmp). Values
    are clipped to [0, 1] and rounded to the nearest level. ``greyscale``
    writes one channel (Rec. 601 luma of RGB input); ``alpha`` (HxW in
    [0, 1]) adds an alpha channel. JPEG and BMP are 8-bit only and JPEG has no
    alpha. The file is written to a temporary file in the same folder and
    renamed into place, so a reader never sees a partial image.
    """
    path = Path(path)
    ext = path.suffix.lower()
    fmt = _WRITE_FORMATS.get(ext)
    if fmt is None:
        raise ImageWriteError(
            f"cannot write {path}: unsupported extension {ext or '(none)'!r} "
            f"(use one of {', '.join(sorted(_WRITE_FORMATS))})"
        )
    if bit_depth not in (8, 16):
        raise ImageWriteError(f"cannot write {path}: bit_depth must be 8 or 16, got {bit_depth}")
    if bit_depth == 16 and fmt in ("jpeg", "bmp"):
        raise ImageWriteError(f"cannot write {path}: {fmt.upper()} files are 8-bit only")
    if alpha is not None and fmt == "jpeg":
        raise ImageWriteError(f"cannot write {path}: JPEG has no alpha channel")

    arr = np.asarray(rgb)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        grey = arr
    elif arr.ndim == 3 and arr.shape[2] == 3:
        grey = None
    else:
        raise ImageWriteError(
            f"cannot write {path}: expected HxWx3 or HxW data, got shape {arr.shape}"
        )
    if greyscale and grey is None:
        a = arr.astype(np.float64)
        grey = 0.299 * a[:, :, 0] + 0.587 * a[:, :, 1] + 0.114 * a[:, :, 2]

    if grey is not None and (greyscale or arr.ndim == 2):
        planes = [_quantise(grey, bit_depth)]
    else:
        q = _quantise(arr, bit_depth)
        planes = [q[:, :, 2], q[:, :, 1], q[:, :, 0]]  # BGR for OpenCV
    if alpha is not None:
        alpha = np.asarray(alpha)
        if alpha.shape != planes[0].shape:
            raise ImageWriteError(
                f"cannot write {path}: alpha shape {alpha.shape} does not match image {planes[0].shape}"
            )
        if len(planes) == 1:  # OpenCV has no grey+alpha mode: write BGRA
            planes = planes * 3
        planes.append(_quantise(alpha, bit_depth))
    img = planes[0] if len(planes) == 1 else np.dstack(planes)

    params: list[int] = []
    if fmt == "jpeg":
        params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
    try:
        ok, buf = cv2.imencode(ext, img, params)
    except cv2.error as exc:
        raise ImageWriteError(
            f"cannot encode {path}: {str(exc).strip().splitlines()[-1]}"
        ) from None
    if not ok:
        raise ImageWriteError(f"cannot encode {path} as {fmt}")
    _atomic_write_bytes(path, buf.tobytes())
    return path


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise ImageWriteError(f"cannot write {path}: {exc.strerror or exc}") from None
