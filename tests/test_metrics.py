"""Evaluation metrics: PSNR / SSIM under the paper's protocol, LPIPS loading, the accumulator."""

from __future__ import annotations

import hashlib
import io
import math
import re
import urllib.error
import warnings

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from nrknet.metrics import (
    ALEXNET_FILENAME,
    RTF_SCORE_CROP,
    ImageQualityMetrics,
    MetricsError,
    alexnet_weights_path,
    apply_score_crop,
    get_lpips_model,
    lpips_distance,
    mae,
    psnr,
    psnr_full_precision,
    quantize_8bit,
    ssim,
    summarize_rows,
)
from nrknet.metrics import lpips as lpips_metric
from nrknet.models.nrknet import NRKNet
from nrknet.training.module import NRKNetModule


def _pair(
    seed: int, shape=(2, 3, 40, 52), noise: float = 0.08
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(shape, generator=g)
    # smooth the target a little so that SSIM is not dominated by noise
    target = torch.nn.functional.avg_pool2d(target, 3, stride=1, padding=1, count_include_pad=False)
    pred = target + noise * torch.randn(shape, generator=g)
    return pred, target


def _to_hwc_uint8(x: torch.Tensor) -> np.ndarray:
    return quantize_8bit(x).permute(1, 2, 0).numpy().astype(np.float64)


# ----------------------------------------------------------------------------- PSNR


@pytest.mark.parametrize("error", [1, 5, 40])
def test_psnr_uniform_error_by_hand(error: int) -> None:
    target = torch.full((1, 3, 16, 16), 100 / 255)
    pred = torch.full((1, 3, 16, 16), (100 + error) / 255)
    assert psnr(pred, target).item() == pytest.approx(20 * math.log10(255 / error), abs=1e-9)


def test_psnr_matches_skimage() -> None:
    pred, target = _pair(0)
    values = psnr(pred, target)
    assert values.shape == (2,) and values.dtype == torch.float64
    for i in range(2):
        expected = peak_signal_noise_ratio(
            _to_hwc_uint8(target[i]), _to_hwc_uint8(pred[i]), data_range=255
        )
        assert values[i].item() == pytest.approx(expected, abs=1e-9)


def test_rounding_to_8bit() -> None:
    target = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    target = quantize_8bit(target) / 255  # exact 8-bit levels
    below_half_step = target + 0.4 / 255
    assert torch.isinf(psnr(below_half_step, target)).all()
    assert ssim(below_half_step, target).item() == pytest.approx(1.0, abs=1e-12)
    # without rounding the same images differ
    assert torch.isfinite(psnr(below_half_step, target, quantize=False)).all()
    # 0.6 of a step rounds to the next level: an error of one level everywhere
    above_half_step = (target + 0.6 / 255).clamp(max=1.0)
    changed = (quantize_8bit(above_half_step) != quantize_8bit(target)).double().mean()
    expected = 10 * math.log10(255**2 / changed.item())
    assert psnr(above_half_step, target).item() == pytest.approx(expected, abs=1e-9)


def test_prediction_is_clipped() -> None:
    target = torch.zeros(1, 3, 16, 16)
    target[..., :8] = 1.0
    pred = target.clone()
    pred[..., :8] = 1.7
    pred[..., 8:] = -0.3
    assert torch.isinf(psnr(pred, target)).all()
    assert ssim(pred, target).item() == pytest.approx(1.0, abs=1e-12)


def test_psnr_is_per_image_then_averaged() -> None:
    target = torch.full((2, 3, 16, 16), 0.5)
    pred = target.clone()
    pred[0] += 2 / 255
    pred[1] += 20 / 255
    values = psnr(pred, target)
    expected = [20 * math.log10(255 / 2), 20 * math.log10(255 / 20)]
    assert values.tolist() == pytest.approx(expected, abs=1e-9)
    acc = ImageQualityMetrics(lpips="off")
    acc.update(pred, target, ["a", "b"])
    mean = acc.summary()["psnr"]
    assert mean == pytest.approx(sum(expected) / 2, abs=1e-9)
    pooled = 10 * math.log10(255**2 / ((2**2 + 20**2) / 2))
    assert abs(mean - pooled) > 1.0


# ----------------------------------------------------------------------------- SSIM


@pytest.mark.parametrize(
    ("seed", "shape"), [(0, (2, 3, 40, 52)), (3, (1, 3, 33, 27)), (4, (1, 1, 11, 11))]
)
def test_ssim_matches_skimage(seed: int, shape) -> None:
    pred, target = _pair(seed, shape, noise=0.15)
    values = ssim(pred, target)
    assert values.shape == (shape[0],)
    for i in range(shape[0]):
        expected = structural_similarity(
            _to_hwc_uint8(pred[i]),
            _to_hwc_uint8(target[i]),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255,
            channel_axis=2,
        )
        assert values[i].item() == pytest.approx(expected, abs=1e-5)


def test_ssim_identical_and_symmetric() -> None:
    pred, target = _pair(5)
    assert torch.allclose(ssim(target, target), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(ssim(pred, target), ssim(target, pred))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(pred[..., :10, :], target[..., :10, :])


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 17))
    with pytest.raises(ValueError, match="batch"):
        ssim(torch.zeros(3, 16, 16), torch.zeros(3, 16, 16))


