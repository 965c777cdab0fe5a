"""Glue shared by the Hydra entry points: the config folder, resolvers, instantiation, settings checks."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("nrknet")

#: The Hydra configs: ``nrknet/conf`` inside the package, which in a checkout links to the
#: top-level ``conf/`` (their one source) and in a wheel holds a copy of it.
CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def wandb_offline() -> bool:
    """Offline unless WANDB_MODE asks otherwise or an API key is configured (env or netrc)."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "dryrun", "disabled"):
        return True
    if mode == "online" or os.environ.get("WANDB_API_KEY"):
        return False
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" not in netrc.read_text()
    except OSError:
        return True


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("nrknet.wandb_offline"):
        OmegaConf.register_new_resolver("nrknet.wandb_offline", wandb_offline)


register_resolvers()


def require_accelerator(trainer: DictConfig) -> None:
    """Refuse ``trainer.accelerator: gpu``/``cuda`` where torch sees no GPU, with the fix."""
    import torch
    from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator

    accelerator = str(trainer.get("accelerator", "auto")).lower()
    # Lightning's checks leave CUDA uninitialised (safe before forking workers or processes)
    if accelerator not in ("gpu", "cuda") or CUDAAccelerator.is_available():
        return
    if accelerator == "gpu" and MPSAccelerator.is_available():
        return
    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
    raise ValueError(
        f"trainer.accelerator={accelerator} needs a GPU, and torch {torch.__version__} "
        f"({build}) sees none; use trainer=cpu, or check CUDA_VISIBLE_DEVICES and the driver"
    )


#: Settings a typo on the command line can turn into text; checked before anything is built.
WHOLE_NUMBER_SETTINGS = (
    "seed", "trainer.max_epochs", "trainer.max_steps", "trainer.check_val_every_n_epoch",
    "trainer.log_every_n_steps", "trainer.accumulate_grad_batches", "data.batch_size",
    "data.val_batch_size", "data.crop_size", "data.num_workers", "model.width", "model.num_levels",
)  # fmt: skip
NUMBER_SETTINGS = ("optimizer.lr", "optimizer.weight_decay", "trainer.gradient_clip_val")


def require_numbers(cfg: DictConfig) -> None:
    """One line naming the setting when one of the numeric settings above is not a number."""
    for key in (*WHOLE_NUMBER_SETTINGS, *NUMBER_SETTINGS):
        value = OmegaConf.select(cfg, key, default=None)
        whole = key in WHOLE_NUMBER_SETTINGS
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int if whole else int | float)
        ):
            raise ValueError(f"{key}={value!r}: expected a {'whole number' if whole else 'number'}")


def config_differences(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted key, old value, new value)`` wherever two nested dicts differ (a missing key is None)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            difference
            for key in sorted(old.keys() | new.keys())
            for difference in config_differences(
                old.get(key), new.get(key), f"{prefix}.{key}" if prefix else str(key)
            )
        ]
    return [] if old == new else [(prefix, old, new)]


def instantiate_group(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a group made of named ``_target_`` configs (callbacks, loggers)."""
    from hydra.utils import instantiate

    if not cfg:
        return []
    return [
        instantiate(entry)
        for entry in cfg.values()
        if isinstance(entry, DictConfig) and "_target_" in entry
    ]
