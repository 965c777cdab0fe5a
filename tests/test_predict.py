"""The ``nrknet-predict`` command: inputs, outputs, skipping, errors."""

from __future__ import annotations

import hashlib
import re
from importlib.metadata import entry_points
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from nrknet.models.nrknet import NRKNet
from nrknet.predict import main
from nrknet.weights.checkpoint import save_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.random((height // 8 + 2, width // 8 + 2, 3)).astype(np.float32)
    smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(0.8 * smooth + 0.2 * rng.random((height, width, 3)), 0, 1)


def _write(path: Path, array: np.ndarray, params: tuple = ()) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array, list(params))


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def photo_folder(tmp_path) -> Path:
    """A good JPEG, a 16-bit PNG, a greyscale PNG, an RGBA PNG (in a sub-folder) and a corrupt file."""
    folder = tmp_path / "photos"
    img = _scene(40, 56)
    bgr8 = (img[:, :, ::-1] * 255 + 0.5).astype(np.uint8)
    _write(folder / "a.jpg", bgr8, (cv2.IMWRITE_JPEG_QUALITY, 90))
    _write(folder / "b16.png", (img[:, :, ::-1] * 65535 + 0.5).astype(np.uint16))
    _write(folder / "grey.png", cv2.cvtColor(bgr8, cv2.COLOR_BGR2GRAY))
    alpha = np.tile(np.linspace(0, 255, 56).astype(np.uint8), (40, 1))
    _write(folder / "sub" / "rgba.png", np.dstack([bgr8, alpha]))
    good = (folder / "b16.png").read_bytes()
    (folder / "broken.png").write_bytes(good[: len(good) // 2])
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_folder_of_mixed_images(photo_folder, tmp_path, ckpt, capsys):
    """Four outputs with matching bit depth and channels; the corrupt file skipped."""
    before = _digest(photo_folder)
    out = tmp_path / "out"
    status = main([str(photo_folder), "--out", str(out), "--ckpt", str(ckpt)])
    captured = capsys.readouterr()
    assert status == 1
    assert "broken.png" in captured.err
    assert "1 failed" in captured.out and "4 done" in captured.out
    assert _digest(photo_folder) == before  # inputs unchanged
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == ["a.jpg", "b16.png", "grey.png", "sub/rgba.png"]
    read = {name: cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED) for name in written}
    assert read["a.jpg"].dtype == np.uint8 and read["a.jpg"].shape == (40, 56, 3)
    assert read["b16.png"].dtype == np.uint16 and read["b16.png"].shape == (40, 56, 3)
    assert read["grey.png"].dtype == np.uint8 and read["grey.png"].shape == (40, 56)
    rgba = read["sub/rgba.png"]
    assert rgba.shape == (40, 56, 4)
    source_alpha = cv2.imread(str(photo_folder / "sub" / "rgba.png"), cv2.IMREAD_UNCHANGED)[..., 3]
    assert np.array_equal(rgba[..., 3], source_alpha)
    # The 16-bit result uses the 16-bit range: neither 8-bit values stored as they are (all
    # below 256) nor 8-bit values scaled by 257 (all multiples of 257).
    b16 = read["b16.png"]
    unclipped = b16[(b16 > 0) & (b16 < 65535)]  # the untrained network clips much of the image
    assert unclipped.size > 100 and unclipped.max() > 255
    assert np.mean(unclipped % 257 == 0) < 0.05


def test_existing_outputs_are_skipped_unless_overwrite(photo_folder, tmp_path, ckpt, capsys):
    (photo_folder / "broken.png").unlink()
    out = tmp_path / "out"
    assert main([str(photo_folder), "--out", str(out), "--ckpt", str(ckpt), "-q"]) == 0
    first = (out / "a.jpg").stat().st_mtime_ns
    capsys.readouterr()
    assert main([str(photo_folder), "--out", str(out), "--ckpt", str(ckpt), "-q"]) == 0
    captured = capsys.readouterr()
    assert "0 done, 4 skipped" in captured.out
    assert "exists" in captured.err
    assert (out / "a.jpg").stat().st_mtime_ns == first
    status = main([str(photo_folder), "--out", str(out), "--ckpt", str(ckpt), "--overwrite", "-q"])
    assert status == 0
    assert "4 done" in capsys.readouterr().out


def test_file_and_glob_inputs_with_tiling(photo_folder, tmp_path, ckpt, capsys):
    """A file and a glob; --tile forces tiling, whose 16-bit result matches the whole image's."""
    whole, tiled = tmp_path / "whole", tmp_path / "tiled"
    assert main([str(photo_folder / "b16.png"), "-o", str(whole), "-c", str(ckpt)]) == 0
    status = main([str(photo_folder / "*.png"), "-o", str(tiled), "-c", str(ckpt), "--tile", "16"])
    assert status == 1  # broken.png matches the glob
    capsys.readouterr()
    assert sorted(p.name for p in tiled.iterdir()) == ["b16.png", "grey.png"]
    a = cv2.imread(str(whole / "b16.png"), cv2.IMREAD_UNCHANGED).astype(np.int64)
    b = cv2.imread(str(tiled / "b16.png"), cv2.IMREAD_UNCHANGED).astype(np.int64)
    assert np.abs(a - b).max() <= 7  # 1e-4 of the 16-bit range


@pytest.mark.parametrize("tile", [None, 32], ids=["whole", "tiled"])
def test_defocus_map_file_is_the_analysis_radius_for_a_residual_operator(tmp_path, tile):
    # D = I + R counts the identity as weight at radius 0; the written map must too
    from nrknet.analysis.defocus import defocus_map

    torch.manual_seed(0)
    model = NRKNet(width=8, residual_gate=False, blur_residual=True).eval()
    torch.nn.init.normal_(model.blur.mixer.weight, std=0.2)  # R = 0 would make any weighting equal
    save_model(model, tmp_path / "residual.ckpt")
    bgr8 = (_scene(48, 64)[:, :, ::-1] * 255 + 0.5).astype(np.uint8)
    _write(tmp_path / "in" / "a.png", bgr8)
    extra = [] if tile is None else ["--tile", str(tile), "--overlap", "8"]
    args = [str(tmp_path / "in" / "a.png"), "--out", str(tmp_path / "out"), "--ckpt"]
    assert main([*args, str(tmp_path / "residual.ckpt"), "--defocus-map", "--quiet", *extra]) == 0
    written = cv2.imread(str(tmp_path / "out" / "a.defocus.png"), cv2.IMREAD_UNCHANGED) / 1000
    rgb = torch.from_numpy(bgr8[:, :, ::-1].copy()).permute(2, 0, 1)[None].float() / 255
    expected = defocus_map(model, rgb)[0, 0].numpy()
    assert np.abs(written - expected).max() < 1e-3  # the file holds thousandths of a pixel


@pytest.mark.parametrize("network", ["nrknet", "unet"])
def test_images_one_or_two_pixels_thin(tmp_path, ckpt, unet_ckpt, network, capsys):
    """Every side of 1 px and up deblurs; NRKNet's side files keep the size of the image."""
    sizes = [(1, 1), (1, 6), (2, 2), (6, 2), (3, 3)]
    for height, width in sizes:
        _write(tmp_path / "in" / f"{width}x{height}.png", np.zeros((height, width, 3), np.uint8))
    out = tmp_path / "out"
    args = [str(tmp_path / "in"), "--out", str(out), "-q"]
    if network == "nrknet":
        args += ["--ckpt", str(ckpt), "--defocus-map", "--tta"]
    else:
        args += ["--ckpt", str(unet_ckpt)]
    assert main(args) == 0
    assert "5 done, 0 skipped (output exists), 0 failed" in capsys.readouterr().out
    for height, width in sizes:
        names = [f"{width}x{height}.png"]
        if network == "nrknet":
            names.append(f"{width}x{height}.defocus.png")
        for name in names:
            assert cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED).shape[:2] == (height, width)


def test_images_the_network_runs_on_are_passed_unchanged(ckpt, unet_ckpt, one_thread):
    """Only sides too short for the network's own padding are extended: a thin image that the
    network takes as it is gives exactly the network's result."""
    from nrknet.inference import Deblurrer, load_inference_model
    from nrknet.inference.deblur import smallest_side

    device = torch.device("cpu")
    for path, side in ((ckpt, 2), (unet_ckpt, 3)):
        model = load_inference_model(path, device, accel="off")
        assert smallest_side(model) == side
        image = _scene(side, 13).astype(np.float32)
        with torch.inference_mode():
            direct = model(torch.from_numpy(image).permute(2, 0, 1)[None])[0].permute(1, 2, 0)
        np.testing.assert_array_equal(Deblurrer(model, device=device)(image).rgb, direct.numpy())


def test_an_array_that_is_no_float_rgb_image_is_refused_and_any_float_is_read(ckpt, one_thread):
    from nrknet.errors import DataError
    from nrknet.inference import Deblurrer, load_inference_model

    device = torch.device("cpu")
    deblurrer = Deblurrer(load_inference_model(ckpt, device, accel="off"), device=device)
    for shape in ((16, 16), (16, 16, 4), (1, 16, 16, 3)):
        with pytest.raises(DataError, match=re.escape(f"got shape {shape}")):
            deblurrer(np.zeros(shape, np.float32))
    for dtype in (np.uint8, np.uint16, np.int64):
        with pytest.raises(DataError, match=f"got dtype {np.dtype(dtype).name}"):
            deblurrer(np.zeros((16, 16, 3), dtype))
    image = np.random.default_rng(0).random((16, 16, 3), dtype=np.float32)
    expected = deblurrer(image).rgb
    for dtype in (np.float64, np.dtype(">f4"), np.longdouble):
        np.testing.assert_array_equal(deblurrer(image.astype(dtype)).rgb, expected)


def test_exif_rotated_jpeg_comes_out_upright(tmp_path, ckpt):
    """A JPEG stored 64x32 and shown 32x64 (EXIF orientation 6): the result and its defocus map are
    32x64 with no orientation of their own, so they show as the input does."""
    from test_data_io import with_exif_orientation

    stored = (_scene(32, 64)[:, :, ::-1] * 255 + 0.5).astype(np.uint8)
    photo = tmp_path / "in" / "turned.jpg"
    photo.parent.mkdir()
    photo.write_bytes(with_exif_orientation(cv2.imencode(".jpg", stored)[1].tobytes(), 6))
    out = tmp_path / "out"
    assert main([str(photo), "--out", str(out), "--ckpt", str(ckpt), "--defocus-map", "-q"]) == 0
    shown = cv2.imread(str(photo), cv2.IMREAD_COLOR)  # as a viewer shows the input
    result = cv2.imread(str(out / "turned.jpg"), cv2.IMREAD_UNCHANGED)  # as stored
    result_shown = cv2.imread(str(out / "turned.jpg"), cv2.IMREAD_COLOR)
    assert shown.shape == result.shape == result_shown.shape == (64, 32, 3)
    defocus = cv2.imread(str(out / "turned.defocus.png"), cv2.IMREAD_UNCHANGED)
    assert defocus.shape == (64, 32)


def test_defocus_map_and_figures(photo_folder, tmp_path, ckpt, capsys):
    out = tmp_path / "out"
    args = [str(photo_folder / "a.jpg"), "--out", str(out), "--ckpt", str(ckpt)]
    assert main([*args, "--defocus-map", "--figures", "--levels", "0,3,21"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "a.coefficients.png",
        "a.compare.png",
        "a.defocus.png",
        "a.defocus_color.png",
        "a.jpg",
        "atoms.png",
    ]
    radius = cv2.imread(str(out / "a.defocus.png"), cv2.IMREAD_UNCHANGED)
    assert radius.dtype == np.uint16 and radius.shape == (40, 56)
    color = cv2.imread(str(out / "a.defocus_color.png"), cv2.IMREAD_UNCHANGED)
    assert color.shape[0] == 40 and color.shape[1] > 56 and color.shape[2] == 3
    # A side file that exists also counts as an existing output.
    (out / "a.jpg").unlink()
    capsys.readouterr()
    assert main([*args, "--defocus-map"]) == 0
    assert "a.defocus.png exists" in capsys.readouterr().err
    assert not (out / "a.jpg").exists()


def test_output_inside_input_folder_is_refused(photo_folder, ckpt, capsys):
    before = _digest(photo_folder)
    status = main([str(photo_folder), "--out", str(photo_folder / "out"), "--ckpt", str(ckpt)])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("nrknet-predict: error:") and "inside the input folder" in err
    assert "Traceback" not in err
    assert _digest(photo_folder) == before
    status = main([str(photo_folder / "a.jpg"), "--out", str(photo_folder), "--ckpt", str(ckpt)])
    assert status == 2
    assert _digest(photo_folder) == before


@pytest.mark.parametrize("below", [False, True], ids=["file", "below-a-file"])
def test_out_that_is_a_file_is_a_usage_error_before_the_model_loads(
    photo_folder, tmp_path, below, monkeypatch, capsys
):
    import nrknet.inference

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not load")

    monkeypatch.setattr(nrknet.inference, "load_inference_model", no_model)
    taken = tmp_path / "taken.png"
    taken.write_bytes(b"not a folder")
    out = taken / "sub" / "deeper" if below else taken
    status = main([str(photo_folder / "a.jpg"), "--out", str(out), "-q"])
    err = capsys.readouterr().err
    assert status == 2
    expected = (
        f"--out {out} is inside {taken}, which is a file" if below else f"--out {out} is a file"
    )
    assert err == f"nrknet-predict: error: {expected}, not a folder\n"
    assert taken.read_bytes() == b"not a folder"


@pytest.mark.parametrize("kind", ["missing", "garbage", "foreign"])
def test_bad_checkpoint(photo_folder, tmp_path, kind, capsys):
    path = tmp_path / "bad.ckpt"
    if kind == "garbage":
        path.write_bytes(b"this is not a checkpoint")
    elif kind == "foreign":
        torch.save({"state_dict": {"conv.weight": torch.zeros(1)}}, path)
    status = main([str(photo_folder), "--out", str(tmp_path / "out"), "--ckpt", str(path)])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("nrknet-predict: error:") and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
    if kind == "foreign":
        assert "not an NRKNet checkpoint" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_missing_input_is_a_usage_error_before_the_model_loads(
    photo_folder, tmp_path, monkeypatch, capsys
):
    import nrknet.inference

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not load")

    monkeypatch.setattr(nrknet.inference, "load_inference_model", no_model)
    out = tmp_path / "out"
    missing, gone = tmp_path / "nope.png", tmp_path / "gone"
    inputs = [str(missing), str(photo_folder / "a.jpg"), str(gone)]
    status = main([*inputs, "--out", str(out), "-q"])
    err = capsys.readouterr().err
    assert status == 2
    assert err == f"nrknet-predict: error: no such file or folder: {missing}, {gone}\n"
    assert not out.exists()


def test_glob_that_matches_nothing_beside_other_inputs(photo_folder, tmp_path, ckpt, capsys):
    out = tmp_path / "out"
    inputs = [str(tmp_path / "*.tif"), str(photo_folder / "a.jpg")]
    assert main([*inputs, "--out", str(out), "--ckpt", str(ckpt), "-q"]) == 0
    assert "1 done" in capsys.readouterr().out
    assert (out / "a.jpg").is_file()


def test_no_images_and_bad_options(tmp_path, ckpt, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty), "--out", str(tmp_path / "o"), "--ckpt", str(ckpt)]) == 2
    assert "no images found" in capsys.readouterr().err
    (empty / "x.png").write_bytes(b"")
    assert main([str(empty), "-o", str(tmp_path / "o"), "-c", str(ckpt), "--tile", "0"]) == 2
    if not torch.cuda.is_available():
        status = main([str(empty), "-o", str(tmp_path / "o"), "-c", str(ckpt), "--device", "cuda"])
        assert status == 2
        assert "CUDA is not available" in capsys.readouterr().err
    (tmp_path / "x.webp").write_bytes(b"RIFF")
    assert main([str(tmp_path / "x.webp"), "-o", str(tmp_path / "o"), "-c", str(ckpt)]) == 1
    assert "x.webp" in capsys.readouterr().err


