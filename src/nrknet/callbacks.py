"""Lightning plugins and loggers of the framework: atomic checkpoints, a resumable CSV log."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from nrknet.checkpoint import atomic_torch_save


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes every checkpoint to a temporary file in the target folder, then renames it.

    A run killed while saving leaves the previous checkpoint intact and at
    most a hidden ``.tmp`` file, never a truncated ``.ckpt``.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        if storage_options is not None or get_filesystem(path).protocol not in (
            "file",
            ("file", "local"),
        ):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_torch_save(checkpoint, path)


class _AppendingWriter(ExperimentWriter):
    """CSV writer that continues an existing ``metrics.csv`` instead of deleting it."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                header = next(csv.reader(file), [])
            self.metrics_keys = sorted(set(header))


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` whose log survives a resumed run: new rows are appended to ``metrics.csv``.

    Rows of an epoch that was interrupted and then run again may appear twice
    (the later ones are the ones that count).
    """

    @property
    @rank_zero_experiment
    def experiment(self) -> _AppendingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


class SigtermCheckpoint(Callback):
    """On SIGTERM (what SLURM sends before a time limit), save ``last.ckpt`` so the run can resume.

    Lightning stops the loops at the next batch boundary with ``SIGTERMException``;
    this writes the checkpoint at that point and the process exits with status 0.
    """

    def __init__(self, dirpath: str, filename: str = "last") -> None:
        self.path = Path(dirpath) / f"{filename}.ckpt"

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        trainer.save_checkpoint(self.path)
        if trainer.is_global_zero:
            print(
                f"SIGTERM: saved {self.path} at step {trainer.global_step}; resume with auto_resume=true",
                file=sys.stderr,
                flush=True,
            )
