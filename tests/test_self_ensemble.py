"""Self-ensemble: the eight transforms, equivariant models, tiling, nrknet-predict --tta, nrknet-eval tta=true."""

from __future__ import annotations

import csv
import itertools
import json

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nrknet.analysis.reporting import markdown_table, self_ensemble_name
from nrknet.eval import evaluate
from nrknet.inference import Deblurrer
from nrknet.inference.self_ensemble import DIHEDRAL_GROUP, self_ensemble
from nrknet.models.nrknet import NRKNet
from nrknet.predict import main as predict
from nrknet.weights.checkpoint import save_model
from test_predict import _scene
from test_train import eval_overrides

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def small_model() -> NRKNet:
    torch.manual_seed(0)
    return NRKNet(width=8).eval()


def _photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random scene with texture, H x W x 3 float32 (what image reading returns)."""
    return _scene(height, width, seed).astype(np.float32)


# ---------------------------------------------------------------- the group
def test_the_eight_transforms_are_the_dihedral_group():
    x = torch.arange(25.0).reshape(1, 1, 5, 5)  # no symmetry at all
    images = [s.apply(x) for s in DIHEDRAL_GROUP]
    assert len(DIHEDRAL_GROUP) == 8
    assert len({tuple(y.flatten().tolist()) for y in images}) == 8  # all distinct
    assert DIHEDRAL_GROUP[0].apply(x) is x  # the identity comes first
    for s in DIHEDRAL_GROUP:
        torch.testing.assert_close(s.undo(s.apply(x)), x, atol=0, rtol=0)
    # closed under composition: with eight distinct elements, this is the whole group D4
    for a, b in itertools.product(DIHEDRAL_GROUP, repeat=2):
        composed = b.apply(a.apply(x))
        assert any(torch.equal(composed, y) for y in images), (a.name, b.name)
    assert len({s.name for s in DIHEDRAL_GROUP}) == 8


def test_transforms_of_non_square_images_and_other_axes():
    x = torch.rand(2, 3, 4, 7)
    for s in DIHEDRAL_GROUP:
        y = s.apply(x)
        assert y.shape[-2:] == ((7, 4) if s.quarter_turns % 2 else (4, 7))
        torch.testing.assert_close(s.undo(y), x, atol=0, rtol=0)
        # an H x W x C image transforms like its C x H x W view
        hwc = s.apply(x[0].permute(1, 2, 0), dims=(0, 1))
        torch.testing.assert_close(hwc, y[0].permute(1, 2, 0), atol=0, rtol=0)


# ---------------------------------------------------------------- equivariant and non-equivariant models
def _gaussian_blur(x: torch.Tensor) -> torch.Tensor:
    """A fixed isotropic blur: commutes with every flip and quarter turn."""
    taps = torch.exp(-0.5 * torch.arange(-2.0, 3.0) ** 2)
    kernel = (taps[:, None] * taps[None, :]) / taps.sum() ** 2
    weight = kernel.expand(x.shape[1], 1, 5, 5)
    return F.conv2d(x, weight, padding=2, groups=x.shape[1])


def test_an_equivariant_model_gives_the_same_result_with_and_without_self_ensemble():
    x = torch.rand(2, 3, 9, 14)
    before = x.clone()
    torch.testing.assert_close(self_ensemble(lambda t: t, x), x)
    assert torch.equal(x, before)  # the running sum never aliases the input
    torch.testing.assert_close(self_ensemble(_gaussian_blur, x), _gaussian_blur(x))


def test_a_model_that_is_not_equivariant_changes():
    shift_right = torch.zeros(3, 1, 1, 3)
    shift_right[..., 0] = 1.0
    x = torch.rand(1, 3, 8, 8)

    def shift(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, shift_right, padding=(0, 1), groups=3)

    assert not torch.allclose(self_ensemble(shift, x), shift(x))


# ---------------------------------------------------------------- with NRKNet and tiling
def test_deblurrer_self_ensemble_is_the_mean_of_the_eight_passes(small_model):
    """Whole-image path, odd size (the network pads each transformed image itself)."""
    image = _photo(37, 53)
    result = Deblurrer(small_model, device=CPU, self_ensemble=True)(image)
    with torch.inference_mode():
        x = torch.from_numpy(image).permute(2, 0, 1)[None]
        expected = self_ensemble(small_model, x)[0].permute(1, 2, 0).numpy()
        plain = small_model(x)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(result.rgb, expected, atol=1e-6, rtol=0)
    assert np.abs(result.rgb - plain).max() > 1e-3  # a random NRKNet is not equivariant


@pytest.mark.slow
def test_tiled_self_ensemble_equals_whole_image_self_ensemble(small_model):
    """Odd size, several tiles per transform with artificial edges: same as whole, to 1e-4."""
    image = _photo(41, 109, seed=1)
    whole = Deblurrer(small_model, device=CPU, self_ensemble=True)(image)
    tiled_deblurrer = Deblurrer(small_model, device=CPU, tile=32, overlap=48, self_ensemble=True)
    # this small image fits one window: cut it anyway, as a large photo would be
    tiled_deblurrer.settings["whole_if_fits"] = False
    calls = []
    tiled = tiled_deblurrer(image, progress=lambda done, total: calls.append((done, total)))
    assert tiled.rgb.shape == whole.rgb.shape == image.shape
    assert np.abs(tiled.rgb - whole.rgb).max() <= 1e-4
    # progress counts the tiles of all eight passes, up to the total
    assert calls[-1][0] == calls[-1][1] and calls[-1][1] >= 8 * 2
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


#: The eight symmetries of the square written out one by one on H x W (x C) arrays, each with
#: its inverse: the four turns, the two mirrors and the two transpositions.
EIGHT_BY_HAND = [
    (lambda a: a, lambda a: a),
    (lambda a: np.rot90(a, 1), lambda a: np.rot90(a, -1)),
    (lambda a: np.rot90(a, 2), lambda a: np.rot90(a, 2)),
    (lambda a: np.rot90(a, 3), lambda a: np.rot90(a, 1)),
    (lambda a: a[:, ::-1], lambda a: a[:, ::-1]),
    (lambda a: a[::-1, :], lambda a: a[::-1, :]),
    (lambda a: np.swapaxes(a, 0, 1), lambda a: np.swapaxes(a, 0, 1)),
    (lambda a: np.rot90(np.swapaxes(a, 0, 1), 2), lambda a: np.swapaxes(np.rot90(a, 2), 0, 1)),
]


def test_the_ensemble_is_the_mean_of_eight_hand_written_passes(small_model):
    """Against the eight symmetries written out by hand, on a model that is not equivariant.

    Mutations this catches: averaging 4 of the 8 transforms (or any subset), a wrong inverse,
    and side maps left out of the average.
    """
    image = _photo(24, 40)
    for forward, back in EIGHT_BY_HAND:
        np.testing.assert_array_equal(back(forward(image)), image)
    plain = Deblurrer(small_model, device=CPU, defocus=True, levels=[0, 3])
    passes = []
    for forward, back in EIGHT_BY_HAND:
        result = plain(np.ascontiguousarray(forward(image)))
        passes.append([back(result.rgb), back(result.defocus), back(result.coefficients)])
    # the passes differ, so the mean of a subset is not the mean of all eight
    assert min(np.abs(p[0] - passes[0][0]).max() for p in passes[1:]) > 1e-4
    ensembled = Deblurrer(small_model, device=CPU, defocus=True, levels=[0, 3], self_ensemble=True)
    result = ensembled(image)
    for index, got in enumerate((result.rgb, result.defocus, result.coefficients)):
        expected = np.mean([p[index] for p in passes], axis=0)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    # the same through self_ensemble() on the bare network, in (N, C, H, W)
    x = torch.from_numpy(image).permute(2, 0, 1)[None]

    def network(array: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None]
        return small_model(batch)[0].permute(1, 2, 0).numpy()

    with torch.no_grad():
        bare = [back(network(forward(image))) for forward, back in EIGHT_BY_HAND]
        got = self_ensemble(small_model, x)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(got, np.mean(bare, axis=0), rtol=0, atol=1e-5)


def test_side_maps_are_ensembled_too(small_model):
    image = _photo(24, 40)
    deblurrer = Deblurrer(small_model, device=CPU, defocus=True, levels=[0, 3], self_ensemble=True)
    result = deblurrer(image)
    assert result.rgb.shape == (24, 40, 3)
    assert result.defocus.shape == (24, 40)
    assert result.coefficients.shape == (24, 40, 2)


# ---------------------------------------------------------------- nrknet-predict --tta
def test_predict_tta_end_to_end(tmp_path, small_model, capsys):
    ckpt = tmp_path / "m.ckpt"
    save_model(small_model, ckpt)
    photos = tmp_path / "photos"
    photos.mkdir()
    rgb = _photo(33, 47)
    assert cv2.imwrite(str(photos / "a.png"), (rgb[:, :, ::-1] * 65535 + 0.5).astype(np.uint16))
    outputs = {}
    for mode, extra in (("plain", []), ("tta", ["--tta", "--defocus-map"])):
        out = tmp_path / mode
        assert predict([str(photos), "--out", str(out), "--ckpt", str(ckpt), *extra]) == 0
        outputs[mode] = cv2.imread(str(out / "a.png"), cv2.IMREAD_UNCHANGED)
    assert "1 done" in capsys.readouterr().out
    assert outputs["tta"].shape == outputs["plain"].shape == (33, 47, 3)
    assert outputs["tta"].dtype == np.uint16
    assert (tmp_path / "tta" / "a.defocus.png").is_file()
    assert not np.array_equal(outputs["tta"], outputs["plain"])


# ---------------------------------------------------------------- nrknet-eval tta=true
def test_markdown_table_has_a_self_ensemble_row():
    summary = {"psnr": 30.0, "ssim": 0.9, "lpips": None, "input_psnr": 25.0, "input_ssim": 0.8}
    results = {
        "dpdd": {"summary": summary, "per_image": []},
        self_ensemble_name("dpdd"): {"summary": {**summary, "psnr": 30.5}, "per_image": []},
    }
    rows = markdown_table(results).splitlines()
    assert rows[0].count("PSNR") == 1  # one dataset, not two
    assert rows[-2].startswith("| NRKNet | 30.000")
    assert rows[-1].startswith("| NRKNet (x8) | 30.500")
    assert "(x8)" not in markdown_table({"dpdd": results["dpdd"]})


def test_eval_with_tta_writes_both_rows(compose_train, tmp_path, synthetic_data_dir, small_model):
    ckpt = tmp_path / "m.ckpt"
    save_model(small_model, ckpt)
    out = tmp_path / "eval"
    cfg = compose_train(
        [*eval_overrides(synthetic_data_dir, out, ckpt, "test"), "tta=true"],
        config_name="eval",
    )
    psnr = evaluate(cfg)
    datasets = json.loads((out / "summary.json").read_text())["datasets"]
    plain_name = next(iter(datasets))
    ensembled = self_ensemble_name(plain_name)
    assert list(datasets) == [plain_name, ensembled]
    assert psnr == pytest.approx(datasets[plain_name]["psnr"])  # the plain score comes first
    assert datasets[ensembled]["count"] == datasets[plain_name]["count"] > 0
    assert datasets[ensembled]["psnr"] != datasets[plain_name]["psnr"]
    assert datasets[ensembled]["input_psnr"] == pytest.approx(datasets[plain_name]["input_psnr"])
    table = (out / "table.md").read_text()
    assert "| NRKNet |" in table and "| NRKNet (x8) |" in table
    with (out / "per_image.csv").open() as f:
        rows = list(csv.DictReader(f))
    plain_rows = [r["name"] for r in rows if r["dataset"] == plain_name]
    assert plain_rows and plain_rows == [r["name"] for r in rows if r["dataset"] == ensembled]


def test_eval_refuses_a_tta_that_is_not_a_boolean(compose_train, tmp_path):
    cfg = compose_train([f"paths.root_dir={tmp_path}", "ckpt_path=x.ckpt", "tta=yes"], "eval")
    with pytest.raises(ValueError, match="tta='yes' is not known; expected one of True, False"):
        evaluate(cfg)