# ----------------------------------------------------------------------------- RTF crop


def test_rtf_score_crop() -> None:
    g = torch.Generator().manual_seed(6)
    target = torch.rand(1, 3, 368, 368, generator=g)
    cropped = apply_score_crop(target, RTF_SCORE_CROP)
    assert cropped.shape[-2:] == (360, 360)  # rows and columns 4..363 inclusive
    assert torch.equal(cropped, target[..., 4:364, 4:364])
    assert apply_score_crop(target, None) is target
    # differences outside the scored region are ignored
    pred = target.clone()
    pred[..., :4, :] = 1 - pred[..., :4, :]
    pred[..., 364:] = 0.0
    assert torch.isinf(psnr(pred, target, crop=RTF_SCORE_CROP)).all()
    assert ssim(pred, target, crop=RTF_SCORE_CROP).item() == pytest.approx(1.0, abs=1e-12)
    assert psnr(pred, target).item() < 30
    # inside it counts
    pred[..., 4, 4] += 0.5
    assert torch.isfinite(psnr(pred, target, crop=RTF_SCORE_CROP)).all()
    with pytest.raises(ValueError, match="exceeds"):
        apply_score_crop(target[..., :300, :300], RTF_SCORE_CROP)
    with pytest.raises(ValueError, match="start < stop"):
        apply_score_crop(target, (10, 5))


# ----------------------------------------------------------------------------- LPIPS


@pytest.fixture
def lpips_state(monkeypatch, tmp_path):
    """An empty TORCH_HOME, downloads failing fast, and a fresh LPIPS cache."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    calls = []

    def failing_fetch(url, dest, timeout=None):
        calls.append(url)
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(lpips_metric, "_fetch", failing_fetch)
    # the tests' AlexNet is a randomly initialised stand-in, not torchvision's file
    monkeypatch.setattr(lpips_metric, "_check_alexnet_file", lambda path: None)
    lpips_metric.reset_lpips_cache()
    yield calls
    lpips_metric.reset_lpips_cache()


def _write_stand_in_alexnet(seed: int = 0) -> dict[str, torch.Tensor]:
    """A randomly initialised torchvision AlexNet trunk under the checkpoint's expected name."""
    import torchvision

    torch.manual_seed(seed)
    net = torchvision.models.AlexNet()
    state = {f"features.{k}": v for k, v in net.features.state_dict().items()}
    state["classifier.1.weight"] = torch.zeros(2, 2)  # other entries are ignored
    path = alexnet_weights_path()
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return state


def test_alexnet_path_follows_torch_home(lpips_state, tmp_path) -> None:
    path = alexnet_weights_path()
    assert path == tmp_path / "torch_home" / "hub" / "checkpoints" / ALEXNET_FILENAME