def test_console_script_and_help(capsys):
    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts.get("nrknet-predict") == "nrknet.predict:main"
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--out", "--ckpt", "--tile", "--overlap", "--defocus-map", "--overwrite"):
        assert option in out
    assert "--accel {auto,on,off}" in out and "on for the CPU" in " ".join(out.split())


def test_window_function_under_autocast_matches_float32(one_thread):
    """``--half`` runs the float32 model under autocast; every output channel stays close."""
    import torch

    from nrknet.inference import WindowFunction
    from nrknet.models.nrknet import NRKNet

    torch.manual_seed(0)
    model = NRKNet(width=8).eval()
    x = torch.rand(1, 3, 48, 64)
    exact = WindowFunction(model, defocus=True, levels=[0, 5])
    mixed = WindowFunction(model, defocus=True, levels=[0, 5], autocast_dtype=torch.bfloat16)
    with torch.inference_mode():
        a, b = exact(x), mixed(x)
    assert b.dtype == torch.float32 and b.shape == a.shape == (1, 6, 48, 64)
    for channel in range(6):
        ref = a[:, channel]
        assert ((b[:, channel] - ref).norm() / ref.norm()).item() < 3e-2, channel


def test_accel_on_and_off_agree(ckpt, one_thread):
    """The accelerated model computes what the plain one does, every output channel included."""
    from nrknet.inference import Deblurrer, load_inference_model

    device = torch.device("cpu")
    image = _scene(48, 64, seed=3)
    results = {}
    for accel in ("off", "on"):
        model = load_inference_model(ckpt, device, accel=accel)
        deblurrer = Deblurrer(model, device=device, defocus=True, levels=[0, 7])
        results[accel] = deblurrer(image)
    plain, fast = results["off"], results["on"]
    assert plain.rgb.shape == (48, 64, 3) and plain.defocus.shape == (48, 64)
    np.testing.assert_allclose(fast.rgb, plain.rgb, atol=1e-5, rtol=0)
    np.testing.assert_allclose(fast.defocus, plain.defocus, atol=1e-5, rtol=0)
    np.testing.assert_allclose(fast.coefficients, plain.coefficients, atol=1e-5, rtol=0)


