"""What the network believes about the blur: coefficient maps and the effective blur radius.

NRKNet models the blur at every pixel as a combination of the atom stack,
``D(T)(x) = sum_j Gamma_j(x) (A_j T)(x)`` (mixed by a 1x1 convolution in the
reference). The *effective blur radius* at a pixel is the
coefficient-weighted spread of that stack at full resolution::

    r(x) = sqrt( sum_j w_j(x) m_j ),   w_j(x) = g_j |Gamma_j(x)| / sum_k g_k |Gamma_k(x)|

where ``m_j = sum_u A_j(u) |u|^2`` is the radial second moment (in pixels
squared) of the effective atom kernel ``A_j``, averaged over the colour
channels (``m_0 = 0`` for the identity), and ``g_j`` is the gain of level
``j`` in the mixing convolution for a grey input,
``g_j = mean_o |sum_c W[o, j, c]|`` (``g_j = 1`` for the paper's plain sum).
``r`` is thus a root-mean-square radius in pixels: for a Gaussian blur of
standard deviation ``s`` it is ``sqrt(2) s``, for a uniform disk of radius
``R`` it is ``R / sqrt(2)``. It shows what the network believes, in the
units of its own atoms; it is not a calibrated depth.

The coefficients are captured at the full-resolution scale with a forward
hook on ``model.coefficients`` (:func:`capture_coefficients`), so the map
costs nothing beyond the deblurring pass and works with tiled inference.
Drawing and saving these maps is :mod:`nrknet.analysis.figures`'s business.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch

__all__ = [
    "atom_second_moments",
    "blur_radius_from_coefficients",
    "blur_radius_function",
    "capture_coefficients",
    "defocus_map",
    "effective_blur_radius",
    "full_scale_coefficients",
    "level_gains",
    "representative_levels",
]


def representative_levels(num_maps: int) -> list[int]:
    """Levels 0, J/4, J/2, 3J/4 and J of ``num_maps = J + 1`` coefficient maps (duplicates dropped)."""
    last = num_maps - 1
    return sorted({0, last // 4, last // 2, (3 * last) // 4, last})


@contextlib.contextmanager
def capture_coefficients(model: torch.nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Record the coefficient maps of the last (full-resolution) scale of a forward pass.

    Inside the ``with`` block every call of ``model.coefficients`` stores its
    maps in the yielded dict under ``"gamma"``; scales run coarsest first, so
    after ``model(x)`` it holds Gamma (N, J + 1, H, W) at full resolution
    (of the padded input: pass inputs whose sides are multiples of
    ``model.size_multiple`` to get exactly the input's size).
    """
    captured: dict[str, torch.Tensor] = {}

    def hook(module, inputs, output):
        captured["gamma"] = output[0]

    handle = model.coefficients.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def full_scale_coefficients(model: torch.nn.Module, blurry: torch.Tensor) -> torch.Tensor:
    """Coefficient maps Gamma (N, J + 1, H, W) of ``blurry`` (N, 3, H, W) at full resolution."""
    from nrknet.ops.padding import pad_to_multiple

    height, width = blurry.shape[-2:]
    padded, _ = pad_to_multiple(blurry, int(getattr(model, "size_multiple", 16)))
    with torch.inference_mode(), capture_coefficients(model) as captured:
        model(padded)
    return captured["gamma"][..., :height, :width]


def atom_second_moments(atoms: torch.nn.Module) -> torch.Tensor:
    """Radial second moment ``m_j = sum_u A_j(u) |u|^2`` (pixels^2) of each level, (J + 1,).

    Computed from ``effective_kernels()`` normalised to unit mass and
    averaged over the colour channels; ``m_0 = 0`` for the identity.
    """
    with torch.no_grad():
        kernels = atoms.effective_kernels().detach().double().cpu()  # (M, C, K, K)
    size = kernels.shape[-1]
    grid = torch.arange(size, dtype=torch.float64) - size // 2
    radial = grid[:, None] ** 2 + grid[None, :] ** 2
    mass = kernels.sum(dim=(-2, -1)).clamp_min(1e-12)
    moments = (kernels * radial).sum(dim=(-2, -1)) / mass
    return moments.mean(dim=1).float()


def level_gains(blur: torch.nn.Module) -> torch.Tensor:
    """Gain ``g_j = mean_o |sum_c W[o, j, c]|`` of each level for a grey input, (J + 1,).

    All ones for the plain sum (``mixing="sum"``).
    """
    with torch.no_grad():
        weights = blur.channel_weights().detach().float().cpu()  # (O, M, C)
    return weights.sum(dim=2).abs().mean(dim=0)


def blur_radius_from_coefficients(
    gamma: torch.Tensor,
    moments: torch.Tensor,
    gains: torch.Tensor | None = None,
    identity_weight: float = 0.0,
) -> torch.Tensor:
    """Effective blur radius ``sqrt(sum_j w_j m_j)`` (N, 1, H, W) from Gamma (N, J + 1, H, W).

    ``w_j`` are ``gains_j |Gamma_j|`` normalised over ``j`` and over
    ``identity_weight``, the weight of an identity outside the maps (1 for an
    operator ``D = I + R``); a pixel whose coefficients all vanish gets radius 0.
    """
    gamma = gamma.float().abs()
    moments = moments.to(gamma.device, torch.float32)
    weights = (
        gamma if gains is None else gamma * gains.to(gamma.device, torch.float32).view(1, -1, 1, 1)
    )
    total = weights.sum(dim=1, keepdim=True) + identity_weight
    spread = torch.einsum("nmhw,m->nhw", weights, moments).unsqueeze(1)
    return torch.sqrt((spread / total.clamp_min(1e-12)).clamp_min(0))


def blur_radius_function(blur: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """:func:`effective_blur_radius` for one ``RKRBlur`` operator, its moments and gains computed
    once (for the many windows of a tiled image)."""
    moments, gains = atom_second_moments(blur.atoms), level_gains(blur)
    identity_weight = 1.0 if blur.residual else 0.0
    return lambda gamma: blur_radius_from_coefficients(gamma, moments, gains, identity_weight)


def effective_blur_radius(gamma: torch.Tensor, blur: torch.nn.Module) -> torch.Tensor:
    """Effective blur radius (N, 1, H, W) of coefficient maps ``gamma`` for an ``RKRBlur`` operator."""
    return blur_radius_function(blur)(gamma)


def defocus_map(model: torch.nn.Module, blurry: torch.Tensor) -> torch.Tensor:
    """Per-pixel effective blur radius (N, 1, H, W), in pixels, of ``blurry`` (N, 3, H, W).

    Runs the whole image through the network once; for large images use
    tiled inference (``nrknet-predict --defocus-map``).
    """
    gamma = full_scale_coefficients(model, blurry)
    return effective_blur_radius(gamma, model.blur)
