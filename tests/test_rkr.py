"""The RKR atoms and blur operator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nrknet.models.nrknet import NRKNet
from nrknet.ops.atoms import ATOM_VARIANTS, RecursiveAtoms, build_atoms, gaussian_bank
from nrknet.ops.rkr import RKRBlur, explicit_spatially_varying_blur


def random_operator(seed: int = 0, **atom_kwargs) -> RKRBlur:
    torch.manual_seed(seed)
    op = RKRBlur(RecursiveAtoms(21, **atom_kwargs), mixing="conv1x1")
    with torch.no_grad():
        op.atoms.logits.normal_(0, 1.5)
    return op


def test_operator_equals_explicit_spatially_varying_convolution():
    op = random_operator()
    x = torch.rand(2, 3, 48, 56)
    gamma = torch.randn(2, 22, 48, 56)
    with torch.no_grad():
        fast = op(x, gamma)
        explicit = explicit_spatially_varying_blur(x, op, gamma, band_rows=16)
    assert op.atoms.effective_kernels().shape == (22, 3, 43, 43)
    torch.testing.assert_close(fast, explicit, rtol=0, atol=1e-5)


def test_residual_operator_is_identity_plus_the_explicit_convolution():
    torch.manual_seed(3)
    op = RKRBlur(RecursiveAtoms(21), mixing="conv1x1", residual=True).double()
    x = torch.rand(1, 3, 40, 36, dtype=torch.double)
    gamma = torch.randn(1, 22, 40, 36, dtype=torch.double)
    with torch.no_grad():
        assert torch.equal(op(x, gamma), x)  # R starts at zero
        op.atoms.logits.normal_(0, 1.5)
        op.mixer.weight.normal_(0, 0.2)
        op.mixer.bias.normal_(0, 0.1)
        plain = RKRBlur(op.atoms, mixing="conv1x1").double()
        plain.load_state_dict(op.state_dict())
        torch.testing.assert_close(op(x, gamma), x + plain(x, gamma), rtol=0, atol=1e-12)
        torch.testing.assert_close(
            op(x, gamma), explicit_spatially_varying_blur(x, op, gamma), rtol=0, atol=1e-10
        )


def test_operator_equals_explicit_with_sum_mixing_on_small_image():
    torch.manual_seed(1)
    op = RKRBlur(RecursiveAtoms(21), mixing="sum")
    x = torch.rand(1, 3, 20, 30)  # smaller than the 43x43 support: mirrored extension
    gamma = torch.rand(1, 22, 20, 30).softmax(dim=1)  # a convex mix keeps values near 1
    with torch.no_grad():
        torch.testing.assert_close(
            op(x, gamma), explicit_spatially_varying_blur(x, op, gamma), rtol=0, atol=1e-5
        )


def test_free_atoms_match_explicit_away_from_borders():
    op = random_operator(2, symmetric=False)
    x = torch.rand(1, 3, 64, 64)
    gamma = torch.randn(1, 22, 64, 64)
    with torch.no_grad():
        fast = op(x, gamma)[..., 21:-21, 21:-21]
        explicit = explicit_spatially_varying_blur(x, op, gamma)[..., 21:-21, 21:-21]
    torch.testing.assert_close(fast, explicit, rtol=0, atol=1e-5)


@pytest.mark.parametrize("variant", ["non_recursive", "non_separable", "gaussian"])
def test_independent_atoms_match_explicit(variant):
    torch.manual_seed(3)
    op = RKRBlur(build_atoms(variant, 8), mixing="conv1x1")
    x = torch.rand(1, 3, 24, 28)
    gamma = torch.randn(1, 9, 24, 28)
    with torch.no_grad():
        torch.testing.assert_close(
            op(x, gamma), explicit_spatially_varying_blur(x, op, gamma), rtol=0, atol=1e-5
        )


ATOM_SETTINGS = [
    dict(atoms="recursive"),
    dict(atoms="recursive", symmetric_atoms=False),
    dict(atoms="recursive", per_channel_atoms=False, symmetric_atoms=False),
    dict(atoms="non_recursive"),
    dict(atoms="non_separable"),
]


@pytest.mark.parametrize(
    "settings", ATOM_SETTINGS, ids=lambda s: "-".join(str(v) for v in s.values())
)
def test_learned_atoms_are_positive_and_normalised(settings):
    model = NRKNet(width=4, num_levels=6, **settings)
    with torch.no_grad():
        for p in model.atoms.parameters():
            p.normal_(0, 3)
    kernels = model.atoms.effective_kernels()
    assert (kernels >= 0).all()
    torch.testing.assert_close(kernels.sum(dim=(-1, -2)), torch.ones(kernels.shape[:2]))


def test_gaussian_bank_matches_gkmnet_layout():
    bank = gaussian_bank(21)
    assert [k.shape[0] for k in bank[:6]] == [3, 3, 5, 5, 7, 7]
    assert max(k.shape[0] for k in bank) == 21
    assert sum(21 * 21 for _ in bank) == 9261  # zero-padded to 21x21, as counted in Table 3
    for k in bank:
        assert torch.isclose(k.sum(), torch.tensor(1.0))
    model = NRKNet(width=4, atoms="gaussian")
    assert not list(model.atoms.parameters())


@pytest.mark.parametrize("variant", ["recursive", "non_recursive", "non_separable"])
def test_gradients_reach_atoms_and_coefficient_head(variant):
    torch.manual_seed(0)
    model = NRKNet(width=4, num_levels=5, atoms=variant)
    blurry, sharp = torch.rand(2, 1, 3, 32, 32)
    out = model(blurry, sharp)
    loss = sum(
        ((s - torch.nn.functional.interpolate(sharp, size=s.shape[-2:])) ** 2).mean()
        for s in out.scales
    )
    loss = loss + sum(r.mean() for r in out.reblurred)
    loss.backward()
    for name, p in model.named_parameters():
        if name.startswith(("blur.atoms", "coefficients")):
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_table3_parameter_counts_of_the_atom_banks():
    """The RKR-related counts of Table 3 (20 atoms besides the identity)."""
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(build_atoms("recursive", 20, per_channel=False, symmetric=False)) == 60
    assert count(build_atoms("non_recursive", 20)) == 440
    assert count(build_atoms("non_separable", 20)) == 12340
    assert (
        count(build_atoms("recursive", 21)) == 126
    )  # the reference's 21 symmetric per-channel levels
    assert set(ATOM_VARIANTS) == {"recursive", "non_recursive", "non_separable", "gaussian"}


def _softmax(a: np.ndarray) -> np.ndarray:
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def kernels_by_repeated_convolution(atoms: RecursiveAtoms) -> np.ndarray:
    """The atoms' 2-D correlation kernels built without the recursion under test, in numpy.

    The taps of level j come from the logits (level-major, then channel; a symmetric level
    stores side and centre). Correlating with k_1, then k_2, ... equals correlating with
    h_j = k_1 * k_2 * ... * k_j (1-D full convolutions), horizontally and vertically:
    A_j = outer(h_j, h_j), centred in a (2J + 1) x (2J + 1) support; A_0 is the identity.
    """
    logits = atoms.logits.detach().double().numpy()
    levels, channels = atoms.num_levels, atoms.atom_channels
    logits = logits.reshape(levels, channels, -1)
    if atoms.symmetric:
        logits = np.stack([logits[..., 0], logits[..., 1], logits[..., 0]], axis=-1)
    taps = _softmax(logits)
    size = 2 * levels + 1
    kernels = np.zeros((levels + 1, channels, size, size))
    for c in range(channels):
        h = np.ones(1)
        for j in range(levels + 1):
            if j:
                h = np.convolve(h, taps[j - 1, c])
            start = levels - j
            kernels[j, c, start : start + h.size, start : start + h.size] = np.outer(h, h)
    return kernels


@pytest.mark.parametrize(
    ("symmetric", "per_channel"), [(True, True), (False, True), (False, False)]
)
def test_atoms_are_the_repeated_convolution_of_their_taps(symmetric, per_channel):
    """The recursion against kernels built independently; then the operator against the
    explicit spatially varying blur with those kernels.

    Mutations this catches: a level that filters one direction twice, convolution in place of
    correlation (free taps come out mirrored), taps read from the wrong level or channel.
    """
    torch.manual_seed(5)
    atoms = RecursiveAtoms(6, per_channel=per_channel, symmetric=symmetric).double()
    with torch.no_grad():
        atoms.logits.normal_(0, 1.5)
    expected = kernels_by_repeated_convolution(atoms)
    np.testing.assert_allclose(
        atoms.effective_kernels().detach().numpy(), expected, rtol=0, atol=1e-12
    )
    op = RKRBlur(atoms, mixing="conv1x1").double()
    x = torch.rand(1, 3, 30, 34, dtype=torch.double)
    gamma = torch.randn(1, 7, 30, 34, dtype=torch.double)
    independent = torch.from_numpy(expected)
    atoms.effective_kernels = lambda: independent  # the reference uses the kernels built here
    # asymmetric taps meet reflected borders differently level by level: compare the interior
    inner = (..., slice(6, -6), slice(6, -6)) if not symmetric else (...,)
    with torch.no_grad():
        torch.testing.assert_close(
            op(x, gamma)[inner],
            explicit_spatially_varying_blur(x, op, gamma)[inner],
            rtol=0,
            atol=1e-10,
        )
