"""The feature U-Net, accelerated: channels-last training with custom gradients, banded inference.

With autograd (training), on CPU: channels-last tensors (oneDNN's native
layout, no reorders around each convolution); reflect-padded convolutions
that never copy their input (:mod:`nrknet.accel.reflect_conv`); transposed
convolutions whose weight gradient runs on NCHW tensors, where oneDNN is
fastest; in-place ReLUs and residual additions, and skip connections that
keep a one-byte ReLU mask.

Without autograd (inference): channels-last tensors, residual blocks updated
in place and computed in bands (:mod:`nrknet.accel.bands`), each transposed
convolution added band by band into its skip connection.

Under autocast the plain U-Net runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nrknet.accel.bands import (
    DEFAULT_BAND_BYTES,
    band_rows,
    stream_blocks_,
    up_relu_add_,
    use_inference_path,
)
from nrknet.accel.reflect_conv import reflect_conv
from nrknet.accel.threads import limit_threads
from nrknet.models.unet import FeatureUNet


class _ReluAdd(torch.autograd.Function):
    """``relu(x) + skip``, keeping a one-byte mask instead of ReLU's float output."""

    @staticmethod
    def forward(ctx, x, skip):
        mask = x > 0
        ctx.save_for_backward(mask)
        return torch.relu(x).add_(skip)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask, grad


def relu_add(x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """``relu(x) + skip`` (the decoder's skip connections)."""
    if torch.is_grad_enabled() and (x.requires_grad or skip.requires_grad):
        return _ReluAdd.apply(x, skip)
    return torch.relu(x).add_(skip)


class _UpConv(torch.autograd.Function):
    """The 4x4 stride-2 transposed convolution on channels-last tensors, for training.

    oneDNN computes the forward pass and the input gradient fastest on
    channels-last tensors but the weight gradient several times faster on
    NCHW ones, so the backward pass converts for that one product.
    """

    @staticmethod
    def forward(ctx, x, weight):
        ctx.save_for_backward(x, weight)
        return F.conv_transpose2d(x, weight, stride=2, padding=1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad
        args = (None, [2, 2], [1, 1], [1, 1], True, [0, 0], 1)
        grad_x = grad_w = None
        if need_x:
            g = grad.contiguous(memory_format=torch.channels_last)
            grad_x = torch.ops.aten.convolution_backward(g, x, weight, *args, [True, False, False])[
                0
            ]
        if need_w:
            with limit_threads():
                g, xc = grad.contiguous(), x.contiguous()
            grad_w = torch.ops.aten.convolution_backward(
                g, xc, weight, *args, [False, True, False]
            )[1]
        return grad_x, grad_w


def up_conv_forward(module: nn.ConvTranspose2d, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` for the U-Net's up-convolutions, through :class:`_UpConv` when training."""
    if (
        torch.is_grad_enabled()
        and x.device.type == "cpu"
        and not torch.is_autocast_enabled("cpu")
        and module.bias is None
        and module.stride == (2, 2)
        and module.padding == (1, 1)
        and x.is_contiguous(memory_format=torch.channels_last)
        and not x.is_contiguous()
    ):
        return _UpConv.apply(x, module.weight)
    return module(x)


def _residual_stage(stage: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """The residual blocks of ``stage`` with copy-free convolutions and in-place updates."""
    for block in stage:
        x = reflect_conv(block.conv2, F.relu(reflect_conv(block.conv1, x), inplace=True)).add_(x)
    return x


class AcceleratedFeatureUNet(FeatureUNet):
    """:class:`FeatureUNet` with the accelerated paths (same parameters and results).

    ``band_bytes`` sets the band size of the inference path (not saved in checkpoints).
    """

    band_bytes = DEFAULT_BAND_BYTES

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled(x.device.type):
            return super().forward(x)
        if use_inference_path(x):
            return self.forward_inference(x)
        if x.device.type == "cpu":  # oneDNN's native layout
            x = x.contiguous(memory_format=torch.channels_last)
        e1 = _residual_stage(self.enc1, F.relu(reflect_conv(self.head, x), inplace=True))
        e2 = _residual_stage(self.enc2, F.relu(reflect_conv(self.down1, e1), inplace=True))
        e3 = _residual_stage(self.enc3, F.relu(reflect_conv(self.down2, e2), inplace=True))
        b = _residual_stage(
            self.bottleneck, F.relu(reflect_conv(self.bottleneck_conv, e3), inplace=True)
        )
        d = relu_add(up_conv_forward(self.up1, _residual_stage(self.dec1, b.add_(e3))), e2)
        d = relu_add(up_conv_forward(self.up2, _residual_stage(self.dec2, d)), e1)
        return _residual_stage(self.dec3, d)

    def _stage_(self, stage: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        return stream_blocks_(x, list(stage), band_rows(x, self.band_bytes))

    @torch.no_grad()
    def forward_inference(self, x: torch.Tensor) -> torch.Tensor:
        """The forward pass without autograd: channels-last, in place and in bands.

        Returns channels-last features; same values as the plain U-Net up to rounding.
        """
        x = x.contiguous(memory_format=torch.channels_last)
        e1 = self._stage_(self.enc1, F.relu_(reflect_conv(self.head, x)))
        e2 = self._stage_(self.enc2, F.relu_(reflect_conv(self.down1, e1)))
        e3 = self._stage_(self.enc3, F.relu_(reflect_conv(self.down2, e2)))
        # e3 + bottleneck(e3) in place, then the first decoder stage
        rows = band_rows(e3, self.band_bytes)
        stream_blocks_(e3, list(self.bottleneck), rows, head=self.bottleneck_conv.weight)
        self._stage_(self.dec1, e3)
        up_relu_add_(e2, e3, self.up1.weight, max(1, band_rows(e2, self.band_bytes) // 2))
        del e3
        self._stage_(self.dec2, e2)
        up_relu_add_(e1, e2, self.up2.weight, max(1, band_rows(e1, self.band_bytes) // 2))
        del e2
        return self._stage_(self.dec3, e1)
