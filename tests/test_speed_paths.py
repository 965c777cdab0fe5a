"""The fast inference and training paths compute the same function as the direct form."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nrknet.models.coefficients import ConvLSTMCoefficientHead, PlainCoefficientHead
from nrknet.models.nrknet import NRKNet
from nrknet.models.reference_path import reference_blur, reference_forward
from nrknet.models.unet import FeatureUNet
from nrknet.ops.atoms import RecursiveAtoms, filter_taps
from nrknet.ops.padding import reflect_conv2d, reflect_conv3x3
from nrknet.ops.rkr import RKRBlur

CL = torch.channels_last


def grads(outputs, inputs, seed: int = 0):
    """Gradients of a fixed random projection of ``outputs`` (tensor or list)."""
    outputs = outputs if isinstance(outputs, list | tuple) else [outputs]
    g = torch.Generator().manual_seed(seed)
    total = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in outputs)
    return torch.autograd.grad(total, inputs)


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
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    with torch.no_grad():  # the copy-free inference form, any kernel size
        w5 = torch.randn(3, channels, 5, 5, dtype=torch.double)
        torch.testing.assert_close(
            reflect_conv2d(x, w5, None, stride, 2),
            F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), w5, None, stride),
            rtol=0,
            atol=1e-12,
        )


@pytest.mark.parametrize("per_channel", [True, False])
def test_elementwise_tap_filter_equals_padded_depthwise_conv(per_channel):
    torch.manual_seed(1)
    x = torch.randn(2, 3, 9, 2, dtype=torch.double, requires_grad=True)  # width 2: both borders
    taps = torch.rand(3 if per_channel else 1, 3, dtype=torch.double, requires_grad=True)
    for dim, pad, shape in [(-1, (1, 1, 0, 0), (1, 3)), (-2, (0, 0, 1, 1), (3, 1))]:
        kernel = taps.expand(3, 3).reshape(3, 1, *shape)
        expected = F.conv2d(F.pad(x, pad, mode="reflect"), kernel, groups=3)
        got = filter_taps(x, taps, dim)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
        for a, b in zip(grads(got, [x, taps]), grads(expected, [x, taps]), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    "atom_kwargs, mixing",
    [({}, "conv1x1"), ({"symmetric": False}, "sum"), ({"per_channel": False}, "conv1x1")],
)
def test_rkr_operator_equals_materialised_stack_with_gradients(atom_kwargs, mixing):
    torch.manual_seed(2)
    op = RKRBlur(RecursiveAtoms(9, **atom_kwargs), mixing=mixing).double()
    with torch.no_grad():
        op.atoms.logits.normal_(0, 1.5)
    x = torch.rand(2, 3, 14, 11, dtype=torch.double, requires_grad=True)
    gamma = torch.randn(2, 10, 14, 11, dtype=torch.double, requires_grad=True)
    expected = reference_blur(op, x, gamma)
    with torch.inference_mode():
        torch.testing.assert_close(op(x, gamma), expected.detach(), rtol=0, atol=1e-12)
    got = op(x, gamma)  # custom autograd function, levels rebuilt in backward
    inputs = [x, gamma, *op.parameters()]
    for a, b in zip(grads(got, inputs), grads(expected, inputs), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


@pytest.mark.parametrize("extra_blocks", [0, 1])
@pytest.mark.parametrize("band_bytes", [1, 5000, 1 << 30], ids=["2-rows", "some", "whole"])
def test_unet_inference_path_equals_training_path(extra_blocks, band_bytes):
    torch.manual_seed(3)
    unet = FeatureUNet(8, extra_blocks=extra_blocks)
    x = torch.rand(2, 3, 36, 44)
    expected = unet(x)  # autograd path
    unet.band_bytes = band_bytes
    with torch.inference_mode():
        got = unet(x)  # channels-last, in place, in bands
    assert got.is_contiguous(memory_format=CL)
    torch.testing.assert_close(got, expected.detach(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("head_cls", [ConvLSTMCoefficientHead, PlainCoefficientHead])
@pytest.mark.parametrize("band_bytes", [1, 1 << 30], ids=["2-rows", "whole"])
def test_coefficient_head_inference_path_equals_training_path(head_cls, band_bytes):
    torch.manual_seed(4)
    head = head_cls(8, 6)
    with torch.no_grad():
        head.local_bn.running_mean.normal_(0, 0.5)
        head.local_bn.running_var.uniform_(0.5, 2)
        head.local_bn.weight.normal_(1, 0.3)
        head.local_bn.bias.normal_(0, 0.3)
    head.eval()
    features = torch.randn(2, 8, 20, 28)
    state = (torch.randn(2, 6, 10, 14), torch.randn(2, 6, 10, 14)) if head.recurrent else None
    gamma, new_state = head(features, state)  # autograd path
    head.band_bytes = band_bytes
    with torch.inference_mode():
        fast_gamma, fast_state = head(features.contiguous(memory_format=CL), state)
    torch.testing.assert_close(fast_gamma, gamma.detach(), rtol=0, atol=1e-5)
    if head.recurrent:
        for a, b in zip(fast_state, new_state, strict=True):
            torch.testing.assert_close(a, b.detach(), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs", [{}, {"recurrent": False}, {"mixing": "sum", "num_scales": 2}], ids=str
)
def test_fast_inference_equals_training_path_and_reference(kwargs):
    torch.manual_seed(5)
    model = NRKNet(width=8, **kwargs).eval()
    model.unet.band_bytes = model.coefficients.band_bytes = 3000  # several bands per stage
    blurry, sharp = torch.rand(2, 2, 3, 32, 48)
    with torch.inference_mode():
        fast = model(blurry)
        reference = reference_forward(model, blurry)
    training = model(blurry, sharp)  # autograd path (custom convolution and RKR functions)
    torch.testing.assert_close(fast, training.output.detach(), rtol=0, atol=1e-5)
    torch.testing.assert_close(fast, reference, rtol=0, atol=1e-5)


def test_training_path_gradients_equal_reference_path():
    torch.manual_seed(6)
    model = NRKNet(width=16).double()  # width 16: both weight-gradient routes are used
    blurry, sharp = torch.rand(2, 1, 3, 32, 32, dtype=torch.double)
    out = model(blurry, sharp)
    ref = reference_forward(model, blurry, sharp)
    for a, b in zip(out.scales + out.reblurred, ref.scales + ref.reblurred, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    params = list(model.parameters())
    got = grads(out.scales + out.reblurred, params)
    expected = grads(ref.scales + ref.reblurred, params)
    for (name, _), a, b in zip(model.named_parameters(), got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11, msg=name)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_weight_gradient_by_matrix_products_in_image_chunks(layout):
    from nrknet.ops.padding import _weight_grad_gemm

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
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_matches_float32(dtype, one_thread):
    """Under autocast the model runs (training and inference), returns float32 and stays close."""
    torch.manual_seed(3)
    model = NRKNet(width=8)
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
