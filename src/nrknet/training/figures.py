"""Figures of each validation: blurry | deblurred | sharp strips, and what the network believes.

A callback of its own, so the LightningModule only trains and scores. After
every ``every_n_epochs``-th validation it draws:

* ``val/triplet_<i>``: the first ``num_images`` validation images, blurry,
  deblurred and sharp side by side;
* for a model with an RKR blur operator: ``val/atoms`` (the atom kernels),
  ``val/coefficients`` (the coefficient maps gamma of the first image) and
  ``val/defocus_map`` (the effective blur radius they imply).

They go to every logger that takes images (TensorBoard, wandb) and always to
PNG files under ``<run>/images/epoch_<NNNN>/``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from nrknet.models.nrknet import has_blur_operator
from nrknet.utils.checks import number

log = logging.getLogger(__name__)


class ValidationFigures(Callback):
    """Draws the validation figures every ``every_n_epochs`` epochs (0: never); ``num_images: 0``
    draws none either."""

    def __init__(self, num_images: int = 3, every_n_epochs: int = 1) -> None:
        self.num_images = number(
            "callbacks.figures.num_images", num_images, minimum=0, integer=True
        )
        self.every_n_epochs = number(
            "callbacks.figures.every_n_epochs", every_n_epochs, minimum=0, integer=True
        )
        self._strips: list[np.ndarray] = []
        self._probe: torch.Tensor | None = None

    def _now(self, trainer: L.Trainer) -> bool:
        every = self.every_n_epochs
        return bool(every) and not trainer.sanity_checking and trainer.current_epoch % every == 0

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: dict[str, Any],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self._now(trainer) or outputs is None:
            return
        from nrknet.analysis.figures import comparison_strip

        blurry, sharp = batch["blurry"], batch["sharp"]
        if self._probe is None:
            self._probe = blurry[:1].detach()
        for i in range(min(blurry.shape[0], self.num_images - len(self._strips))):
            self._strips.append(comparison_strip(blurry[i], outputs[i], sharp[i]))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._now(trainer):
            return
        images = {f"val/triplet_{i}": strip for i, strip in enumerate(self._strips)}
        model = pl_module.model
        if has_blur_operator(model) and self._probe is not None and self.num_images:
            images.update(operator_figures(model, self._probe))
        self._strips, self._probe = [], None
        if images and trainer.is_global_zero:
            log_images(trainer, images, step=trainer.current_epoch)


def operator_figures(model: torch.nn.Module, blurry: torch.Tensor) -> dict[str, np.ndarray]:
    """The atoms, and the coefficient and defocus maps the model predicts for ``blurry`` (1 image)."""
    from nrknet.analysis.defocus import effective_blur_radius, full_scale_coefficients
    from nrknet.analysis.figures import (
        atom_kernels_figure,
        coefficient_maps_figure,
        colorize_defocus,
    )

    gamma = full_scale_coefficients(model, blurry)
    return {
        "val/atoms": atom_kernels_figure(model.atoms),
        "val/defocus_map": colorize_defocus(effective_blur_radius(gamma, model.blur)[0, 0]),
        "val/coefficients": coefficient_maps_figure(gamma[0]),
    }


def log_images(trainer: L.Trainer, images: dict[str, np.ndarray], step: int) -> None:
    """Send uint8 RGB images to every logger that takes images; always also write PNGs in the run folder."""
    import cv2

    folder = Path(trainer.default_root_dir) / "images" / f"epoch_{step:04d}"
    folder.mkdir(parents=True, exist_ok=True)
    for key, img in images.items():
        cv2.imwrite(str(folder / (key.replace("/", "_") + ".png")), img[..., ::-1])
    for logger in trainer.loggers:
        name = type(logger).__name__
        try:
            if name == "TensorBoardLogger":
                for key, img in images.items():
                    logger.experiment.add_image(key, img, global_step=step, dataformats="HWC")
            elif name == "WandbLogger":
                for key, img in images.items():
                    logger.log_image(key=key, images=[img], step=trainer.global_step)
        except Exception as exc:  # noqa: BLE001 - a logger failing to take an image must not stop training
            log.warning("could not log images to %s: %s", name, exc)
