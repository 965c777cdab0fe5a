"""Restarts from the best checkpoint at fixed epochs, as the reference code trains.

At each of its milestone epochs the authors' training script reloads the
weights of its best checkpoint so far (by validation PSNR) and builds a new
Adam, so the moments start again from zero; the learning-rate steps are
separate (see ``conf/scheduler/reference_code.yaml``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from nrknet.weights.init import load_weights

log = logging.getLogger("nrknet.training.restarts")


class RestartFromBest(Callback):
    """At the start of each epoch in ``epochs`` (counted from 0): best weights back, optimizer state emptied.

    Needs a ``ModelCheckpoint`` with a ``monitor`` (``callbacks.model_checkpoint``).
    Before any best checkpoint exists only the optimizer restarts. A run resumed
    after a restart does not repeat it (the restarted epochs are saved in the
    checkpoint).
    """

    def __init__(self, epochs: Sequence[int]) -> None:
        epochs = list(epochs)
        if any(int(e) != e or e < 1 for e in epochs) or epochs != sorted(set(epochs)):
            raise ValueError(f"restart epochs must be increasing epoch numbers >= 1, got {epochs}")
        self.epochs = [int(e) for e in epochs]
        self.restarted: list[int] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and self.epochs and best_checkpoint_callback(trainer) is None:
            raise ValueError(
                "restarts from the best checkpoint need a ModelCheckpoint that monitors a metric "
                "(callbacks.model_checkpoint); none is configured"
            )

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if epoch not in self.epochs or epoch in self.restarted:
            return
        checkpoint = best_checkpoint_callback(trainer)
        best = checkpoint.best_model_path if checkpoint is not None else ""
        if best:
            load_weights(pl_module.model, best, strict=True, setting="restart from best")
            log.info("epoch %d: restarted from the best checkpoint %s", epoch, best)
        else:
            log.warning("epoch %d: no best checkpoint yet; only the optimizer restarts", epoch)
        for optimizer in trainer.optimizers:
            optimizer.state.clear()  # what a newly built optimizer has: no moments, no step count
        self.restarted.append(epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"restarted": list(self.restarted)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.restarted = list(state_dict.get("restarted", []))


def best_checkpoint_callback(trainer: L.Trainer) -> ModelCheckpoint | None:
    """The first checkpoint callback that keeps a best model by a monitored metric."""
    return next((cb for cb in trainer.checkpoint_callbacks if cb.monitor is not None), None)
