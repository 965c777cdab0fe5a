"""Synthetic defocus renderer: optics, compositing physics, determinism, atomic generation, CLI."""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from nrknet.data import synthetic as syn
from nrknet.data.datamodules import SyntheticDataModule
from nrknet.data.io import NRKNetDataError, read_image
from nrknet.data.synthetic import (
    DEPTH_RANGE,
    PHOTO_SPLITS,
    TEXTURE_SPLITS,
    SynthSettings,
    coc_radius,
    convolve,
    disk_psf,
    ensure_visible_blur,
    generate_dataset,
    is_complete_dataset,
    linear_to_srgb,
    make_scene,
    minimum_blur,
    render_defocus,
    render_pair,
    srgb_to_linear,
)
from nrknet.data.synthetic import writer as synth_writer
from nrknet.errors import ConfigError
from nrknet.synth import main

NEAR, FAR = DEPTH_RANGE


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.random((h // 4 + 1, w // 4 + 1, 3)).astype(np.float32)
    return np.clip(cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST), 0, 1)


# --------------------------------------------------------------------------- optics pieces


def test_srgb_roundtrip() -> None:
    x = np.linspace(0, 1, 1001, dtype=np.float32)
    np.testing.assert_allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=2e-6)
    assert srgb_to_linear(np.float32(0.5)) == pytest.approx(0.21404, abs=1e-4)


