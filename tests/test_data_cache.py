"""``cache="ram"``: exact samples, file sample types, memory check, bad files, no copy in workers."""

from __future__ import annotations

import multiprocessing
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from nrknet.data import cache as cache_module
from nrknet.data.cache import CacheTooLargeError, SharedImageCache
from nrknet.data.datasets import PairedImageDataset
from nrknet.data.io import ImageReadError
from nrknet.data.layouts import scan_dpdd, scan_realdof
from test_datasets import _img, _write, make_dpdd, make_realdof


def _odd_pairs(root: Path) -> list[tuple[Path, Path, str]]:
    """8-, 16-bit, greyscale and RGBA files, and a pair smaller than the crop (padded)."""
    kinds = [
        (_img(30, 40, 1), _img(30, 40, 2, dtype=np.uint16)),
        (_img(30, 40, 3, channels=1), _img(30, 40, 4, channels=4)),
        (_img(12, 9, 5, dtype=np.uint16), _img(12, 9, 6)),
    ]
    return [
        (_write(root / f"b{i}.png", b), _write(root / f"s{i}.png", s), f"p{i}")
        for i, (b, s) in enumerate(kinds)
    ]


def _draw(ds: PairedImageDataset, count: int) -> list[dict]:
    torch.manual_seed(7)
    return [ds[i % len(ds)] for i in range(count)]


@pytest.mark.parametrize("crop_size", [16, (12, 20), None])
def test_cached_samples_equal_decoded_samples(tmp_path: Path, crop_size) -> None:
    pairs = _odd_pairs(tmp_path)
    augment = crop_size is not None
    decoded = PairedImageDataset(pairs, crop_size=crop_size, augment=augment)
    cached = PairedImageDataset(pairs, crop_size=crop_size, augment=augment, cache="ram")
    for a, b in zip(_draw(decoded, 24), _draw(cached, 24), strict=True):
        assert a["name"] == b["name"]
        for key in ("blurry", "sharp"):
            assert a[key].dtype == b[key].dtype == torch.float32
            assert torch.equal(a[key], b[key])


def test_images_keep_their_sample_type_and_every_level(tmp_path: Path) -> None:
    every16 = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    bgr16 = np.dstack([every16, every16[::-1], every16.T])
    every8 = np.tile(np.arange(256, dtype=np.uint8), (4, 1))
    paths = [_write(tmp_path / "a.png", bgr16), _write(tmp_path / "b.png", every8)]
    store = SharedImageCache(paths, progress=False)
    a, b = store[paths[0]], store[paths[1]]
    assert a.dtype == np.uint16 and b.dtype == np.uint8
    np.testing.assert_array_equal(a, bgr16[:, :, ::-1])  # RGB, exactly the file's samples
    np.testing.assert_array_equal(b, np.repeat(every8[:, :, None], 3, axis=2))
    assert store.nbytes == a.nbytes + b.nbytes and len(store) == 2
    assert not a.flags.writeable


def test_cache_that_does_not_fit_names_the_setting_and_sizes(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(cache_module, "_available_memory", lambda: (1 << 10, 8 << 30, None))
    with pytest.raises(CacheTooLargeError, match=r"data\.cache=ram.*GiB.*GiB.*data\.cache=none"):
        SharedImageCache([_write(tmp_path / "a.png", _img(40, 40, 0))], progress=False)


def test_small_shm_is_reported(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(cache_module, "_available_memory", lambda: (64 << 30, 64 << 30, 1000))
    with pytest.raises(CacheTooLargeError, match="/dev/shm"):
        SharedImageCache([_write(tmp_path / "a.png", _img(40, 40, 0))], progress=False)


def test_unknown_cache_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"data\.cache must be 'none' or 'ram', got 'disk'"):
        PairedImageDataset(_odd_pairs(tmp_path), cache="disk")


def test_file_that_fails_to_decode_is_skipped_or_raised(tmp_path: Path) -> None:
    real = make_realdof(tmp_path / "RealDOF", n=3)
    path = real / "source" / "01.png"
    data = bytearray(path.read_bytes())
    data[41:-20] = b"\x00" * (len(data) - 61)  # pixel data only: passes the probe
    path.write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match="01.png"):
        PairedImageDataset(scan_realdof(real), cache="ram")
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        ds = PairedImageDataset(scan_realdof(real), cache="ram", on_bad_image="skip")
    assert ds.names == ["00", "02"] and [Path(p).name for p, _ in ds.skipped] == ["01.png"]
    assert ds[1]["name"] == "02"


