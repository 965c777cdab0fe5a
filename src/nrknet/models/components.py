"""Model components given as factories: an atom bank or a coefficient head from outside the package.

A component is given either as a callable that builds it (a class, or a
``functools.partial`` such as Hydra makes from ``_target_`` with
``_partial_: true``), or as that Hydra config itself (a mapping with
``_target_``). Either way the model records the config, so a checkpoint can
rebuild the component wherever its ``_target_`` can be imported.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from nrknet.errors import ConfigError, root_cause

ComponentSpec = Mapping[str, Any] | Callable[..., nn.Module]


def factory_config(setting: str, factory: Callable[..., nn.Module]) -> dict[str, Any]:
    """The Hydra config (``_target_``, ``_partial_``, keywords) that rebuilds ``factory``."""
    keywords: dict[str, Any] = {}
    if isinstance(factory, functools.partial):
        if factory.args:
            raise ConfigError(
                f"{setting}: give the arguments of {factory.func!r} as keywords, "
                "so that checkpoints can record them"
            )
        factory, keywords = factory.func, {k: _plain(v) for k, v in factory.keywords.items()}
    return {"_target_": import_path(setting, factory), "_partial_": True, **keywords}


def import_path(setting: str, obj: Callable[..., Any]) -> str:
    """``module.name`` that imports ``obj``, which a checkpoint records to rebuild it.

    Refused for what no import reaches (lambdas, classes or functions defined
    inside a function); a warning for the script being run (``__main__``),
    which only that script can import again.
    """
    qualname = getattr(obj, "__qualname__", "")
    if not qualname or "<" in qualname:  # <lambda>, <locals>
        raise ConfigError(
            f"{setting}: expected a class or function defined at module level "
            f"(a checkpoint must be able to import it), got {obj!r}"
        )
    if obj.__module__ == "__main__":
        warnings.warn(
            f"{setting}: {qualname} is defined in the script being run (__main__); checkpoints "
            "record it by that name, so only a script that defines it can load them: put it in "
            "an importable module",
            stacklevel=3,
        )
    return f"{obj.__module__}.{qualname}"


def component_config(setting: str, spec: ComponentSpec) -> dict[str, Any]:
    """The Hydra config of a component given as a callable or as that config itself."""
    if isinstance(spec, Mapping):
        config = dict(_plain(spec))
        if "_target_" not in config:
            raise ConfigError(f"{setting}: expected a mapping with a _target_, got {config!r}")
        return {**config, "_partial_": True}
    if callable(spec) and not isinstance(spec, nn.Module):
        return factory_config(setting, spec)
    raise ConfigError(
        f"{setting}: expected a name, a Hydra config with _target_ or a callable that builds "
        f"the component, got {type(spec).__name__}"
    )


def build_component(setting: str, config: Mapping[str, Any], **arguments: Any) -> nn.Module:
    """The component that ``config`` (from :func:`component_config`) builds with ``arguments``."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        factory = instantiate(dict(config))
    except InstantiationException as exc:
        raise ConfigError(
            f"{setting}: cannot build {config['_target_']}: {root_cause(exc)}"
        ) from exc
    return factory(**arguments)


def checked_atoms(bank: nn.Module, num_levels: int) -> nn.Module:
    """An atom bank of one's own, refused with a clear message when it misses the interface."""
    if not isinstance(bank, nn.Module) or not hasattr(bank, "levels"):
        raise ConfigError(
            f"atoms: the factory must build an nn.Module with levels(x), got {bank!r}"
        )
    # prediction tiling and the validation figures use these; finding out after an epoch costs it
    missing = [m for m in ("max_radius", "effective_kernels") if not hasattr(bank, m)]
    if missing:
        raise ConfigError(
            f"atoms: {type(bank).__name__} has no {' or '.join(missing)} "
            "(an atom bank needs num_levels, levels(x), max_radius and effective_kernels())"
        )
    if getattr(bank, "num_levels", None) != num_levels:
        raise ConfigError(
            f"atoms: the bank has num_levels={getattr(bank, 'num_levels', None)}, "
            f"expected num_levels={num_levels} (the model's setting)"
        )
    return bank


def checked_head(head: nn.Module, unet: nn.Module, in_channels: int, num_maps: int) -> nn.Module:
    """A coefficient head of one's own, refused with a clear message when it misses the
    interface or gives another number of coefficient maps than the atom levels (J + 1)."""
    if not isinstance(head, nn.Module) or not hasattr(head, "next_scale_state"):
        raise ConfigError(
            "coefficient_head: the factory must build an nn.Module with "
            f"forward(features, state) and next_scale_state(state), got {head!r}"
        )
    # one probe through the untrained U-Net and head, in eval mode (no statistics change)
    modes = head.training, unet.training
    head.eval(), unet.eval()
    with torch.no_grad():
        gamma, _ = head(unet(torch.zeros(1, in_channels, 32, 32)), None)
    head.train(modes[0]), unet.train(modes[1])
    if gamma.shape[1] != num_maps:
        raise ConfigError(
            f"coefficient_head: {type(head).__name__} gives {gamma.shape[1]} coefficient maps, "
            f"expected num_levels + 1 = {num_maps}"
        )
    return head


def _plain(value: Any) -> Any:
    """``value`` with OmegaConf lists and dicts turned into Python ones (checkpoints load without OmegaConf)."""
    from omegaconf import Container, OmegaConf

    return OmegaConf.to_container(value, resolve=True) if isinstance(value, Container) else value
