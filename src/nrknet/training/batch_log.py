"""Plain progress lines for batch jobs (SLURM, nohup), where a progress bar shows nothing useful.

One line per event, ``key=value`` fields separated by spaces, e.g.::

    [train] epoch=3 step=1200/40000 loss=0.03121 img/s=215.3 eta=1:02:03 val_psnr=25.310
    [val] epoch=3 step=1250/40000 loss=0.03087 img/s=214.8 eta=1:01:40 val_psnr=25.402

``loss`` is the mean training loss since the previous training line,
``img/s`` the training throughput over the same steps (all processes together, data
loading included, validation excluded), ``eta`` the time left for
``trainer.estimated_stepping_batches`` at the average pace so far (``?``
when training has no step limit) and ``val_psnr`` the latest validation
score (``-`` before the first validation).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback, ProgressBar
from lightning.pytorch.trainer.states import TrainerFn

__all__ = ["BatchLog", "for_batch_jobs"]


def _batch_size(batch: Any) -> int:
    """Leading size of the first tensor in a batch (a tensor, or a mapping or sequence of them)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    if isinstance(batch, Mapping):
        batch = list(batch.values())
    if isinstance(batch, list | tuple):
        return next((n for n in map(_batch_size, batch) if n), 0)
    return 0


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class BatchLog(Callback):
    """Print a plain progress line every ``every_n_steps`` optimizer steps and after each validation.

    Args:
        every_n_steps: steps between two training lines.
        enabled: ``"auto"`` (only when stdout is not a terminal), ``True`` or ``False``.
        val_metric: the logged metric shown as ``val_psnr``.
    """

    def __init__(
        self, every_n_steps: int = 50, enabled: bool | str = "auto", val_metric: str = "val/psnr"
    ) -> None:
        if int(every_n_steps) < 1:
            raise ValueError(f"callbacks.batch_log.every_n_steps must be >= 1, got {every_n_steps}")
        if enabled not in ("auto", True, False):
            raise ValueError(
                f"callbacks.batch_log.enabled must be auto, true or false, got {enabled!r}"
            )
        self.every_n_steps = int(every_n_steps)
        self.enabled = not sys.stdout.isatty() if enabled == "auto" else bool(enabled)
        self.val_metric = val_metric
        self._val_started: float | None = None
        self._reset_window(time.perf_counter())

    def _reset_window(self, now: float) -> None:
        self._window_start = now
        self._window_images = 0
        self._loss_sum: torch.Tensor | float = 0.0
        self._loss_count = 0

    # ------------------------------------------------------------------ hooks

    def on_train_start(self, trainer, pl_module) -> None:
        now = time.perf_counter()
        self._start, self._start_step = now, trainer.global_step
        self._last_step = trainer.global_step
        self._rate = self._loss = math.nan
        self._reset_window(now)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.enabled:
            return
        self._window_images += _batch_size(batch) * trainer.world_size
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, torch.Tensor):
            self._loss_sum = self._loss_sum + loss.detach().float()  # no device sync per step
            self._loss_count += 1
        step = trainer.global_step
        if step != self._last_step and step % self.every_n_steps == 0:
            self._last_step = step
            self._emit(trainer, "train", time.perf_counter())

    def on_validation_start(self, trainer, pl_module) -> None:
        if self.enabled and not trainer.sanity_checking and trainer.state.fn == TrainerFn.FITTING:
            self._val_started = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if not self.enabled or trainer.sanity_checking or self._val_started is None:
            return
        now = time.perf_counter()
        # validation time counts for the ETA but not for the training throughput
        self._window_start += now - self._val_started
        self._val_started = None
        self._emit(trainer, "val", now)

    # ------------------------------------------------------------------ output

    def _emit(self, trainer, event: str, now: float) -> None:
        elapsed = now - self._window_start
        if self._window_images and elapsed > 0:
            self._rate = self._window_images / elapsed
        if self._loss_count:
            self._loss = float(self._loss_sum) / self._loss_count
        if event == "train":
            self._reset_window(now)
        if trainer.is_global_zero:
            print(self.format_line(trainer, event, self._loss, now), file=sys.stdout, flush=True)

    def format_line(self, trainer, event: str, loss: float, now: float) -> str:
        step, total = trainer.global_step, trainer.estimated_stepping_batches
        done = step - self._start_step
        pace = (now - self._start) / done if done > 0 else math.nan
        eta = (total - step) * pace if math.isfinite(total) else math.inf
        val = trainer.callback_metrics.get(self.val_metric)
        fields = [
            f"epoch={trainer.current_epoch}",
            f"step={step}/{total if math.isfinite(total) else '?'}",
            f"loss={loss:.5f}" if math.isfinite(loss) else "loss=-",
            f"img/s={self._rate:.1f}" if math.isfinite(self._rate) else "img/s=-",
            f"eta={_clock(eta) if math.isfinite(pace) else '?'}",
            f"val_psnr={float(val):.3f}" if val is not None else "val_psnr=-",
        ]
        return f"[{event}] " + " ".join(fields)


def for_batch_jobs(callbacks: list[Callback]) -> tuple[list[Callback], dict[str, Any]]:
    """Drop progress bars when a :class:`BatchLog` is active: off a terminal they show nothing.

    Returns the callbacks and the Trainer arguments to add (``enable_progress_bar=False``,
    without which Lightning would put its default bar back).
    """
    if not any(isinstance(c, BatchLog) and c.enabled for c in callbacks):
        return callbacks, {}
    kept = [c for c in callbacks if not isinstance(c, ProgressBar)]
    return kept, {"enable_progress_bar": False}
