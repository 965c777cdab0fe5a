"""Image reading/writing: bit depths, channel layouts, bad files, atomic writes."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import PngImagePlugin

from nrknet.data import io as dio
from nrknet.data.io import (
    ImageReadError,
    ImageWriteError,
    NRKNetDataError,
    decode_image,
    exif_orientation,
    probe_image,
    read_image,
    read_image_full,
    write_image,
)


def _rng_u8(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def test_read_8bit_png_is_rgb_float(tmp_path: Path) -> None:
    bgr = _rng_u8((5, 7, 3))
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), bgr)
    img = read_image(path)
    assert img.dtype == np.float32 and img.shape == (5, 7, 3)
    np.testing.assert_array_equal(img, bgr[:, :, ::-1].astype(np.float32) / 255)
    assert img.min() >= 0.0 and img.max() <= 1.0


def test_pure_red_is_red(tmp_path: Path) -> None:
    bgr = np.zeros((2, 2, 3), np.uint8)
    bgr[..., 2] = 255
    cv2.imwrite(str(tmp_path / "red.png"), bgr)
    np.testing.assert_array_equal(read_image(tmp_path / "red.png")[0, 0], [1.0, 0.0, 0.0])


def test_16bit_png_keeps_precision(tmp_path: Path) -> None:
    bgr = np.random.default_rng(1).integers(0, 65536, size=(6, 4, 3), dtype=np.uint16)
    bgr[0, 0] = [1, 257, 65535]
    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), bgr)
    loaded = read_image_full(path)
    assert loaded.bit_depth == 16 and loaded.channels_in_file == 3 and loaded.alpha is None
    np.testing.assert_allclose(loaded.rgb, bgr[:, :, ::-1] / 65535.0, atol=1e-7)
    # values between 8-bit levels survive
    assert abs(loaded.rgb[0, 0, 2] * 65535 - 1) < 1e-3
    levels = np.unique(np.round(loaded.rgb * 65535))
    assert np.any(levels % 257 != 0)


def test_greyscale_becomes_three_channels(tmp_path: Path) -> None:
    grey = _rng_u8((4, 5))
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    loaded = read_image_full(tmp_path / "g.png")
    assert loaded.channels_in_file == 1 and loaded.rgb.shape == (4, 5, 3)
    for c in range(3):
        np.testing.assert_array_equal(loaded.rgb[:, :, c], grey / np.float32(255))


def test_rgba_drops_alpha_but_full_read_keeps_it(tmp_path: Path) -> None:
    bgra = _rng_u8((3, 4, 4), seed=2)
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    rgb = read_image(tmp_path / "a.png")
    assert rgb.shape == (3, 4, 3)
    np.testing.assert_array_equal(rgb, bgra[:, :, 2::-1] / np.float32(255))
    full = read_image_full(tmp_path / "a.png")
    assert full.channels_in_file == 4
    np.testing.assert_array_equal(full.alpha, bgra[:, :, 3] / np.float32(255))


@pytest.mark.parametrize("ext", [".jpg", ".tif", ".bmp"])
def test_other_formats(tmp_path: Path, ext: str) -> None:
    bgr = _rng_u8((8, 8, 3), seed=3)
    cv2.imwrite(str(tmp_path / f"x{ext}"), bgr)
    img = read_image(tmp_path / f"x{ext}")
    assert img.shape == (8, 8, 3) and img.dtype == np.float32
    if ext != ".jpg":
        np.testing.assert_array_equal(img, bgr[:, :, ::-1] / np.float32(255))


def _encoded(ext: str, seed: int = 4) -> bytes:
    ok, buf = cv2.imencode(ext, _rng_u8((32, 32, 3), seed))
    assert ok
    return buf.tobytes()


def _png_chunk(kind: bytes, body: bytes, crc: int | None = None) -> bytes:
    """One PNG chunk; ``crc`` replaces its correct checksum."""
    crc = zlib.crc32(kind + body) if crc is None else crc
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def _grey_png(width: int, height: int, pixel_data: bytes) -> bytes:
    """An 8-bit grey PNG of that size whose IDAT chunk holds ``pixel_data`` (not checked)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", pixel_data)
        + _png_chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.png", b"", "empty"),
        ("text.png", b"this is not an image\n", "not a readable image"),
        ("cut.png", "png-half", "truncated PNG"),
        ("cut.jpg", "jpg-half", "truncated JPEG"),
        ("noend.png", "png-noend", "truncated PNG"),
    ],
)
def test_bad_files_raise_image_read_error(tmp_path: Path, name, content, reason) -> None:
    if content == "png-half":
        data = _encoded(".png")[:500]
    elif content == "jpg-half":
        data = _encoded(".jpg")[:-200]
    elif content == "png-noend":
        data = _encoded(".png")[:-12]
    else:
        data = content
    path = tmp_path / name
    path.write_bytes(data)
    for fn in (read_image, read_image_full, probe_image):
        with pytest.raises(ImageReadError) as info:
            fn(path)
        assert str(path) in str(info.value) and reason in str(info.value)
        assert isinstance(info.value, NRKNetDataError) and isinstance(info.value, ValueError)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="not found"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageReadError, match="folder"):
        read_image(tmp_path)
    with pytest.raises(ImageReadError, match="file not found"):
        probe_image(tmp_path / "nope.png")
    with pytest.raises(ImageReadError, match="is not a regular file"):
        probe_image(tmp_path)


