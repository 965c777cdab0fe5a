"""Fuzzing the image loader: random bytes, truncated PNG/JPEG, odd shapes.

Every input either decodes to a valid float32 RGB image in [0, 1] or raises
ImageReadError, and probes to a positive size or raises it; nothing crashes or
hangs. Bounded in examples and time.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nrknet.data.io import ImageReadError, probe_image, read_image, read_image_full

FUZZ = settings(
    max_examples=60,
    deadline=3000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def check_decoded_or_refused(path) -> None:
    try:
        info = probe_image(path)
    except ImageReadError as exc:
        assert str(path) in str(exc)
    else:
        assert info.width > 0 and info.height > 0 and info.bit_depth in (8, 16)
    try:
        img = read_image(path)
    except ImageReadError as exc:
        assert str(path) in str(exc)
        return
    assert img.dtype == np.float32 and img.ndim == 3 and img.shape[2] == 3
    assert np.isfinite(img).all() and img.min() >= 0 and img.max() <= 1


@st.composite
def encoded_images(draw):
    height = draw(st.integers(1, 48))
    width = draw(st.integers(1, 48))
    channels = draw(st.sampled_from([1, 3, 4]))
    ext = draw(st.sampled_from([".png", ".jpg"]))
    deep = ext == ".png" and draw(st.booleans())
    dtype, top = (np.uint16, 65535) if deep else (np.uint8, 255)
    if ext == ".jpg" and channels == 4:
        channels = 3
    seed = draw(st.integers(0, 2**16))
    pixels = np.random.default_rng(seed).integers(
        0, top + 1, size=(height, width, channels), dtype=np.int64
    )
    ok, data = cv2.imencode(
        ext, pixels.astype(dtype).squeeze(-1) if channels == 1 else pixels.astype(dtype)
    )
    assert ok
    return ext, data.tobytes(), (height, width)


@pytest.mark.timeout(180)
@FUZZ
@given(
    data=st.binary(min_size=0, max_size=4096),
    ext=st.sampled_from([".png", ".jpg", ".tif", ".bmp", ".jpeg"]),
)
def test_random_bytes_are_refused_cleanly(tmp_path, data, ext):
    path = tmp_path / f"random{ext}"
    path.write_bytes(data)
    check_decoded_or_refused(path)


@pytest.mark.timeout(180)
@FUZZ
@given(image=encoded_images(), cut=st.floats(0.0, 1.0))
def test_truncated_files_are_refused_and_whole_ones_read(tmp_path, image, cut):
    ext, data, (height, width) = image
    keep = int(len(data) * cut)
    path = tmp_path / f"img{ext}"
    if keep >= len(data):
        path.write_bytes(data)
        loaded = read_image_full(path)
        assert loaded.rgb.shape == (height, width, 3)
        return
    path.write_bytes(data[:keep])
    with pytest.raises(ImageReadError):
        read_image(path)


@pytest.mark.timeout(180)
@FUZZ
@given(
    image=encoded_images(),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
)
def test_corrupted_bytes_never_crash(tmp_path, image, flips):
    ext, data, _ = image
    corrupted = bytearray(data)
    for position, value in flips:
        if corrupted:
            corrupted[position % len(corrupted)] = value
    path = tmp_path / f"bad{ext}"
    path.write_bytes(bytes(corrupted))
    check_decoded_or_refused(path)
