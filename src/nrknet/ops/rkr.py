"""The RKR blur operator (paper eq. 11) and its explicit spatially varying counterpart."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nrknet.ops.atoms import RecursiveAtoms, tap_filter, tap_filter_adjoint, tap_filter_taps_grad
from nrknet.ops.padding import reflect_pad
from nrknet.ops.threads import MEMORY_BOUND_THREADS, limit_threads

MIXING_MODES = ("conv1x1", "sum")


def _mix_level(
    acc: torch.Tensor | None,
    level: torch.Tensor,
    gamma: torch.Tensor,
    weight: torch.Tensor | None,
    scratch: torch.Tensor | None = None,
) -> torch.Tensor:
    """``acc + W (gamma * level)`` with ``W`` (O, C) over channels (``None``: identity).

    In place on ``acc`` when given; ``scratch`` (like ``level``) avoids one allocation.
    """
    if weight is None:
        if acc is None:
            return level * gamma
        return acc.addcmul_(level, gamma)
    n, c, height, width = level.shape
    weighted = torch.mul(level, gamma, out=scratch) if scratch is not None else level * gamma
    w = weight.unsqueeze(0).expand(n, -1, -1)
    if acc is None:
        return torch.bmm(w, weighted.view(n, c, height * width)).view(n, -1, height, width)
    acc.view(n, -1, height * width).baddbmm_(w, weighted.view(n, c, height * width))
    return acc


def recursive_rkr_forward(
    x: torch.Tensor,
    gamma: torch.Tensor,
    taps: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    """``sum_j W_j (Gamma_j * S_j x) + b`` for recursive atoms, level by level in three buffers.

    ``x`` (N, C, H, W) and ``gamma`` (N, J + 1, H, W) contiguous, ``taps`` (J, C or 1, 3)
    the 3-tap kernel of each level, ``weight`` (O, J + 1, C) the mixing matrices
    (``None`` for the plain sum), ``bias`` (O,) or ``None``. No autograd.
    """
    levels = taps.shape[0]
    scratch = torch.empty_like(x) if weight is not None else None
    horizontal = torch.empty_like(x)
    current = x
    acc = _mix_level(None, x, gamma[:, :1], None if weight is None else weight[:, 0], scratch)
    for j in range(levels):
        tap_filter(current, taps[j], -1, out=horizontal)
        if current is x:
            current = torch.empty_like(x)
        tap_filter(horizontal, taps[j], -2, out=current)
        _mix_level(
            acc,
            current,
            gamma[:, j + 1 : j + 2],
            None if weight is None else weight[:, j + 1],
            scratch,
        )
    if bias is not None:
        acc.add_(bias.view(1, -1, 1, 1))
    return acc


class _RecursiveRKR(torch.autograd.Function):
    """The RKR operator with recursive atoms; the backward pass recomputes the levels.

    Only the input, the coefficients and the small parameters are kept for the
    backward pass (the level stack is rebuilt there, level by level), so
    training stores no per-level activations.
    """

    @staticmethod
    def forward(ctx, x, gamma, taps, weight, bias, threads):
        ctx.save_for_backward(x, gamma, taps, weight, bias)
        ctx.threads = threads
        with limit_threads(threads):
            return recursive_rkr_forward(x, gamma, taps, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        with limit_threads(ctx.threads):
            return _RecursiveRKR._backward(ctx, grad_out)

    @staticmethod
    def _backward(ctx, grad_out):
        x, gamma, taps, weight, bias = ctx.saved_tensors
        need_x, need_gamma, need_taps, need_weight, need_bias = ctx.needs_input_grad[:5]
        grad_out = grad_out.contiguous()
        n, c, height, width = x.shape
        num_levels = taps.shape[0]
        levels = [x]
        for j in range(num_levels):
            levels.append(tap_filter(tap_filter(levels[-1], taps[j], -1), taps[j], -2))
        go = grad_out.view(n, -1, height * width)
        grad_gamma = torch.empty_like(gamma) if need_gamma else None
        grad_weight = torch.zeros_like(weight) if need_weight else None
        grad_taps = torch.zeros_like(taps) if need_taps else None
        recurse = need_x or need_taps
        g = None  # gradient with respect to level j, summed over the levels above it
        for j in reversed(range(num_levels + 1)):
            level = levels[j]
            coeff = gamma[:, j : j + 1]
            if weight is None:
                back = grad_out
            else:  # W_j^T grad_out, (N, C, H, W)
                w_t = weight[:, j].t().unsqueeze(0).expand(n, -1, -1)
                back = torch.bmm(w_t, go).view(n, c, height, width)
            if need_gamma:
                grad_gamma[:, j : j + 1] = (back * level).sum(dim=1, keepdim=True)
            if need_weight:
                weighted = (level * coeff).view(n, c, height * width)
                grad_weight[:, j] = torch.bmm(go, weighted.transpose(1, 2)).sum(0)
            if recurse:
                g = back * coeff if g is None else g.addcmul_(back, coeff)
                if j > 0:  # through level j = V_j H_j of level j - 1
                    below = levels[j - 1]
                    tj = taps[j - 1]
                    if need_taps:
                        horizontal = tap_filter(below, tj, -1)
                        grad_taps[j - 1] += tap_filter_taps_grad(g, horizontal, -2, tj.shape[0])
                        del horizontal
                    g = tap_filter_adjoint(g, tj, -2)
                    if need_taps:
                        grad_taps[j - 1] += tap_filter_taps_grad(g, below, -1, tj.shape[0])
                    g = tap_filter_adjoint(g, tj, -1)
            levels[j] = None
        grad_bias = grad_out.sum((0, 2, 3)) if need_bias else None
        grad_x = g if need_x else None
        return grad_x, grad_gamma, grad_taps, grad_weight, grad_bias, None


class RKRBlur(nn.Module):
    """Spatially varying defocus blur ``D(T)`` built from an atom bank and coefficient maps.

    Paper eq. (11): ``D(T)(x) = sum_j Gamma_j(x) (A_j T)(x)``. The reference
    implementation replaces the plain sum by a learned 1x1 convolution over the
    ``3 (J + 1)`` coefficient-weighted channels (``mixing="conv1x1"``, with bias);
    ``mixing="sum"`` is the paper's form.

    The weighted stack is accumulated level by level, so the ``3 (J + 1)``
    channel stack is never materialised. With recursive atoms the levels are
    computed by elementwise 3-tap filters in three reused buffers, and the
    backward pass rebuilds them instead of storing them.
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
        # threads for the level loop (memory-bound, see nrknet.ops.threads); not saved
        self.num_threads = MEMORY_BOUND_THREADS
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
        device_type = x.device.type
        if torch.is_autocast_enabled(device_type):
            # Mixed precision: the operator sums 22 filtered levels, so it runs in float32
            # (its cost is memory traffic, not arithmetic, so half precision would gain little).
            with torch.autocast(device_type, enabled=False):
                return self._blur(x.float(), coefficients.float())
        return self._blur(x, coefficients)

    def _blur(self, x: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
        weight = self.mixing_matrices()
        bias = None if self.mixer is None else self.mixer.bias
        x = x.contiguous()
        coefficients = coefficients.contiguous()
        if isinstance(self.atoms, RecursiveAtoms):
            taps = self.atoms.tap_kernels().to(x.dtype)
            if torch.is_grad_enabled() and any(
                t is not None and t.requires_grad for t in (x, coefficients, taps, weight, bias)
            ):
                return _RecursiveRKR.apply(x, coefficients, taps, weight, bias, self.num_threads)
            with limit_threads(self.num_threads):
                return recursive_rkr_forward(x, coefficients, taps, weight, bias)
        out = None
        for level, stacked in enumerate(self.atoms.levels(x)):
            w = None if weight is None else weight[:, level]
            out = _mix_level(out, stacked, coefficients[:, level : level + 1], w)
        if bias is not None:
            out = out + bias.view(1, -1, 1, 1)
        return out

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
