"""A plain residual U-Net: the baseline NRKNet is compared against at equal training time.

No blur model at all: ``X = Y + U(Y)``, where ``U`` is an encoder-decoder of
3x3 convolutions and ReLUs (two per level), strided convolutions down,
transposed convolutions up and additive skips. Its last convolution starts at
zero, so the untrained network is the identity and short runs improve from the
first steps, as NRKNet's residual gate does.

It trains with the same module and loss as NRKNet: its single output is the
final image, so the multi-scale terms reduce to the output's MSE and FDR and
there is no reblur term. The width 28 and three levels (0.47 M
parameters) are the small U-Net that is known to learn real deblurring from the
synthetic renderer in CPU minutes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nrknet.models.nrknet import NRKNetOutput
from nrknet.utils.checks import number


def conv_block(channels: int) -> nn.Sequential:
    """Two 3x3 convolutions with ReLUs, at constant width."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(channels, channels, 3, padding=1),
        nn.ReLU(inplace=True),
    )


class UNetBaseline(nn.Module):
    """Residual U-Net with ``levels`` resolutions, ``width * 2**i`` channels at level ``i``.

    ``forward(blurry)`` returns the deblurred image; ``forward(blurry, sharp)``
    returns an :class:`NRKNetOutput` with that image as its only scale, so that
    :class:`nrknet.training.losses.NRKNetLoss` and the training module apply unchanged.
    Any input size works: the image is reflect-padded to a multiple of
    ``2**(levels - 1)`` and cropped back.
    """

    gate = None  # no residual gate: the zero-initialised output convolution plays its part

    def __init__(self, width: int = 28, levels: int = 3) -> None:
        super().__init__()
        self.width = number("width", width, minimum=1, integer=True)
        self.levels = number("levels", levels, minimum=1, integer=True)
        channels = [self.width * 2**i for i in range(self.levels)]
        self.head = nn.Conv2d(3, channels[0], 3, padding=1)
        self.encoders = nn.ModuleList(conv_block(c) for c in channels)
        self.downs = nn.ModuleList(
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1) for c in channels[:-1]
        )
        self.ups = nn.ModuleList(nn.ConvTranspose2d(2 * c, c, 2, stride=2) for c in channels[:-1])
        self.decoders = nn.ModuleList(conv_block(c) for c in channels[:-1])
        self.tail = nn.Conv2d(channels[0], 3, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    @property
    def config(self) -> dict:
        """Constructor arguments, with the class, so that checkpoints rebuild this model."""
        return {"_target_": f"{type(self).__module__}.{type(self).__qualname__}",
                "width": self.width, "levels": self.levels}  # fmt: skip

    @property
    def size_multiple(self) -> int:
        return 2 ** (self.levels - 1)

    def residual(self, y: torch.Tensor) -> torch.Tensor:
        """``U(Y)``: the correction added to the blurry image."""
        x = F.relu(self.head(y))
        skips = []
        for i, encoder in enumerate(self.encoders):
            x = encoder(x)
            if i < len(self.downs):
                skips.append(x)
                x = F.relu(self.downs[i](x))
        for up, decoder, skip in zip(
            reversed(self.ups), reversed(self.decoders), reversed(skips), strict=True
        ):
            x = decoder(F.relu(up(x)) + skip)
        return self.tail(x)

    def forward(self, blurry: torch.Tensor, sharp: torch.Tensor | None = None):
        height, width = blurry.shape[-2:]
        m = self.size_multiple
        pad_h, pad_w = -height % m, -width % m
        y = F.pad(blurry, (0, pad_w, 0, pad_h), mode="reflect") if pad_h or pad_w else blurry
        x = (y + self.residual(y))[..., :height, :width]
        if sharp is None:
            return x
        return NRKNetOutput(scales=[x], reblurred=[])
