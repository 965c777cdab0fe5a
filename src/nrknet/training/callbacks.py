"""Lightning plugins, callbacks and loggers of the framework: atomic checkpoints, the
resumable ``last.ckpt`` with the global random states, a resumable CSV log."""

from __future__ import annotations

import csv
import random
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from nrknet.weights.checkpoint import atomic_torch_save


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
    (the later ones are the ones that count). Every row is written at once
    (``flush_logs_every_n_steps=1``; rows come every ``log_every_n_steps``), so
    a killed run loses none logged before its last checkpoint.
    """

    def __init__(self, *args: Any, flush_logs_every_n_steps: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, flush_logs_every_n_steps=flush_logs_every_n_steps, **kwargs)

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

    def on_train_start(self, trainer, pl_module) -> None:
        # Lightning's own handler broadcasts between the processes from inside the signal handler;
        # when the signal lands in another collective operation (SLURM signals every process, and
        # the launching one forwards it) the processes wait for each other forever. A handler that
        # only records the signal is enough: the training loop shares rank 0's record at the next
        # batch, and every process stops there.
        if trainer.world_size > 1 and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._record_sigterm(trainer))

    @staticmethod
    def _record_sigterm(trainer):
        connector = trainer._signal_connector
        launcher = trainer.strategy.launcher

        def record(signum, frame) -> None:
            if not connector.received_sigterm and launcher is not None:
                launcher.kill(signum)  # the processes this one started, as Lightning does
            connector.received_sigterm = True

        return record

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


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt`` after every epoch and, inside an epoch, every ``every_n_train_steps`` steps.

    A mid-epoch save is skipped on an epoch's last batch: the end-of-epoch save
    follows at once, after the validation and the epoch's scheduler step that a
    checkpoint taken in between would make a resumed run skip. The end-of-epoch
    save is made at every epoch's end, validated or not (Lightning's default
    saves only after validations when ``check_val_every_n_epoch`` is not 1).
    """

    def __init__(
        self, dirpath: str, filename: str = "last", every_n_train_steps: int | None = None
    ) -> None:
        if every_n_train_steps is not None and int(every_n_train_steps) < 1:
            raise ValueError(
                "callbacks.last_checkpoint.every_n_train_steps must be a positive number of "
                f"steps or null, got {every_n_train_steps!r}"
            )
        super().__init__(
            dirpath=dirpath,
            filename=filename,
            monitor=None,
            save_top_k=1,
            every_n_epochs=1,
            save_on_train_epoch_end=True,
            enable_version_counter=False,
        )
        self.steps_between_saves = None if every_n_train_steps is None else int(every_n_train_steps)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        every = self.steps_between_saves
        if (
            every is None
            or trainer.global_step % every
            or trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
            or self._should_skip_saving_checkpoint(trainer)
        ):
            return
        self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))


class GlobalRngState(Callback):
    """Carries the global random states (torch, CUDA, numpy, Python) in every checkpoint.

    They are put back when a run resumes, so code that draws from them goes on
    as it would have. Stored as tensors and plain numbers, which
    the safe reader (``weights_only=True``) reads.
    """

    def state_dict(self) -> dict[str, Any]:
        _, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {
                "keys": torch.from_numpy(keys.astype(np.int64)),
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "cached_gaussian": float(cached_gaussian),
            },
            "python": random.getstate(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        if state_dict["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
        numpy_state = state_dict["numpy"]
        np.random.set_state(
            (
                "MT19937",
                numpy_state["keys"].numpy().astype(np.uint32),
                numpy_state["pos"],
                numpy_state["has_gauss"],
                numpy_state["cached_gaussian"],
            )
        )
        version, internal, gauss_next = state_dict["python"]
        random.setstate((version, tuple(internal), gauss_next))