@pytest.mark.parametrize("radius", [0.0, 0.3, 0.5, 0.8, 1.5, 3.0, 7.25, 12.0])
def test_disk_psf_is_normalised_centred_disk(radius: float) -> None:
    k = disk_psf(radius)
    assert k.dtype == np.float32 and k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
    assert k.sum() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(k, k[::-1, ::-1], atol=1e-7)
    np.testing.assert_allclose(k, k.T, atol=1e-7)
    if radius <= 0.5:
        assert k.shape == (1, 1)
        return
    # area coverage: the kernel is proportional to the covered area, pi r^2 in total
    centre = k[k.shape[0] // 2, k.shape[1] // 2]
    assert (1.0 / centre) == pytest.approx(math.pi * radius**2, rel=0.02)
    half = k.shape[0] // 2
    assert half <= math.ceil(radius + 0.5)
    # anti-aliased: some edge pixels are partially covered
    assert np.any((k > 1e-6) & (k < centre - 1e-6))


def test_disk_psf_shapes() -> None:
    ell = disk_psf(6.0, aspect=0.6, angle=0.0)
    assert ell.sum() == pytest.approx(1.0, abs=1e-6)
    rows = np.count_nonzero(ell.sum(axis=1) > 1e-6)
    cols = np.count_nonzero(ell.sum(axis=0) > 1e-6)
    assert cols > rows  # major axis horizontal at angle 0
    rot = disk_psf(6.0, aspect=0.6, angle=math.pi / 2)
    np.testing.assert_allclose(rot, ell.T, atol=1e-6)
    soft = disk_psf(6.0, softness=2.0)
    hard = disk_psf(6.0)
    assert soft.sum() == pytest.approx(1.0, abs=1e-6)
    assert np.count_nonzero(soft > 1e-7) > np.count_nonzero(hard > 1e-7)
    with pytest.raises(ValueError):
        disk_psf(-1.0)
    with pytest.raises(ValueError):
        disk_psf(2.0, aspect=1.5)


def test_coc_radius_thin_lens() -> None:
    assert coc_radius(3.0, 3.0, 12.0) == 0.0
    assert coc_radius(NEAR, FAR, 12.0) == pytest.approx(12.0)
    assert coc_radius(FAR, NEAR, 12.0) == pytest.approx(12.0)
    assert coc_radius(FAR, NEAR, 12.0, aperture=0.5) == pytest.approx(6.0)
    assert coc_radius(2.0, 4.0, 10.0, signed=True) > 0 > coc_radius(8.0, 4.0, 10.0, signed=True)
    d = np.array([1.0, 2.0, 4.0])
    expected = 12.0 * np.abs(1 / d - 1 / 2.0) / (1 / NEAR - 1 / FAR)
    np.testing.assert_allclose(coc_radius(d, 2.0, 12.0), expected, rtol=1e-6)


def test_convolve_wrap_preserves_mean_exactly() -> None:
    img = _texture(40, 48)
    out = convolve(img, disk_psf(5.0), border="wrap")
    np.testing.assert_allclose(out.mean(axis=(0, 1)), img.mean(axis=(0, 1)), rtol=1e-5)
    with pytest.raises(ValueError, match="border"):
        convolve(img, disk_psf(2.0), border="zero")


# --------------------------------------------------------------------------- renderer physics


def test_zero_blur_returns_sharp_image() -> None:
    scene = make_scene("train", 64, np.random.default_rng(0), kind="dead_leaves")
    out = render_defocus(scene.sharp, scene.depth, focus=3.0, max_coc=0.0)
    np.testing.assert_allclose(out, scene.sharp, atol=2e-6)
    # depth everywhere at the focus distance: no blur either
    flat = np.full(scene.depth.shape, 2.5, np.float32)
    np.testing.assert_allclose(
        render_defocus(scene.sharp, flat, 2.5, max_coc=12.0), scene.sharp, atol=2e-6
    )


def _largest_radius(inv: np.ndarray, focus: float, aperture: float, max_coc: float) -> float:
    return float(coc_radius(1.0 / inv, focus, max_coc, aperture=aperture).max())


def test_narrow_depth_scene_is_refocused_to_reach_the_minimum_blur() -> None:
    inv = 1.0 / np.linspace(1.2, 2.0, 100)  # narrow depth, focus inside it
    focus, aperture = ensure_visible_blur(inv, 1.5, 0.4, max_coc=3.0)
    assert _largest_radius(inv, 1.5, 0.4, 3.0) < minimum_blur(3.0) == 0.75
    assert _largest_radius(inv, focus, aperture, 3.0) == pytest.approx(0.75)
    assert focus == pytest.approx(2.0)  # on the far end: the near end is blurred
    assert 0.4 < aperture < 1.0


def test_too_shallow_scene_is_focused_behind_it() -> None:
    inv = 1.0 / np.linspace(1.2, 1.5, 100)  # 0.56 px at most with focus inside, full aperture
    focus, aperture = ensure_visible_blur(inv, 1.35, 0.4, max_coc=3.0)
    assert focus > 1.5 and aperture == 1.0
    assert _largest_radius(inv, focus, aperture, 3.0) == pytest.approx(0.75)
    assert float(coc_radius(1.5, focus, 3.0)) > 0  # nothing of it is in focus


def test_a_draw_with_enough_blur_is_kept() -> None:
    inv = 1.0 / np.linspace(1.0, 10.0, 100)
    assert ensure_visible_blur(inv, 2.0, 0.5, max_coc=12.0) == (2.0, 0.5)


def test_flat_scene_is_blurred_uniformly_and_zero_max_coc_left_alone() -> None:
    flat = np.full(50, 1 / 2.5)
    focus, aperture = ensure_visible_blur(flat, 2.5, 0.6, max_coc=12.0)
    assert _largest_radius(flat, focus, aperture, 12.0) == pytest.approx(1.0)
    inv = 1.0 / np.linspace(1.0, 10.0, 100)
    assert ensure_visible_blur(inv, 2.0, 0.5, max_coc=0.0) == (2.0, 0.5)


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_every_small_pair_is_visibly_blurred(split) -> None:
    settings = SynthSettings(size=64)  # max_coc 3 px: narrow scenes used to come out sharp
    for index in range(6):
        pair = render_pair(settings, split, index)
        assert pair.info["coc_max"] >= minimum_blur(3.0) - 1e-3
        assert not np.array_equal(pair.blurry, pair.sharp)


def test_zero_blur_pair_is_identical_after_quantisation() -> None:
    pair = render_pair(SynthSettings(size=64, max_coc=0.0), "train", 0)
    np.testing.assert_array_equal(pair.blurry, pair.sharp)


@pytest.mark.parametrize("border", ["reflect", "wrap"])
def test_constant_depth_is_one_disk_convolution_in_linear_light(border: str) -> None:
    sharp = _texture(48, 56, seed=3)
    depth, focus, max_coc, aperture = 1.6, 6.0, 12.0, 0.8
    out = render_defocus(
        sharp,
        np.full((48, 56), depth, np.float32),
        focus,
        max_coc=max_coc,
        aperture=aperture,
        border=border,
    )
    radius = aperture * max_coc * abs(1 / depth - 1 / focus) / (1 / NEAR - 1 / FAR)
    assert radius > 4
    expected = linear_to_srgb(convolve(srgb_to_linear(sharp), disk_psf(radius), border=border))
    np.testing.assert_allclose(out, expected, atol=1e-5)
    # and it is really blurred, not the gamma-space convolution
    gamma_space = convolve(sharp, disk_psf(radius), border=border)
    assert np.abs(out - gamma_space).max() > 0.01
    assert np.abs(out - sharp).mean() > 0.05


def test_mean_intensity_is_preserved() -> None:
    sharp = _texture(64, 64, seed=5)
    lin = srgb_to_linear(sharp)
    out = render_defocus(
        sharp, np.full((64, 64), 1.2, np.float32), 8.0, max_coc=10.0, border="wrap"
    )
    np.testing.assert_allclose(srgb_to_linear(out).mean(), lin.mean(), rtol=1e-4)
    scene = make_scene("train", 96, np.random.default_rng(4), kind="dead_leaves")
    out = render_defocus(scene.sharp, scene.depth, 1.5, max_coc=8.0)
    lin_in = srgb_to_linear(scene.sharp).mean(axis=(0, 1))
    np.testing.assert_allclose(srgb_to_linear(out).mean(axis=(0, 1)), lin_in, rtol=0.03)


def _occlusion_scene(size: int = 64):
    """A white near square (depth 1) in the middle of a far (depth 10) grey checkerboard."""
    yy, xx = np.mgrid[0:size, 0:size]
    checker = (((yy // 4) + (xx // 4)) % 2).astype(np.float32)
    sharp = np.repeat((0.2 + 0.2 * checker)[:, :, None], 3, axis=2)
    depth = np.full((size, size), FAR, np.float32)
    lo, hi = size // 4, 3 * size // 4
    sharp[lo:hi, lo:hi] = 1.0
    depth[lo:hi, lo:hi] = NEAR
    return sharp, depth, lo, hi


def test_near_blurred_object_spreads_over_sharp_background() -> None:
    sharp, depth, lo, hi = _occlusion_scene()
    out = render_defocus(sharp, depth, focus=FAR, max_coc=6.0)  # background in focus
    # background pixels just outside the square receive the square's blurred light
    ring = out[lo - 3 : lo - 1, lo + 8 : hi - 8]
    assert ring.min() > sharp[lo - 3 : lo - 1, lo + 8 : hi - 8].max() + 0.05
    # far from the square, the in-focus background is untouched
    np.testing.assert_allclose(out[: lo - 8, :], sharp[: lo - 8, :], atol=2e-6)
    # the square's own edge is soft
    assert out[lo, (lo + hi) // 2, 0] < 0.95


def test_near_sharp_object_stays_sharp_over_blurred_background() -> None:
    sharp, depth, lo, hi = _occlusion_scene()
    out = render_defocus(sharp, depth, focus=NEAR, max_coc=6.0)  # square in focus
    # the whole square, edges included, is exactly as sharp as before
    np.testing.assert_allclose(out[lo:hi, lo:hi], 1.0, atol=2e-6)
    # the checkerboard background is blurred towards its mean ...
    bg = out[: lo - 8, :, 0]
    assert bg.std() < 0.3 * sharp[: lo - 8, :, 0].std()
    # ... and the white square does not bleed into it
    assert out[lo - 2 : lo, lo:hi].max() < 0.45


def test_render_defocus_rejects_bad_input() -> None:
    img = np.zeros((8, 8, 3), np.float32)
    with pytest.raises(ValueError, match="depth"):
        render_defocus(img, np.zeros((8, 8)), 2.0, max_coc=3)
    with pytest.raises(ValueError, match="shape"):
        render_defocus(img, np.ones((4, 8)), 2.0, max_coc=3)
    with pytest.raises(ValueError, match="focus"):
        render_defocus(img, np.ones((8, 8)), -1.0, max_coc=3)


# --------------------------------------------------------------------------- scenes


def test_source_photographs_are_split_disjointly() -> None:
    splits = [set(PHOTO_SPLITS[s]) | set(TEXTURE_SPLITS[s]) for s in ("train", "val", "test")]
    assert (
        not (splits[0] & splits[1]) and not (splits[0] & splits[2]) and not (splits[1] & splits[2])
    )
    assert "motorcycle_left" in splits[2]
    for split in ("train", "val", "test"):
        for kind in syn.SCENE_KINDS[split]:
            scene = make_scene(split, 64, np.random.default_rng(1), kind=kind)
            assert set(scene.sources) <= splits[["train", "val", "test"].index(split)]
            assert scene.sharp.shape == (64, 64, 3) and scene.sharp.dtype == np.float32
            assert scene.depth.shape == (64, 64)
            assert scene.depth.min() >= NEAR - 1e-4 and scene.depth.max() <= FAR + 1e-3
    with pytest.raises(ValueError, match="stereo"):
        make_scene("train", 64, np.random.default_rng(0), kind="stereo")


def test_stereo_scene_uses_real_disparity() -> None:
    scene = make_scene("test", 64, np.random.default_rng(2), kind="stereo")
    assert np.all(np.isfinite(scene.depth)) and scene.depth.max() > scene.depth.min()
    assert len(np.unique(scene.depth)) > 20  # a real, varied depth map


# --------------------------------------------------------------------------- generation


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.png"))
    }


SMALL = SynthSettings(num_train=3, num_val=1, num_test=2, size=48)


def test_same_seed_same_files_in_any_order(tmp_path: Path) -> None:
    a = generate_dataset(tmp_path / "a", replace(SMALL, seed=7), progress=False)
    b = generate_dataset(tmp_path / "b", replace(SMALL, seed=7), workers=2, progress=False)
    assert _digest(a) == _digest(b) and len(_digest(a)) == 18
    c = generate_dataset(tmp_path / "c", replace(SMALL, seed=8), progress=False)
    assert _digest(a) != _digest(c)
    # one image alone equals the same image in the set
    alone = render_pair(replace(SMALL, seed=7), "test", 1)
    assert np.array_equal(cv2.imread(str(a / "test_c/source/00001.png"))[:, :, ::-1], alone.blurry)


def test_generated_layout_and_meta(tmp_path: Path) -> None:
    out = generate_dataset(
        tmp_path / "set", replace(SMALL, bit_depth=16, noise=0.01), progress=False
    )
    for split, n in (("train_c", 3), ("val_c", 1), ("test_c", 2)):
        for sub in ("source", "target", "depth"):
            files = sorted((out / split / sub).glob("*.png"))
            assert len(files) == n
            raw = cv2.imread(str(files[0]), cv2.IMREAD_UNCHANGED)
            assert raw.dtype == np.uint16 and raw.shape[:2] == (48, 48)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["settings"]["seed"] == 0 and meta["settings"]["max_coc"] == pytest.approx(
        12 * 48 / 256
    )
    rec = meta["images"]["test_c"][0]
    assert {"name", "kind", "coc_min", "coc_max", "focus", "sources"} <= set(rec)
    assert 0 <= rec["coc_min"] <= rec["coc_max"] <= meta["settings"]["max_coc"] + 1e-6
    assert is_complete_dataset(
        out, SynthSettings(num_train=3, num_val=1, num_test=2, size=48, bit_depth=16, noise=0.01)
    )
    assert not is_complete_dataset(out, SynthSettings(num_train=3, num_val=1, num_test=2, size=48))
    depth = cv2.imread(str(out / "train_c/depth/00000.png"), cv2.IMREAD_UNCHANGED) / 1000.0
    assert depth.min() >= NEAR - 1e-3 and depth.max() <= FAR + 1e-3


def test_interrupted_generation_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    real = synth_writer._render_and_write

    def flaky(job):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(synth_writer, "_render_and_write", flaky)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(tmp_path / "set", SMALL, progress=False)
    assert not (tmp_path / "set").exists()
    assert list(tmp_path.iterdir()) == []  # no temporary folder left either
    settings = SynthSettings(num_train=3, num_val=1, num_test=2, size=48)
    assert not is_complete_dataset(tmp_path / "set", settings)
    # an old complete set survives a failed regeneration with new settings
    monkeypatch.setattr(synth_writer, "_render_and_write", real)
    generate_dataset(tmp_path / "set", SMALL, progress=False)
    before = _digest(tmp_path / "set")
    calls["n"] = 0
    monkeypatch.setattr(synth_writer, "_render_and_write", flaky)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(tmp_path / "set", replace(SMALL, seed=5), progress=False)
    assert _digest(tmp_path / "set") == before and is_complete_dataset(tmp_path / "set", settings)


def test_refuses_foreign_folder_and_bad_settings(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(NRKNetDataError, match="not empty"):
        generate_dataset(tmp_path / "mine", SMALL, progress=False)
    assert (tmp_path / "mine" / "holiday.jpg").exists()


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"size": -5}, "size must be an integer >= 32, got -5"),
        ({"size": 64.0}, "size must be an integer, got 64.0"),
        ({"num_train": -1}, "num_train must be an integer >= 0, got -1"),
        ({"num_train": 0, "num_val": 0, "num_test": 0}, "nothing to generate"),
        ({"seed": -1}, "seed must be an integer >= 0, got -1"),
        ({"bit_depth": 12}, "bit_depth=12 is not known; expected one of 8, 16"),
        ({"max_coc": -1.0}, "max_coc must be a number >= 0, got -1.0"),
        ({"max_coc": 30}, "max_coc=30 is too large for 48 px images (at most 24)"),
        ({"noise": 2.0}, "noise must be a number >= 0 and <= 0.5, got 2.0"),
        ({"read_noise": float("nan")}, "read_noise must be a finite number, got nan"),
        ({"num_layers": 0}, "num_layers must be an integer >= 1 and <= 256, got 0"),
        ({"noise_per_pair": "yes"}, "noise_per_pair='yes' is not known"),
    ],
)
def test_bad_settings_are_refused_when_built_naming_the_setting(bad, message) -> None:
    with pytest.raises(ConfigError) as caught:
        replace(SMALL, **bad)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_settings_are_stored_plain_so_the_meta_record_is_unchanged() -> None:
    """A set written before (same settings) is still recognised: ``as_meta`` is pinned."""
    given = SynthSettings(
        num_train=np.int64(3), num_val=1, num_test=2, size=48, max_coc=2, noise=0, read_noise=0
    )
    assert given == replace(SMALL, max_coc=2.0) == SynthSettings(**asdict(given))
    assert json.dumps(given.as_meta()) == (
        '{"num_train": 3, "num_val": 1, "num_test": 2, "size": 48, "seed": 0, "max_coc": 2.0, '
        '"bit_depth": 8, "noise": 0.0, "read_noise": 0.0, "num_layers": 16, '
        '"renderer_version": 2, "depth_range": [1.0, 10.0]}'
    )
    assert SMALL.max_coc == 12 * 48 / 256  # filled from the size when not given


def test_training_without_rendered_training_pairs_says_so_before_rendering(tmp_path: Path) -> None:
    dm = SyntheticDataModule(tmp_path / "set", num_train=0, num_val=1, num_test=1, size=32)
    with pytest.raises(NRKNetDataError, match="data.num_train=0: training needs at least one"):
        dm.setup("fit")
    assert not (tmp_path / "set").exists()


def test_datamodule_settings_are_checked_when_it_is_built(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="size must be an integer >= 32, got 8"):
        SyntheticDataModule(tmp_path / "set", size=8)
    with pytest.raises(TypeError, match="num_trian"):  # a misspelt key is not dropped
        SyntheticDataModule(tmp_path / "set", num_trian=3)


def test_datamodule_generates_once_then_reuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    real = synth_writer._render_and_write

    def counting(job):
        calls["n"] += 1
        return real(job)

    monkeypatch.setattr(synth_writer, "_render_and_write", counting)
    kwargs = {"num_train": 3, "num_val": 1, "num_test": 2, "size": 48, "progress": False}
    dm = SyntheticDataModule(tmp_path / "synthetic", batch_size=2, crop_size=32, **kwargs)
    assert dm.settings == SMALL  # one SynthSettings from the data.* keys
    dm.prepare_data()
    assert calls["n"] == 6
    dm.prepare_data()
    SyntheticDataModule(tmp_path / "synthetic", **kwargs).prepare_data()
    assert calls["n"] == 6  # reused, not regenerated
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert tuple(batch["blurry"].shape) == (2, 3, 32, 32)
    assert len(dm.val_dataloader().dataset) == 1
    dm.setup("test")
    assert dm.test_set_names == ["synthetic"] and len(dm.test_dataloader()[0].dataset) == 2
    # other settings: the set is regenerated in place
    SyntheticDataModule(tmp_path / "synthetic", **{**kwargs, "seed": 3}).prepare_data()
    assert calls["n"] == 12
    # crop larger than the images is reduced to the image size
    assert SyntheticDataModule(tmp_path / "s2", crop_size=256, **kwargs).crop_size == 48


# --------------------------------------------------------------------------- command line


def test_cli_writes_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    args = [
        "--out",
        str(out),
        "--train",
        "2",
        "--val",
        "1",
        "--test",
        "1",
        "--size",
        "48",
        "--seed",
        "3",
        "--quiet",
    ]
    assert main(args) == 0
    assert "wrote 4 pairs" in capsys.readouterr().out
    for split in ("train_c", "val_c", "test_c"):
        for sub in ("source", "target", "depth"):
            assert (out / split / sub).is_dir()
    assert len(list((out / "train_c" / "source").glob("*.png"))) == 2
    meta = json.loads((out / "meta.json").read_text())
    assert meta["generator"] == "nrknet-synth" and meta["settings"]["seed"] == 3
    img = read_image(out / "val_c" / "target" / "00000.png")
    assert img.shape == (48, 48, 3)
    assert main(args) == 0
    assert "reused" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--size", "-4"], "size"),
        (["--train", "-1"], "num_train"),
        (["--train", "two"], "invalid int"),
        (["--bit-depth", "12"], "invalid choice"),
        (["--max-coc", "-2"], "max_coc"),
    ],
)
def test_cli_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args, needle
) -> None:
    code = main(["--out", str(tmp_path / "o"), "--quiet", *args])
    err = capsys.readouterr().err
    assert code != 0
    assert err.count("\n") == 1 and err.startswith("nrknet-synth: error:") and needle in err
    assert "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_cli_debug_shows_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="size"):  # the interpreter prints its traceback
        main(["--out", str(tmp_path / "o"), "--size", "-4", "--debug"])


