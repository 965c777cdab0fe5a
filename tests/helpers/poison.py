"""A callback that makes one process's batch non-finite (for the DDP tests, run in subprocesses)."""

from __future__ import annotations

import lightning as L


class PoisonBatch(L.Callback):
    """Fill the blurry images of batch ``batch_idx`` on process ``rank`` with NaN."""

    def __init__(self, rank: int = 1, batch_idx: int = 1) -> None:
        self.rank, self.batch_idx = rank, batch_idx

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_rank == self.rank and batch_idx == self.batch_idx:
            batch["blurry"].fill_(float("nan"))
