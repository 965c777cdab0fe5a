"""Model components given as factories: an atom bank or a coefficient head from outside the package.

A component is given either as a callable that builds it (a class, or a
``functools.partial`` such as Hydra makes from ``_target_`` with
``_partial_: true``), or as that Hydra config itself (a mapping with
``_target_``). Either way the model records the config, so a checkpoint can
rebuild the component wherever its ``_target_`` can be imported.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

ComponentSpec = Mapping[str, Any] | Callable[..., nn.Module]


def factory_config(setting: str, factory: Callable[..., nn.Module]) -> dict[str, Any]:
    """The Hydra config (``_target_``, ``_partial_``, keywords) that rebuilds ``factory``."""
    keywords: dict[str, Any] = {}
    if isinstance(factory, functools.partial):
        if factory.args:
            raise ValueError(
                f"{setting}: give the arguments of {factory.func!r} as keywords, "
                "so that checkpoints can record them"
            )
        factory, keywords = factory.func, dict(factory.keywords)
    target = f"{factory.__module__}.{getattr(factory, '__qualname__', '')}"
    if "<locals>" in target or target.endswith("."):
        raise ValueError(
            f"{setting}: expected a class or function defined at module level "
            f"(a checkpoint must be able to import it), got {factory!r}"
        )
    return {"_target_": target, "_partial_": True, **keywords}


def resolve_factory(
    setting: str, spec: ComponentSpec
) -> tuple[Callable[..., nn.Module], dict[str, Any]]:
    """``(factory, config)`` for a component given as a callable or as a Hydra config."""
    if isinstance(spec, Mapping):
        config = _plain_container(spec)
        if "_target_" not in config:
            raise ValueError(f"{setting}: expected a mapping with a _target_, got {config!r}")
        config["_partial_"] = True
        from hydra.errors import InstantiationException
        from hydra.utils import instantiate

        try:
            factory = instantiate(config)
        except InstantiationException as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ValueError(f"{setting}: cannot build {config['_target_']}: {message}") from exc
        return factory, config
    if callable(spec) and not isinstance(spec, nn.Module):
        return spec, factory_config(setting, spec)
    raise ValueError(
        f"{setting}: expected a name, a Hydra config with _target_ or a callable that builds "
        f"the component, got {type(spec).__name__}"
    )


def _plain_container(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A plain ``dict`` (OmegaConf nodes converted), so checkpoints load without OmegaConf."""
    try:
        from omegaconf import DictConfig, OmegaConf
    except ImportError:  # pragma: no cover - OmegaConf comes with Hydra
        return dict(spec)
    if isinstance(spec, DictConfig):
        return OmegaConf.to_container(spec, resolve=True)
    return dict(spec)