def test_layer_windows_match_whole_image_computation(monkeypatch: pytest.MonkeyPatch) -> None:
    scene = make_scene("train", 96, np.random.default_rng(3), kind="dead_leaves")
    kwargs = {"max_coc": 8.0, "psf_aspect": 0.85, "psf_softness": 0.7}
    windowed = render_defocus(scene.sharp, scene.depth, 1.3, **kwargs)
    monkeypatch.setattr(cv2, "boundingRect", lambda m: (0, 0, m.shape[1], m.shape[0]))
    whole = render_defocus(scene.sharp, scene.depth, 1.3, **kwargs)
    np.testing.assert_allclose(windowed, whole, atol=1e-6)


def test_leftovers_of_killed_runs_are_removed(tmp_path: Path) -> None:
    dead_pid = 2**22 + 12345  # above the default pid_max, so never a running process
    for token in ("abcd1234", "ef567890"):  # a half-written set and a replaced old one
        leftover = tmp_path / f".set.{dead_pid}-{token}.tmp"
        (leftover / "train_c").mkdir(parents=True)
    generate_dataset(tmp_path / "set", SMALL, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]


def test_a_running_generation_keeps_its_temporary_folder(tmp_path: Path) -> None:
    running = tmp_path / f".set.{os.getppid()}-abcd1234.tmp"  # the parent process is alive
    (running / "train_c").mkdir(parents=True)
    generate_dataset(tmp_path / "set", SMALL, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [running.name, "set"]
    assert (running / "train_c").is_dir()


def test_noise_per_pair_draws_each_pairs_levels_from_clean_to_the_maximum():
    settings = syn.SynthSettings(
        size=48, max_coc=3.0, noise=0.02, read_noise=0.004, noise_per_pair=True
    )
    levels = [syn.render_pair(settings, "train", i).info["noise"] for i in range(12)]
    shots = [level["shot"] for level in levels]
    assert all(0 <= level["shot"] <= 0.02 and 0 <= level["read"] <= 0.004 for level in levels)
    assert len(set(shots)) == len(shots) and min(shots) < 0.01 < max(shots)
    # the same draw every time (deterministic per seed, split and index)
    assert syn.render_pair(settings, "train", 3).info["noise"] == levels[3]
    # a set written without the option keeps its old settings record, so it is still reused
    plain = syn.SynthSettings(size=48, max_coc=3.0, noise=0.02)
    assert "noise_per_pair" not in plain.as_meta()
    assert "noise" not in syn.render_pair(plain, "train", 0).info
    assert settings.as_meta()["noise_per_pair"] is True


def test_regenerating_refuses_to_delete_files_it_did_not_write(tmp_path: Path) -> None:
    out = generate_dataset(tmp_path / "set", replace(SMALL, seed=1), progress=False)
    (out / "notes.txt").write_text("mine")
    (out / "train_c" / "source" / "extra.txt").write_bytes(b"also mine")
    with pytest.raises(
        NRKNetDataError, match=r"did not write \(notes\.txt, train_c/source/extra\.txt\)"
    ):
        generate_dataset(out, replace(SMALL, seed=2), progress=False)
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "train_c" / "source" / "extra.txt").is_file()
    # with the same settings the set is reused as it is; once the files are gone it is replaced
    assert generate_dataset(out, replace(SMALL, seed=1), progress=False) == out
    (out / "notes.txt").unlink()
    (out / "train_c" / "source" / "extra.txt").unlink()
    generate_dataset(out, replace(SMALL, seed=2), progress=False)
    assert json.loads((out / "meta.json").read_text())["settings"]["seed"] == 2


