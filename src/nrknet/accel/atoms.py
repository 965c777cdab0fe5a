"""Independent learned atoms, accelerated: every level by one FFT of the padded input.

The non-recursive and non-separable atoms of the paper's Table 3 are
``(2j + 1) x (2j + 1)`` kernels, up to 41 x 41 for J = 20. Applied as direct
depthwise convolutions they cost about 11,000 multiply-adds per pixel and
channel for the whole bank, and the CPU convolution for such kernels is slow:
a training step of a width-16 model takes five to six times as long as with
recursive atoms.

Here each level is a product of spectra. The input is reflect-padded once by
the largest radius ``R`` (a smaller atom on that canvas sees the same values
as on its own, as every atom sits centred on the common ``2R + 1`` grid of
``effective_kernels``), transformed once, and multiplied by each atom's
spectrum. A circular convolution of the padded canvas with a ``2R + 1`` kernel
is exact on the ``H x W`` positions that need no wrap, which are exactly the
image's, so no further padding is needed. The levels agree with the plain
ones up to float rounding (about 1e-6 in float32); autograd differentiates
through the transforms.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from nrknet.ops.atoms import IndependentAtoms
from nrknet.ops.padding import reflect_pad

#: the variants computed by FFT; the Gaussian bank (windows up to 21 x 21) keeps its direct form
FFT_VARIANTS = ("non_recursive", "non_separable")


class AcceleratedIndependentAtoms(IndependentAtoms):
    """:class:`IndependentAtoms` whose learned levels come from one FFT of the input (same results).

    Installed by ``accelerate`` for the variants in :data:`FFT_VARIANTS` only (see :func:`covers`).
    """

    @staticmethod
    def covers(atoms: IndependentAtoms) -> bool:
        return atoms.variant in FFT_VARIANTS

    def levels(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        height, width = x.shape[-2:]
        radius = self.max_radius
        canvas = reflect_pad(x, (radius,) * 4)
        size = canvas.shape[-2:]
        # correlation = convolution with the mirrored kernel; its origin at the corner
        kernels = self.effective_kernels()[1:, 0].to(x.dtype).flip(-1, -2)
        spectra = torch.fft.rfft2(kernels, s=size)
        image = torch.fft.rfft2(canvas)
        yield x
        for spectrum in spectra:
            level = torch.fft.irfft2(image * spectrum, s=size)
            yield level[..., 2 * radius : 2 * radius + height, 2 * radius : 2 * radius + width]
