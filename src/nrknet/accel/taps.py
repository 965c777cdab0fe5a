"""3-tap filters along one axis of a recursive atom level, computed elementwise.

A per-channel 3-tap filter of a 3-channel image is too thin for the
convolution backends (oneDNN pads 3 channels to a block of 8 and reorders
every call), so the accelerated RKR operator uses three fused multiply-adds
on shifted views instead. The filter is a correlation with reflect padding 1,
as ``conv2d(reflect_pad(x), k)``:
``y[i] = a x[i-1] + b x[i] + c x[i+1]`` with ``x[-1] = x[1]`` and ``x[n] = x[n-2]``.
The transpose (the input gradient) and the gradient with respect to the taps
are written out too, for the operator's own backward pass.
"""

from __future__ import annotations

import torch


def _split_taps(taps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``taps`` (C or 1, 3) as three (C or 1, 1, 1) tensors that broadcast over (N, C, H, W)."""
    t = taps.unsqueeze(-1).unsqueeze(-1)
    return t[:, 0], t[:, 1], t[:, 2]


def _check_length(n: int, dim: int) -> None:
    if n < 2:
        raise ValueError(
            f"a reflect-padded 3-tap filter needs at least 2 pixels along dim {dim}, got {n}"
        )


def _three_taps(
    x: torch.Tensor, taps: torch.Tensor, dim: int, out: torch.Tensor | None, transpose: bool
) -> torch.Tensor:
    """The filter (``transpose=False``) or its transpose, as five multiply-adds on views."""
    n = x.shape[dim]
    _check_length(n, dim)
    a, b, c = _split_taps(taps)
    out = torch.mul(x, b, out=out) if out is not None else torch.mul(x, b)
    before, after = (c, a) if transpose else (a, c)  # weights of x[i-1] and x[i+1] in out[i]
    out.narrow(dim, 1, n - 1).addcmul_(x.narrow(dim, 0, n - 1), before)
    out.narrow(dim, 0, n - 1).addcmul_(x.narrow(dim, 1, n - 1), after)
    # the reflected borders x[-1] = x[1] and x[n] = x[n-2]; the transpose swaps source and target
    for (target, source), tap in (((0, 1), a), ((n - 1, n - 2), c)):
        if transpose:
            target, source = source, target
        out.narrow(dim, target, 1).addcmul_(x.narrow(dim, source, 1), tap)
    return out


def tap_filter(
    x: torch.Tensor, taps: torch.Tensor, dim: int, out: torch.Tensor | None = None
) -> torch.Tensor:
    """3-tap correlation of ``x`` (N, C, H, W) along ``dim`` with reflect padding 1.

    ``taps`` is (C or 1, 3). Equals ``conv2d(reflect_pad(x), taps)`` up to rounding.
    ``out`` (same shape, not overlapping ``x``) receives the result when given.
    Not differentiable by itself: the accelerated RKR operator has its own backward pass.
    """
    return _three_taps(x, taps, dim, out, transpose=False)


def tap_filter_adjoint(
    g: torch.Tensor, taps: torch.Tensor, dim: int, out: torch.Tensor | None = None
) -> torch.Tensor:
    """The transpose of :func:`tap_filter` (its input gradient), reflect borders included."""
    return _three_taps(g, taps, dim, out, transpose=True)


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