def test_an_image_over_opencvs_pixel_limit_names_the_setting_that_raises_it() -> None:
    data = _grey_png(40000, 40000, zlib.compress(bytes(100)))  # 1.6 gigapixels
    with pytest.raises(ImageReadError, match="OPENCV_IO_MAX_IMAGE_PIXELS") as error:
        decode_image(data, "huge.png")
    assert "huge.png" in str(error.value) and "\n" not in str(error.value)


def test_jpeg_with_trailing_bytes_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "trail.jpg"
    path.write_bytes(_encoded(".jpg") + b"\x00" * 16 + b"extra-metadata")
    assert read_image(path).shape == (32, 32, 3)
    assert probe_image(path).width == 32


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".tif"])
def test_probe_reports_size(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"p{ext}"
    cv2.imwrite(str(path), _rng_u8((13, 21, 3)))
    info = probe_image(path)
    assert (info.width, info.height) == (21, 13)


@pytest.mark.parametrize(
    ("ext", "shape", "dtype", "bit_depth"),
    [
        (".png", (13, 21), np.uint16, 16),
        (".png", (13, 21, 3), np.uint16, 16),
        (".png", (13, 21, 4), np.uint16, 16),
        (".png", (13, 21, 3), np.uint8, 8),
        (".jpg", (13, 21), np.uint8, 8),
        (".bmp", (13, 21, 4), np.uint8, 8),
        (".tif", (13, 21, 3), np.uint16, 16),
    ],
)
def test_probe_reports_the_bit_depth_a_read_gives(tmp_path, ext, shape, dtype, bit_depth) -> None:
    path = tmp_path / f"d{ext}"
    cv2.imwrite(str(path), np.zeros(shape, dtype))
    info = probe_image(path)
    assert (info.width, info.height, info.bit_depth) == (21, 13, bit_depth)
    assert read_image_full(path).bit_depth == bit_depth


def test_probe_reads_the_header_without_decoding_the_pixels(tmp_path: Path) -> None:
    # Over OpenCV's and Pillow's pixel limits, and pixel data that is not even compressed.
    path = tmp_path / "huge.png"
    path.write_bytes(_grey_png(40000, 30000, b"not pixels"))
    info = probe_image(path)
    assert (info.width, info.height, info.format, info.bit_depth) == (40000, 30000, "png", 8)
    with pytest.raises(ImageReadError):
        read_image(path)


def _without_jpeg_frame_header(data: bytes) -> bytes:
    start = data.index(b"\xff\xc0")
    (length,) = struct.unpack(">H", data[start + 2 : start + 4])
    return data[:start] + data[start + 2 + length :]


@pytest.mark.parametrize(
    ("ext", "corrupt", "reason"),
    [
        (".png", lambda d: d[:12] + b"IHDX" + d[16:], "truncated or corrupt PNG header"),
        (".png", lambda d: d[:8] + d[-12:], "truncated or corrupt PNG header"),  # no IHDR
        (".jpg", lambda d: d[:2] + b"junk" + d[2:], "corrupt JPEG header"),
        (".jpg", _without_jpeg_frame_header, "corrupt JPEG header"),
        (".bmp", lambda d: d[:14] + struct.pack("<I", 7) + d[18:], "corrupt BMP header"),
        (".bmp", lambda d: d[:18] + struct.pack("<i", 0) + d[22:], "corrupt BMP header"),
        (".bmp", lambda d: d[:-10], "truncated BMP (3116 of 3126 bytes)"),
        (".bmp", lambda d: d[:20], "truncated BMP (20 of 3126 bytes)"),
    ],
)
def test_probe_refuses_corrupt_headers_and_truncated_bmp(tmp_path, ext, corrupt, reason) -> None:
    path = tmp_path / f"bad{ext}"
    path.write_bytes(corrupt(_encoded(ext)))
    with pytest.raises(ImageReadError) as error:
        probe_image(path)
    assert error.value.reason == reason


@pytest.mark.parametrize(
    "chunk",
    [
        _png_chunk(b"tEXt", b"note\x00hello", crc=0),  # bad checksum in an ancillary chunk
        _png_chunk(b"zTXt", b"xmp\x00\x00" + zlib.compress(b" " * (2 << 20))),  # > 1 MB of text
    ],
    ids=["ancillary-crc", "large-text"],
)
def test_probe_accepts_pngs_that_pillow_refuses_but_the_decoder_reads(tmp_path, chunk) -> None:
    data = _encoded(".png")
    after_ihdr = 8 + 25
    path = tmp_path / "strict.png"
    path.write_bytes(data[:after_ihdr] + chunk + data[after_ihdr:])
    with pytest.raises((SyntaxError, ValueError)):
        PngImagePlugin.PngImageFile(path)
    info = probe_image(path)
    loaded = read_image_full(path)
    assert (info.width, info.height, info.format, info.bit_depth) == (
        loaded.width,
        loaded.height,
        "png",
        8,
    )


def test_a_header_pillow_refuses_keeps_the_decoders_own_reason(tmp_path) -> None:
    # Over OpenCV's pixel limit: the decoder's reason says so, not "corrupt header".
    data = _grey_png(40000, 30000, b"not pixels")
    path = tmp_path / "huge.png"
    path.write_bytes(data[:33] + _png_chunk(b"tEXt", b"note\x00hello", crc=0) + data[33:])
    with pytest.raises(ImageReadError, match="OPENCV_IO_MAX_IMAGE_PIXELS"):
        probe_image(path)


# --------------------------------------------------------------------------- EXIF orientation


def with_exif_orientation(encoded: bytes, orientation: int, byte_order: str = ">") -> bytes:
    """JPEG or PNG bytes given an EXIF orientation: an APP1 segment after the start of a JPEG,
    an eXIf chunk after the header of a PNG. The TIFF block holds the orientation tag only."""
    count, entry = struct.pack(byte_order + "H", 1), (0x0112, 3, 1, orientation, 0)
    tiff = (
        (b"MM" if byte_order == ">" else b"II")
        + struct.pack(byte_order + "HI", 42, 8)
        + count
        + struct.pack(byte_order + "HHIHH", *entry)
        + struct.pack(byte_order + "I", 0)  # no further directory
    )
    if encoded.startswith(b"\xff\xd8"):
        segment = b"Exif\x00\x00" + tiff
        return (
            encoded[:2] + b"\xff\xe1" + struct.pack(">H", len(segment) + 2) + segment + encoded[2:]
        )
    return encoded[:33] + _png_chunk(b"eXIf", tiff) + encoded[33:]


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_upright_applies_the_exif_orientation_as_opencv_colour_reads_do(tmp_path, ext) -> None:
    stored = _rng_u8((4, 6, 3), seed=7)
    encoded = cv2.imencode(ext, stored)[1].tobytes()
    for byte_order in "<>":
        for orientation in range(1, 9):
            data = with_exif_orientation(encoded, orientation, byte_order)
            assert exif_orientation(data) == orientation
            shown = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            path = tmp_path / f"o{orientation}{ext}"
            path.write_bytes(data)
            upright = read_image_full(path, upright=True)
            expected = shown[:, :, ::-1].astype(np.float32) / np.float32(255)
            np.testing.assert_array_equal(upright.rgb, expected, err_msg=f"{orientation}")
            assert read_image_full(path).rgb.shape == (4, 6, 3)  # as stored, by default
    assert exif_orientation(encoded) == 1


def test_upright_keeps_16_bits_and_turns_the_alpha_channel() -> None:
    stored = np.random.default_rng(8).integers(0, 65536, size=(4, 6, 4), dtype=np.uint16)
    data = with_exif_orientation(cv2.imencode(".png", stored)[1].tobytes(), 6)
    loaded = decode_image(data, upright=True)
    assert loaded.bit_depth == 16 and loaded.channels_in_file == 4
    # 6: the stored image is shown turned a quarter clockwise
    turned = np.rot90(stored, -1).astype(np.float32) / np.float32(65535)
    np.testing.assert_array_equal(loaded.alpha, turned[..., 3])
    np.testing.assert_array_equal(loaded.rgb, turned[..., 2::-1])


def test_exif_orientation_of_other_and_broken_data() -> None:
    encoded = cv2.imencode(".jpg", _rng_u8((4, 6, 3)))[1].tobytes()
    assert exif_orientation(with_exif_orientation(encoded, 9)) == 1  # not an orientation
    assert exif_orientation(with_exif_orientation(encoded, 6)[:30]) == 1  # cut short
    assert exif_orientation(cv2.imencode(".bmp", _rng_u8((4, 6, 3)))[1].tobytes()) == 1
    assert exif_orientation(b"") == 1


# --------------------------------------------------------------------------- writing


def test_write_rounds_and_clips(tmp_path: Path) -> None:
    rgb = np.array(
        [[[-0.5, 0.0, 1.5], [0.5 / 255 - 1e-6, 0.5 / 255 + 1e-6, 254.6 / 255]]], np.float32
    )
    path = write_image(tmp_path / "r.png", rgb)
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[:, :, ::-1]
    np.testing.assert_array_equal(raw, [[[0, 0, 255], [0, 1, 255]]])


def test_write_16bit_roundtrip(tmp_path: Path) -> None:
    rgb = np.random.default_rng(5).random((7, 9, 3)).astype(np.float32)
    for ext in (".png", ".tif"):
        path = write_image(tmp_path / f"d{ext}", rgb, bit_depth=16)
        loaded = read_image_full(path)
        assert loaded.bit_depth == 16
        np.testing.assert_allclose(loaded.rgb, rgb, atol=0.5 / 65535 + 1e-7)


def test_write_greyscale_and_alpha(tmp_path: Path) -> None:
    rgb = np.random.default_rng(6).random((5, 6, 3)).astype(np.float32)
    alpha = np.linspace(0, 1, 30, dtype=np.float32).reshape(5, 6)
    g = read_image_full(write_image(tmp_path / "g.png", rgb, greyscale=True))
    assert g.channels_in_file == 1
    a = read_image_full(write_image(tmp_path / "a.png", rgb, alpha=alpha, bit_depth=16))
    assert a.channels_in_file == 4 and a.bit_depth == 16
    np.testing.assert_allclose(a.alpha, alpha, atol=1e-4)
    np.testing.assert_allclose(a.rgb, rgb, atol=1e-4)
    ga = read_image_full(write_image(tmp_path / "ga.png", rgb, alpha=alpha, greyscale=True))
    assert ga.channels_in_file == 4
    np.testing.assert_allclose(ga.rgb[..., 0], ga.rgb[..., 2])


def test_write_jpeg_quality_and_limits(tmp_path: Path) -> None:
    rgb = np.full((16, 16, 3), 0.5, np.float32)
    write_image(tmp_path / "q.jpeg", rgb, jpeg_quality=80)
    np.testing.assert_allclose(read_image(tmp_path / "q.jpeg"), 0.5, atol=2 / 255)
    with pytest.raises(ImageWriteError, match="8-bit"):
        write_image(tmp_path / "x.jpg", rgb, bit_depth=16)
    with pytest.raises(ImageWriteError, match="alpha"):
        write_image(tmp_path / "x.jpg", rgb, alpha=rgb[..., 0])
    with pytest.raises(ImageWriteError, match="extension"):
        write_image(tmp_path / "x.gif", rgb)
    with pytest.raises(ImageWriteError, match="shape"):
        write_image(tmp_path / "x.png", np.zeros((4, 4, 2)))
    assert not list(tmp_path.glob("x.*"))


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.png"
    write_image(target, np.zeros((4, 4, 3), np.float32))
    before = target.read_bytes()

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(dio.os, "replace", boom)
    with pytest.raises(ImageWriteError, match="No space"):
        write_image(target, np.ones((4, 4, 3), np.float32))
    assert target.read_bytes() == before  # old file untouched
    assert sorted(os.listdir(tmp_path)) == ["out.png"]  # no temporary left behind


@settings(max_examples=25, deadline=None)
@given(
    arr=arrays(np.uint8, st.tuples(st.integers(1, 9), st.integers(1, 9), st.just(3))),
    ext=st.sampled_from([".png", ".bmp", ".tif"]),
)
def test_roundtrip_property(tmp_path_factory, arr: np.ndarray, ext: str) -> None:
    path = tmp_path_factory.mktemp("rt") / f"img{ext}"
    write_image(path, arr.astype(np.float32) / 255)
    np.testing.assert_array_equal(np.round(read_image(path) * 255).astype(np.uint8), arr)
