"""NRKNet: a truncated Neumann series of an RKR blur operator, predicted at several scales.

The network of Y. Quan, X. Wu and H. Ji, "Neumann Network with Recursive
Kernels for Single Image Defocus Deblurring", CVPR 2023. Its authors published
a reference implementation at https://github.com/csZcWu/NRKNet; by default
this model computes the same function with the same weights (converted by
``nrknet-convert``).

That agreement is checked against ``tests/fixtures/nrknet_reference_parity_w8.pt``:
the reference model built at base width 8, with its weights drawn from a
fixed seed and BatchNorm running statistics set away from the identity, run
in eval mode by the reference code itself on a small random batch. The file
keeps the reference's state dict, the inputs and the outputs it computed
(inference output, training outputs per scale, reblurred sharp images), all
as BGR tensors, since the reference reads images with OpenCV and never
converts them.

This module is the paper's computation written plainly; :mod:`nrknet.accel`
swaps in faster implementations of the same functions where they pay.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nrknet.models.coefficients import ConvLSTMCoefficientHead, PlainCoefficientHead
from nrknet.models.components import build_component, checked_atoms, checked_head, import_path
from nrknet.models.config import NRKNetConfig
from nrknet.models.unet import FeatureUNet
from nrknet.ops.atoms import build_atoms
from nrknet.ops.padding import pad_to_multiple, reflect_pad
from nrknet.ops.rkr import RKRBlur


@dataclass
class NRKNetOutput:
    """What one training call returns.

    ``scales``: the running Neumann sums per scale, coarsest first, then the
    fused output (``num_scales + 1`` tensors; quarter, half, full, X by default).
    ``reblurred``: ``D_t(X_t)``, the sharp image blurred by each scale's
    operator, coarsest first (``num_scales`` tensors).
    """

    scales: list[torch.Tensor]
    reblurred: list[torch.Tensor]

    @property
    def output(self) -> torch.Tensor:
        return self.scales[-1]


def downsample_nearest(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Nearest-neighbour downsampling by an integer factor (the reference's input pyramid)."""
    return x if factor == 1 else x[..., ::factor, ::factor]


def upsample_bilinear(x: torch.Tensor, factor: int) -> torch.Tensor:
    return (
        x
        if factor == 1
        else F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    )


def neumann_terms(y: torch.Tensor, blur, steps: int) -> list[torch.Tensor]:
    """Terms ``(I - D)^k Y`` for ``k = 1..steps`` of the Neumann series (paper eq. 8).

    ``D^{-1} Y = sum_k (I - D)^k Y``; each term is one more application of
    ``T <- T - D(T)`` to the previous one.
    """
    terms = []
    t = y
    for _ in range(steps):
        t = t - blur(t)
        terms.append(t)
    return terms


def full_expansion(y: torch.Tensor, terms: list[torch.Tensor]) -> torch.Tensor:
    """Truncated Neumann series at one scale: ``Y + sum_k (I - D)^k Y`` (paper eq. 9)."""
    out = y
    for t in terms:
        out = out + t
    return out


def cross_scale_fusion(y: torch.Tensor, last_terms: list[torch.Tensor]) -> torch.Tensor:
    """Cross-scale fusion (paper eq. 10): order k of the series comes from the scale 2^(k-1) coarser.

    ``X = Y + T^(1)_full + up2(T^(2)_half) + up4(T^(3)_quarter)``, ``last_terms``
    given finest first, each term upsampled bilinearly to full resolution.
    """
    out = y
    for s, t in enumerate(last_terms):
        out = out + upsample_bilinear(t, 2**s)
    return out


def residual_gate(y: torch.Tensor, x: torch.Tensor, gate: torch.Tensor | None) -> torch.Tensor:
    """``Y + g (X - Y)``: the output residual scaled by the learnable gate ``g`` (``None``: ``X``)."""
    return x if gate is None else y + gate * (x - y)


