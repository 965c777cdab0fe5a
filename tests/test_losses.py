"""Training losses: eq. (12)-(14), the Table 5 switches, the reference-code variant, configs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from nrknet.models.nrknet import NRKNet, NRKNetOutput, downsample_nearest
from nrknet.training.losses import (
    NRKNetLoss,
    fdr_loss,
    in_ssim_phase,
    mse_loss,
    nrknet_loss,
    prediction_loss,
    reblur_loss,
    ssim_loss,
)

CONF = Path(__file__).resolve().parents[1] / "conf" / "loss"
DPDD_PHASES = {"start_epoch": 1000, "period": 200}


def _images(seed: int = 0, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sharp = torch.rand(2, 3, size, size, generator=g)
    blurry = F.avg_pool2d(sharp, 3, stride=1, padding=1, count_include_pad=False)
    return blurry, sharp


def _perfect_output(blurry: torch.Tensor, sharp: torch.Tensor, num_scales: int = 3) -> NRKNetOutput:
    """Predictions equal to the (nearest) targets and reblurred images equal to the blurry ones."""
    factors = [2**s for s in reversed(range(num_scales))]
    scales = [downsample_nearest(sharp, f).clone() for f in factors] + [sharp.clone()]
    reblurred = [downsample_nearest(blurry, f).clone() for f in factors]
    return NRKNetOutput(scales=scales, reblurred=reblurred)


# ----------------------------------------------------------------------------- the terms


def test_fdr_of_a_constant_offset_by_hand() -> None:
    h, w, c = 8, 6, 0.3
    target = torch.rand(1, 1, h, w, generator=torch.Generator().manual_seed(1))
    pred = target + c
    # Only the DC coefficient differs: c * HW (unnormalised) or c * sqrt(HW) (ortho), over HW entries.
    assert fdr_loss(pred, target, "ortho").item() == pytest.approx(c / math.sqrt(h * w), rel=1e-5)
    assert fdr_loss(pred, target, "backward").item() == pytest.approx(c, rel=1e-5)
    assert fdr_loss(target - c, target, "ortho").item() == pytest.approx(
        c / math.sqrt(h * w), rel=1e-5
    )


def test_fdr_imaginary_part_by_hand() -> None:
    h, w = 4, 8
    cols = torch.arange(w, dtype=torch.float64)
    diff = torch.sin(2 * math.pi * cols / w).expand(1, 1, h, w)
    target = torch.zeros(1, 1, h, w, dtype=torch.float64)
    # sin -> two coefficients (0, +-1) of imaginary part -+ HW/2 each (unnormalised)
    assert fdr_loss(diff, target, "backward").item() == pytest.approx(1.0, abs=1e-9)
    spectrum = torch.fft.fft2(diff, norm="ortho")
    assert spectrum.real.abs().max() < 1e-9
    assert fdr_loss(diff, target, "ortho").item() == pytest.approx(1 / math.sqrt(h * w), abs=1e-9)


def test_reference_fdr_is_sqrt_hw_times_ortho() -> None:
    g = torch.Generator().manual_seed(2)
    pred, target = torch.rand(2, 3, 16, 12, generator=g), torch.rand(2, 3, 16, 12, generator=g)
    ortho, backward = fdr_loss(pred, target, "ortho"), fdr_loss(pred, target, "backward")
    assert backward.item() == pytest.approx(math.sqrt(16 * 12) * ortho.item(), rel=1e-5)


def test_prediction_and_reblur_terms_by_hand() -> None:
    target = torch.full((1, 3, 4, 4), 0.5)
    pred = target + 0.2
    assert mse_loss(pred, target).item() == pytest.approx(0.04)
    expected = 0.04 + 0.1 * 0.2 / 4  # FDR of offset 0.2 on 4x4, ortho: 0.2 * 4 / 16
    assert prediction_loss(pred, target, beta=0.1).item() == pytest.approx(expected, rel=1e-5)
    assert reblur_loss(pred, target).item() == pytest.approx(0.04)


def test_ssim_loss() -> None:
    blurry, sharp = _images(3)
    assert ssim_loss(sharp, sharp).abs().item() < 1e-6
    assert 0 < ssim_loss(blurry, sharp).item() < 1
    # tiny images fall back to a smaller window
    assert ssim_loss(sharp[..., :8, :8], sharp[..., :8, :8]).abs().item() < 1e-6


def test_ssim_phases_by_epoch() -> None:
    dpdd, lfdof = DPDD_PHASES, {"start_epoch": 100, "period": 20}
    assert [
        e for e in (999, 1000, 1050, 1100, 1101, 1199, 1200, 1301) if in_ssim_phase(e, dpdd)
    ] == [
        1101,
        1199,
        1301,
    ]
    assert [e for e in (99, 100, 110, 111, 119, 120, 131) if in_ssim_phase(e, lfdof)] == [
        111,
        119,
        131,
    ]
    assert not in_ssim_phase(5000, None)


# ----------------------------------------------------------------------------- NRKNetLoss


def test_zero_when_everything_matches() -> None:
    blurry, sharp = _images(4)
    out = _perfect_output(blurry, sharp)
    result = NRKNetLoss()(out, blurry, sharp)
    assert set(result) == {"loss", "mse", "fdr", "reblur", "mse_output"}
    for key, value in result.items():
        assert value.abs().item() < 1e-6, key


@pytest.mark.parametrize(("index", "weight"), [(0, 0.25), (1, 0.5), (2, 0.75), (3, 1.0)])
def test_scale_weights_pair_with_outputs(index: int, weight: float) -> None:
    blurry, sharp = _images(5)
    out = _perfect_output(blurry, sharp)
    c = 0.1
    out.scales[index] = out.scales[index] + c
    h, w = out.scales[index].shape[-2:]
    result = NRKNetLoss()(out, blurry, sharp)
    fdr = c / math.sqrt(h * w)
    assert result["mse"].item() == pytest.approx(weight * c**2, rel=1e-5)
    assert result["fdr"].item() == pytest.approx(weight * fdr, rel=1e-4)
    assert result["loss"].item() == pytest.approx(weight * (c**2 + 0.1 * fdr), rel=1e-4)


@pytest.mark.parametrize(("index", "weight"), [(0, 0.25), (1, 0.5), (2, 0.75)])
def test_reblur_weights_pair_with_scales(index: int, weight: float) -> None:
    blurry, sharp = _images(6)
    out = _perfect_output(blurry, sharp)
    out.reblurred[index] = out.reblurred[index] - 0.2
    result = NRKNetLoss(alpha=0.1)(out, blurry, sharp)
    assert result["reblur"].item() == pytest.approx(weight * 0.04, rel=1e-5)
    assert result["loss"].item() == pytest.approx(0.1 * weight * 0.04, rel=1e-5)
    custom = NRKNetLoss(reblur_weights=[1.0, 0.75, 0.5])(out, blurry, sharp)  # finest first
    assert custom["reblur"].item() == pytest.approx([0.5, 0.75, 1.0][index] * 0.04, rel=1e-5)


def _perturbed(seed: int = 7) -> tuple[NRKNetOutput, torch.Tensor, torch.Tensor]:
    blurry, sharp = _images(seed)
    out = _perfect_output(blurry, sharp)
    g = torch.Generator().manual_seed(seed)
    out.scales = [
        (s + 0.05 * torch.randn(s.shape, generator=g)).requires_grad_() for s in out.scales
    ]
    out.reblurred = [
        (r + 0.05 * torch.randn(r.shape, generator=g)).requires_grad_() for r in out.reblurred
    ]
    return out, blurry, sharp


def test_total_is_the_sum_of_the_logged_terms_and_eq12() -> None:
    out, blurry, sharp = _perturbed()
    loss = NRKNetLoss(alpha=0.3, beta=0.2)
    result = loss(out, blurry, sharp)
    expected = result["mse"] + 0.2 * result["fdr"] + 0.3 * result["reblur"]
    assert result["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    targets = [downsample_nearest(sharp, f) for f in (4, 2, 1)] + [sharp]
    reblur_targets = [downsample_nearest(blurry, f) for f in (4, 2, 1)]
    direct = nrknet_loss(
        out.scales,
        targets,
        [0.25, 0.5, 0.75, 1.0],
        out.reblurred,
        reblur_targets,
        [0.25, 0.5, 0.75],
        0.3,
        0.2,
    )
    assert result["loss"].item() == pytest.approx(direct.item(), rel=1e-6)
    assert result["mse_output"].item() == pytest.approx(F.mse_loss(out.scales[-1], sharp).item())
    assert not any(v.requires_grad for k, v in result.items() if k != "loss")


def test_alpha_zero_leaves_the_reblur_term_out() -> None:
    out, blurry, sharp = _perturbed(8)
    result = NRKNetLoss(alpha=0.0)(out, blurry, sharp)
    assert result["reblur"].item() > 0  # still logged
    assert result["loss"].item() == pytest.approx(
        (result["mse"] + 0.1 * result["fdr"]).item(), rel=1e-6
    )
    result["loss"].backward()
    assert all(r.grad is None for r in out.reblurred)
    assert all(s.grad is not None for s in out.scales)


def test_beta_zero_leaves_the_fdr_term_out() -> None:
    out, blurry, sharp = _perturbed(9)
    result = NRKNetLoss(alpha=0.0, beta=0.0)(out, blurry, sharp)
    assert result["fdr"].item() > 0
    assert result["loss"].item() == pytest.approx(result["mse"].item(), rel=1e-6)
    with_fdr = NRKNetLoss(alpha=0.0, beta=0.1)(out, blurry, sharp)
    assert with_fdr["loss"].item() > result["loss"].item()


def test_single_scale_supervises_only_the_output() -> None:
    out, blurry, sharp = _perturbed(10)
    loss = NRKNetLoss(single_scale=True)
    result = loss(out, blurry, sharp)
    x = out.scales[-1]
    expected = F.mse_loss(x, sharp) + 0.1 * fdr_loss(x, sharp) + 0.1 * result["reblur"]
    assert result["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    result["loss"].backward()
    assert all(s.grad is None for s in out.scales[:-1])
    assert x.grad is not None
    assert all(r.grad is not None for r in out.reblurred)  # reblur keeps all scales


def test_reference_variant_targets_and_fft() -> None:
    blurry, sharp = _images(11)
    out = _perfect_output(blurry, sharp)
    loss = NRKNetLoss(alpha=0.0, fdr_norm="backward", target_downsample="bilinear")
    targets = loss.targets(sharp, out.scales[:-1], "bilinear")
    assert torch.allclose(targets[1], F.avg_pool2d(sharp, 2), atol=1e-6)  # half: 2x2 means
    assert torch.allclose(targets[0], F.interpolate(sharp, scale_factor=0.25, mode="bilinear"))
    out.scales = targets + [sharp]
    result = loss(out, blurry, sharp)
    assert result["loss"].abs().item() < 1e-6
    # nearest-subsampled predictions are now off target at the coarse scales
    nearest = _perfect_output(blurry, sharp)
    assert loss(nearest, blurry, sharp)["mse"].item() > 1e-4
    # the FDR scales by sqrt(HW) at each scale
    out.scales[-1] = sharp + 0.1
    h, w = sharp.shape[-2:]
    logged = loss(out, blurry, sharp)["fdr"].item()
    assert logged == pytest.approx(0.1, rel=1e-4)
    assert NRKNetLoss()(out, blurry, sharp)["fdr"].item() != pytest.approx(logged, rel=1e-2)
    ortho = NRKNetLoss(target_downsample="bilinear")(out, blurry, sharp)["fdr"].item()
    assert logged == pytest.approx(math.sqrt(h * w) * ortho, rel=1e-4)


def test_ssim_phase_replaces_the_loss() -> None:
    out, blurry, sharp = _perturbed(12)
    loss = NRKNetLoss(alpha=0.0, fdr_norm="backward", ssim_phases=DPDD_PHASES)
    normal = loss(out, blurry, sharp, epoch=1100)
    assert "ssim" not in normal
    phase = loss(out, blurry, sharp, epoch=1150)
    assert phase["loss"].item() == pytest.approx(phase["ssim"].item())
    targets = [downsample_nearest(sharp, f) for f in (4, 2, 1)] + [sharp]
    expected = sum(
        w * ssim_loss(z, x)
        for w, z, x in zip([0.25, 0.5, 0.75, 1.0], out.scales, targets, strict=True)
    )
    assert phase["ssim"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert phase["mse"].item() == pytest.approx(normal["mse"].item())  # still logged
    phase["loss"].backward()
    assert all(s.grad is not None for s in out.scales)
    assert all(r.grad is None for r in out.reblurred)
    perfect = _perfect_output(blurry, sharp)
    assert loss(perfect, blurry, sharp, epoch=1150)["loss"].abs().item() < 1e-5


def test_weights_validation() -> None:
    out, blurry, sharp = _perturbed(13)
    with pytest.raises(ValueError, match="scale_weights"):
        NRKNetLoss(scale_weights=[1.0, 0.75])(out, blurry, sharp)
    assert NRKNetLoss().output_weights(3) == [0.5, 0.75, 1.0]  # two scales: half, full, X
    assert NRKNetLoss(scale_weights=[1, 0.8, 0.6, 0.4, 0.2]).output_weights(4) == [
        0.4,
        0.6,
        0.8,
        1.0,
    ]
    with pytest.raises(ValueError, match="target_downsample"):
        NRKNetLoss(target_downsample="area")
    with pytest.raises(ValueError, match="fdr_norm"):
        NRKNetLoss(fdr_norm="none")
    with pytest.raises(ValueError, match="alpha must be a number >= 0, got -1"):
        NRKNetLoss(alpha=-1)
    with pytest.raises(ValueError, match="ssim_phases.period must be an integer >= 2"):
        NRKNetLoss(ssim_phases={"start_epoch": 0, "period": 1})


# ----------------------------------------------------------------------------- with the model


def test_integration_with_a_small_model() -> None:
    torch.manual_seed(0)
    model = NRKNet(width=4, num_levels=3)
    blurry, sharp = _images(14)
    out = model(blurry, sharp)
    loss = NRKNetLoss()
    result = loss(out, blurry, sharp)
    targets = [downsample_nearest(sharp, f) for f in (4, 2, 1)] + [sharp]
    reblur_targets = [downsample_nearest(blurry, f) for f in (4, 2, 1)]
    direct = nrknet_loss(
        out.scales,
        targets,
        [0.25, 0.5, 0.75, 1.0],
        out.reblurred,
        reblur_targets,
        [0.25, 0.5, 0.75],
    )
    assert result["loss"].item() == pytest.approx(direct.item(), rel=1e-5)
    result["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(int(g.abs().sum() > 0) for g in grads) >= 0.9 * len(grads)
    # two scales and the reference variant work as well
    model2 = NRKNet(width=4, num_levels=3, num_scales=2)
    out2 = model2(blurry, sharp)
    ref = instantiate(OmegaConf.load(CONF / "reference_code.yaml"))
    for epoch in (0, 1150):
        value = ref(out2, blurry, sharp, epoch=epoch)["loss"]
        assert torch.isfinite(value) and value.requires_grad


# ----------------------------------------------------------------------------- configs


def _config(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml"))


@pytest.mark.parametrize(
    ("name", "changes"),
    [
        ("no_reblur", {"alpha": 0.0}),
        ("no_fdr", {"beta": 0.0}),
        ("single_scale", {"single_scale": True}),
        (
            "reference_code",
            {
                "alpha": 0.0,
                "fdr_norm": "backward",
                "target_downsample": "bilinear",
                "ssim_phases": DPDD_PHASES,
            },
        ),
    ],
)
def test_variant_configs_change_only_their_keys(name: str, changes: dict) -> None:
    paper, variant = _config("paper"), _config(name)
    assert set(variant) == set(paper)
    assert {k: v for k, v in variant.items() if paper[k] != v} == changes


@pytest.mark.parametrize("name", ["paper", "no_reblur", "no_fdr", "single_scale", "reference_code"])
def test_configs_instantiate(name: str) -> None:
    loss = instantiate(OmegaConf.load(CONF / f"{name}.yaml"))
    assert isinstance(loss, NRKNetLoss)
    assert loss.scale_weights == [1.0, 0.75, 0.5, 0.25]
    if name == "paper":
        assert (loss.alpha, loss.beta, loss.fdr_norm, loss.target_downsample) == (
            0.1,
            0.1,
            "ortho",
            "nearest",
        )
        assert not loss.single_scale and loss.ssim_phases is None
    if name == "reference_code":
        assert loss.ssim_phases == DPDD_PHASES