def test_accel_option_reaches_the_model(photo_folder, tmp_path, ckpt, monkeypatch, capsys):
    """--accel is passed to nrknet.accel.accelerate with the model's device, after eval()."""
    import nrknet.inference.model as inference_model

    calls = []

    def record(model, mode="auto", *, device=None, training=False):
        calls.append((mode, device, model.training, training))
        return model

    monkeypatch.setattr(inference_model, "accelerate", record)
    source = str(photo_folder / "a.jpg")
    for accel in ("off", "on", None):
        extra = [] if accel is None else ["--accel", accel]
        out = str(tmp_path / f"out_{accel}")
        assert main([source, "-o", out, "-c", str(ckpt), "--device", "cpu", "-q", *extra]) == 0
    assert calls == [(mode, torch.device("cpu"), False, False) for mode in ("off", "on", "auto")]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([source, "-o", str(tmp_path / "o"), "-c", str(ckpt), "--accel", "fast"])
    assert exit_info.value.code == 2
    assert "--accel" in capsys.readouterr().err


def test_inference_settings_are_checked(ckpt):
    """The library names the setting and its range; the command line says the same with dashes."""
    from nrknet.inference import Deblurrer, SettingError, load_inference_model

    model = load_inference_model(ckpt, torch.device("cpu"), accel="off")
    for bad, setting in (
        ({"tile": 0}, "tile"),
        ({"overlap": -1}, "overlap"),
        ({"batch": 0}, "batch"),
    ):
        with pytest.raises(SettingError, match=f"^{setting} must") as error:
            Deblurrer(model, device=torch.device("cpu"), **bad)
        assert error.value.setting == setting
    with pytest.raises(SettingError, match=r"levels must lie in 0\.\.21, got \[0, 22\]"):
        Deblurrer(model, device=torch.device("cpu"), levels=[0, 22])


