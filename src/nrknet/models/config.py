"""The settings of an NRKNet: one frozen object that checks itself and that a checkpoint records.

Every way of building the model (Python keywords, a Hydra ``model`` config, a
checkpoint's ``model_config``) goes through :class:`NRKNetConfig`, so each
setting is checked once, here; the layers it builds trust it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from nrknet.errors import ConfigError
from nrknet.models.components import ComponentSpec, component_config
from nrknet.ops.atoms import ATOM_VARIANTS
from nrknet.ops.rkr import MIXING_MODES
from nrknet.utils.checks import choice, number

FUSION_MODES = ("cross_scale", "full_expansion")
INIT_MODES = ("default", "xavier")
SCALES = (1, 2, 3, 4)
SWITCHES = ("recurrent", "symmetric_atoms", "per_channel_atoms", "residual_gate", "blur_residual")


@dataclass(frozen=True)
class NRKNetConfig:
    """The architecture of an NRKNet; the defaults are the reference implementation's.

    * ``width``: channels of the first U-Net level (64 in the reference)
    * ``num_levels``: J, atoms besides the identity (J study)
    * ``atoms``: ``recursive`` | ``non_recursive`` | ``non_separable`` | ``gaussian`` (Table 3),
      or a factory of an atom bank of one's own, built as ``factory(num_levels=J)``
    * ``num_scales``: 1 to 4; the scale ``s`` steps coarser applies ``s + 1`` Neumann steps
    * ``fusion``: ``cross_scale`` (eq. 10) | ``full_expansion`` (eq. 9, all orders at every scale)
    * ``recurrent``: ConvLSTM coefficient head, or a deeper plain U-Net without it (Table 4)
    * ``mixing``: ``conv1x1`` (reference) | ``sum`` (eq. 11)
    * ``symmetric_atoms`` / ``per_channel_atoms``: the 3-tap atom parameterisation
    * ``residual_gate``: ``X = Y + g (X_net - Y)`` with a learnable ``g`` starting at 0
    * ``blur_residual``: the blur operator learned as ``D = I + R``, ``R`` starting at zero
      (not in the paper; needs ``mixing="conv1x1"``)
    * ``init``: ``default`` (PyTorch, as the reference) | ``xavier`` (as the paper states)
    * ``in_channels``: 3 for RGB
    * ``coefficient_head``: ``None`` (the head ``recurrent`` selects) or a factory of a head
      of one's own, built as ``factory(width=width, num_maps=J + 1)``

    A factory is given as a callable (a class, or a ``functools.partial`` with
    keywords) or as its Hydra config (``_target_``); it is kept as that config,
    which is what a checkpoint records and rebuilds.
    """

    width: int = 64
    num_levels: int = 21
    atoms: str | ComponentSpec = "recursive"
    num_scales: int = 3
    fusion: str = "cross_scale"
    recurrent: bool = True
    mixing: str = "conv1x1"
    symmetric_atoms: bool = True
    per_channel_atoms: bool = True
    residual_gate: bool = False
    blur_residual: bool = False
    init: str = "default"
    in_channels: int = 3
    coefficient_head: ComponentSpec | None = None

    def __post_init__(self) -> None:
        # a factory given as a callable is kept as the config that rebuilds it
        if not isinstance(self.atoms, str):
            object.__setattr__(self, "atoms", component_config("atoms", self.atoms))
        if self.coefficient_head is not None:
            head = component_config("coefficient_head", self.coefficient_head)
            object.__setattr__(self, "coefficient_head", head)
        number("width", self.width, minimum=1, integer=True)
        number("num_levels", self.num_levels, minimum=1, integer=True)
        number("in_channels", self.in_channels, minimum=1, integer=True)
        if isinstance(self.atoms, str):
            choice("atoms", self.atoms, ATOM_VARIANTS)
        choice("num_scales", self.num_scales, SCALES)
        choice("fusion", self.fusion, FUSION_MODES)
        choice("mixing", self.mixing, MIXING_MODES)
        choice("init", self.init, INIT_MODES)
        for switch in SWITCHES:
            choice(switch, getattr(self, switch), (True, False))
        if self.blur_residual and self.mixing != "conv1x1":
            raise ConfigError(
                f"blur_residual=true needs mixing='conv1x1' (R starts at zero weights); "
                f"got mixing={self.mixing!r}"
            )

    def as_dict(self) -> dict[str, Any]:
        """The settings as plain data: what a checkpoint records as ``model_config``."""
        return asdict(self)
