"""Steady-state timing of the concurrent jobs of one sweep (a callback each job loads).

Every job of a wave trains ``warmup_steps`` steps (start-up, compilation and cuDNN's choices
happen there), then waits at a file barrier until all ``parties`` jobs of the wave have got
that far, and from then on records the wall-clock time at the end of each step, after a
device synchronisation. :func:`steady_throughput` turns the jobs' records into the aggregate
rate over the window in which all of them were training, so that start-up and compilation,
which a long run pays once, do not count.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

RECORD = "step_times.json"


class SteadyStateTimer(Callback):
    """Time the steps after ``warmup_steps``, once all ``parties`` jobs have reached them.

    Writes ``<out_dir>/step_times.json``: ``start`` (wall clock at the barrier's release),
    ``ends`` (wall clock after each later step), ``waited_s`` and ``timed_out`` (the barrier
    gave up after ``timeout_s`` seconds: the others never came).
    """

    def __init__(
        self,
        out_dir: str,
        barrier_dir: str,
        parties: int,
        warmup_steps: int = 5,
        timeout_s: float = 600.0,
    ) -> None:
        if int(parties) < 1 or int(warmup_steps) < 1:
            raise ValueError(
                f"SteadyStateTimer: parties and warmup_steps must be >= 1, got {parties}, "
                f"{warmup_steps}"
            )
        self.out_dir, self.barrier_dir = Path(out_dir), Path(barrier_dir)
        self.parties, self.warmup_steps = int(parties), int(warmup_steps)
        self.timeout_s = float(timeout_s)
        self.start: float | None = None
        self.ends: list[float] = []
        self.waited_s = 0.0
        self.timed_out = False

    def _wait_for_all(self) -> None:
        self.barrier_dir.mkdir(parents=True, exist_ok=True)
        (self.barrier_dir / f"{os.getpid()}-{id(self)}").touch()
        arrived = time.monotonic()
        while sum(1 for _ in self.barrier_dir.iterdir()) < self.parties:
            if time.monotonic() - arrived > self.timeout_s:
                self.timed_out = True
                break
            time.sleep(0.02)
        self.waited_s = time.monotonic() - arrived

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if torch.cuda.is_available() and pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        if self.start is not None:
            self.ends.append(time.time())
        elif trainer.global_step >= self.warmup_steps:
            self._wait_for_all()
            self.start = time.time()

    def on_train_end(self, trainer, pl_module) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "start": self.start,
            "ends": self.ends,
            "warmup_steps": self.warmup_steps,
            "parties": self.parties,
            "waited_s": self.waited_s,
            "timed_out": self.timed_out,
        }
        (self.out_dir / RECORD).write_text(json.dumps(record))


def steady_throughput(jobs: list[dict]) -> dict:
    """Aggregate images/s while every job was past the barrier and still training.

    ``jobs``: one dict per job with ``start``, ``ends`` (as recorded) and ``batch_size``.
    The window runs from the latest ``start`` to the earliest last step; each job counts
    the images of its steps that ended inside it.
    """
    if not jobs or any(j["start"] is None or not j["ends"] for j in jobs):
        raise RuntimeError("a job recorded no timed steps (it stopped before its warm-up ended)")
    window_start = max(j["start"] for j in jobs)
    window_end = min(j["ends"][-1] for j in jobs)
    if window_end <= window_start:
        raise RuntimeError(
            "the jobs never trained at the same time: one finished before another left "
            "the barrier (timed out?); give them more steps"
        )
    images = sum(
        j["batch_size"] * sum(1 for end in j["ends"] if window_start < end <= window_end)
        for j in jobs
    )
    per_job = [j["batch_size"] * len(j["ends"]) / (j["ends"][-1] - j["start"]) for j in jobs]
    return {
        "window_s": window_end - window_start,
        "images_in_window": images,
        "images_per_s": images / (window_end - window_start),
        "per_job_images_per_s": sum(per_job) / len(per_job),
        "barrier_timed_out": any(j.get("timed_out") for j in jobs),
    }
