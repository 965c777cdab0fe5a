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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nrknet.models.coefficients import ConvLSTMCoefficientHead, PlainCoefficientHead
from nrknet.models.components import ComponentSpec, import_path, resolve_factory
from nrknet.models.unet import FeatureUNet
from nrknet.ops.atoms import ATOM_VARIANTS, build_atoms
from nrknet.ops.padding import pad_to_multiple, reflect_pad
from nrknet.ops.rkr import MIXING_MODES, RKRBlur

FUSION_MODES = ("cross_scale", "full_expansion")
INIT_MODES = ("default", "xavier")


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

    Defaults reproduce the reference implementation (6,094,107 parameters).
    Options cover the paper's ablations:

    * ``atoms``: ``recursive`` | ``non_recursive`` | ``non_separable`` | ``gaussian`` (Table 3),
      or a factory of an atom bank of one's own (see ``docs/extending.md``)
    * ``num_levels``: J, atoms besides the identity (J study)
    * ``num_scales``: 2, 3 or 4; the scale ``s`` steps coarser applies ``s + 1`` Neumann steps
    * ``fusion``: ``cross_scale`` (eq. 10) | ``full_expansion`` (eq. 9, all orders at every scale)
    * ``recurrent``: ConvLSTM coefficient head, or a deeper plain U-Net without it (Table 4)
    * ``coefficient_head``: ``None`` (the head ``recurrent`` selects) or a factory of a head
      of one's own; ``recurrent`` still sets the U-Net's depth
    * ``mixing``: ``conv1x1`` (reference) | ``sum`` (eq. 11)
    * ``symmetric_atoms`` / ``per_channel_atoms``: the 3-tap atom parameterisation
    * ``residual_gate``: ``X = Y + g (X_net - Y)`` with a learnable ``g`` starting at 0,
      so the untrained network is the identity (for short runs; ``g = 1`` is the reference)
    * ``blur_residual``: the blur operator learned as ``D = I + R``, ``R`` starting at zero
      (:func:`~nrknet.ops.rkr.identity_plus`), another way to start at the identity
      (not in the paper; needs ``mixing="conv1x1"``)
    * ``init``: ``default`` (PyTorch, as the reference) | ``xavier`` (as the paper states)

    A factory is a callable (a class, or a Hydra ``_target_`` with ``_partial_: true``)
    or the Hydra config itself; atom banks are built as ``factory(num_levels=J)``,
    heads as ``factory(width=width, num_maps=J + 1)``.
    """

    def __init__(
        self,
        width: int = 64,
        num_levels: int = 21,
        atoms: str | ComponentSpec = "recursive",
        num_scales: int = 3,
        fusion: str = "cross_scale",
        recurrent: bool = True,
        mixing: str = "conv1x1",
        symmetric_atoms: bool = True,
        per_channel_atoms: bool = True,
        residual_gate: bool = False,
        blur_residual: bool = False,
        init: str = "default",
        in_channels: int = 3,
        coefficient_head: ComponentSpec | None = None,
    ) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be a positive integer, got {width}")
        if isinstance(atoms, str) and atoms not in ATOM_VARIANTS:
            raise ValueError(f"unknown atoms {atoms!r}; expected one of {', '.join(ATOM_VARIANTS)}")
        if num_scales not in (1, 2, 3, 4):
            raise ValueError(f"num_scales must be 1, 2, 3 or 4, got {num_scales}")
        if fusion not in FUSION_MODES:
            raise ValueError(
                f"unknown fusion {fusion!r}; expected one of {', '.join(FUSION_MODES)}"
            )
        if mixing not in MIXING_MODES:
            raise ValueError(
                f"unknown mixing {mixing!r}; expected one of {', '.join(MIXING_MODES)}"
            )
        if init not in INIT_MODES:
            raise ValueError(f"unknown init {init!r}; expected one of {', '.join(INIT_MODES)}")
        if blur_residual and mixing != "conv1x1":
            raise ValueError(
                f"blur_residual=true needs mixing='conv1x1' (R starts at zero weights); "
                f"got mixing={mixing!r}"
            )
        self.num_scales = num_scales
        self.fusion = fusion
        self.num_maps = num_levels + 1
        # Without the ConvLSTM, a deeper U-Net keeps the size similar (Table 4).
        self.unet = FeatureUNet(width, in_channels, extra_blocks=0 if recurrent else 1)
        if coefficient_head is None:
            head_factory: Callable[..., nn.Module] = (
                ConvLSTMCoefficientHead if recurrent else PlainCoefficientHead
            )
            head_config = None
        else:
            head_factory, head_config = resolve_factory("coefficient_head", coefficient_head)
        self.coefficients = _checked_head(head_factory(width=width, num_maps=self.num_maps))
        if isinstance(atoms, str):
            atom_bank = build_atoms(
                atoms, num_levels, per_channel=per_channel_atoms, symmetric=symmetric_atoms
            )
            atoms_config: str | dict[str, Any] = atoms
        else:
            atoms_factory, atoms_config = resolve_factory("atoms", atoms)
            atom_bank = _checked_atoms(atoms_factory(num_levels=num_levels), num_levels)
        self.blur = RKRBlur(atom_bank, channels=in_channels, mixing=mixing, residual=blur_residual)
        self.gate = nn.Parameter(torch.zeros(())) if residual_gate else None
        self.config = dict(
            width=width,
            num_levels=num_levels,
            atoms=atoms_config,
            num_scales=num_scales,
            fusion=fusion,
            recurrent=recurrent,
            mixing=mixing,
            symmetric_atoms=symmetric_atoms,
            per_channel_atoms=per_channel_atoms,
            residual_gate=residual_gate,
            blur_residual=blur_residual,
            init=init,
            in_channels=in_channels,
            coefficient_head=head_config,
        )
        if type(self) is not NRKNet:
            # a subclass is rebuilt as itself; arguments of its own are its to add to the config
            self.config["_target_"] = import_path("model", type(self))
        if init == "xavier":
            self._xavier_init()
            if blur_residual:
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
        if blurry.dim() != 4:
            raise ValueError(f"expected a batch (N, C, H, W), got shape {tuple(blurry.shape)}")
        height, width = blurry.shape[-2:]
        # The coarsest U-Net level needs at least 2x2 pixels for its reflect padding.
        padded, _ = pad_to_multiple(blurry, self.size_multiple, minimum=2 * self.size_multiple)
        if sharp is None:
            return self._run(padded, None)[..., :height, :width]
        if sharp.shape != blurry.shape:
            raise ValueError(
                f"sharp {tuple(sharp.shape)} and blurry {tuple(blurry.shape)} differ in shape"
            )
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


def _checked_atoms(bank: nn.Module, num_levels: int) -> nn.Module:
    """A user-built atom bank, refused with a clear message when it misses the interface."""
    if not isinstance(bank, nn.Module) or not hasattr(bank, "levels"):
        raise ValueError(f"atoms: the factory must build an nn.Module with levels(x), got {bank!r}")
    # prediction tiling and the validation figures use these; finding out after an epoch costs it
    missing = [m for m in ("max_radius", "effective_kernels") if not hasattr(bank, m)]
    if missing:
        raise ValueError(
            f"atoms: {type(bank).__name__} has no {' or '.join(missing)} "
            "(an atom bank needs num_levels, levels(x), max_radius and effective_kernels())"
        )
    if getattr(bank, "num_levels", None) != num_levels:
        raise ValueError(
            f"atoms: the bank has num_levels={getattr(bank, 'num_levels', None)}, "
            f"expected num_levels={num_levels} (the model's setting)"
        )
    return bank


def _checked_head(head: nn.Module) -> nn.Module:
    """A coefficient head, refused with a clear message when it misses the interface."""
    if not isinstance(head, nn.Module) or not hasattr(head, "next_scale_state"):
        raise ValueError(
            "coefficient_head: the factory must build an nn.Module with "
            f"forward(features, state) and next_scale_state(state), got {head!r}"
        )
    return head
