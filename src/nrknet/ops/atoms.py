"""Atom banks of the recursive kernel representation (RKR) and its ablations.

Every bank exposes the same interface:

* ``num_levels`` J: atoms besides the identity, so ``J + 1`` coefficient maps;
* ``levels(x)``: yields ``S_0 x = x, S_1 x, ..., S_J x`` one level at a time
  (no stack is materialised, so callers can accumulate and free as they go);
* ``effective_kernels()``: the 2-D kernels ``(J + 1, channels, K, K)`` that the
  levels apply, centred on a common ``K = 2 * max_radius + 1`` grid
  (``channels`` is 3 for per-channel atoms, 1 for atoms shared by the colours).

Variants (paper Table 3): ``recursive`` (RKR, the default), ``non_recursive``
(independent separable atoms), ``non_separable`` (independent full atoms) and
``gaussian`` (the fixed Gaussian bank of GKMNet).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from nrknet.ops.padding import reflect_pad
from nrknet.utils.checks import choice

ATOM_VARIANTS = ("recursive", "non_recursive", "non_separable", "gaussian")


def symmetric_tap_kernel(logits: torch.Tensor) -> torch.Tensor:
    """Positive, l1-normalised symmetric 3-tap kernel ``[p, q, p]`` (paper eq. 4).

    ``logits[..., 0]`` is the side value and ``logits[..., 1]`` the centre, as in
    the reference implementation; a softmax over ``(side, centre, side)`` keeps
    the taps positive and summing to one, so every atom preserves brightness.
    """
    side, centre = logits[..., 0], logits[..., 1]
    return torch.softmax(torch.stack((side, centre, side), dim=-1), dim=-1)


def free_tap_kernel(logits: torch.Tensor) -> torch.Tensor:
    """Positive, l1-normalised free 3-tap kernel (softmax of three numbers)."""
    return torch.softmax(logits, dim=-1)


def _depthwise(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Per-channel convolution of ``x`` (N, C, H, W), already padded, with ``kernel`` (C or 1, kh, kw)."""
    channels = x.shape[1]
    weight = kernel.unsqueeze(1)
    if weight.shape[0] != channels:
        weight = weight.expand(channels, -1, -1, -1)
    return F.conv2d(x, weight, groups=channels)


