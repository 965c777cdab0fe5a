"""Interrupted runs lose nothing, runs are reproducible, non-finite losses are caught."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import tiny_overrides
from nrknet.train import train
from nrknet.training.module import NonFiniteLossError

pytestmark = pytest.mark.slow

# Runs nrknet-train; with NRKNET_TEST_SLOW_SAVE=k the (k+1)-th checkpoint write stalls half-way
# (after touching NRKNET_TEST_MARKER), so the test can kill the process while a file is being written.
# With NRKNET_TEST_STOP_AT_STEP=s the write of last.ckpt at global step s stalls instead: half-way
# (NRKNET_TEST_STOP=during) or before it starts (NRKNET_TEST_STOP=before, last.ckpt still complete).
# With NRKNET_TEST_PAUSE_AT_STEP=s the training batch of global step s waits for SIGTERM (after
# touching NRKNET_TEST_MARKER), so the signal lands at a known step.
CHILD = r"""
import io, os, sys, time
from pathlib import Path
import torch
real_save, calls, stall_next = torch.save, [0], [False]
def signal_and_wait():
    open(os.environ["NRKNET_TEST_MARKER"], "w").close()
    time.sleep(120)
def stalling_save(obj, f, *args, **kwargs):
    calls[0] += 1
    slow_after = os.environ.get("NRKNET_TEST_SLOW_SAVE")
    stall = stall_next[0] or (slow_after is not None and calls[0] > int(slow_after))
    if not stall or not hasattr(f, "write"):
        return real_save(obj, f, *args, **kwargs)
    buf = io.BytesIO()
    real_save(obj, buf, *args, **kwargs)
    data = buf.getvalue()
    f.write(data[: len(data) // 2]); f.flush()
    signal_and_wait()
    f.write(data[len(data) // 2 :])
torch.save = stalling_save
stop_step = os.environ.get("NRKNET_TEST_STOP_AT_STEP")
if stop_step is not None:
    import nrknet.training.callbacks as callbacks
    real_atomic_save = callbacks.atomic_torch_save
    def stopping_save(obj, path):
        if Path(path).name == "last.ckpt" and obj.get("global_step") == int(stop_step):
            if os.environ["NRKNET_TEST_STOP"] == "before":
                signal_and_wait()
            stall_next[0] = True
        real_atomic_save(obj, path)
    callbacks.atomic_torch_save = stopping_save
pause_step = os.environ.get("NRKNET_TEST_PAUSE_AT_STEP")
if pause_step is not None:
    import nrknet.training.module as module
    def pause_until_sigterm(self, batch, batch_idx):
        # the batch of this global step waits (touching the marker) until SIGTERM has come
        if self.trainer.global_step == int(pause_step):
            open(os.environ["NRKNET_TEST_MARKER"], "w").close()
            deadline = time.monotonic() + 120
            while not self.trainer._signal_connector.received_sigterm and time.monotonic() < deadline:
                time.sleep(0.02)
    module.NRKNetModule.on_train_batch_start = pause_until_sigterm
if sys.argv[0] == "-c":  # run with -c; a script file keeps its path, which DDP starts again
    sys.argv[0] = "nrknet-train"
from nrknet.train import main
main()
"""

EPOCHS = 4


def child_command(data_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    overrides = [
        o
        for o in tiny_overrides(data_dir, run_dir)
        if not o.startswith(("paths.output_dir", "paths.root_dir"))
    ]
    return [
        sys.executable, "-c", CHILD, "experiment=quickstart", *overrides,
        f"hydra.run.dir={run_dir}", f"trainer.max_epochs={EPOCHS}", "test=false", *extra,
    ]  # fmt: skip


def child_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(
                f"child ended early: {proc.returncode}\n{proc.stderr.read()[-3000:] if proc.stderr else ''}"
            )
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the child")
        time.sleep(0.05)


def assert_checkpoints_complete(run_dir: Path) -> None:
    for ckpt in (run_dir / "checkpoints").glob("*.ckpt"):
        state = torch.load(
            ckpt, map_location="cpu", weights_only=True
        )  # raises on a truncated file
        assert "state_dict" in state and "nrknet" in state, ckpt


def run_to_completion(cmd: list[str], env: dict[str, str]) -> dict:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def uninterrupted_steps(tmp_path_factory, synthetic_data_dir) -> int:
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    run_to_completion(child_command(synthetic_data_dir, run_dir), child_env())
    return json.loads((run_dir / "metrics.json").read_text())["global_step"]


def last_step(run_dir: Path) -> int:
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    return (
        torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"]
        if ckpt.exists()
        else -1
    )


@pytest.mark.parametrize(
    "moment", ["after_first_checkpoint", "while_writing_checkpoint", "late_in_training"]
)
def test_sigkill_then_resume_completes_with_same_step_count(
    moment, tmp_path, synthetic_data_dir, uninterrupted_steps
):
    run_dir = tmp_path / "run"
    marker = tmp_path / "writing"
    env = child_env()
    if moment == "while_writing_checkpoint":
        env = child_env(NRKNET_TEST_SLOW_SAVE="2", NRKNET_TEST_MARKER=str(marker))
    elif moment == "late_in_training":
        # stall before the end-of-epoch checkpoint of the last epoch but one: a kill there
        # lands late in training whatever the machine's speed
        late_step = (EPOCHS - 1) * uninterrupted_steps // EPOCHS
        env = child_env(
            NRKNET_TEST_STOP_AT_STEP=str(late_step),
            NRKNET_TEST_STOP="before",
            NRKNET_TEST_MARKER=str(marker),
        )
    proc = subprocess.Popen(
        child_command(synthetic_data_dir, run_dir),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        if moment == "after_first_checkpoint":
            wait_for(lambda: last_step(run_dir) > 0, proc)
        else:
            wait_for(marker.exists, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert_checkpoints_complete(run_dir)
    assert not (run_dir / "metrics.json").exists()
    killed_at = last_step(run_dir)
    if moment == "late_in_training":
        assert killed_at >= uninterrupted_steps // 2

    run_to_completion(child_command(synthetic_data_dir, run_dir, "auto_resume=true"), child_env())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == uninterrupted_steps
    assert metrics["epochs"] == EPOCHS
    assert last_step(run_dir) == uninterrupted_steps >= killed_at
    assert_checkpoints_complete(run_dir)
    assert not list((run_dir / "checkpoints").glob(".*.tmp")), (
        "stale partial files are cleaned on resume"
    )


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(
    tmp_path, synthetic_data_dir, uninterrupted_steps
):
    """The signal lands in the middle of the second epoch; last.ckpt then holds that step.

    Mutation this catches: a SIGTERM handler that saves nothing (last.ckpt keeps the end of
    the first epoch) or exits without a checkpoint.
    """
    run_dir, marker = tmp_path / "run", tmp_path / "paused"
    per_epoch = uninterrupted_steps // EPOCHS
    running = per_epoch + per_epoch // 2  # mid-way through the second epoch
    cmd = child_command(synthetic_data_dir, run_dir, f"trainer.max_epochs={EPOCHS * 50}")
    env = child_env(NRKNET_TEST_PAUSE_AT_STEP=str(running), NRKNET_TEST_MARKER=str(marker))
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    wait_for(marker.exists, proc)
    before = last_step(run_dir)
    assert before == per_epoch  # the last checkpoint before the signal: the first epoch's end
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err
    assert_checkpoints_complete(run_dir)
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == running + 1 > before  # the running step, finished, is saved
    assert f"SIGTERM: saved {run_dir / 'checkpoints' / 'last.ckpt'} at step {running + 1}" in err


def read_losses(run_dir: Path) -> list[str]:
    with (run_dir / "csv" / "metrics.csv").open() as f:
        return [r["train/loss_step"] for r in csv.DictReader(f) if r.get("train/loss_step")]


def test_same_seed_gives_identical_losses_and_weights_on_cpu(
    compose_train, tmp_path, synthetic_data_dir
):
    runs = []
    for name in ("a", "b"):
        run_dir = tmp_path / name
        cfg = compose_train(
            ["experiment=quickstart", *tiny_overrides(synthetic_data_dir, run_dir),
             "trainer.max_epochs=2", "trainer.log_every_n_steps=1", "test=false"]
        )  # fmt: skip
        train(cfg)
        state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        runs.append((read_losses(run_dir), state))
    (losses_a, state_a), (losses_b, state_b) = runs
    assert len(losses_a) >= 4 and losses_a == losses_b
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key


class _PoisonedLoss(torch.nn.Module):
    """Wraps the real loss and turns it into NaN on the given training steps."""

    def __init__(self, inner: torch.nn.Module, poisoned_calls: set[int]) -> None:
        super().__init__()
        self.inner, self.poisoned_calls, self.calls = inner, poisoned_calls, 0

    def forward(self, *args, **kwargs):
        terms = self.inner(*args, **kwargs)
        self.calls += 1
        if self.calls in self.poisoned_calls:
            terms = {**terms, "loss": terms["loss"] * float("nan")}
        return terms


def _poisoned_run(compose_train, run_dir: Path, data_dir: Path, poisoned: set[int], *extra: str):
    from nrknet.train import build

    cfg = compose_train(
        [
            "experiment=quickstart",
            *tiny_overrides(data_dir, run_dir),
            "trainer.max_epochs=2",
            "test=false",
            *extra,
        ]
    )
    datamodule, module, trainer = build(cfg)
    module.criterion = _PoisonedLoss(module.criterion, poisoned)
    return datamodule, module, trainer


def test_nonfinite_loss_stops_with_step_and_terms(compose_train, tmp_path, synthetic_data_dir):
    datamodule, module, trainer = _poisoned_run(
        compose_train, tmp_path / "r", synthetic_data_dir, {2}
    )
    with pytest.raises(NonFiniteLossError, match=r"step 1: loss=nan, mse=.*fdr=.*reblur="):
        trainer.fit(module, datamodule=datamodule)
    for p in module.model.parameters():
        assert torch.isfinite(p).all()


def test_nonfinite_batches_are_skipped_and_counted(compose_train, tmp_path, synthetic_data_dir):
    run_dir = tmp_path / "r"
    datamodule, module, trainer = _poisoned_run(
        compose_train, run_dir, synthetic_data_dir, {2, 4}, "skip_nonfinite=true"
    )
    trainer.fit(module, datamodule=datamodule)
    assert module.skipped_nonfinite == 2
    assert trainer.global_step == 6  # the run went on to the end
    best = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    assert best["nrknet"]["skipped_nonfinite"] >= 1
    assert all(
        torch.isfinite(v).all() for v in best["state_dict"].values() if v.is_floating_point()
    )


def test_sigterm_to_every_process_of_a_ddp_run_saves_and_exits(tmp_path, synthetic_data_dir):
    """SLURM signals every task at once; the launching rank also forwards the signal to its
    child, so rank 1 sees it twice, usually in the middle of a collective operation. Both
    ranks wait at step 5 (the second of 4 steps per epoch of the second epoch) for it.

    Mutation this catches: a run that stops without saving the step it was on (last.ckpt
    would keep the first epoch's end, step 4), or that hangs.
    """
    run_dir, marker = tmp_path / "run", tmp_path / "paused"
    overrides = [
        o for o in child_command(synthetic_data_dir, run_dir)[3:] if not o.startswith("trainer")
    ]
    overrides += [
        f"trainer.max_epochs={EPOCHS * 50}", "trainer=ddp", "trainer.accelerator=cpu",
        "trainer.devices=2", "trainer.sync_batchnorm=false", "trainer.enable_progress_bar=false",
        "data.num_train=16",  # 8 images, 4 steps of 2 per process and epoch
    ]  # fmt: skip
    # the script above, started by path so that the launching rank can start it again for rank 1
    script = tmp_path / "nrknet_train_child.py"
    script.write_text(CHILD)
    cmd = [sys.executable, str(script), *overrides]
    env = child_env(NRKNET_TEST_PAUSE_AT_STEP="5", NRKNET_TEST_MARKER=str(marker))
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:  # a file: a pipe nobody reads would stall the run by itself
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=stderr, text=True,
            start_new_session=True,
        )  # fmt: skip
        wait_for(marker.exists, proc)
        assert last_step(run_dir) == 4
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("the DDP run hung after SIGTERM")
    err = log.read_text()
    assert proc.returncode == 0, err[-3000:]
    assert "SIGTERM: saved" in err
    assert_checkpoints_complete(run_dir)
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6
