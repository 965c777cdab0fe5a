"""The RKR blur operator (paper eq. 11) and its explicit spatially varying counterpart."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nrknet.ops.padding import reflect_pad

MIXING_MODES = ("conv1x1", "sum")


class RKRBlur(nn.Module):
    """Spatially varying defocus blur ``D(T)`` built from an atom bank and coefficient maps.

    Paper eq. (11): ``D(T)(x) = sum_j Gamma_j(x) (A_j T)(x)``. The reference
    implementation replaces the plain sum by a learned 1x1 convolution over the
    ``3 (J + 1)`` coefficient-weighted channels (``mixing="conv1x1"``, with bias);
    ``mixing="sum"`` is the paper's form.

    The weighted stack is accumulated level by level, so the ``3 (J + 1)``
    channel stack is never materialised.
    """

    def __init__(self, atoms: nn.Module, channels: int = 3, mixing: str = "conv1x1") -> None:
        super().__init__()
        if mixing not in MIXING_MODES:
            raise ValueError(
                f"unknown mixing {mixing!r}; expected one of {', '.join(MIXING_MODES)}"
            )
        self.atoms = atoms
        self.channels = channels
        self.mixing = mixing
        self.num_maps = atoms.num_levels + 1
        if mixing == "conv1x1":
            self.mixer = nn.Conv2d(channels * self.num_maps, channels, kernel_size=1, bias=True)
        else:
            self.mixer = None

    def forward(self, x: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
        """Apply ``D`` to ``x`` (N, 3, H, W) with coefficient maps (N, J + 1, H, W)."""
        if coefficients.shape[1] != self.num_maps:
            raise ValueError(
                f"expected {self.num_maps} coefficient maps, got {coefficients.shape[1]}"
            )
        out = None
        c = self.channels
        for level, stacked in enumerate(self.atoms.levels(x)):
            weighted = stacked * coefficients[:, level : level + 1]
            if self.mixer is not None:
                weight = self.mixer.weight[:, level * c : (level + 1) * c]
                weighted = F.conv2d(weighted, weight)
            out = weighted if out is None else out + weighted
        if self.mixer is not None:
            out = out + self.mixer.bias.view(1, -1, 1, 1)
        return out

    def channel_weights(self) -> torch.Tensor:
        """Mixing weights as (out_channels, J + 1, in_channels); identity per level for ``sum``."""
        if self.mixer is None:
            eye = torch.eye(self.channels, device=self.atoms_device())
            return eye.unsqueeze(1).expand(-1, self.num_maps, -1)
        w = self.mixer.weight[:, :, 0, 0]
        return w.view(self.channels, self.num_maps, self.channels)

    def atoms_device(self) -> torch.device:
        for tensor in list(self.atoms.parameters()) + list(self.atoms.buffers()):
            return tensor.device
        return torch.device("cpu")

    def bias(self) -> torch.Tensor | None:
        return None if self.mixer is None else self.mixer.bias


def explicit_spatially_varying_blur(
    x: torch.Tensor,
    operator: RKRBlur,
    coefficients: torch.Tensor,
    band_rows: int | None = None,
) -> torch.Tensor:
    """The RKR operator as an explicit spatially varying convolution.

    Composes, for every pixel, the full ``K x K`` kernels
    ``K_{o,c}(x) = sum_j W[o, j, c] Gamma_j(x) A_j^c`` (K = 43 for J = 21) from
    the atoms and coefficients and applies them with ``unfold`` to the
    reflect-padded input. It is the direct definition of eq. (11), used to
    verify :class:`RKRBlur` and as the speed baseline; ``band_rows`` processes
    the image in horizontal bands so large images fit in memory.
    """
    n, c, height, width = x.shape
    kernels = operator.atoms.effective_kernels().to(x.dtype)  # (M, Ca, K, K)
    num_maps, _, size, _ = kernels.shape
    radius = size // 2
    kernels = kernels.expand(num_maps, c, size, size).reshape(num_maps, c, size * size)
    mix = operator.channel_weights().to(x.dtype)  # (O, M, C)
    # Per (output, input channel): the M atom kernels weighted by the mixing matrix.
    basis = torch.einsum("omc,mck->ocmk", mix, kernels)  # (O, C, M, K*K)
    padded = reflect_pad(x, (radius,) * 4)
    band_rows = band_rows or height
    rows = []
    for top in range(0, height, band_rows):
        bottom = min(top + band_rows, height)
        band = padded[:, :, top : bottom + 2 * radius]
        patches = F.unfold(band, size).view(n, c, size * size, bottom - top, width)
        gamma = coefficients[:, :, top:bottom]  # (N, M, h, W)
        # Per-pixel kernels: (N, O, C, K*K, h, W) would be huge; contract the maps first.
        pixel_kernels = torch.einsum("ocmk,nmhw->nockhw", basis, gamma)
        rows.append(torch.einsum("nockhw,nckhw->nohw", pixel_kernels, patches))
    out = torch.cat(rows, dim=2)
    bias = operator.bias()
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1).to(x.dtype)
    return out