def recursive_level(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """One step of the RKR recursion ``A_j T = k_j^T (k_j (A_{j-1} T))`` (paper eqs. 1-5).

    ``taps`` (C or 1, 3) is the 3-tap kernel ``k_j`` of the level, applied per
    channel as a correlation, horizontally then vertically, each pass with
    reflect padding 1, as the reference implementation does.
    """
    channels = x.shape[1]
    taps = taps.to(x.dtype).expand(channels, 3)
    horizontal = _depthwise(F.pad(x, (1, 1, 0, 0), mode="reflect"), taps.reshape(channels, 1, 3))
    return _depthwise(F.pad(horizontal, (0, 0, 1, 1), mode="reflect"), taps.reshape(channels, 3, 1))


class RecursiveAtoms(nn.Module):
    """RKR atoms (paper eq. 1-5): ``A_j = k_j * k_j^T * A_{j-1}``, ``A_0`` the identity.

    Level ``j`` filters the previous level horizontally, then vertically, with
    one positive 3-tap kernel ``k_j`` and reflect padding 1, so J levels reach
    a ``(2J + 1) x (2J + 1)`` support with 2 (symmetric) or 3 (free) numbers a
    level. ``per_channel=True`` (the reference) learns one kernel per colour
    channel; ``False`` shares it (the paper's Table 3 count of 60 parameters).
    """

    def __init__(
        self,
        num_levels: int = 21,
        channels: int = 3,
        per_channel: bool = True,
        symmetric: bool = True,
    ) -> None:
        super().__init__()
        self.num_levels = num_levels
        self.atom_channels = channels if per_channel else 1
        self.symmetric = symmetric
        taps = 2 if symmetric else 3
        # Shape (J * channels, 1, 1, taps), index level * channels + channel, as the reference stores it.
        self.logits = nn.Parameter(torch.rand(num_levels * self.atom_channels, 1, 1, taps))

    @property
    def max_radius(self) -> int:
        return self.num_levels

    def tap_kernels(self) -> torch.Tensor:
        """The 1-D kernels ``(J, atom_channels, 3)``."""
        logits = self.logits.reshape(self.num_levels, self.atom_channels, -1)
        return symmetric_tap_kernel(logits) if self.symmetric else free_tap_kernel(logits)

    def levels(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        taps = self.tap_kernels()
        yield x
        for j in range(self.num_levels):
            x = recursive_level(x, taps[j])
            yield x

    def effective_kernels(self) -> torch.Tensor:
        """The levels as 2-D correlation kernels: the recursion's response to a unit impulse.

        The impulse sits in a canvas one pixel wider than the largest support on
        each side, so no reflected value ever reaches the support; the response
        of a correlation is its kernel mirrored, hence the flip.
        """
        radius = self.max_radius
        impulse = self.logits.new_zeros(1, self.atom_channels, 2 * radius + 3, 2 * radius + 3)
        impulse[..., radius + 1, radius + 1] = 1.0
        responses = torch.cat(list(self.levels(impulse)), dim=0)[..., 1:-1, 1:-1]
        return responses.flip(-1, -2)


def gaussian_bank_radii(num_levels: int) -> list[int]:
    """Window radii of the GKMNet bank: 3x3, 3x3, 5x5, 5x5, ... capped at 21x21."""
    return [min(1 + (i - 1) // 2, 10) for i in range(1, num_levels + 1)]


def gaussian_bank(num_levels: int = 21, sigma_step: float = 0.25) -> list[torch.Tensor]:
    """Fixed isotropic Gaussians ``sigma = 0.25 i`` (GKMNet), each normalised to sum 1."""
    kernels = []
    for i, radius in enumerate(gaussian_bank_radii(num_levels), start=1):
        sigma = sigma_step * i
        grid = torch.arange(-radius, radius + 1, dtype=torch.float64)
        g = torch.exp(-(grid**2) / (2 * sigma**2))
        kernel = torch.outer(g, g)
        kernels.append((kernel / kernel.sum()).float())
    return kernels


class IndependentAtoms(nn.Module):
    """Atoms learned (or fixed) independently per level, without recursion (paper Table 3).

    * ``non_recursive``: ``A_j = a_j a_j^T`` with a positive, normalised
      ``a_j`` of length ``2j + 1`` (one vector for both directions);
    * ``non_separable``: a full positive, normalised ``(2j+1) x (2j+1)`` atom;
    * ``gaussian``: the fixed GKMNet Gaussian bank (buffers, not learned).

    The atoms are shared by the three colour channels, as the paper counts them.
    """

    def __init__(self, variant: str, num_levels: int = 21) -> None:
        super().__init__()
        # a bank given as its own _target_ enters here, past NRKNetConfig
        self.variant = choice("atoms.variant", variant, ATOM_VARIANTS[1:])
        self.num_levels = num_levels
        self.atom_channels = 1
        if variant == "gaussian":
            self.radii = gaussian_bank_radii(num_levels)
            for j, kernel in enumerate(gaussian_bank(num_levels)):
                self.register_buffer(f"gaussian_{j}", kernel, persistent=False)
            self.logits = nn.ParameterList()
        else:
            self.radii = list(range(1, num_levels + 1))
            shape = (
                (lambda r: (2 * r + 1,))
                if variant == "non_recursive"
                else (lambda r: (2 * r + 1, 2 * r + 1))
            )
            self.logits = nn.ParameterList(nn.Parameter(torch.rand(shape(r))) for r in self.radii)

    @property
    def max_radius(self) -> int:
        return max(self.radii)

    def atom(self, j: int) -> torch.Tensor:
        """Atom of level ``j + 1`` as a 2-D kernel."""
        if self.variant == "gaussian":
            return getattr(self, f"gaussian_{j}")
        if self.variant == "non_recursive":
            a = torch.softmax(self.logits[j], dim=0)
            return torch.outer(a, a)
        return torch.softmax(self.logits[j].flatten(), dim=0).view_as(self.logits[j])

    def levels(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        yield x
        for j, radius in enumerate(self.radii):
            kernel = self.atom(j).to(x.dtype)
            yield _depthwise(reflect_pad(x, (radius,) * 4), kernel.unsqueeze(0))

    def effective_kernels(self) -> torch.Tensor:
        size = 2 * self.max_radius + 1
        ref = self.atom(0)
        out = ref.new_zeros(self.num_levels + 1, 1, size, size)
        out[0, 0, self.max_radius, self.max_radius] = 1.0
        for j, radius in enumerate(self.radii):
            lo = self.max_radius - radius
            out[j + 1, 0, lo : lo + 2 * radius + 1, lo : lo + 2 * radius + 1] = self.atom(j)
        return out


def build_atoms(
    variant: str = "recursive",
    num_levels: int = 21,
    per_channel: bool = True,
    symmetric: bool = True,
) -> nn.Module:
    """Atom bank by name (``recursive``, ``non_recursive``, ``non_separable``, ``gaussian``)."""
    if variant == "recursive":
        return RecursiveAtoms(num_levels, per_channel=per_channel, symmetric=symmetric)
    return IndependentAtoms(variant, num_levels)


def atom_support(num_levels: int) -> int:
    """Side of the largest recursive atom: ``2J + 1`` (43 for the reference's J = 21)."""
    return 2 * num_levels + 1


__all__ = [
    "ATOM_VARIANTS",
    "IndependentAtoms",
    "RecursiveAtoms",
    "atom_support",
    "build_atoms",
    "free_tap_kernel",
    "gaussian_bank",
    "gaussian_bank_radii",
    "recursive_level",
    "symmetric_tap_kernel",
]
