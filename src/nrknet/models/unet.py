"""The feature U-Net shared by all scales (facts section 1, item 2).

Two execution paths compute the same function (checked against the direct
reference-style form in ``tests/test_speed_paths.py``):

* with autograd (training): channels-last tensors on CPU (oneDNN's native
  layout, no reorders around each convolution); reflect-padded convolutions
  that never copy their input to pad it, with their own backward pass (the
  zero-padded convolution's input gradient plus thin border terms, the weight
  gradient as nine matrix products); transposed convolutions whose weight
  gradient runs on NCHW tensors, where oneDNN is fastest; in-place ReLUs and
  residual additions, and skip connections that keep a one-byte ReLU mask;
* without autograd (inference): channels-last tensors, residual blocks updated
  in place and computed in horizontal bands (ReLU and residual addition fused
  into oneDNN's convolutions where available), each transposed convolution
  added band by band into its skip connection, memory-bound copies on one
  thread, so a full-resolution stage holds one or two feature maps at a time
  instead of four or five."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nrknet.ops.padding import reflect_conv2d, reflect_conv3x3
from nrknet.ops.threads import limit_threads

#: Target size of one band of activations in the inference path (bytes).
DEFAULT_BAND_BYTES = 4 * 2**20


class ReflectConv2d(nn.Conv2d):
    """``nn.Conv2d`` with ``padding_mode="reflect"`` that does not copy its input to pad it.

    Same parameters, names and result as the reference's reflect-padded
    convolution (see :func:`nrknet.ops.padding.reflect_conv2d`).
    """

    def _conv_forward(
        self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        stride, padding = self.stride, self.padding
        if (
            self.padding_mode == "reflect"
            and isinstance(padding, tuple)
            and stride[0] == stride[1]
            and padding[0] == padding[1]
            and self.dilation == (1, 1)
            and self.groups == 1
        ):
            if padding[0] == 1 and self.kernel_size == (3, 3):
                return reflect_conv3x3(input, weight, bias, stride[0])
            return reflect_conv2d(input, weight, bias, stride[0], padding[0])
        return super()._conv_forward(input, weight, bias)


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """Bias-free 3x3 convolution with reflect padding, as every U-Net conv of the reference."""
    return ReflectConv2d(
        in_channels, out_channels, 3, stride=stride, padding=1, bias=False, padding_mode="reflect"
    )


def up_conv(in_channels: int, out_channels: int) -> nn.ConvTranspose2d:
    """Bias-free 4x4 stride-2 transposed convolution doubling the resolution."""
    return nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1, bias=False)


def use_inference_path(x: torch.Tensor, training: bool = False) -> bool:
    """Whether the banded inference path applies: no autograd, eval mode, no autocast
    (the path writes into preallocated float32 buffers)."""
    return not (torch.is_grad_enabled() or training or torch.is_autocast_enabled(x.device.type))


def band_rows(x: torch.Tensor, band_bytes: int) -> int:
    """Rows of ``x`` (N, C, H, W) in a band of about ``band_bytes`` (at least 2).

    On accelerators, where each band costs kernel launches, bands are 16 times larger.
    """
    n, c, _, w = x.shape
    if x.device.type != "cpu":
        band_bytes *= 16
    return max(2, band_bytes // max(1, n * c * w * x.element_size()))


_FUSED: bool | None = None  # whether oneDNN's fused convolution ops work here


def _fused_available() -> bool:
    """oneDNN convolutions with fused ReLU / addition (the ops PyTorch's compiler uses on CPU)."""
    global _FUSED
    if _FUSED is None:
        try:
            x = torch.ones(1, 2, 3, 3).contiguous(memory_format=torch.channels_last)
            w = torch.ones(2, 2, 3, 3)
            y = torch.ops.mkldnn._convolution_pointwise.binary(
                x,
                torch.ones(1, 2, 1, 1),
                w,
                None,
                [0, 0],
                [1, 1],
                [1, 1],
                1,
                "add",
                None,
                "relu",
                [],
                "",
            )
            t = torch.ops.mkldnn._convolution_transpose_pointwise(
                x, w, None, [1, 1], [0, 0], [2, 2], [1, 1], 1, "relu", [], ""
            )
            _FUSED = bool(y.flatten()[0] == 19.0 and t.shape == (1, 2, 5, 5))
        except (AttributeError, RuntimeError):
            _FUSED = False
    return _FUSED


def _use_fused(x: torch.Tensor, other: torch.Tensor | None = None) -> bool:
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
        and x.is_contiguous(memory_format=torch.channels_last)
        and (other is None or other.is_contiguous(memory_format=torch.channels_last))
        and _fused_available()
    )