def test_lpips_with_stand_in_weights(lpips_state) -> None:
    state = _write_stand_in_alexnet()
    pred, target = _pair(7, (2, 3, 64, 64), noise=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values = lpips_distance(pred, target, mode="required")
    assert values is not None and values.shape == (2,)
    assert torch.isfinite(values).all() and (values > 0).all()
    assert lpips_distance(target, target).abs().max().item() < 1e-6
    model = get_lpips_model("cpu")
    assert model is get_lpips_model("cpu")  # built once, cached
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    assert torch.equal(model.net.slice1[0].weight, state["features.0.weight"])
    assert torch.equal(getattr(model.net.slice5, "10").bias, state["features.10.bias"])
    assert lpips_state == []  # the file was there: no download attempted
    # the accumulator reports it
    acc = ImageQualityMetrics(lpips="auto")
    acc.update(pred, target, ["x", "y"])
    assert acc.summary()["lpips"] == pytest.approx(values.mean().item(), rel=1e-6)
    assert [row["lpips"] for row in acc.per_image()] == pytest.approx(values.tolist(), rel=1e-6)


def test_lpips_rejects_a_foreign_checkpoint(lpips_state) -> None:
    path = alexnet_weights_path()
    path.parent.mkdir(parents=True)
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(MetricsError, match="not a torchvision AlexNet"):
        get_lpips_model(mode="required")


def test_lpips_unavailable_warns_once(lpips_state) -> None:
    pred, target = _pair(8, (1, 3, 32, 32))
    with pytest.warns(RuntimeWarning, match="LPIPS unavailable") as record:
        assert lpips_distance(pred, target) is None
        assert lpips_distance(pred, target) is None
        acc = ImageQualityMetrics()
        acc.update(pred, target, ["only"])
    assert len([w for w in record if "LPIPS" in str(w.message)]) == 1
    assert ALEXNET_FILENAME in str(record[0].message)
    assert len(lpips_state) == 1  # the failed download is not retried
    summary = acc.summary()
    assert summary["lpips"] is None and summary["count"] == 1
    assert acc.per_image()[0]["lpips"] is None
    assert math.isnan(acc.compute()["lpips"].item())


def test_lpips_required_raises_with_instructions(lpips_state) -> None:
    with pytest.raises(MetricsError) as info:
        get_lpips_model(mode="required")
    message = str(info.value)
    assert ALEXNET_FILENAME in message and "hub/checkpoints" in message
    acc = ImageQualityMetrics(lpips="required")
    pred, target = _pair(9, (1, 3, 16, 16))
    with pytest.raises(MetricsError):
        acc.update(pred, target)


def test_lpips_off_and_no_download(lpips_state) -> None:
    pred, target = _pair(10, (1, 3, 16, 16))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert lpips_distance(pred, target, mode="off") is None
        acc = ImageQualityMetrics(lpips="off")
        acc.update(pred, target)
    assert acc.summary()["lpips"] is None
    assert lpips_state == []
    with pytest.raises(MetricsError, match="downloading is disabled"):
        get_lpips_model(mode="required", download=False)
    assert lpips_state == []
    with pytest.raises(
        ValueError, match="metrics.lpips='sometimes' is not known; expected one of auto, "
    ):
        ImageQualityMetrics(lpips="sometimes")


def _serve(monkeypatch, data: bytes) -> None:
    """Make every download answer ``data``."""
    monkeypatch.setattr(
        lpips_metric.urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(data)
    )


def test_download_lands_only_when_the_checksum_matches(monkeypatch, tmp_path) -> None:
    dest = tmp_path / "checkpoints" / ALEXNET_FILENAME
    good = b"alexnet weights" * 1000
    monkeypatch.setattr(lpips_metric, "ALEXNET_SHA256", hashlib.sha256(good).hexdigest())
    _serve(monkeypatch, b"an error page instead of the weights")
    with pytest.raises(OSError, match="checksum mismatch"):
        lpips_metric._fetch("https://example.invalid/alexnet.pth", dest)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []  # no temporary left behind either
    _serve(monkeypatch, good)
    lpips_metric._fetch("https://example.invalid/alexnet.pth", dest)
    assert dest.read_bytes() == good
    assert list(dest.parent.iterdir()) == [dest]


# ----------------------------------------------------------------------------- accumulator


def test_accumulator_per_image_and_summary() -> None:
    acc = ImageQualityMetrics(lpips="off")
    pred1, target1 = _pair(11, (2, 3, 24, 24))
    pred2, target2 = _pair(12, (1, 3, 32, 20))
    blurry1 = (target1 + 0.2).clamp(0, 1)
    acc.update(pred1, target1, ["a", "b"], blurry=blurry1)
    acc.update(pred2, target2, ["c"])
    rows = acc.per_image()
    assert [r["name"] for r in rows] == ["a", "b", "c"]
    expected_psnr = torch.cat([psnr(pred1, target1), psnr(pred2, target2)]).tolist()
    expected_ssim = torch.cat([ssim(pred1, target1), ssim(pred2, target2)]).tolist()
    assert [r["psnr"] for r in rows] == pytest.approx(expected_psnr)
    assert [r["ssim"] for r in rows] == pytest.approx(expected_ssim)
    input_psnr = psnr(blurry1, target1).tolist()
    assert [r["input_psnr"] for r in rows[:2]] == pytest.approx(input_psnr)
    assert rows[2]["input_psnr"] is None and rows[2]["input_ssim"] is None
    assert all(r["lpips"] is None for r in rows)
    summary = acc.summary()
    assert summary["count"] == 3
    assert summary["psnr"] == pytest.approx(float(np.mean(expected_psnr)))
    assert summary["ssim"] == pytest.approx(float(np.mean(expected_ssim)))
    assert summary["input_psnr"] == pytest.approx(float(np.mean(input_psnr)))
    acc.reset()
    assert acc.per_image() == [] and acc.names == []
    acc.update(pred2, target2)
    assert acc.per_image()[0]["name"] == "image_00000"
    with pytest.raises(ValueError, match="names"):
        acc.update(pred1, target1, ["one"])


def test_accumulator_score_crop() -> None:
    pred, target = _pair(13, (1, 3, 368, 368))
    acc = ImageQualityMetrics(lpips="off", score_crop=[4, 364])
    acc.update(pred, target, ["rtf"], blurry=target)
    row = acc.per_image()[0]
    assert row["psnr"] == pytest.approx(psnr(pred, target, crop=RTF_SCORE_CROP).item())
    assert row["ssim"] == pytest.approx(ssim(pred, target, crop=RTF_SCORE_CROP).item())
    assert row["input_psnr"] == math.inf


# ----------------------------------------------------------------------------- MAE and 16-bit PSNR


@pytest.mark.parametrize("error", [1, 5, 40])
def test_mae_uniform_error_by_hand(error: int) -> None:
    target = torch.full((1, 3, 8, 8), 100 / 255)
    pred = target + error / 255
    assert mae(pred, target).item() == pytest.approx(error / 255)


def test_mae_is_taken_on_8bit_levels_per_image() -> None:
    pred, target = _pair(21, (3, 3, 20, 24))
    expected = [
        np.mean(np.abs(_to_hwc_uint8(p) - _to_hwc_uint8(t))) / 255
        for p, t in zip(pred, target, strict=True)
    ]
    assert mae(pred, target).tolist() == pytest.approx(expected)
    # sub-level differences vanish after rounding, as for PSNR
    levels = quantize_8bit(target.clamp(0.1, 0.9)) / 255
    off = levels + 0.1 / 255
    assert mae(off, levels).tolist() == pytest.approx([0.0] * 3, abs=1e-12)
    assert mae(off, levels, quantize=False).tolist() == pytest.approx([0.1 / 255] * 3, rel=1e-3)


def test_psnr16_is_full_precision_with_peak_one() -> None:
    g = torch.Generator().manual_seed(22)
    target = torch.randint(0, 65536, (2, 3, 16, 16), generator=g).double() / 65535
    pred = target + 0.3 / 255 * torch.randn(target.shape, generator=g, dtype=torch.float64)
    expected = [
        peak_signal_noise_ratio(t.numpy(), p.clamp(0, 1).numpy(), data_range=1.0)
        for p, t in zip(pred, target, strict=True)
    ]
    assert psnr_full_precision(pred, target).tolist() == pytest.approx(expected)
    # 8-bit rounding hides most of an error smaller than one level
    assert (psnr(pred, target) - psnr_full_precision(pred, target)).abs().min() > 1.0
    # the prediction is clipped, like for the 8-bit PSNR
    ones = torch.ones(1, 3, 8, 8)
    assert psnr_full_precision(ones * 1.5, ones).item() == math.inf
    assert psnr_full_precision(ones, ones * 0.9, crop=(2, 6)).item() == pytest.approx(20.0)


def test_accumulator_mae_and_optional_psnr16() -> None:
    pred, target = _pair(23, (2, 3, 24, 24))
    blurry = (target + 0.15).clamp(0, 1)
    plain = ImageQualityMetrics(lpips="off")
    plain.update(pred, target, ["a", "b"], blurry=blurry)
    rows = plain.per_image()
    assert [r["mae"] for r in rows] == pytest.approx(mae(pred, target).tolist())
    assert [r["input_mae"] for r in rows] == pytest.approx(mae(blurry, target).tolist())
    assert all(r["psnr16"] is None and r["input_psnr16"] is None for r in rows)
    assert plain.summary()["mae"] == pytest.approx(mae(pred, target).mean().item())
    assert plain.summary()["psnr16"] is None
    full = ImageQualityMetrics(lpips="off", psnr16=True)
    for i in range(2):  # the first batch gets it too
        full.update(pred[i : i + 1], target[i : i + 1], [f"x{i}"], blurry=blurry[i : i + 1])
    rows = full.per_image()
    assert [r["psnr16"] for r in rows] == pytest.approx(psnr_full_precision(pred, target).tolist())
    assert [r["input_psnr16"] for r in rows] == pytest.approx(
        psnr_full_precision(blurry, target).tolist()
    )


def test_summarize_rows_skips_missing_scores() -> None:
    rows = [
        {"name": "a", "psnr": 20.0, "mae": 0.1, "lpips": None},
        {"name": "b", "psnr": 30.0, "mae": None},
    ]
    summary = summarize_rows(rows)
    assert summary["count"] == 2 and summary["psnr"] == pytest.approx(25.0)
    assert summary["mae"] == pytest.approx(0.1) and summary["lpips"] is None
    assert summarize_rows([])["psnr"] is None and summarize_rows([])["count"] == 0


def test_psnr16_setting_must_be_a_boolean() -> None:
    with pytest.raises(
        ValueError, match="metrics.psnr16='yes' is not known; expected one of True, False"
    ):
        NRKNetModule(NRKNet(width=4), psnr16="yes")


def test_the_alexnet_weights_are_pinned_by_their_whole_sha256(monkeypatch, tmp_path) -> None:
    assert re.fullmatch(r"[0-9a-f]{64}", lpips_metric.ALEXNET_SHA256)
    assert lpips_metric.ALEXNET_SHA256[:8] in ALEXNET_FILENAME  # torchvision's name carries 8
    good = b"alexnet weights" * 1000
    # a file whose digest shares the first 8 digits but not the rest is refused
    monkeypatch.setattr(
        lpips_metric, "ALEXNET_SHA256", hashlib.sha256(good).hexdigest()[:8] + "0" * 56
    )
    _serve(monkeypatch, good)
    dest = tmp_path / ALEXNET_FILENAME
    with pytest.raises(OSError, match="checksum mismatch"):
        lpips_metric._fetch("https://example.invalid/alexnet.pth", dest)
    assert not dest.exists()


def test_a_file_at_the_alexnet_place_is_checked_at_every_use(monkeypatch, tmp_path) -> None:
    """Not only a download: a file already in ``$TORCH_HOME`` that is not torchvision's is refused."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    lpips_metric.reset_lpips_cache()
    try:
        _write_stand_in_alexnet()
        with pytest.raises(MetricsError, match=r"has sha256 [0-9a-f]{64}, not that of torchvision"):
            get_lpips_model(mode="required", download=False)
    finally:
        lpips_metric.reset_lpips_cache()
