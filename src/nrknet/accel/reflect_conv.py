"""Reflect-padded convolutions that never copy their input to pad it.

``nn.Conv2d(padding_mode="reflect")`` pads a full copy of its input before
every convolution (and, when training, keeps that copy and builds its
gradient). Here the convolution runs with zero padding on the input itself
and only the thin border strips are corrected; the 3x3 case has its own
backward pass (the zero-padded convolution's input gradient plus border
terms, the weight gradient as nine matrix products).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nrknet.accel.threads import limit_threads


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def reflect_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int = 1,
    padding: int = 1,
) -> torch.Tensor:
    """``conv2d(F.pad(x, (padding,) * 4, mode="reflect"), weight, bias, stride)`` without the padded copy.

    The convolution runs with zero padding on ``x`` itself, then the few border
    rows and columns whose windows reach into the padding are recomputed from
    thin reflect-padded strips and written over. The result equals the padded
    convolution up to rounding; memory and time for a full padded copy of ``x``
    (and, when training, for its gradient) are saved.
    """
    if padding == 0:
        return F.conv2d(x, weight, bias, stride)
    height, width = x.shape[-2:]
    kh, kw = weight.shape[-2:]
    p, s = padding, stride
    if min(height, width) < 2 * (max(kh, kw) + p + s):  # tiny inputs: pad by copying
        return F.conv2d(F.pad(x, (p, p, p, p), mode="reflect"), weight, bias, s)
    out = F.conv2d(x, weight, bias, s, p)
    out_h, out_w = out.shape[-2:]

    def strip_conv(strip: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
        return F.conv2d(F.pad(strip, pad, mode="reflect"), weight, bias, s)

    # Output row i reads input rows [i s - p, i s - p + kh); the strips are thin: one thread.
    with limit_threads():
        top = _ceil_div(p, s)
        bottom = _ceil_div(height + p - kh + 1, s)  # first output row reaching below the input
        left = _ceil_div(p, s)
        right = _ceil_div(width + p - kw + 1, s)
        if top > 0:
            rows = (top - 1) * s - p + kh
            out[..., :top, :] = strip_conv(x[..., :rows, :], (p, p, p, 0))
        if bottom < out_h:
            first = bottom * s - p
            extra = (out_h - 1) * s - p + kh - height
            out[..., bottom:, :] = strip_conv(x[..., first:, :], (p, p, 0, extra))
        if left > 0:
            cols = (left - 1) * s - p + kw
            out[..., :, :left] = strip_conv(x[..., :, :cols], (p, 0, p, p))
        if right < out_w:
            first = right * s - p
            extra = (out_w - 1) * s - p + kw - width
            out[..., :, right:] = strip_conv(x[..., :, first:], (0, extra, p, p))
    return out


def _ring_terms(x: torch.Tensor, stride: int, out_size: tuple[int, int]):
    """The four border terms of a 3x3, padding-1 reflect convolution beyond zero padding.

    Reflect padding equals zero padding plus a ring holding the mirrored
    pixels; each side of the ring meets one row (or column) of the kernel.
    Yields ``(side, values, kernel_index, out_index)``: ``values`` the ring
    row as a (N, C, 1, L) tensor (columns are transposed into rows), already
    padded along its length (by reflection for the top and bottom rows, whose
    ring includes the corners, by zeros for the side columns, which exclude them).
    """
    height, width = x.shape[-2:]
    out_h, out_w = out_size
    s = stride
    # top and bottom ring rows (padded rows -1 and H) span the corners
    yield "top", F.pad(x[:, :, 1:2, :], (1, 1, 0, 0), mode="reflect"), 0, 0
    if (out_h - 1) * s + 1 == height:  # the last window reaches padded row H
        yield "bottom", F.pad(x[:, :, -2:-1, :], (1, 1, 0, 0), mode="reflect"), 2, out_h - 1
    yield "left", F.pad(x[:, :, :, 1:2].transpose(-1, -2), (1, 1, 0, 0)), 0, 0
    if (out_w - 1) * s + 1 == width:
        yield "right", F.pad(x[:, :, :, -2:-1].transpose(-1, -2), (1, 1, 0, 0)), 2, out_w - 1


def _ring_weight(weight: torch.Tensor, side: str, index: int) -> torch.Tensor:
    if side in ("top", "bottom"):
        return weight[:, :, index : index + 1, :]
    return weight[:, :, :, index : index + 1].transpose(-1, -2)


class _ReflectConv2d(torch.autograd.Function):
    """3x3 convolution with reflect padding 1: zero-padded convolution plus border terms.

    The forward pass and the input gradient work on the unpadded tensors (the
    zero-padded convolution and its gradient, plus the four thin border terms);
    only the weight gradient pads, a few images at a time (see
    :func:`_weight_grad_gemm`). Only the input is kept for the backward pass.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, stride):
        ctx.save_for_backward(x, weight)
        ctx.stride = stride
        ctx.has_bias = bias is not None
        return reflect_conv2d(x, weight, bias, stride, 1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        s = ctx.stride
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad = grad.contiguous(memory_format=_memory_format(x))
        grad_x = grad_w = grad_b = None
        if need_x:
            grad_x = torch.ops.aten.convolution_backward(
                grad,
                x,
                weight,
                None,
                [s, s],
                [1, 1],
                [1, 1],
                False,
                [0, 0],
                1,
                [True, False, False],
            )[0]
            with limit_threads():  # thin border terms: many small operations
                _add_ring_input_grads(grad_x, grad, x, weight, s)
        if need_w:
            if s == 1 and x.shape[1] >= 16:
                grad_w = _weight_grad_gemm(x, grad)
            else:  # oneDNN's weight gradient is fastest on NCHW tensors
                with limit_threads():
                    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
                grad_w = torch.ops.aten.convolution_backward(
                    grad.contiguous(),
                    padded.contiguous(),
                    weight,
                    None,
                    [s, s],
                    [0, 0],
                    [1, 1],
                    False,
                    [0, 0],
                    1,
                    [False, True, False],
                )[1]
        if need_b and ctx.has_bias:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None


def _add_ring_input_grads(
    grad_x: torch.Tensor, grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, s: int
) -> None:
    """Add the input gradient of the four border terms to ``grad_x`` (in place)."""
    for side, ring, k, o in _ring_terms(x, s, grad.shape[-2:]):
        if side in ("top", "bottom"):
            g = grad[:, :, o : o + 1, :]
        else:
            g = grad[:, :, :, o : o + 1].transpose(-1, -2)
        g_ring = torch.ops.aten.convolution_backward(
            g.contiguous(),
            ring.contiguous(),
            _ring_weight(weight, side, k).contiguous(),
            None,
            [1, s],
            [0, 0],
            [1, 1],
            False,
            [0, 0],
            1,
            [True, False, False],
        )[0]
        if side == "top":
            grad_x[:, :, 1:2, :] += _fold_reflect_1(g_ring)
        elif side == "bottom":
            grad_x[:, :, -2:-1, :] += _fold_reflect_1(g_ring)
        elif side == "left":
            grad_x[:, :, :, 1:2] += g_ring[..., 1:-1].transpose(-1, -2)
        else:
            grad_x[:, :, :, -2:-1] += g_ring[..., 1:-1].transpose(-1, -2)


def _weight_grad_gemm(
    x: torch.Tensor, grad: torch.Tensor, chunk_bytes: int = 32 * 2**20
) -> torch.Tensor:
    """Weight gradient of a stride-1 3x3 convolution of ``x`` with reflect padding 1.

    With the padded images laid end to end and ``grad`` placed on the same
    grid (zeros in the two extra rows and columns), each kernel tap is one
    matrix product between ``grad`` and a shifted view of the flattened input:
    nine GEMMs, no unfolded copy. Images are taken a few at a time so the
    padded copies stay small.
    """
    n, c, height, width = x.shape
    o = grad.shape[1]
    hp, wp = height + 2, width + 2
    taps = grad.new_zeros(9, o, c)
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    step = max(1, chunk_bytes // max(1, c * hp * wp * x.element_size()))
    for i in range(0, n, step):
        xs, gs = x[i : i + step], grad[i : i + step]
        m = xs.shape[0]
        with limit_threads():
            padded = F.pad(xs, (1, 1, 1, 1), mode="reflect")
            if channels_last:
                wide = gs.new_zeros(m, hp, wp, o)
                wide[:, :height, :width] = gs.permute(0, 2, 3, 1)
            else:
                wide = gs.new_zeros(m, o, hp, wp)
                wide[:, :, :height, :width] = gs
        length = m * hp * wp - (2 * wp + 2)  # the dropped tail lies in the zero rows
        if channels_last:
            flat = padded.permute(0, 2, 3, 1).reshape(m * hp * wp, c)  # (K, C)
            wide = wide.view(m * hp * wp, o)[:length].t()  # (O, K)
            for k in range(9):
                offset = (k // 3) * wp + k % 3
                taps[k].addmm_(wide, flat[offset : offset + length])
        else:
            flat = padded.contiguous().view(m, c, hp * wp)
            wide = wide.view(m, o, hp * wp)
            length = hp * wp - (2 * wp + 2)
            for k in range(9):
                offset = (k // 3) * wp + k % 3
                for j in range(m):
                    taps[k].addmm_(wide[j, :, :length], flat[j, :, offset : offset + length].t())
    return taps.permute(1, 2, 0).reshape(o, c, 3, 3)


def _fold_reflect_1(g: torch.Tensor) -> torch.Tensor:
    """Adjoint of reflect-padding the last dimension by 1 on each side."""
    out = g[..., 1:-1].clone()
    out[..., 1:2] += g[..., 0:1]
    out[..., -2:-1] += g[..., -1:]
    return out


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    return (
        torch.channels_last
        if x.dim() == 4
        and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
        else torch.contiguous_format
    )


def reflect_conv3x3(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride: int = 1
) -> torch.Tensor:
    """Differentiable 3x3 reflect-padded convolution (padding 1) without padded copies."""
    height, width = x.shape[-2:]
    if x.device.type != "cpu" or torch.is_autocast_enabled("cpu"):
        # the custom gradients are tuned for oneDNN on CPU in float32
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), weight, bias, stride)
    if (
        torch.is_grad_enabled()
        and weight.shape[-2:] == (3, 3)
        and min(height, width) >= 2 * (3 + 1 + stride)
        and any(t is not None and t.requires_grad for t in (x, weight, bias))
    ):
        return _ReflectConv2d.apply(x, weight, bias, stride)
    return reflect_conv2d(x, weight, bias, stride, 1)


def reflect_conv(module: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` for a reflect-padded ``nn.Conv2d``, without the padded copy where it applies."""
    stride, padding = module.stride, module.padding
    if (
        module.padding_mode != "reflect"
        or not isinstance(padding, tuple)
        or stride[0] != stride[1]
        or padding[0] != padding[1]
        or module.dilation != (1, 1)
        or module.groups != 1
    ):
        return module(x)
    if padding[0] == 1 and module.kernel_size == (3, 3):
        return reflect_conv3x3(x, module.weight, module.bias, stride[0])
    return reflect_conv2d(x, module.weight, module.bias, stride[0], padding[0])