def test_files_put_into_the_set_while_it_renders_are_not_deleted(tmp_path, monkeypatch) -> None:
    """The check runs again just before the old set is replaced."""
    out = generate_dataset(tmp_path / "set", replace(SMALL, seed=1), progress=False)
    real_render = synth_writer._render_and_write

    def render_and_meanwhile_add_a_file(job):
        (out / "added_meanwhile.txt").write_text("mine")
        return real_render(job)

    monkeypatch.setattr(synth_writer, "_render_and_write", render_and_meanwhile_add_a_file)
    with pytest.raises(NRKNetDataError, match=r"did not write \(added_meanwhile\.txt\)"):
        generate_dataset(out, replace(SMALL, seed=2), progress=False)
    assert (out / "added_meanwhile.txt").read_text() == "mine"
    assert json.loads((out / "meta.json").read_text())["settings"]["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]  # no temporary left


def test_validation_scenes_can_come_from_the_training_photographs():
    held_out = syn.SynthSettings(size=48, max_coc=3.0)
    from_train = replace(held_out, val_scenes="train")
    train_photos = set(syn.PHOTO_SPLITS["train"]) | set(syn.TEXTURE_SPLITS["train"])
    val_photos = set(syn.PHOTO_SPLITS["val"]) | set(syn.TEXTURE_SPLITS["val"])
    for i in range(6):
        own = set(syn.render_pair(held_out, "val", i).info["sources"])
        drawn = syn.render_pair(from_train, "val", i)
        assert own <= val_photos and set(drawn.info["sources"]) <= train_photos
        # new scenes, not copies of the training pairs
        assert not np.array_equal(drawn.sharp, syn.render_pair(from_train, "train", i).sharp)
    # only validation changes; a set written before the option still matches its record
    assert np.array_equal(
        syn.render_pair(from_train, "test", 0).blurry, syn.render_pair(held_out, "test", 0).blurry
    )
    assert "val_scenes" not in held_out.as_meta() and from_train.as_meta()["val_scenes"] == "train"
    with pytest.raises(ConfigError, match="val_scenes='test' is not known"):
        replace(held_out, val_scenes="test")


def _generate_in_turn(folder: str) -> float:
    return json.loads((generate_dataset(folder, SMALL, progress=False) / "meta.json").read_text())[
        "elapsed_s"
    ]


def test_processes_asking_for_the_same_set_at_once_take_turns(tmp_path: Path) -> None:
    """The jobs of a parallel sweep all render their set on first use: one renders, the
    others wait and reuse it (none deletes another's half-written temporary)."""
    from concurrent.futures import ProcessPoolExecutor

    folder = str(tmp_path / "set")
    with ProcessPoolExecutor(max_workers=3) as pool:
        elapsed = list(pool.map(_generate_in_turn, [folder] * 3))
    assert len(set(elapsed)) == 1  # one generation, read back by all three
    assert syn.is_complete_dataset(folder, SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]
