"""Defocus maps, coefficient capture and the diagnostic figures."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import nnls
from scipy.stats import spearmanr

from nrknet.analysis.defocus import (
    atom_second_moments,
    blur_radius_from_coefficients,
    capture_coefficients,
    defocus_map,
    effective_blur_radius,
    full_scale_coefficients,
    level_gains,
)
from nrknet.analysis.figures import (
    DEFOCUS_PNG_SCALE,
    atom_kernels_figure,
    coefficient_maps_figure,
    colorize_defocus,
    comparison_figure,
    comparison_strip,
    save_defocus_map,
)
from nrknet.models.nrknet import NRKNet
from nrknet.ops.atoms import RecursiveAtoms
from nrknet.ops.rkr import RKRBlur

pytestmark = pytest.mark.usefixtures("one_thread")


def binomial_atoms(levels: int) -> RecursiveAtoms:
    """Recursive atoms with taps [1/4, 1/2, 1/4]: level j has variance j/2 per axis."""
    atoms = RecursiveAtoms(levels, per_channel=False)
    with torch.no_grad():
        atoms.logits[..., 0] = 0.0
        atoms.logits[..., 1] = math.log(2.0)
    return atoms


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(4 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def test_second_moments_of_binomial_atoms():
    moments = atom_second_moments(binomial_atoms(12))
    torch.testing.assert_close(moments, torch.arange(13, dtype=torch.float32), atol=1e-4, rtol=0)


def test_level_gains():
    op = RKRBlur(binomial_atoms(4), channels=3, mixing="sum")
    torch.testing.assert_close(level_gains(op), torch.ones(5))
    op = RKRBlur(binomial_atoms(4), channels=3, mixing="conv1x1")
    with torch.no_grad():
        op.mixer.weight.zero_()
        op.mixer.weight[:, 3 * 2 : 3 * 3] = 0.5  # level 2: every output takes 0.5 of each input
    gains = level_gains(op)
    assert gains[2].item() == pytest.approx(1.5) and gains[[0, 1, 3, 4]].abs().max() == 0


def test_radius_of_pure_levels():
    """All coefficient mass on one level gives that atom's RMS radius; none gives 0."""
    moments = torch.arange(6, dtype=torch.float32)
    gamma = torch.zeros(1, 6, 2, 3)
    gamma[0, 4, 0] = 2.0
    gamma[0, 1, 1, :2] = -0.5  # the sign does not matter
    r = blur_radius_from_coefficients(gamma, moments)
    assert r.shape == (1, 1, 2, 3)
    torch.testing.assert_close(r[0, 0, 0], torch.full((3,), 2.0))
    torch.testing.assert_close(r[0, 0, 1], torch.tensor([1.0, 1.0, 0.0]))


def test_radius_of_a_residual_operator_counts_its_identity():
    """``D = I + R``: the identity weighs 1 at radius 0, so R = 0 means no blur at all."""
    op = RKRBlur(RecursiveAtoms(5), mixing="conv1x1", residual=True)
    gamma = torch.rand(1, 6, 4, 5) + 0.5
    assert torch.equal(effective_blur_radius(gamma, op), torch.zeros(1, 1, 4, 5))
    with torch.no_grad():
        op.mixer.weight.fill_(0.1)
    with_identity = effective_blur_radius(gamma, op)
    op.residual = False
    assert (with_identity > 0).all() and (with_identity < effective_blur_radius(gamma, op)).all()


def test_defocus_map_follows_known_coefficients():
    """Analytic operator: coefficient mass moves up the stack with the true radius."""
    levels = 21
    op = RKRBlur(binomial_atoms(levels), channels=3, mixing="sum")
    moments = atom_second_moments(op.atoms)
    g = torch.Generator().manual_seed(0)
    true_radius = torch.linspace(0.3, 4.0, 64).view(1, 1, 1, 64).expand(1, 1, 48, 64)
    # Coefficients centred on the level whose second moment matches r^2, with noise.
    target = true_radius**2
    gamma = torch.exp(-((moments.view(1, -1, 1, 1) - target) ** 2) / 8.0)
    gamma = gamma * (1 + 0.3 * torch.rand(gamma.shape, generator=g))
    radius = effective_blur_radius(gamma, op)
    rho = spearmanr(radius.flatten().numpy(), true_radius.flatten().numpy()).statistic
    assert rho > 0.8


