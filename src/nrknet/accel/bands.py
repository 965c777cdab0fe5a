"""Inference in horizontal bands: feature maps updated in place, one band of rows at a time.

Without autograd nothing needs to be kept, so a residual stage can overwrite
its input band by band (each band read with the halo of rows its
convolutions need) and a transposed convolution can be added straight into
its skip connection. A full-resolution stage then holds one or two feature
maps at a time instead of four or five.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nrknet.accel.onednn import conv_relu_add, up_conv_relu
from nrknet.accel.threads import limit_threads

#: Target size of one band of activations (bytes).
DEFAULT_BAND_BYTES = 4 * 2**20


def use_inference_path(x: torch.Tensor, training: bool = False) -> bool:
    """Whether the banded path applies: no autograd, eval mode, no autocast
    (the path writes into preallocated buffers of the input's dtype)."""
    return not (torch.is_grad_enabled() or training or torch.is_autocast_enabled(x.device.type))


def band_rows(x: torch.Tensor, band_bytes: int) -> int:
    """Rows of ``x`` (N, C, H, W) in a band of about ``band_bytes`` (at least 2).

    On accelerators, where each band costs kernel launches, bands are 16 times larger.
    """
    n, c, _, w = x.shape
    if x.device.type != "cpu":
        band_bytes *= 16
    return max(2, band_bytes // max(1, n * c * w * x.element_size()))


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

    Returns ``conv + add`` (when given), then ReLU'd if ``relu``. The result has
    two rows fewer than ``x`` without border padding.
    """
    with limit_threads():
        x = F.pad(x, (1, 1, int(top), int(bottom)), mode="reflect")
    return conv_relu_add(x, weight, bias, relu=relu, add=add)


def _band_residual(
    z: torch.Tensor, rows: tuple[int, int], block: nn.Module, height: int
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
    blocks: Sequence[nn.Module],
    rows: int,
    head: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run a chain of residual blocks over ``x`` in place, band by band.

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
        y = up_conv_relu(x[:, :, a_in:b_in], weight)
        lo = 2 * (a - a_in)
        with limit_threads():
            skip[:, :, 2 * a : 2 * b].add_(y[:, :, lo : lo + 2 * (b - a)])
    return skip
