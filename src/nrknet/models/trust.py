"""What a checkpoint may ask to build: the classes a recorded ``_target_`` may name.

A checkpoint records its network's configuration, with ``_target_`` import
paths for the network and for components of one's own (an atom bank, a
coefficient head; ``docs/extending.md``). Rebuilding the network imports and
calls those targets, so a checkpoint from elsewhere could name any function of
any module. Before anything is imported, every ``_target_`` of the recorded
configuration, nested or not, must pass :func:`trusted_class`:

* it is a dotted import path;
* its module is part of nrknet, or the user trusts code (``trust_code=true``,
  ``--trust-code``): then any importable module may be imported;
* what it names is a subclass of :class:`torch.nn.Module`, never a function
  or another callable, even with trust.
"""

from __future__ import annotations

import importlib
import re
import reprlib
from collections.abc import Iterator
from typing import Any

from torch import nn

from nrknet.errors import CheckpointError, UntrustedCodeError

__all__ = ["TRUSTED_PACKAGE", "recorded_targets", "trusted_class"]

#: The package whose modules a checkpoint may always name.
TRUSTED_PACKAGE = "nrknet"
_IMPORT_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")


#: How deep a recorded configuration may nest (the project's own go three levels deep).
MAX_DEPTH = 16


def recorded_targets(
    config: Any, where: str = "model", depth: int = 0
) -> Iterator[tuple[str, Any]]:
    """``(setting, _target_)`` for every ``_target_`` in a recorded configuration, at any depth.

    Raises :class:`~nrknet.errors.UntrustedCodeError` for what the configuration
    may not hold at all: a key that is not a plain name, nesting deeper than
    :data:`MAX_DEPTH`, and text with ``${`` anywhere (Hydra resolves OmegaConf
    interpolations before it builds, and a resolver such as ``oc.create`` could
    make a ``_target_`` that no check saw, or ``oc.env`` read the environment).
    """
    if depth > MAX_DEPTH:
        raise UntrustedCodeError(f"{where}: the recorded configuration nests too deeply")
    if isinstance(config, dict):
        for key, value in config.items():
            if not isinstance(key, str) or not key.isidentifier():
                raise UntrustedCodeError(
                    f"{where}: a key of the recorded configuration is not a name"
                )
            if key == "_target_":
                yield where, value
            else:
                yield from recorded_targets(value, f"{where}.{key}", depth + 1)
    elif isinstance(config, list | tuple):
        for index, value in enumerate(config):
            yield from recorded_targets(value, f"{where}[{index}]", depth + 1)
    elif isinstance(config, str) and "${" in config:
        raise UntrustedCodeError(
            f"{where}: the recorded configuration holds an interpolation (${{...}}), which "
            "building it would resolve; a checkpoint records plain values only"
        )


def is_trusted_module(module: str) -> bool:
    return module == TRUSTED_PACKAGE or module.startswith(TRUSTED_PACKAGE + ".")


def trusted_class(
    target: Any, *, trust_code: bool, setting: str, option: str = "trust_code=true"
) -> type[nn.Module]:
    """The :class:`torch.nn.Module` subclass that ``target`` names, imported only when trusted.

    Raises :class:`~nrknet.errors.UntrustedCodeError` for a module outside
    nrknet without ``trust_code`` (naming ``option``, the setting that trusts
    it) and for anything but an ``nn.Module`` subclass;
    :class:`~nrknet.errors.CheckpointError` when it cannot be imported.
    """
    if not isinstance(target, str) or not _IMPORT_PATH.fullmatch(target):
        shown = reprlib.repr(target) if isinstance(target, str) else type(target).__name__
        raise UntrustedCodeError(f"{setting}: _target_ {shown} is not an import path")
    module_name, _, name = target.rpartition(".")
    if not (trust_code or is_trusted_module(module_name)):
        raise UntrustedCodeError(
            f"{setting}: the checkpoint asks to import {target}, code outside nrknet; "
            f"load it only if you trust its source, with {option}"
        )
    try:
        found = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise CheckpointError(f"{setting}: cannot import {target!r}: {exc}") from exc
    if not (isinstance(found, type) and issubclass(found, nn.Module)):
        raise UntrustedCodeError(
            f"{setting}: _target_ {target} is not a torch.nn.Module subclass; a checkpoint "
            "may only build networks and their components"
        )
    if not (trust_code or is_trusted_module(found.__module__)):  # a name nrknet imported
        raise UntrustedCodeError(
            f"{setting}: {target} is defined in {found.__module__}, outside nrknet; load it "
            f"only if you trust its source, with {option}"
        )
    return found