def test_defocus_map_recovers_known_blur_of_a_synthetic_scene():
    """On images: stripes at known depths blurred by Gaussians of known size.

    The coefficients of each stripe are fitted (non-negative least squares)
    so that the RKR operator maps the sharp scene to the blurry one, as the
    network's reblur branch does; the defocus map of those coefficients must
    rank the stripes by their true blur and give RMS radii near sqrt(2) sigma.
    """
    levels = 16
    op = RKRBlur(binomial_atoms(levels), channels=3, mixing="sum")
    g = torch.Generator().manual_seed(1)
    sharp = torch.rand(1, 3, 64, 48, generator=g)
    sharp = 0.5 * sharp + 0.5 * F.avg_pool2d(sharp, 3, 1, 1)
    sigmas = [0.4, 0.8, 1.2, 1.6, 2.0, 2.5]
    stripe = 16
    width = stripe * len(sigmas)
    scene = sharp.repeat(1, 1, 1, 2)[..., :width]
    blurred = [gaussian_blur(scene, s) for s in sigmas]
    with torch.no_grad():
        stack = torch.stack(list(op.atoms.levels(scene)), dim=1)  # (1, M, 3, H, W)
    gamma = torch.zeros(1, levels + 1, 64, width)
    true_sigma = torch.zeros(64, width)
    inner = slice(12, 52)
    for k, sigma in enumerate(sigmas):
        cols = slice(k * stripe, (k + 1) * stripe)
        a = stack[0, :, :, inner, cols].reshape(levels + 1, -1).T.double().numpy()
        b = blurred[k][0, :, inner, cols].reshape(-1).double().numpy()
        coef, _ = nnls(a, b)
        gamma[0, :, :, cols] = torch.from_numpy(coef).float().view(-1, 1, 1)
        true_sigma[:, cols] = sigma
    radius = effective_blur_radius(gamma, op)[0, 0]
    rho = spearmanr(radius.flatten().numpy(), true_sigma.flatten().numpy()).statistic
    assert rho > 0.8
    per_stripe = radius[0, ::stripe]
    expected = math.sqrt(2) * torch.tensor(sigmas)
    assert torch.all(per_stripe[1:] > per_stripe[:-1])
    torch.testing.assert_close(per_stripe, expected, rtol=0.25, atol=0.2)


@pytest.fixture(scope="module")
def small_model() -> NRKNet:
    torch.manual_seed(0)
    return NRKNet(width=8).eval()


def test_capture_coefficients_at_full_scale(small_model):
    x = torch.rand(2, 3, 48, 64)
    calls = []
    handle = small_model.coefficients.register_forward_hook(
        lambda m, i, o: calls.append(o[0].shape[-1])
    )
    try:
        with torch.inference_mode(), capture_coefficients(small_model) as captured:
            small_model(x)
    finally:
        handle.remove()
    assert captured["gamma"].shape == (2, small_model.num_maps, 48, 64)
    assert calls == [16, 32, 64]  # coarsest first, full scale last
    assert not small_model.coefficients._forward_hooks  # the capture hook is removed


def test_defocus_map_of_a_model_any_size(small_model):
    x = torch.rand(1, 3, 37, 50)
    gamma = full_scale_coefficients(small_model, x)
    assert gamma.shape == (1, small_model.num_maps, 37, 50)
    r = defocus_map(small_model, x)
    assert r.shape == (1, 1, 37, 50)
    assert torch.isfinite(r).all() and (r >= 0).all()
    assert r.max() <= atom_second_moments(small_model.blur.atoms).max().sqrt() + 1e-4


def test_colorize_and_save_defocus_map(tmp_path):
    radius = np.tile(np.linspace(0, 5, 120, dtype=np.float32), (80, 1))
    color = colorize_defocus(radius, vmax=5)
    assert color.dtype == np.uint8 and color.shape[0] == 80 and color.shape[1] > 120
    assert color.shape[2] == 3
    assert not np.array_equal(color[40, 0], color[40, 119])
    p16, pc = save_defocus_map(radius, tmp_path / "r.png", tmp_path / "r_color.png")
    back = cv2.imread(str(p16), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and back.ndim == 2
    np.testing.assert_allclose(back / DEFOCUS_PNG_SCALE, radius, atol=1e-3)
    shown = cv2.imread(str(pc), cv2.IMREAD_UNCHANGED)
    assert shown.shape == color.shape


def test_figures(small_model):
    a = torch.rand(3, 40, 60)
    b = torch.rand(3, 40, 60)
    strip = comparison_strip(a, b, a)
    assert strip.shape == (40, 3 * 60 + 2 * 4, 3) and strip.dtype == np.uint8
    fig = comparison_figure([a, b, a])
    assert fig.dtype == np.uint8 and fig.shape[0] > 40 and fig.shape[1] > 180
    big = np.random.default_rng(0).random((900, 1200, 3), dtype=np.float32)
    assert max(comparison_figure([big, big], max_side=300).shape[:2]) <= 2 * 300 + 6
    gamma = torch.rand(small_model.num_maps, 32, 48)
    assert coefficient_maps_figure(gamma).ndim == 3
    assert coefficient_maps_figure(gamma[[0, 5]], level_names=[0, 5]).dtype == np.uint8
    atoms = atom_kernels_figure(small_model.atoms, include_identity=False)
    assert atoms.ndim == 3 and atoms.shape[2] == 3