def test_bad_levels_and_overlap_are_usage_errors(photo_folder, tmp_path, ckpt, capsys):
    args = [str(photo_folder / "a.jpg"), "-o", str(tmp_path / "o"), "-c", str(ckpt)]
    assert main([*args, "--figures", "--levels", "0,99"]) == 2
    assert "--levels must lie in 0..21, got '0,99'" in capsys.readouterr().err
    assert main([*args, "--figures", "--levels", "a,b"]) == 2
    assert "--levels must be comma-separated integers" in capsys.readouterr().err
    assert main([*args, "--overlap", "-3"]) == 2
    assert "--overlap must be >= 0" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_collect_jobs_keeps_inputs_safe(photo_folder, tmp_path):
    """Unsafe output folders and two inputs with one output raise; a file named twice is one job."""
    from nrknet.inference import (
        Job,
        NoImagesError,
        OutputClashError,
        UnsafeOutputError,
        collect_jobs,
    )

    with pytest.raises(UnsafeOutputError, match="inside the input folder"):
        collect_jobs([str(photo_folder)], photo_folder / "sub")
    with pytest.raises(UnsafeOutputError, match="is the input folder of"):
        collect_jobs([str(photo_folder / "*.jpg")], photo_folder)
    with pytest.raises(NoImagesError, match="no images found"):
        collect_jobs([str(photo_folder / "*.tif")], tmp_path / "out")
    out = tmp_path / "out"
    jobs = collect_jobs([str(photo_folder / "a.jpg"), str(photo_folder / "*.jpg")], out)
    assert jobs == [Job(photo_folder / "a.jpg", out / "a.jpg")]  # one file named twice, one job
    other = tmp_path / "other"
    _write(other / "a.jpg", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(OutputClashError) as clash:
        collect_jobs([str(photo_folder / "a.jpg"), str(other / "a.jpg")], out)
    assert str(clash.value) == (
        f"{other / 'a.jpg'} and {photo_folder / 'a.jpg'} would both write {out / 'a.jpg'}"
    )


def test_collect_jobs_plans_side_files_and_run_files(tmp_path):
    """Side files and the files of the run are planned with the results; no file is written twice."""
    from nrknet.inference import OutputClashError, collect_jobs, side_suffixes

    photos, out = tmp_path / "photos", tmp_path / "out"
    _write(photos / "a.png", np.zeros((8, 8, 3), np.uint8))
    suffixes = side_suffixes(defocus_map=True, figures=True)
    (job,) = collect_jobs([str(photos)], out, side_suffixes=suffixes, run_files={"k.png": "K"})
    names = ["a.png", "a.defocus.png", "a.defocus_color.png", "a.compare.png", "a.coefficients.png"]
    assert job.outputs == tuple(out / name for name in names)
    _write(photos / "k.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(OutputClashError, match=f"^{photos / 'k.png'} and K would both write"):
        collect_jobs([str(photos)], out, run_files={"k.png": "K"})
    # A side file that would land on an input file (given from a sub-folder of the output folder)
    (photos / "k.png").unlink()
    _write(photos / "keep" / "c.png", np.zeros((8, 8, 3), np.uint8))
    _write(out / "keep" / "c.defocus.png", np.zeros((8, 8, 3), np.uint8))
    inputs = [str(photos), str(out / "keep" / "c.defocus.png")]
    with pytest.raises(OutputClashError) as clash:
        collect_jobs(inputs, out, side_suffixes=[".defocus.png"])
    assert str(clash.value) == (
        f"{out / 'keep' / 'c.defocus.png'}, an output of {photos / 'keep' / 'c.png'}, "
        "would replace an input file"
    )


@pytest.mark.parametrize("overwrite", [False, True], ids=["fresh", "overwrite"])
def test_outputs_that_would_replace_each_other_stop_the_run(tmp_path, ckpt, overwrite, capsys):
    """photo.png and photo.jpg share side files, x.png's defocus map is x.defocus.png's result,
    and atoms.png is the kernels figure: nothing is deblurred, nothing is written."""
    folder = tmp_path / "coll"
    for name in ("photo.png", "photo.jpg", "atoms.png", "x.png", "x.defocus.png"):
        _write(folder / name, (_scene(24, 32) * 255).astype(np.uint8))
    out = tmp_path / "out"
    base = ["--out", str(out), "--ckpt", str(ckpt), "-q"] + (["--overwrite"] if overwrite else [])

    def refused(inputs: list[Path], *options: str) -> str:
        status = main([*map(str, inputs), *base, *options])
        err = capsys.readouterr().err
        assert status == 2
        assert len(err.strip().splitlines()) == 1 and err.startswith("nrknet-predict: error:")
        assert not out.exists()
        return err

    err = refused([folder], "--defocus-map", "--figures")
    assert f"{folder / 'atoms.png'} and the kernels figure of --figures would both write" in err
    err = refused([folder / "photo.jpg", folder / "photo.png"], "--defocus-map")
    assert err.strip().endswith(
        f"{folder / 'photo.png'} and {folder / 'photo.jpg'} would both write "
        f"{out / 'photo.defocus.png'}"
    )
    err = refused([folder / "x.png", folder / "x.defocus.png"], "--defocus-map")
    assert f"{folder / 'x.defocus.png'} and {folder / 'x.png'} would both write" in err
    err = refused([folder / "photo.jpg", folder / "photo.png"], "--figures")
    assert str(out / "photo.compare.png") in err
    # Without side files the same five images have five distinct outputs.
    assert main([str(folder), *base]) == 0
    assert "5 done, 0 skipped" in capsys.readouterr().out


def test_figures_need_coefficient_levels(photo_folder, tmp_path, ckpt):
    from nrknet.inference import Deblurrer, deblur_file, load_inference_model

    model = load_inference_model(ckpt, torch.device("cpu"), accel="off")
    deblurrer = Deblurrer(model, device=torch.device("cpu"))
    with pytest.raises(ValueError, match="levels"):
        deblur_file(photo_folder / "a.jpg", tmp_path / "a.jpg", deblurrer, figures=True)
    assert not (tmp_path / "a.jpg").exists()


def test_ckpt_name_resolves_through_the_weights_registry(tmp_path, ckpt, monkeypatch, capsys):
    from nrknet.weights import Registry, cache

    files = tmp_path / "registry" / "files"
    files.mkdir(parents=True)
    (files / "m.ckpt").write_bytes(ckpt.read_bytes())
    registry_file = tmp_path / "registry" / "registry.yaml"
    registry_file.write_text(
        "entries:\n  tiny:\n    kind: bundled\n    format: nrknet\n    filename: m.ckpt\n"
    )
    monkeypatch.setattr(cache, "default_registry", lambda: Registry.from_yaml(registry_file))
    photo = tmp_path / "in" / "a.png"
    _write(photo, _scene(40, 56))
    by_path, by_name = tmp_path / "by_path", tmp_path / "by_name"
    assert main([str(photo), "--out", str(by_path), "--ckpt", str(ckpt)]) == 0
    assert main([str(photo), "--out", str(by_name), "--ckpt", "tiny"]) == 0
    assert _digest(by_name) == _digest(by_path)
    assert main([str(photo), "--out", str(tmp_path / "x"), "--ckpt", "unknown-name"]) == 2
    assert "known: tiny" in capsys.readouterr().err


def test_a_glob_with_dot_dot_writes_inside_out(tmp_path, ckpt, monkeypatch, capsys):
    """``g/*/../../v/x.png`` matches ``v/x.png``; its result goes to ``OUT/x.png``, not beside OUT."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "g" / "a").mkdir(parents=True)
    (tmp_path / "v").mkdir()
    _write(tmp_path / "v" / "x.png", _scene(24, 24))
    out = tmp_path / "o" / "p"
    assert main(["g/*/../../v/x.png", "--out", str(out), "--ckpt", str(ckpt), "-q"]) == 0
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.png"))
    assert written == [Path("o/p/x.png"), Path("v/x.png")]


def test_tile_on_the_command_line_cuts_several_windows_that_match_the_whole_image(
    tmp_path, ckpt, monkeypatch
):
    """An image several tiles large: ``--tile 32 --overlap 48`` runs many windows, and their
    16-bit result equals the whole image's to 1e-4 of the range (the documented tolerance).

    Mutation this catches: nrknet-predict ignoring --tile (the image runs as one window).
    """
    import nrknet.inference.tiling as tiling

    plans = []
    real_plan = tiling.plan_tiles

    def recording_plan(*args, **kwargs):
        plans.append(real_plan(*args, **kwargs))
        return plans[-1]

    monkeypatch.setattr(tiling, "plan_tiles", recording_plan)
    photos = tmp_path / "photos"
    _write(photos / "big.png", (_scene(144, 176, seed=4) * 65535 + 0.5).astype(np.uint16))
    assert main([str(photos), "-o", str(tmp_path / "whole"), "-c", str(ckpt), "-q"]) == 0
    assert [len(p.tiles) for p in plans] == [1]
    args = ["--tile", "32", "--overlap", "48"]
    assert main([str(photos), "-o", str(tmp_path / "tiled"), "-c", str(ckpt), "-q", *args]) == 0
    assert len(plans[1].tiles) == 5 * 6  # 32-px cores over 144 x 176
    whole = cv2.imread(str(tmp_path / "whole" / "big.png"), cv2.IMREAD_UNCHANGED).astype(np.int64)
    tiled = cv2.imread(str(tmp_path / "tiled" / "big.png"), cv2.IMREAD_UNCHANGED).astype(np.int64)
    assert np.abs(whole - tiled).max() <= 7  # 1e-4 of 65535


def test_the_four_scale_model_tiles_with_its_own_default_overlap():
    """A four-scale NRKNet has a coarser pyramid and gets a wider default margin than the
    three-scale one; with it, several windows of a strip equal the whole-image result.

    Mutation this catches: a default overlap that ignores the number of scales.
    """
    from nrknet.inference.tiling import default_overlap, predict_tiled

    torch.manual_seed(0)
    three, four = NRKNet(width=8).eval(), NRKNet(width=8, num_scales=4).eval()
    assert default_overlap(three) == 128
    assert default_overlap(four) == 256 and default_overlap(four) % four.size_multiple == 0
    x = torch.rand(1, 3, 64, 1024, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = four(x)
        tiled = predict_tiled(four, x, tile=128)  # 8 cores, windows of 64 x 640
    assert (tiled - whole).abs().max() <= 1e-4


def test_greyscale_comes_back_as_the_luma_of_the_rgb_result(photo_folder, tmp_path, unet_ckpt):
    """A grey input is deblurred as RGB and written as the Rec. 601 luma of the result.

    Mutations this catches: writing one channel (G) or the plain mean of the three.
    """
    from nrknet.inference import Deblurrer
    from nrknet.weights.checkpoint import load_model

    out = tmp_path / "out"
    assert (
        main([str(photo_folder / "grey.png"), "--out", str(out), "-c", str(unet_ckpt), "-q"]) == 0
    )
    written = cv2.imread(str(out / "grey.png"), cv2.IMREAD_UNCHANGED).astype(np.float64)
    grey_in = cv2.imread(str(photo_folder / "grey.png"), cv2.IMREAD_UNCHANGED) / 255.0
    rgb = Deblurrer(load_model(unet_ckpt).eval(), device=torch.device("cpu"))(
        np.repeat(grey_in[:, :, None], 3, axis=2).astype(np.float32)
    ).rgb.astype(np.float64)
    assert rgb.min() > 0 and rgb.max() < 1  # nothing clipped, so every weight shows
    luma = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    assert np.abs(written - np.round(luma * 255)).max() <= 1
    for other in (rgb[..., 1], rgb.mean(axis=2)):
        assert np.abs(written - np.round(other * 255)).max() > 1
