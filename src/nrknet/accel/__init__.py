"""The acceleration layer: faster implementations of NRKNet's parts, switched on at run time.

:func:`accelerate` swaps the class of every covered submodule for an
accelerated subclass (same parameters, same state-dict keys, same results up
to rounding) and returns the model; ``accelerate(model, "off")`` swaps them
back. Covered:

* :class:`~nrknet.models.unet.FeatureUNet`: copy-free reflect convolutions and
  custom gradients when training on CPU, in-place banded inference
  (:mod:`nrknet.accel.unet`);
* both coefficient heads: BatchNorm folded into the local convolution and
  banded inference (:mod:`nrknet.accel.coefficients`);
* :class:`~nrknet.ops.rkr.RKRBlur` over :class:`~nrknet.ops.atoms.RecursiveAtoms`:
  the fused level loop with a recomputing backward pass (:mod:`nrknet.accel.rkr`);
* the learned :class:`~nrknet.ops.atoms.IndependentAtoms` (non-recursive and
  non-separable, Table 3): every level from one FFT of the padded input
  (:mod:`nrknet.accel.atoms`); the operator over them keeps its plain level loop.

Anything else (the fixed Gaussian bank, atom banks and coefficient heads of one's own) keeps its
plain code, and one log line says so. Under autocast the accelerated U-Net and
heads run their plain code too.
"""

from __future__ import annotations

import itertools
import logging

import torch
from torch import nn

from nrknet.accel.atoms import FFT_VARIANTS, AcceleratedIndependentAtoms
from nrknet.accel.coefficients import AcceleratedConvLSTMHead, AcceleratedPlainHead
from nrknet.accel.rkr import AcceleratedRKRBlur
from nrknet.accel.unet import AcceleratedFeatureUNet
from nrknet.models.coefficients import ConvLSTMCoefficientHead, PlainCoefficientHead
from nrknet.models.nrknet import NRKNet
from nrknet.models.unet import FeatureUNet
from nrknet.ops.atoms import IndependentAtoms
from nrknet.ops.rkr import RKRBlur
from nrknet.utils.switches import SWITCH_VALUES, resolve_switch

ACCEL_MODES = SWITCH_VALUES

#: plain class -> its accelerated subclass
ACCELERATED: dict[type[nn.Module], type[nn.Module]] = {
    FeatureUNet: AcceleratedFeatureUNet,
    ConvLSTMCoefficientHead: AcceleratedConvLSTMHead,
    PlainCoefficientHead: AcceleratedPlainHead,
    RKRBlur: AcceleratedRKRBlur,
    IndependentAtoms: AcceleratedIndependentAtoms,
}
PLAIN: dict[type[nn.Module], type[nn.Module]] = {v: k for k, v in ACCELERATED.items()}

log = logging.getLogger(__name__)


def resolve_mode(mode: str | bool) -> str:
    """``auto``, ``on`` or ``off`` (``True``/``False`` accepted); anything else is refused."""
    return resolve_switch("accel", mode)


def wanted(model: nn.Module, mode: str | bool = "auto", device=None) -> bool:
    """Whether ``mode`` switches acceleration on for ``model`` (``auto``: on CPU only)."""
    mode = resolve_mode(mode)
    if mode != "auto":
        return mode == "on"
    return _device_of(model, device).type == "cpu"


def accelerate(model, mode: str | bool = "auto", *, device=None, training: bool = False):
    """Switch ``model`` to the accelerated implementation where it pays (in place; returns it).

    ``mode``: ``auto`` (on when ``device``, or the model's parameters, are on the
    CPU; off on CUDA, where cuDNN is already fast and the custom paths are not
    tuned), ``on``/``True``, ``off``/``False``. ``training`` says what the model is
    about to do; it only shapes the log lines, ``auto`` decides the same way for both.
    """
    if not wanted(model, mode, device):
        for module in model.modules():
            if type(module) in PLAIN:
                module.__class__ = PLAIN[type(module)]
        return model
    purpose = "training" if training else "inference"
    for module in model.modules():
        target = ACCELERATED.get(type(module))
        if target is not None and _covers(target, module):
            module.__class__ = target
        elif target is AcceleratedRKRBlur:
            atoms = module.atoms
            plain = PLAIN.get(type(atoms), type(atoms))  # a model accelerated before: its own name
            variant = atoms.variant if plain is IndependentAtoms else None
            log.info(
                "accel: atom bank %s%s is not covered by the fused RKR operator; "
                "its plain level-by-level form runs for %s%s",
                plain.__name__,
                f" ({variant})" if variant else "",
                purpose,
                ", with its levels by FFT" if variant in FFT_VARIANTS else "",
            )
        head = getattr(module, "coefficients", None) if isinstance(module, NRKNet) else None
        if head is not None and type(head) not in ACCELERATED and type(head) not in PLAIN:
            log.info(
                "accel: coefficient head %s is not covered; its own code runs for %s",
                type(head).__name__,
                purpose,
            )
    return model


def _covers(target: type[nn.Module], module: nn.Module) -> bool:
    """Whether ``target`` computes ``module`` (classes that cover only some settings say so)."""
    covers = getattr(target, "covers", None)
    return covers is None or covers(module)


def is_accelerated(model: nn.Module) -> bool:
    """Whether any submodule of ``model`` runs an accelerated class."""
    return any(type(module) in PLAIN for module in model.modules())


def _device_of(model: nn.Module, device) -> torch.device:
    if device is not None:
        return torch.device(device)
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    return torch.device("cpu") if tensor is None else tensor.device


__all__ = ["ACCELERATED", "ACCEL_MODES", "PLAIN", "accelerate", "is_accelerated", "resolve_mode"]
