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
    """Per-channel convolution of ``x`` (N, C, H, W) with ``kernel`` (C or 1, kh, kw), already padded."""
    channels = x.shape[1]
    weight = kernel.unsqueeze(1)
    if weight.shape[0] != channels:
        weight = weight.expand(channels, -1, -1, -1)
    return F.conv2d(x, weight, groups=channels)


# --- 3-tap filters along one axis, computed elementwise -------------------------------------
#
# A per-channel 3-tap filter of a 3-channel image is too thin for the convolution
# backends (oneDNN pads 3 channels to a block of 8 and reorders every call), so the
# recursive atoms use three fused multiply-adds on shifted views instead. The
# filter is a correlation with reflect padding 1, as ``conv2d(reflect_pad(x), k)``:
#     y[i] = a x[i-1] + b x[i] + c x[i+1],   x[-1] = x[1],  x[n] = x[n-2].


def _split_taps(taps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``taps`` (C or 1, 3) as three (C or 1, 1, 1) tensors that broadcast over (N, C, H, W)."""
    t = taps.unsqueeze(-1).unsqueeze(-1)
    return t[:, 0], t[:, 1], t[:, 2]


def _check_length(n: int, dim: int) -> None:
    if n < 2:
        raise ValueError(
            f"a reflect-padded 3-tap filter needs at least 2 pixels along dim {dim}, got {n}"
        )


def tap_filter(
    x: torch.Tensor, taps: torch.Tensor, dim: int, out: torch.Tensor | None = None
) -> torch.Tensor:
    """3-tap correlation of ``x`` (N, C, H, W) along ``dim`` with reflect padding 1.

    ``taps`` is (C or 1, 3). Equals ``conv2d(reflect_pad(x), taps)`` up to rounding.
    ``out`` (same shape, not overlapping ``x``) receives the result when given.
    Not differentiable by itself (see :func:`filter_taps` for the autograd version).
    """
    n = x.shape[dim]
    _check_length(n, dim)
    a, b, c = _split_taps(taps)
    out = torch.mul(x, b, out=out) if out is not None else torch.mul(x, b)
    out.narrow(dim, 1, n - 1).addcmul_(x.narrow(dim, 0, n - 1), a)
    out.narrow(dim, 0, n - 1).addcmul_(x.narrow(dim, 1, n - 1), c)
    out.narrow(dim, 0, 1).addcmul_(x.narrow(dim, 1, 1), a)  # x[-1] = x[1]
    out.narrow(dim, n - 1, 1).addcmul_(x.narrow(dim, n - 2, 1), c)  # x[n] = x[n-2]
    return out


def tap_filter_adjoint(
    g: torch.Tensor, taps: torch.Tensor, dim: int, out: torch.Tensor | None = None
) -> torch.Tensor:
    """The transpose of :func:`tap_filter` (its input gradient), reflect borders included."""
    n = g.shape[dim]
    _check_length(n, dim)
    a, b, c = _split_taps(taps)
    out = torch.mul(g, b, out=out) if out is not None else torch.mul(g, b)
    out.narrow(dim, 0, n - 1).addcmul_(g.narrow(dim, 1, n - 1), a)
    out.narrow(dim, 1, n - 1).addcmul_(g.narrow(dim, 0, n - 1), c)
    out.narrow(dim, 1, 1).addcmul_(g.narrow(dim, 0, 1), a)
    out.narrow(dim, n - 2, 1).addcmul_(g.narrow(dim, n - 1, 1), c)
    return out


def tap_filter_taps_grad(g: torch.Tensor, x: torch.Tensor, dim: int, channels: int) -> torch.Tensor:
    """Gradient of ``sum(g * tap_filter(x, taps, dim))`` with respect to ``taps`` (channels, 3)."""
    n = x.shape[dim]
    dims = (0, 2, 3)

    def dot(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return (u * v).sum(dims)

    side_a = dot(g.narrow(dim, 1, n - 1), x.narrow(dim, 0, n - 1)) + dot(
        g.narrow(dim, 0, 1), x.narrow(dim, 1, 1)
    )
    centre = dot(g, x)
    side_c = dot(g.narrow(dim, 0, n - 1), x.narrow(dim, 1, n - 1)) + dot(
        g.narrow(dim, n - 1, 1), x.narrow(dim, n - 2, 1)
    )
    grad = torch.stack((side_a, centre, side_c), dim=-1)  # (C, 3)
    return grad.sum(0, keepdim=True) if channels == 1 else grad


class _TapFilter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, taps: torch.Tensor, dim: int) -> torch.Tensor:
        ctx.save_for_backward(x, taps)
        ctx.dim = dim
        return tap_filter(x, taps, dim)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, taps = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = tap_filter_adjoint(grad, taps, ctx.dim) if ctx.needs_input_grad[0] else None
        grad_taps = (
            tap_filter_taps_grad(grad, x, ctx.dim, taps.shape[0])
            if ctx.needs_input_grad[1]
            else None
        )
        return grad_x, grad_taps, None


def filter_taps(x: torch.Tensor, taps: torch.Tensor, dim: int) -> torch.Tensor:
    """Differentiable :func:`tap_filter` (``x`` and ``taps`` both get gradients)."""
    if torch.is_grad_enabled() and (x.requires_grad or taps.requires_grad):
        return _TapFilter.apply(x.contiguous(), taps, dim)
    return tap_filter(x.contiguous(), taps, dim)


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
        if num_levels < 1:
            raise ValueError(f"num_levels must be >= 1, got {num_levels}")
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
            x = self.apply_level(x, taps[j])
            yield x

    @staticmethod
    def apply_level(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
        """One recursion step: horizontal then vertical 3-tap filter ``taps`` (C or 1, 3), reflect padding 1."""
        return filter_taps(filter_taps(x, taps, -1), taps, -2)

    def effective_kernels(self) -> torch.Tensor:
        size = 2 * self.max_radius + 1
        taps = self.tap_kernels()
        delta = taps.new_zeros(1, self.atom_channels, size, size)
        delta[..., self.max_radius, self.max_radius] = 1.0
        kernels = [delta]
        current = delta
        # conv2d correlates; composing correlations is a true convolution, hence the flip.
        taps = taps.flip(-1)
        for j in range(self.num_levels):
            # Zero padding: the support never reaches the canvas border.
            current = F.conv2d(
                current,
                taps[j].reshape(-1, 1, 1, 3).expand(self.atom_channels, -1, -1, -1),
                padding=(0, 1),
                groups=self.atom_channels,
            )
            current = F.conv2d(
                current,
                taps[j].reshape(-1, 1, 3, 1).expand(self.atom_channels, -1, -1, -1),
                padding=(1, 0),
                groups=self.atom_channels,
            )
            kernels.append(current)
        return torch.cat(kernels, dim=0)


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
        if variant not in ("non_recursive", "non_separable", "gaussian"):
            raise ValueError(f"unknown independent atom variant {variant!r}")
        if num_levels < 1:
            raise ValueError(f"num_levels must be >= 1, got {num_levels}")
        self.variant = variant
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
    if variant in ATOM_VARIANTS:
        return IndependentAtoms(variant, num_levels)
    raise ValueError(
        f"unknown atom variant {variant!r}; expected one of {', '.join(ATOM_VARIANTS)}"
    )


def atom_support(num_levels: int) -> int:
    """Side of the largest recursive atom: ``2J + 1`` (43 for the reference's J = 21)."""
    return 2 * num_levels + 1


__all__ = [
    "ATOM_VARIANTS",
    "IndependentAtoms",
    "RecursiveAtoms",
    "atom_support",
    "build_atoms",
    "filter_taps",
    "free_tap_kernel",
    "gaussian_bank",
    "gaussian_bank_radii",
    "symmetric_tap_kernel",
    "tap_filter",
    "tap_filter_adjoint",
    "tap_filter_taps_grad",
]
