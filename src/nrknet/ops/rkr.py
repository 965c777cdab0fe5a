"""The RKR blur operator (paper eq. 11) and its explicit spatially varying counterpart."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from nrknet.ops.padding import reflect_pad

MIXING_MODES = ("conv1x1", "sum")


def rkr_blur(
    levels: Iterable[torch.Tensor],
    coefficients: torch.Tensor,
    mixing: torch.Tensor | None,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    """The RKR blur ``D(T) = sum_j W_j (Gamma_j * A_j T) + b`` (paper eq. 11).

    ``levels`` yields ``A_0 T = T, A_1 T, ..., A_J T`` (N, C, H, W), ``coefficients``
    holds the maps ``Gamma_j`` (N, J + 1, H, W). ``mixing`` (O, J + 1, C) holds the
    reference's learned 1x1 convolution over the ``C (J + 1)`` weighted channels,
    split by level; ``None`` is the paper's plain sum (``W_j`` the identity).
    """
    out = None
    for j, level in enumerate(levels):
        weighted = coefficients[:, j : j + 1] * level
        if mixing is not None:
            weighted = torch.einsum("oc,nchw->nohw", mixing[:, j], weighted)
        out = weighted if out is None else out + weighted
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def identity_plus(x: torch.Tensor, r_of_x: torch.Tensor) -> torch.Tensor:
    """``D(T) = T + R(T)``: a blur operator learned as its difference ``R`` from the identity.

    Not in the paper. The Neumann series ``D^-1 = sum_k (I - D)^k`` (eq. 8) is
    best conditioned where ``D`` is near ``I``; starting there (``R = 0``) makes
    every term ``(I - D)^k Y = (-R)^k Y`` vanish, so the untrained network returns
    its input and learns the blur as a correction, without a residual gate.
    Since ``A_0`` is the identity, eq. (11) can express ``I + R`` wherever
    ``Gamma_0`` is constant.
    """
    return x + r_of_x


class RKRBlur(nn.Module):
    """Spatially varying defocus blur ``D(T)`` built from an atom bank and coefficient maps.

    Paper eq. (11): ``D(T)(x) = sum_j Gamma_j(x) (A_j T)(x)``. The reference
    implementation replaces the plain sum by a learned 1x1 convolution over the
    ``3 (J + 1)`` coefficient-weighted channels (``mixing="conv1x1"``, with bias);
    ``mixing="sum"`` is the paper's form. The weighted levels are summed as the
    atom bank yields them, so the ``3 (J + 1)`` channel stack is never built.

    ``residual=True`` learns the operator as its difference from the identity,
    ``D = I + R`` with ``R`` of the form above (see :func:`identity_plus`); the
    mixing of ``R`` starts at zero, so ``D`` starts at ``I``.
    """

    def __init__(
        self, atoms: nn.Module, channels: int = 3, mixing: str = "conv1x1", residual: bool = False
    ) -> None:
        super().__init__()
        self.atoms = atoms
        self.channels = channels
        self.mixing = mixing
        self.residual = residual
        self.num_maps = atoms.num_levels + 1
        if mixing == "conv1x1":
            self.mixer = nn.Conv2d(channels * self.num_maps, channels, kernel_size=1, bias=True)
            if residual:
                self.zero_mixing()
        else:
            self.mixer = None

    def zero_mixing(self) -> None:
        """Set the 1x1 mixing to zero (``R = 0``): the start of a residual operator."""
        nn.init.zeros_(self.mixer.weight)
        nn.init.zeros_(self.mixer.bias)

    def forward(self, x: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
        """Apply ``D`` to ``x`` (N, 3, H, W) with coefficient maps (N, J + 1, H, W)."""
        device_type = x.device.type
        # the meta device (used to count operations) knows no autocast
        if device_type != "meta" and torch.is_autocast_enabled(device_type):
            # Mixed precision: the operator sums J + 1 filtered levels, so it runs in float32.
            with torch.autocast(device_type, enabled=False):
                return self.operator(x.float(), coefficients.float())
        return self.operator(x, coefficients)

    def operator(self, x: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
        """``D(x)``: eq. (11), plus the identity for a residual operator."""
        out = self.compute(x, coefficients)
        return identity_plus(x, out) if self.residual else out

    def compute(self, x: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
        """Eq. (11) on tensors of one dtype (see :func:`rkr_blur`)."""
        mixing = self.mixing_matrices()
        return rkr_blur(
            self.atoms.levels(x),
            coefficients,
            None if mixing is None else mixing.to(x.dtype),
            None if self.mixer is None else self.mixer.bias.to(x.dtype),
        )

    def mixing_matrices(self) -> torch.Tensor | None:
        """The 1x1 mixing weights as (out_channels, J + 1, in_channels); ``None`` for ``sum``."""
        if self.mixer is None:
            return None
        return self.mixer.weight.view(self.channels, self.num_maps, self.channels)

    def channel_weights(self) -> torch.Tensor:
        """Mixing weights as (out_channels, J + 1, in_channels); identity per level for ``sum``."""
        if self.mixer is None:
            eye = torch.eye(self.channels, device=self.atoms_device())
            return eye.unsqueeze(1).expand(-1, self.num_maps, -1)
        return self.mixing_matrices()

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
    return identity_plus(x, out) if operator.residual else out
