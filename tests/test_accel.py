"""The acceleration layer computes the plain model's function and gradients.

Tolerances: float64 comparisons use ``atol=1e-10`` (outputs) and
``rtol=1e-9, atol=1e-10`` (gradients), float32 ones ``atol=1e-5``; only
float32 on CPU takes oneDNN's fused operations, hence both.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from nrknet.accel import accelerate
from nrknet.accel.reflect_conv import _weight_grad_gemm, reflect_conv2d, reflect_conv3x3
from nrknet.accel.taps import tap_filter, tap_filter_adjoint, tap_filter_taps_grad
from nrknet.models.coefficients import ConvLSTMCoefficientHead, PlainCoefficientHead
from nrknet.models.nrknet import NRKNet
from nrknet.models.unet import FeatureUNet
from nrknet.ops.atoms import IndependentAtoms, RecursiveAtoms
from nrknet.ops.rkr import RKRBlur

CL = torch.channels_last
F64 = dict(rtol=0, atol=1e-10)
F64_GRAD = dict(rtol=1e-9, atol=1e-10)
F32 = dict(rtol=0, atol=1e-5)


def grads(outputs, inputs, seed: int = 0):
    """Gradients of a fixed random projection of ``outputs`` (tensor or list)."""
    outputs = outputs if isinstance(outputs, list | tuple) else [outputs]
    g = torch.Generator().manual_seed(seed)
    total = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in outputs)
    return torch.autograd.grad(total, inputs)


def accelerated_twin(module: torch.nn.Module) -> torch.nn.Module:
    return accelerate(copy.deepcopy(module), "on")


def randomise_batch_norm(module: torch.nn.Module) -> None:
    """BatchNorm statistics and affine parameters away from the identity."""
    with torch.no_grad():
        for bn in module.modules():
            if isinstance(bn, torch.nn.BatchNorm2d):
                bn.running_mean.normal_(0, 0.5)
                bn.running_var.uniform_(0.5, 2)
                bn.weight.normal_(1, 0.3)
                bn.bias.normal_(0, 0.3)


# ----------------------------------------------------------------------------- building blocks
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("channels", [4, 24], ids=["oneDNN-wgrad", "gemm-wgrad"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("size", [(16, 20), (17, 19)])
def test_reflect_conv_equals_padded_conv_with_gradients(stride, channels, layout, size):
    torch.manual_seed(0)
    x = torch.randn(2, channels, *size, dtype=torch.double)
    if layout == "channels_last":
        x = x.contiguous(memory_format=CL)
    x.requires_grad_()
    weight = torch.randn(5, channels, 3, 3, dtype=torch.double, requires_grad=True)
    bias = torch.randn(5, dtype=torch.double, requires_grad=True)
    expected = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), weight, bias, stride)
    got = reflect_conv3x3(x, weight, bias, stride)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    for a, b in zip(grads(got, [x, weight, bias]), grads(expected, [x, weight, bias]), strict=True):
        torch.testing.assert_close(a, b, **F64)
    with torch.no_grad():  # the copy-free inference form, any kernel size
        w5 = torch.randn(3, channels, 5, 5, dtype=torch.double)
        torch.testing.assert_close(
            reflect_conv2d(x, w5, None, stride, 2),
            F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), w5, None, stride),
            rtol=0,
            atol=1e-12,
        )


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_weight_gradient_by_matrix_products_in_image_chunks(layout):
    torch.manual_seed(7)
    x = torch.randn(3, 16, 9, 11, dtype=torch.double)
    grad = torch.randn(3, 5, 9, 11, dtype=torch.double)
    if layout == "channels_last":
        x, grad = x.contiguous(memory_format=CL), grad.contiguous(memory_format=CL)
    weight = torch.zeros(5, 16, 3, 3, dtype=torch.double, requires_grad=True)
    out = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), weight)
    (expected,) = torch.autograd.grad(out, weight, grad)
    for chunk_bytes in (1, 1 << 30):  # one image at a time, all at once
        got = _weight_grad_gemm(x, grad, chunk_bytes=chunk_bytes)
        torch.testing.assert_close(got, expected, **F64)


@pytest.mark.parametrize("per_channel", [True, False])
def test_elementwise_tap_filter_and_its_gradients_equal_padded_depthwise_conv(per_channel):
    torch.manual_seed(1)
    x = torch.randn(2, 3, 9, 2, dtype=torch.double, requires_grad=True)  # width 2: both borders
    taps = torch.rand(3 if per_channel else 1, 3, dtype=torch.double, requires_grad=True)
    for dim, pad, shape in [(-1, (1, 1, 0, 0), (1, 3)), (-2, (0, 0, 1, 1), (3, 1))]:
        kernel = taps.expand(3, 3).reshape(3, 1, *shape)
        expected = F.conv2d(F.pad(x, pad, mode="reflect"), kernel, groups=3)
        got = tap_filter(x.detach(), taps.detach(), dim)
        torch.testing.assert_close(got, expected.detach(), rtol=0, atol=1e-12)
        g = torch.randn_like(expected)
        grad_x, grad_taps = torch.autograd.grad(expected, [x, taps], g)
        torch.testing.assert_close(tap_filter_adjoint(g, taps.detach(), dim), grad_x, **F64)
        got_taps = tap_filter_taps_grad(g, x.detach(), dim, taps.shape[0])
        torch.testing.assert_close(got_taps, grad_taps, **F64)


@pytest.mark.parametrize(
    "atom_kwargs, mixing",
    [
        ({}, "conv1x1"),
        ({"symmetric": False}, "sum"),
        ({"per_channel": False}, "conv1x1"),
        ({"per_channel": False, "symmetric": False}, "sum"),
    ],
    ids=["symmetric-per-channel-conv1x1", "free-sum", "shared-conv1x1", "free-shared-sum"],
)
def test_rkr_operator_equals_plain_with_gradients(atom_kwargs, mixing):
    torch.manual_seed(2)
    plain = RKRBlur(RecursiveAtoms(9, **atom_kwargs), mixing=mixing).double()
    with torch.no_grad():
        plain.atoms.logits.normal_(0, 1.5)
    fast = accelerated_twin(plain)
    assert type(fast).__name__ == "AcceleratedRKRBlur"
    x = torch.rand(2, 3, 14, 11, dtype=torch.double, requires_grad=True)
    gamma = torch.randn(2, 10, 14, 11, dtype=torch.double, requires_grad=True)
    expected = plain(x, gamma)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x, gamma), expected.detach(), **F64)
    got = fast(x, gamma)  # levels rebuilt in the backward pass
    for a, b in zip(
        grads(got, [x, gamma, *fast.parameters()]),
        grads(expected, [x, gamma, *plain.parameters()]),
        strict=True,
    ):
        torch.testing.assert_close(a, b, **F64_GRAD)


@pytest.mark.parametrize("variant", ["non_recursive", "non_separable"])
@pytest.mark.parametrize(
    "size", [(14, 11), (5, 7)], ids=["image-wider-than-atoms", "atoms-wider-than-image"]
)
def test_fft_levels_of_independent_atoms_equal_plain_with_gradients(variant, size):
    """Every level and the gradients to the input and the atoms; reflection repeats on (5, 7)."""
    torch.manual_seed(4)
    plain = IndependentAtoms(variant, num_levels=8).double()
    with torch.no_grad():
        for logits in plain.logits:
            logits.normal_(0, 1.5)
    fast = accelerated_twin(plain)
    assert type(fast).__name__ == "AcceleratedIndependentAtoms"
    x = torch.rand(2, 3, *size, dtype=torch.double, requires_grad=True)
    expected, got = list(plain.levels(x)), list(fast.levels(x))
    assert len(got) == len(expected) == 9
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, **F64)
    for a, b in zip(
        grads(got, [x, *fast.parameters()]), grads(expected, [x, *plain.parameters()]), strict=True
    ):
        torch.testing.assert_close(a, b, **F64_GRAD)


def test_fft_levels_in_float32_stay_within_rounding():
    torch.manual_seed(4)
    plain = IndependentAtoms("non_separable", num_levels=20)
    fast = accelerated_twin(plain)
    x = torch.rand(2, 3, 64, 48)
    for a, b in zip(fast.levels(x), plain.levels(x), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_the_gaussian_bank_keeps_its_direct_form():
    fast = accelerated_twin(IndependentAtoms("gaussian", num_levels=8))
    assert type(fast) is IndependentAtoms


@pytest.mark.parametrize("extra_blocks", [0, 1])
@pytest.mark.parametrize("band_bytes", [1, 5000, 1 << 30], ids=["2-rows", "some", "whole"])
def test_unet_paths_equal_plain(extra_blocks, band_bytes):
    torch.manual_seed(3)
    plain = FeatureUNet(8, extra_blocks=extra_blocks)
    fast = accelerated_twin(plain)
    fast.band_bytes = band_bytes
    x = torch.rand(2, 3, 36, 44)
    expected = plain(x)
    torch.testing.assert_close(fast(x), expected, **F32)  # training path (channels-last)
    with torch.inference_mode():
        got = fast(x)  # in place, in bands
    assert got.is_contiguous(memory_format=CL)
    torch.testing.assert_close(got, expected.detach(), **F32)


@pytest.mark.parametrize("head_cls", [ConvLSTMCoefficientHead, PlainCoefficientHead])
@pytest.mark.parametrize("band_bytes", [1, 1 << 30], ids=["2-rows", "whole"])
def test_coefficient_head_inference_path_equals_plain(head_cls, band_bytes):
    torch.manual_seed(4)
    plain = head_cls(8, 6)
    randomise_batch_norm(plain)
    plain.eval()
    fast = accelerated_twin(plain)
    fast.band_bytes = band_bytes
    features = torch.randn(2, 8, 20, 28)
    state = (torch.randn(2, 6, 10, 14), torch.randn(2, 6, 10, 14)) if plain.recurrent else None
    gamma, new_state = plain(features, state)
    with torch.inference_mode():  # BatchNorm folded, in bands
        fast_gamma, fast_state = fast(features.contiguous(memory_format=CL), state)
    torch.testing.assert_close(fast_gamma, gamma.detach(), **F32)
    if plain.recurrent:
        for a, b in zip(fast_state, new_state, strict=True):
            torch.testing.assert_close(a, b.detach(), rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- whole model
MODEL_VARIANTS = {
    "convlstm-conv1x1-symmetric-per-channel": {},
    "plain-head": {"recurrent": False},
    "sum-mixing": {"mixing": "sum"},
    "free-per-channel-atoms": {"symmetric_atoms": False},
    "free-shared-atoms": {"symmetric_atoms": False, "per_channel_atoms": False},
    "symmetric-shared-atoms": {"per_channel_atoms": False},
    "two-scales": {"num_scales": 2},
    "four-scales": {"num_scales": 4},
    "full-expansion": {"fusion": "full_expansion"},
    "residual-gate": {"residual_gate": True},
    "blur-residual": {"blur_residual": True},
    "non-recursive-atoms-fft-levels": {"atoms": "non_recursive"},
    "non-separable-atoms-fft-levels": {"atoms": "non_separable"},
    "gaussian-atoms-plain": {"atoms": "gaussian"},
}


def model_twins(kwargs: dict, dtype: torch.dtype) -> tuple[NRKNet, NRKNet]:
    torch.manual_seed(5)
    plain = NRKNet(width=8, num_levels=5, **kwargs).to(dtype)
    randomise_batch_norm(plain)
    if plain.gate is not None:
        with torch.no_grad():
            plain.gate.fill_(0.7)
    if plain.blur.residual:  # away from its start at R = 0, where the check would be trivial
        with torch.no_grad():
            plain.blur.mixer.weight.normal_(0, 0.1)
            plain.blur.mixer.bias.normal_(0, 0.05)
    return plain, accelerated_twin(plain)


@pytest.mark.parametrize("name", list(MODEL_VARIANTS))
def test_training_outputs_and_gradients_equal_plain(name, one_thread):
    """Forward with ``sharp`` (the losses' inputs) and backward, float64."""
    plain, fast = model_twins(MODEL_VARIANTS[name], torch.double)
    blurry, sharp = torch.rand(2, 2, 3, 32, 48, dtype=torch.double)  # padded where a variant needs
    blurry.requires_grad_()
    expected, got = plain(blurry, sharp), fast(blurry, sharp)
    for a, b in zip(got.scales + got.reblurred, expected.scales + expected.reblurred, strict=True):
        torch.testing.assert_close(a, b, **F64)
    names = [n for n, _ in plain.named_parameters()]
    got_grads = grads(got.scales + got.reblurred, [blurry, *fast.parameters()])
    expected_grads = grads(expected.scales + expected.reblurred, [blurry, *plain.parameters()])
    for label, a, b in zip(["blurry", *names], got_grads, expected_grads, strict=True):
        torch.testing.assert_close(a, b, **F64_GRAD, msg=label)


@pytest.mark.parametrize("name", list(MODEL_VARIANTS))
@pytest.mark.parametrize("dtype", [torch.double, torch.float32], ids=["float64", "float32"])
def test_inference_equals_plain(name, dtype, one_thread):
    """Eval mode without autograd: the banded, BatchNorm-folded path."""
    plain, fast = model_twins(MODEL_VARIANTS[name], dtype)
    plain.eval()
    fast.eval()
    fast.unet.band_bytes = fast.coefficients.band_bytes = 3000  # several bands per stage
    blurry = torch.rand(2, 3, 48, 80, dtype=dtype)
    with torch.inference_mode():
        torch.testing.assert_close(
            fast(blurry), plain(blurry), **(F64 if dtype == torch.double else F32)
        )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_matches_float32(dtype, one_thread):
    """Under autocast the accelerated model runs (training and inference), returns float32 and stays close."""
    torch.manual_seed(3)
    model = accelerate(NRKNet(width=8), "on")
    x, sharp = torch.rand(2, 3, 48, 64), torch.rand(2, 3, 48, 64)
    with torch.autocast("cpu", dtype=dtype):
        out = model(x, sharp)
    reference = model(x, sharp)
    for a, b in zip(out.scales, reference.scales, strict=True):
        assert a.dtype == torch.float32
        assert ((a - b).norm() / b.norm()).item() < 2e-2
    sum(s.square().mean() for s in out.scales).backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.inference_mode():
        exact = model(x)
        with torch.autocast("cpu", dtype=dtype):
            mixed = model(x)
    assert mixed.dtype == torch.float32
    assert ((mixed - exact).norm() / exact.norm()).item() < 2e-2