class _FirstPixel(Dataset):
    """The top-left sample of each cached image, read inside the worker."""

    def __init__(self, store: SharedImageCache, paths: list[Path]) -> None:
        self.store, self.paths = store, paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> int:
        return int(self.store[self.paths[index]][0, 0, 0])


@pytest.mark.parametrize("start_method", ["fork", pytest.param("spawn", marks=pytest.mark.slow)])
def test_workers_read_the_shared_buffer_without_a_copy(tmp_path: Path, start_method) -> None:
    if start_method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {start_method} start method here")
    paths = [_write(tmp_path / f"{i}.png", np.full((4, 4, 3), 200, np.uint8)) for i in range(6)]
    store = SharedImageCache(paths, progress=False)
    loader = DataLoader(
        _FirstPixel(store, paths),
        batch_size=None,
        num_workers=2,
        prefetch_factor=1,
        multiprocessing_context=start_method,
    )
    batches = iter(loader)
    first = [next(batches), next(batches)]  # the workers are running and have the dataset
    store.array[:] = 0  # changes made here after the workers started are seen there: no copy
    rest = list(batches)
    assert first == [200, 200] and rest[-2:] == [0, 0]


def test_dpdd_tree_cached_once_for_train_split(tmp_path: Path) -> None:
    base = make_dpdd(tmp_path)
    ds = PairedImageDataset(scan_dpdd(base, "train"), crop_size=8, augment=True, cache="ram")
    assert ds.cache is not None and len(ds.cache) == 6
    first = ds.pairs[0][0]
    np.testing.assert_array_equal(ds.cache[first], cv2.imread(str(first))[:, :, ::-1])


@pytest.mark.parametrize("kind", ["png8", "png16", "jpeg", "bmp", "grey_png"])
def test_the_size_estimate_is_the_decoded_size_and_decides_the_refusal(tmp_path, monkeypatch, kind):
    """The reservation read from the headers equals the decoded bytes of real files, and a set
    is refused exactly when those bytes do not fit (no stubbed estimate).

    Mutation this catches: an estimate that counts every file as 8-bit (a 16-bit set would
    be cached past the memory left free) or as 16-bit (an 8-bit set refused for nothing).
    """
    rng = np.random.default_rng(0)
    name, array = {
        "png8": ("a.png", rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)),
        "png16": ("a.png", rng.integers(0, 65536, (30, 50, 3), dtype=np.uint16)),
        "jpeg": ("a.jpg", rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)),
        "bmp": ("a.bmp", rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)),
        "grey_png": ("a.png", rng.integers(0, 256, (30, 50), dtype=np.uint8)),
    }[kind]
    paths = []
    for i in range(3):
        path = tmp_path / f"{i}_{name}"
        assert cv2.imwrite(str(path), array)
        paths.append(path)
    store = SharedImageCache(paths, progress=False)
    decoded = sum(store[p].nbytes for p in paths)
    assert store.nbytes == decoded == 3 * 30 * 50 * 3 * array.itemsize
    margin = cache_module.MIN_MEMORY_MARGIN
    fits = (margin + decoded, 4 * margin, None)
    monkeypatch.setattr(cache_module, "_available_memory", lambda: fits)
    SharedImageCache(paths, progress=False)
    short = (margin + decoded - 1, 4 * margin, None)
    monkeypatch.setattr(cache_module, "_available_memory", lambda: short)
    with pytest.raises(CacheTooLargeError):
        SharedImageCache(paths, progress=False)