class NRKNet(nn.Module):
    """Neumann network with recursive kernels (Quan, Wu, Ji, CVPR 2023).

    Built from an :class:`~nrknet.models.config.NRKNetConfig` or from its
    settings as keywords (``NRKNet(width=16, atoms="gaussian")``); the
    defaults reproduce the reference implementation (6,094,107 parameters).
    The settings cover the paper's ablations: the atoms (Table 3), J, the
    scales and fusion (eq. 9 or 10), the ConvLSTM head (Table 4), the mixing
    (eq. 11), and two ways to start at the identity for short runs
    (``residual_gate``, ``blur_residual``). ``model.config`` is what a
    checkpoint records.
    """

    def __init__(self, config: NRKNetConfig | None = None, **settings: Any) -> None:
        super().__init__()
        config = NRKNetConfig(**settings) if config is None else replace(config, **settings)
        self.num_scales = config.num_scales
        self.fusion = config.fusion
        self.num_maps = config.num_levels + 1
        # U-Net features -> coefficient maps gamma (ConvLSTM across scales, eq. 11)
        # Without the ConvLSTM, a deeper U-Net keeps the size similar (Table 4).
        self.unet = FeatureUNet(
            config.width, config.in_channels, extra_blocks=0 if config.recurrent else 1
        )
        self.coefficients = _coefficient_head(config, self.unet)
        # the RKR blur operator D: atoms mixed by the coefficient maps (eq. 5-7)
        self.blur = RKRBlur(
            _atom_bank(config),
            channels=config.in_channels,
            mixing=config.mixing,
            residual=config.blur_residual,
        )
        self.gate = nn.Parameter(torch.zeros(())) if config.residual_gate else None
        self.config = config.as_dict()
        if type(self) is not NRKNet:
            # a subclass is rebuilt as itself; arguments of its own are its to add to the config
            self.config["_target_"] = import_path("model", type(self))
        if config.init == "xavier":
            self._xavier_init()
            if config.blur_residual:
                self.blur.zero_mixing()

    def _xavier_init(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    @property
    def atoms(self) -> nn.Module:
        return self.blur.atoms

    @property
    def size_multiple(self) -> int:
        """Height and width must be multiples of this (padded internally otherwise)."""
        return 4 * 2 ** (self.num_scales - 1)

    def neumann_steps(self, scale: int) -> int:
        """Neumann steps at ``scale`` (0 = full resolution)."""
        return self.num_scales if self.fusion == "full_expansion" else scale + 1

    def _run(self, blurry: torch.Tensor, sharp: torch.Tensor | None) -> NRKNetOutput | torch.Tensor:
        state = None
        running_sums: list[torch.Tensor] = []
        reblurred: list[torch.Tensor] = []
        last_terms: list[torch.Tensor] = []
        full_sum = None
        for scale in reversed(range(self.num_scales)):
            factor = 2**scale
            y = downsample_nearest(blurry, factor)
            features = self.unet(y)
            if scale < self.num_scales - 1:  # carried from the coarser scale, upsampled when used
                state = self.coefficients.next_scale_state(state)
            gamma, state = self.coefficients(features, state)
            del features

            def blur(t: torch.Tensor, gamma: torch.Tensor = gamma) -> torch.Tensor:
                return self.blur(t, gamma)

            terms = neumann_terms(y, blur, self.neumann_steps(scale))
            last_terms.insert(0, terms[-1])
            needs_sum = scale == 0 and self.fusion == "full_expansion"
            if sharp is not None or needs_sum:
                scale_sum = full_expansion(y, terms)
                full_sum = scale_sum if needs_sum else full_sum
                if sharp is not None:
                    running_sums.append(scale_sum)
                    reblurred.append(blur(downsample_nearest(sharp, factor)))
            del terms, gamma
        if self.fusion == "cross_scale":
            output = cross_scale_fusion(blurry, last_terms)
        else:
            output = full_sum
        if sharp is None:
            return residual_gate(blurry, output, self.gate)
        scales = [
            residual_gate(downsample_nearest(blurry, 2 ** (self.num_scales - 1 - i)), s, self.gate)
            for i, s in enumerate(running_sums)
        ]
        return NRKNetOutput(
            scales=[*scales, residual_gate(blurry, output, self.gate)], reblurred=reblurred
        )

    def forward(self, blurry: torch.Tensor, sharp: torch.Tensor | None = None):
        """Deblur ``blurry`` (N, 3, H, W), RGB in [0, 1], any H and W.

        Without ``sharp``: returns the deblurred image, same size as the input.
        With ``sharp`` (the ground truth): returns :class:`NRKNetOutput` with the
        multi-scale outputs and the reblurred ground truths for the losses.
        """
        height, width = blurry.shape[-2:]
        # The coarsest U-Net level needs at least 2x2 pixels for its reflect padding.
        padded, _ = pad_to_multiple(blurry, self.size_multiple, minimum=2 * self.size_multiple)
        if sharp is None:
            return self._run(padded, None)[..., :height, :width]
        sharp_padded = reflect_pad(
            sharp, (0, padded.shape[-1] - width, 0, padded.shape[-2] - height)
        )
        out = self._run(padded, sharp_padded)

        def crop(t: torch.Tensor) -> torch.Tensor:
            factor = padded.shape[-1] // t.shape[-1]
            return t[..., : -(-height // factor), : -(-width // factor)]

        return NRKNetOutput(
            scales=[crop(t) for t in out.scales], reblurred=[crop(t) for t in out.reblurred]
        )


def has_blur_operator(model: nn.Module) -> bool:
    """Whether ``model`` estimates an RKR blur operator (NRKNet or a subclass).

    Atom figures, defocus maps and the compiled regions need one; other networks
    (the U-Net baseline) deblur directly and have none.
    """
    return isinstance(getattr(model, "blur", None), RKRBlur)


def count_parameters(model: nn.Module) -> int:
    """Learnable parameters (BatchNorm running statistics and fixed atoms not counted)."""
    return sum(p.numel() for p in model.parameters())


def _atom_bank(config: NRKNetConfig) -> nn.Module:
    if isinstance(config.atoms, str):
        return build_atoms(
            config.atoms,
            config.num_levels,
            per_channel=config.per_channel_atoms,
            symmetric=config.symmetric_atoms,
        )
    bank = build_component("atoms", config.atoms, num_levels=config.num_levels)
    return checked_atoms(bank, config.num_levels)


def _coefficient_head(config: NRKNetConfig, unet: nn.Module) -> nn.Module:
    num_maps = config.num_levels + 1
    if config.coefficient_head is None:
        head = ConvLSTMCoefficientHead if config.recurrent else PlainCoefficientHead
        return head(width=config.width, num_maps=num_maps)
    head = build_component(
        "coefficient_head", config.coefficient_head, width=config.width, num_maps=num_maps
    )
    return checked_head(head, unet, config.in_channels, num_maps)
