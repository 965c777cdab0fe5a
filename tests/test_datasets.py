"""Layouts, paired datasets, augmentation and DataModules on tiny generated trees."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from nrknet.data.datamodules import (
    CUHKDataModule,
    DPDDDataModule,
    LFDOFDataModule,
    RealDOFDataModule,
    RTFDataModule,
)
from nrknet.data.datasets import (
    BlurryOnlyDataset,
    PairedImageDataset,
    _draw_flips,
    _flip_view,
    _to_tensor,
    make_test_dataset,
    paired_crop,
    paired_flips,
)
from nrknet.data.io import (
    DatasetLayoutError,
    ImageReadError,
    NRKNetDataError,
    PairingError,
    SizeMismatchError,
)
from nrknet.data.layouts import (
    scan_cuhk,
    scan_dpdd,
    scan_lfdof,
    scan_realdof,
    scan_rtf,
    split_lfdof_scenes,
)


def _img(h: int, w: int, seed: int, channels: int = 3, dtype=np.uint8) -> np.ndarray:
    hi = 256 if dtype == np.uint8 else 65536
    shape = (h, w) if channels == 1 else (h, w, channels)
    return np.random.default_rng(seed).integers(0, hi, size=shape, dtype=dtype)


def _write(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)
    return path


def _check_item(item: dict, h: int, w: int) -> None:
    for key in ("blurry", "sharp"):
        t = item[key]
        assert t.dtype == torch.float32 and tuple(t.shape) == (3, h, w)
        assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0
    assert isinstance(item["name"], str)


# --------------------------------------------------------------------------- trees


def make_dpdd(root: Path, name: str = "dd_dp_dataset_png", counts=(3, 2, 2), h=24, w=32) -> Path:
    base = root / name
    seed = 0
    for split, n in zip(("train_c", "val_c", "test_c"), counts, strict=True):
        for i in range(n):
            # names differ within a pair (consecutive captures)
            seed += 1
            _write(base / split / "source" / f"1P0A{1000 + 2 * i}.png", _img(h, w, seed))
            _write(base / split / "target" / f"1P0A{1001 + 2 * i}.png", _img(h, w, seed + 100))
    # a 16-bit, a greyscale and an RGBA file in the test split
    _write(base / "test_c" / "source" / "1P0A1000.png", _img(h, w, 7, dtype=np.uint16))
    _write(base / "test_c" / "target" / "1P0A1001.png", _img(h, w, 8, channels=1))
    _write(base / "test_c" / "source" / "1P0A1002.png", _img(h, w, 9, channels=4))
    return base


def make_lfdof(root: Path, scenes=("IMG_1", "IMG_2", "IMG_10"), h=20, w=28) -> Path:
    for split in ("train_data", "test_data"):
        for k, scene in enumerate(scenes):
            for ap in range(2):
                _write(
                    root / split / "input" / scene / f"{scene}_ap{ap}_0{k}.png",
                    _img(h, w, 10 * k + ap),
                )
            _write(root / split / "ground_truth" / f"{scene}.png", _img(h, w, 99 + k))
    return root


def make_realdof(root: Path, n: int = 3, h=18, w=22) -> Path:
    for i in range(n):
        _write(root / "source" / f"{i:02d}.png", _img(h, w, i))
        _write(root / "target" / f"{i:02d}.png", _img(h, w, 50 + i))
    return root


def make_rtf(root: Path, numbers=(1, 2, 12), h=20, w=20) -> Path:
    for k in numbers:
        _write(root / "image" / "0" / f"image_{k}.png", _img(h, w, k))
        _write(root / "GT" / f"sharp_{k:02d}.png", _img(h, w, 70 + k))
    return root


def make_cuhk(root: Path) -> Path:
    _write(root / "motion0001.jpg", _img(16, 24, 1))
    _write(root / "out_of_focus0002.png", _img(20, 12, 2))
    _write(root / "out_of_focus0003.JPG", _img(10, 10, 3))
    (root / "readme.txt").write_text("not an image")
    return root


# --------------------------------------------------------------------------- layouts load


def test_dpdd_layout_loads(tmp_path: Path) -> None:
    base = make_dpdd(tmp_path)
    pairs = scan_dpdd(base, "train")
    assert [(b.name, s.name) for b, s, _ in pairs] == [
        ("1P0A1000.png", "1P0A1001.png"),
        ("1P0A1002.png", "1P0A1003.png"),
        ("1P0A1004.png", "1P0A1005.png"),
    ]
    assert [n for *_, n in pairs] == ["1P0A1000", "1P0A1002", "1P0A1004"]
    ds = PairedImageDataset(scan_dpdd(base, "test"))
    assert len(ds) == 2 and ds.score_crop is None
    for i in range(2):
        _check_item(ds[i], 24, 32)
    # the 16-bit source keeps more than 8-bit precision
    deep = ds[0]["blurry"].numpy() * 65535
    assert np.any(np.round(deep) % 257 != 0)
    np.testing.assert_allclose(deep, np.round(deep), atol=2e-2)
    # the greyscale target has three equal channels
    g = ds[0]["sharp"]
    assert torch.equal(g[0], g[1]) and torch.equal(g[1], g[2])


def test_a_test_set_fingerprint_changes_with_any_byte_of_its_files(tmp_path: Path) -> None:
    base = make_dpdd(tmp_path)
    first = PairedImageDataset(scan_dpdd(base, "test")).fingerprint()
    assert PairedImageDataset(scan_dpdd(base, "test")).fingerprint() == first
    _, sharp, _ = scan_dpdd(base, "test")[1]
    data = bytearray(sharp.read_bytes())
    data[-13] ^= 1  # inside the last chunk's checksum: the image still decodes
    sharp.write_bytes(bytes(data))
    assert PairedImageDataset(scan_dpdd(base, "test"), check_files=False).fingerprint() != first


@pytest.mark.parametrize("where", ["parent", "self", "split", "source", "canon"])
def test_dpdd_root_variants(tmp_path: Path, where: str) -> None:
    base = make_dpdd(tmp_path, "dd_dp_dataset_canon" if where == "canon" else "dd_dp_dataset_png")
    root = {
        "parent": tmp_path,
        "self": base,
        "split": base / "val_c",
        "source": base / "val_c" / "source",
        "canon": tmp_path,
    }[where]
    assert len(scan_dpdd(root, "val")) == 2


def test_lfdof_layout_loads(tmp_path: Path) -> None:
    root = make_lfdof(tmp_path / "LFDOF")
    pairs = scan_lfdof(root, "train")
    assert len(pairs) == 6
    assert [s.name for _, s, _ in pairs] == ["IMG_1.png"] * 2 + ["IMG_2.png"] * 2 + [
        "IMG_10.png"
    ] * 2
    for b, s, _ in pairs:
        assert b.parent.name == s.stem
    ds = PairedImageDataset(scan_lfdof(root, "test"))
    _check_item(ds[5], 20, 28)
    # the split folder itself works too
    assert len(scan_lfdof(root / "test_data", "test")) == 6


def test_lfdof_list_file_with_backslashes(tmp_path: Path) -> None:
    root = make_lfdof(tmp_path / "LFDOF")
    lst = tmp_path / "train.txt"
    lst.write_text(
        "# inputs\n"
        "train_data\\input\\IMG_2\\IMG_2_ap1_01.png\n"
        "\n"
        "train_data/input/IMG_10/IMG_10_ap0_02.png\r\n"
        "train_data\\input\\IMG_1\\IMG_1_ap0_00.png train_data/ground_truth/IMG_1.png\n"
    )
    pairs = scan_lfdof(root, "train", lst)
    assert [(b.name, s.name) for b, s, _ in pairs] == [
        ("IMG_2_ap1_01.png", "IMG_2.png"),
        ("IMG_10_ap0_02.png", "IMG_10.png"),
        ("IMG_1_ap0_00.png", "IMG_1.png"),
    ]
    assert all(b.is_file() and s.is_file() for b, s, _ in pairs)


def test_lfdof_val_holdout_is_fixed_and_disjoint(tmp_path: Path) -> None:
    root = make_lfdof(tmp_path / "LFDOF", scenes=tuple(f"IMG_{i}" for i in range(1, 9)))
    pairs = scan_lfdof(root, "train")
    train, val = split_lfdof_scenes(pairs, 2)
    assert {s for _, s, _ in train}.isdisjoint({s for _, s, _ in val})
    assert len({s for _, s, _ in val}) == 2 and len(train) + len(val) == len(pairs)
    assert split_lfdof_scenes(list(reversed(pairs)), 2)[1] == list(reversed(val))


def test_realdof_rtf_cuhk_layouts(tmp_path: Path) -> None:
    real = scan_realdof(make_realdof(tmp_path / "RealDOF"))
    assert [(b.name, s.name) for b, s, _ in real] == [(f"{i:02d}.png",) * 2 for i in range(3)]
    _check_item(PairedImageDataset(real)[0], 18, 22)

    rtf = make_test_dataset("rtf", make_rtf(tmp_path / "RTF"))
    assert rtf.score_crop == (4, 364)
    assert [(b.name, s.name) for b, s, _ in rtf.pairs] == [
        ("image_1.png", "sharp_01.png"),
        ("image_2.png", "sharp_02.png"),
        ("image_12.png", "sharp_12.png"),
    ]
    _check_item(rtf[2], 20, 20)

    files = scan_cuhk(make_cuhk(tmp_path / "CUHK"))
    assert [p.name for p in files] == [
        "motion0001.jpg",
        "out_of_focus0002.png",
        "out_of_focus0003.JPG",
    ]
    ds = BlurryOnlyDataset(files)
    item = ds[1]
    assert set(item) == {"blurry", "name"} and tuple(item["blurry"].shape) == (3, 20, 12)
    assert item["name"] == "out_of_focus0002"


# --------------------------------------------------------------------------- augmentation


def _coordinate_pair(tmp_path: Path, h: int, w: int) -> list[tuple[Path, Path, str]]:
    """A 16-bit pair whose pixels encode their own (y, x); sharp = 65535 - blurry."""
    yy, xx = np.mgrid[0:h, 0:w]
    code = np.stack([yy * 256 + xx, yy, xx], axis=2).astype(np.uint16)
    b = _write(tmp_path / "b.png", code[:, :, ::-1])
    s = _write(tmp_path / "s.png", (65535 - code)[:, :, ::-1])
    return [(b, s, "coords")]


def _decode(t: torch.Tensor) -> np.ndarray:
    return np.round(t[0].numpy() * 65535).astype(np.int64)


def _is_dihedral_crop(code: np.ndarray, h: int, w: int) -> bool:
    """Whether ``code`` equals a flip/rotation of a contiguous crop of the coordinate image."""
    for k in range(4):
        for flip in (False, True):
            c = np.rot90(code, -k)
            c = c[:, ::-1] if flip else c
            ys, xs = c // 256, c % 256
            y0, x0 = ys[0, 0], xs[0, 0]
            gy, gx = np.mgrid[0 : c.shape[0], 0 : c.shape[1]]
            if np.array_equal(ys, y0 + gy) and np.array_equal(xs, x0 + gx):
                return y0 >= 0 and y0 + c.shape[0] <= h and x0 >= 0 and x0 + c.shape[1] <= w
    return False


def test_augmentation_identical_and_exact(tmp_path: Path) -> None:
    pairs = _coordinate_pair(tmp_path, 40, 52)
    ds = PairedImageDataset(pairs, crop_size=16, augment=True)
    torch.manual_seed(0)
    seen = set()
    for _ in range(40):
        item = ds[0]
        b, s = item["blurry"], item["sharp"]
        assert tuple(b.shape) == (3, 16, 16) and tuple(s.shape) == (3, 16, 16)
        assert torch.equal(b + s, torch.ones_like(b))  # same transform on both images, bit-exact
        code = _decode(b)
        assert _is_dihedral_crop(code, 40, 52)
        seen.add((int(code[0, 0]), int(code[0, 1] - code[0, 0])))
    assert len(seen) > 10  # positions and orientations vary


def test_augmentation_is_reproducible_with_torch_seed(tmp_path: Path) -> None:
    ds = PairedImageDataset(_coordinate_pair(tmp_path, 30, 30), crop_size=(8, 12), augment=True)
    torch.manual_seed(123)
    first = [ds[0]["blurry"] for _ in range(5)]
    torch.manual_seed(123)
    again = [ds[0]["blurry"] for _ in range(5)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert all(tuple(t.shape) == (3, 8, 12) for t in first)  # non-square: never rotated


def test_validation_items_are_whole_and_unchanged(tmp_path: Path) -> None:
    pairs = _coordinate_pair(tmp_path, 21, 17)
    item = PairedImageDataset(pairs)[0]
    code = _decode(item["blurry"])
    yy, xx = np.mgrid[0:21, 0:17]
    np.testing.assert_array_equal(code, yy * 256 + xx)
    centre = PairedImageDataset(pairs, crop_size=8)[0]
    np.testing.assert_array_equal(_decode(centre["blurry"]), (yy * 256 + xx)[6:14, 4:12])


def test_small_images_are_reflection_padded(tmp_path: Path) -> None:
    pairs = _coordinate_pair(tmp_path, 10, 14)
    ds = PairedImageDataset(pairs, crop_size=24, augment=False)
    item = ds[0]
    assert tuple(item["blurry"].shape) == (3, 24, 24)
    code = _decode(item["blurry"])
    ys, xs = code // 256, code % 256
    # reflection: every row/column index is a valid source index and the interior is intact
    assert ys.min() == 0 and ys.max() == 9 and xs.min() == 0 and xs.max() == 13
    np.testing.assert_array_equal(ys[7:17, 5], np.arange(10))
    assert torch.equal(item["blurry"] + item["sharp"], torch.ones_like(item["blurry"]))
    torch.manual_seed(1)
    assert tuple(PairedImageDataset(pairs, crop_size=24, augment=True)[0]["sharp"].shape) == (
        3,
        24,
        24,
    )


def test_no_padding_option_raises_with_file_and_sizes(tmp_path: Path) -> None:
    pairs = _coordinate_pair(tmp_path, 10, 14)
    ds = PairedImageDataset(pairs, crop_size=24, augment=True, pad_if_smaller=False)
    with pytest.raises(NRKNetDataError, match=r"b\.png.*14x10.*24x24"):
        ds[0]


def test_paired_helpers_directly() -> None:
    a = np.arange(5 * 6 * 3, dtype=np.float32).reshape(5, 6, 3)
    out = paired_crop([a, a + 1], (3, 3), random=True)
    assert np.array_equal(out[0] + 1, out[1]) and out[0].shape == (3, 3, 3)
    t = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(2, 4, 4)
    g = torch.Generator().manual_seed(3)
    x, y = paired_flips([t, -t], generator=g)
    assert torch.equal(x, -y) and sorted(x.flatten().tolist()) == sorted(t.flatten().tolist())


def test_flips_on_arrays_match_paired_flips_on_tensors() -> None:
    img = np.arange(6 * 6 * 3, dtype=np.float32).reshape(6, 6, 3)
    seen = set()
    for seed in range(200):
        expected = paired_flips(
            [torch.from_numpy(img.transpose(2, 0, 1).copy())], torch.Generator().manual_seed(seed)
        )[0]
        flips = _draw_flips(torch.Generator().manual_seed(seed))
        seen.add(flips)
        assert torch.equal(_to_tensor(_flip_view(img, *flips)), expected)
    assert len(seen) == 16  # every combination was compared


# --------------------------------------------------------------------------- bad input


def test_missing_root_shows_expected_tree(tmp_path: Path) -> None:
    for fn, label in [
        (lambda r: scan_dpdd(r, "train"), "train_c/source"),
        (lambda r: scan_lfdof(r, "train"), "ground_truth/IMG_x.png"),
        (scan_realdof, "target/NN.png"),
        (scan_rtf, "GT/sharp_NN.png"),
        (scan_cuhk, "*.jpg"),
    ]:
        with pytest.raises(DatasetLayoutError) as info:
            fn(tmp_path / "missing")
        msg = str(info.value)
        assert str(tmp_path / "missing") in msg and "does not exist" in msg and label in msg


def test_wrong_layout_is_reported(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    _write(tmp_path / "photos" / "a.png", _img(4, 4, 0))
    with pytest.raises(DatasetLayoutError, match=r"no split folder.*a\.png.*Expected layout"):
        scan_dpdd(tmp_path / "photos", "train")
    base = make_dpdd(tmp_path / "d", counts=(1, 0, 1))
    with pytest.raises(DatasetLayoutError, match="val_c"):
        scan_dpdd(base, "val")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetLayoutError, match="no images"):
        scan_cuhk(tmp_path / "empty")
    with pytest.raises(DatasetLayoutError, match="source"):
        scan_realdof(tmp_path / "empty")


def test_count_mismatch_lists_unpaired(tmp_path: Path) -> None:
    base = make_dpdd(tmp_path)
    _write(base / "train_c" / "source" / "1P0A9000.png", _img(24, 32, 1))
    with pytest.raises(PairingError, match=r"4 blurry.*3 sharp.*1P0A9000\.png"):
        scan_dpdd(base, "train")
    real = make_realdof(tmp_path / "RealDOF")
    (real / "target" / "01.png").rename(real / "target" / "07.png")
    with pytest.raises(PairingError, match=r"unpaired: 01\.png, 07\.png"):
        scan_realdof(real)
    rtf = make_rtf(tmp_path / "RTF")
    (rtf / "GT" / "sharp_12.png").unlink()
    with pytest.raises(PairingError, match=r"image_12\.png"):
        scan_rtf(rtf)
    lf = make_lfdof(tmp_path / "LFDOF")
    (lf / "train_data" / "ground_truth" / "IMG_2.png").unlink()
    with pytest.raises(PairingError, match=r"no ground truth.*IMG_2"):
        scan_lfdof(lf, "train")


def test_size_mismatch_names_both_files(tmp_path: Path) -> None:
    real = make_realdof(tmp_path / "RealDOF")
    _write(real / "target" / "01.png", _img(18, 20, 5))
    with pytest.raises(SizeMismatchError) as info:
        PairedImageDataset(scan_realdof(real))
    msg = str(info.value)
    assert "source/01.png is 22x18" in msg.replace("\\", "/")
    assert "target/01.png is 20x18" in msg.replace("\\", "/")


def _corrupt_realdof(tmp_path: Path) -> Path:
    real = make_realdof(tmp_path / "RealDOF", n=4)
    data = (real / "source" / "01.png").read_bytes()
    (real / "source" / "01.png").write_bytes(data[: len(data) // 2])  # truncated
    (real / "target" / "02.png").write_bytes(b"")  # empty
    return real


def test_unreadable_images_raise_by_default(tmp_path: Path) -> None:
    real = _corrupt_realdof(tmp_path)
    with pytest.raises(ImageReadError, match=r"01\.png.*truncated"):
        PairedImageDataset(scan_realdof(real))


def test_unreadable_images_can_be_skipped(tmp_path: Path) -> None:
    real = _corrupt_realdof(tmp_path)
    with pytest.warns(UserWarning, match="skipped 2"):
        ds = PairedImageDataset(scan_realdof(real), on_bad_image="skip")
    assert len(ds) == 2 and ds.names == ["00", "03"]
    assert len(ds.skipped) == 2
    assert {Path(p).name for p, _ in ds.skipped} == {"01.png", "02.png"}
    _check_item(ds[1], 18, 22)


def test_late_decode_failure_skips_to_next_item(tmp_path: Path) -> None:
    real = make_realdof(tmp_path / "RealDOF", n=3)
    ds = PairedImageDataset(scan_realdof(real), on_bad_image="skip")
    # corrupt a file after the scan: header intact, image data garbage
    path = real / "source" / "01.png"
    data = bytearray(path.read_bytes())
    data[40:-20] = b"\x00" * (len(data) - 60)
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="skipping unreadable"):
        item = ds[1]
    assert item["name"] == "02" and len(ds.skipped) == 1
    strict = PairedImageDataset(scan_realdof(real), check_files=False)
    with pytest.raises(ImageReadError):
        strict[1]


def test_cuhk_skip_and_raise(tmp_path: Path) -> None:
    root = make_cuhk(tmp_path / "CUHK")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ImageReadError, match="broken.png"):
        BlurryOnlyDataset(scan_cuhk(root))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = BlurryOnlyDataset(scan_cuhk(root), on_bad_image="skip")
    assert len(ds) == 3 and len(ds.skipped) == 1


def test_bad_options(tmp_path: Path) -> None:
    pairs = _coordinate_pair(tmp_path, 8, 8)
    with pytest.raises(ValueError, match="on_bad_image"):
        PairedImageDataset(pairs, on_bad_image="ignore")
    with pytest.raises(ValueError, match="kind"):
        make_test_dataset("cuhk", tmp_path)
    with pytest.raises(ValueError, match="kind"):
        DPDDDataModule(tmp_path, extra_test_sets={"x": {"kind": "nope", "root": tmp_path}})


# --------------------------------------------------------------------------- DataModules


def test_dpdd_module_with_extra_test_sets(tmp_path: Path) -> None:
    base = make_dpdd(tmp_path / "data")
    make_realdof(tmp_path / "data" / "RealDOF")
    make_rtf(tmp_path / "data" / "RTF")
    dm = DPDDDataModule(
        tmp_path / "data",
        batch_size=2,
        crop_size=16,
        extra_test_sets={
            "realdof": {"kind": "realdof", "root": tmp_path / "data" / "RealDOF"},
            "rtf": {"kind": "rtf", "root": str(tmp_path / "data" / "RTF")},
        },
    )
    assert dm.test_set_names == ["dpdd", "realdof", "rtf"]
    dm.setup("fit")
    train = dm.train_dataloader()
    assert train.batch_size == 2 and not train.drop_last and not train.persistent_workers
    batch = next(iter(train))
    assert tuple(batch["blurry"].shape) == (2, 3, 16, 16) and len(batch["name"]) == 2
    val = dm.val_dataloader()
    assert [p[0].parent.parent.name for p in val.dataset.pairs] == ["val_c", "val_c"]
    assert tuple(next(iter(val))["sharp"].shape) == (1, 3, 24, 32)
    dm.setup("test")
    loaders = dm.test_dataloader()
    assert [len(ld.dataset) for ld in loaders] == [2, 3, 3]
    assert [ld.dataset.score_crop for ld in loaders] == [None, None, (4, 364)]
    assert base.is_dir()


@pytest.mark.parametrize("num_workers", [0, 2])
def test_dpdd_module_with_ram_cache(tmp_path: Path, num_workers: int) -> None:
    make_dpdd(tmp_path / "data")
    batches = {}
    for cache in ("none", "ram"):
        dm = DPDDDataModule(
            tmp_path / "data", batch_size=2, crop_size=16, num_workers=num_workers, cache=cache
        )
        dm.setup("fit")
        assert (dm.train_dataset.cache is not None) == (cache == "ram")
        assert dm.val_dataset.cache is None  # validation reads whole images from disk
        torch.manual_seed(0)
        batches[cache] = list(dm.train_dataloader())
    assert [len(b["name"]) for b in batches["ram"]] == [2, 1]
    for a, b in zip(batches["none"], batches["ram"], strict=True):
        assert a["name"] == b["name"]
        assert torch.equal(a["blurry"], b["blurry"]) and torch.equal(a["sharp"], b["sharp"])
    with pytest.raises(ValueError, match="data.cache"):
        DPDDDataModule(tmp_path / "data", cache="yes")


def test_test_only_and_predict_only_modules(tmp_path: Path) -> None:
    real = RealDOFDataModule(make_realdof(tmp_path / "RealDOF"))
    assert real.test_set_names == ["realdof"]
    with pytest.raises(NRKNetDataError, match="test-only"):
        real.train_dataloader()
    with pytest.raises(NRKNetDataError, match="test-only"):
        real.val_dataloader()
    real.setup("fit")  # nothing to build, no error
    assert len(real.test_dataloader()[0].dataset) == 3

    rtf = RTFDataModule(make_rtf(tmp_path / "RTF"), num_workers=1)
    rtf.setup("test")
    (loader,) = rtf.test_dataloader()
    assert loader.dataset.score_crop == (4, 364) and loader.persistent_workers
    with pytest.raises(NRKNetDataError, match="test-only"):
        rtf.train_dataloader()

    cuhk = CUHKDataModule(make_cuhk(tmp_path / "CUHK"))
    assert cuhk.test_set_names == []
    with pytest.raises(NRKNetDataError, match="predict"):
        cuhk.test_dataloader()
    with pytest.raises(NRKNetDataError, match="no ground truth"):
        cuhk.train_dataloader()
    assert len(cuhk.predict_dataloader().dataset) == 3


def test_lfdof_module_holds_out_scenes(tmp_path: Path) -> None:
    root = make_lfdof(tmp_path / "LFDOF", scenes=tuple(f"IMG_{i}" for i in range(1, 7)))
    make_rtf(tmp_path / "RTF")
    dm = LFDOFDataModule(
        root,
        num_val_scenes=2,
        crop_size=8,
        extra_test_sets={"rtf": {"kind": "rtf", "root": tmp_path / "RTF"}},
    )
    dm.setup()
    train_gt = {p[1] for p in dm.train_dataset.pairs}
    val_gt = {p[1] for p in dm.val_dataset.pairs}
    assert len(val_gt) == 2 and train_gt.isdisjoint(val_gt) and len(train_gt) == 4
    assert dm.test_set_names == ["lfdof", "rtf"]
    assert [len(d) for d in dm.test_datasets] == [12, 3]
