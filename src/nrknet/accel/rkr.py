"""The RKR operator with recursive atoms, accelerated: elementwise levels, recomputed backward.

The levels are computed by the elementwise 3-tap filters of
:mod:`nrknet.accel.taps` in three reused buffers and mixed into the output
as they come (a batched matrix product per level for the 1x1 mixing). The
backward pass rebuilds the levels instead of storing them, so training keeps
no per-level activations. The memory-bound level loop runs on
``num_threads`` intra-op threads (see :mod:`nrknet.accel.threads`).
"""

from __future__ import annotations

import torch

from nrknet.accel.taps import tap_filter, tap_filter_adjoint, tap_filter_taps_grad
from nrknet.accel.threads import MEMORY_BOUND_THREADS, limit_threads
from nrknet.ops.atoms import RecursiveAtoms
from nrknet.ops.rkr import RKRBlur


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


class AcceleratedRKRBlur(RKRBlur):
    """:class:`RKRBlur` over :class:`RecursiveAtoms` through :class:`_RecursiveRKR` (same results).

    Other atom banks run the plain form (``accelerate`` does not install this
    class for them, see :func:`covers`).
    """

    #: intra-op threads of the level loop (not saved in checkpoints)
    num_threads = MEMORY_BOUND_THREADS

    @staticmethod
    def covers(operator: RKRBlur) -> bool:
        """Whether the fused operator computes ``operator``: recursive atoms of this package."""
        return type(operator.atoms) is RecursiveAtoms

    def compute(self, x: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
        if not self.covers(self):
            return super().compute(x, coefficients)
        weight, bias = self.mixing_matrices(), self.bias()
        x, coefficients = x.contiguous(), coefficients.contiguous()
        taps = self.atoms.tap_kernels().to(x.dtype)
        if torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (x, coefficients, taps, weight, bias)
        ):
            return _RecursiveRKR.apply(x, coefficients, taps, weight, bias, self.num_threads)
        with limit_threads(self.num_threads):
            return recursive_rkr_forward(x, coefficients, taps, weight, bias)