def conv3x3_band(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    top: bool,
    bottom: bool,
    relu: bool = False,
    add: torch.Tensor | None = None,
) -> torch.Tensor:
    """3x3 convolution of a band of rows: reflect padding left and right, and at the top
    or bottom only where the band touches the image border (``top``/``bottom``).

    Returns ``conv + add`` (when given), then ReLU'd if ``relu``, fused into the
    convolution where oneDNN allows. The result has two rows fewer than ``x``
    without border padding. Inference only.
    """
    with limit_threads():
        x = F.pad(x, (1, 1, int(top), int(bottom)), mode="reflect")
    if _use_fused(x, add):
        unary = "relu" if relu else None
        if add is None:
            return torch.ops.mkldnn._convolution_pointwise(
                x, weight, bias, [0, 0], [1, 1], [1, 1], 1, unary or "none", [], ""
            )
        return torch.ops.mkldnn._convolution_pointwise.binary(
            x, add, weight, bias, [0, 0], [1, 1], [1, 1], 1, "add", None, unary, [], ""
        )
    y = F.conv2d(x, weight, bias)
    with limit_threads():
        if add is not None:
            y.add_(add)
        return F.relu_(y) if relu else y


def _band_residual(
    z: torch.Tensor, rows: tuple[int, int], block: ResBlock, height: int
) -> tuple[torch.Tensor, tuple[int, int]]:
    """One residual block on the band of rows ``rows = (a, b)`` held in ``z``.

    Returns the block's output on the rows it can compute exactly: all of
    them at the image borders (reflect padding), one fewer per convolution
    on each inner side.
    """
    a, b = rows
    t = conv3x3_band(z, block.conv1.weight, None, a == 0, b == height, relu=True)
    ta, tb = a + (a > 0), b - (b < height)
    ua, ub = ta + (ta > 0), tb - (tb < height)
    y = conv3x3_band(
        t, block.conv2.weight, None, ta == 0, tb == height, add=z[:, :, ua - a : ub - a]
    )
    return y, (ua, ub)


def stream_blocks_(
    x: torch.Tensor,
    blocks: Sequence[ResBlock],
    rows: int,
    head: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run a chain of residual blocks over ``x`` in place, band by band (inference only).

    Without ``head``: ``x <- blocks(x)``. With ``head`` (a 3x3 weight):
    ``x <- x + blocks(relu(conv(x, head)))``, the bottleneck of the U-Net.
    Each band of output rows is computed from ``x`` with the halo the chain
    needs and written back once the next band has read its input, so only
    band-sized temporaries exist besides ``x``.
    """
    height = x.shape[-2]
    halo = 2 * len(blocks) + (head is not None)
    rows = max(rows, halo, 1)
    pending: tuple[int, int, torch.Tensor] | None = None

    def write(p0: int, p1: int, value: torch.Tensor) -> None:
        with limit_threads():
            if head is None:
                x[:, :, p0:p1].copy_(value)
            else:
                x[:, :, p0:p1].add_(value)

    for r0 in range(0, height, rows):
        r1 = min(r0 + rows, height)
        a, b = max(r0 - halo, 0), min(r1 + halo, height)
        z = x[:, :, a:b]
        if head is not None:
            z = conv3x3_band(z, head, None, a == 0, b == height, relu=True)
            a, b = a + (a > 0), b - (b < height)
        for block in blocks:
            z, (a, b) = _band_residual(z, (a, b), block, height)
        out = z[:, :, r0 - a : r1 - a]
        del z
        if pending is not None:  # the previous band's rows are no longer read
            write(*pending)
        pending = (r0, r1, out)
    if pending is not None:
        write(*pending)
    return x


def up_relu_add_(
    skip: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, rows: int
) -> torch.Tensor:
    """``skip += relu(conv_transpose2d(x, weight, stride=2, padding=1))`` in place, band by band.

    Output rows ``[2a, 2b)`` depend on input rows ``[a - 1, b + 1)`` only.
    """
    height = x.shape[-2]
    for a in range(0, height, rows):
        b = min(a + rows, height)
        a_in, b_in = max(a - 1, 0), min(b + 1, height)
        band = x[:, :, a_in:b_in]
        if _use_fused(band):
            y = torch.ops.mkldnn._convolution_transpose_pointwise(
                band, weight, None, [1, 1], [0, 0], [2, 2], [1, 1], 1, "relu", [], ""
            )
        else:
            y = F.relu(F.conv_transpose2d(band, weight, stride=2, padding=1))
        lo = 2 * (a - a_in)
        with limit_threads():
            skip[:, :, 2 * a : 2 * b].add_(y[:, :, lo : lo + 2 * (b - a)])
    return skip


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


class ResBlock(nn.Module):
    """``x + conv(relu(conv(x)))`` at constant width."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(channels, channels)
        self.conv2 = conv3x3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.conv1(x), inplace=True)).add_(x)

    def forward_(self, x: torch.Tensor, band_bytes: int = DEFAULT_BAND_BYTES) -> torch.Tensor:
        """Inference: update ``x`` in place, in bands of about ``band_bytes``."""
        return stream_blocks_(x, [self], band_rows(x, band_bytes))


def res_stage(channels: int, blocks: int) -> nn.Sequential:
    return nn.Sequential(*(ResBlock(channels) for _ in range(blocks)))


class FeatureUNet(nn.Module):
    """Three-level encoder-decoder producing ``width`` feature channels at input resolution.

    ``extra_blocks`` adds residual blocks to the two full-resolution stages:
    the deeper U-Net that replaces the ConvLSTM in the paper's Table 4
    ablation (one extra block each keeps the size within 0.2 % at width 64).

    Without autograd the forward pass takes the in-place, banded path (see the
    module docstring); ``band_bytes`` sets the band size (not saved in checkpoints).
    """

    def __init__(self, width: int = 64, in_channels: int = 3, extra_blocks: int = 0) -> None:
        super().__init__()
        c = width
        self.head = conv3x3(in_channels, c)
        self.enc1 = res_stage(c, 1 + extra_blocks)
        self.down1 = conv3x3(c, 2 * c, stride=2)
        self.enc2 = res_stage(2 * c, 1)
        self.down2 = conv3x3(2 * c, 4 * c, stride=2)
        self.enc3 = res_stage(4 * c, 1)
        self.bottleneck_conv = conv3x3(4 * c, 4 * c)
        self.bottleneck = res_stage(4 * c, 1)
        self.dec1 = res_stage(4 * c, 1)
        self.up1 = up_conv(4 * c, 2 * c)
        self.dec2 = res_stage(2 * c, 1)
        self.up2 = up_conv(2 * c, c)
        self.dec3 = res_stage(c, 1 + extra_blocks)
        self.band_bytes = DEFAULT_BAND_BYTES

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if use_inference_path(x):
            return self.forward_inference(x)
        if x.device.type == "cpu":  # oneDNN's native layout
            x = x.contiguous(memory_format=torch.channels_last)
        e1 = self.enc1(F.relu(self.head(x), inplace=True))
        e2 = self.enc2(F.relu(self.down1(e1), inplace=True))
        e3 = self.enc3(F.relu(self.down2(e2), inplace=True))
        b = self.bottleneck(F.relu(self.bottleneck_conv(e3), inplace=True))
        d = relu_add(up_conv_forward(self.up1, self.dec1(b.add_(e3))), e2)
        return self.dec3(relu_add(up_conv_forward(self.up2, self.dec2(d)), e1))

    def _stage_(self, stage: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        return stream_blocks_(x, list(stage), band_rows(x, self.band_bytes))

    @torch.no_grad()
    def forward_inference(self, x: torch.Tensor) -> torch.Tensor:
        """The forward pass without autograd: channels-last, in place and in bands.

        Returns channels-last features; same values as the autograd path up to rounding.
        """
        x = x.contiguous(memory_format=torch.channels_last)
        e1 = self._stage_(self.enc1, F.relu_(self.head(x)))
        e2 = self._stage_(self.enc2, F.relu_(self.down1(e1)))
        e3 = self._stage_(self.enc3, F.relu_(self.down2(e2)))
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
