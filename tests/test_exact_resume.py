"""A run killed at any point and resumed ends bit-identical to the uninterrupted run (CPU)."""

from __future__ import annotations

import csv
import io
import json
import random
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from nrknet.data.datasets import PairedImageDataset
from nrknet.data.resumable import EpochShuffleSampler, SampleKey, augment_seed, resumable_loader
from nrknet.training.callbacks import GlobalRngState, LastCheckpoint
from test_datasets import _coordinate_pair
from test_reliability import (
    EPOCHS,
    assert_checkpoints_complete,
    child_command,
    child_env,
    last_step,
    run_to_completion,
    wait_for,
)

# The tiny quickstart run: 6 pairs in batches of 2, so 3 steps per epoch and 12 in all.
STEPS_PER_EPOCH = 3
EVERY_STEP = ("callbacks.last_checkpoint.every_n_train_steps=1", "trainer.log_every_n_steps=1")


# ---------------------------------------------------------------- the pieces, in-process


def test_sampler_order_depends_only_on_seed_and_epoch() -> None:
    data = list(range(10))
    a, b = EpochShuffleSampler(data, seed=3), EpochShuffleSampler(data, seed=3)
    first = list(a)
    assert first == list(b) and sorted(k.index for k in first) == data
    assert first[0] == SampleKey(first[0].index, augment_seed(3, 0, first[0].index))
    b.set_epoch(1)
    second = list(b)
    assert [k.index for k in second] != [k.index for k in first]
    assert {k.augment_seed for k in second}.isdisjoint(k.augment_seed for k in first)
    assert list(EpochShuffleSampler(data, seed=3, epoch=1)) == second
    shards = [list(EpochShuffleSampler(data, seed=3, num_replicas=2, rank=r)) for r in (0, 1)]
    assert sorted(k.index for shard in shards for k in shard) == data


def test_sampler_iterator_resumes_from_its_state() -> None:
    sampler = EpochShuffleSampler(list(range(9)), seed=0, epoch=2)
    full = list(sampler)
    it = iter(sampler)
    head = [next(it) for _ in range(4)]
    state = it.state_dict()
    sampler.set_epoch(0)  # a resumed iterator does not depend on when set_epoch is called
    resumed = iter(sampler)
    resumed.load_state_dict(state)
    assert head + list(resumed) == full


def test_augmentation_of_a_key_ignores_the_global_rng(tmp_path: Path) -> None:
    ds = PairedImageDataset(_coordinate_pair(tmp_path, 30, 30), crop_size=12, augment=True)
    key = SampleKey(0, augment_seed(5, 1, 0))
    torch.manual_seed(0)
    first = ds[key]["blurry"]
    torch.manual_seed(1)
    assert torch.equal(ds[key]["blurry"], first)
    other = [ds[SampleKey(0, augment_seed(5, e, 0))]["blurry"] for e in range(2, 8)]
    assert any(not torch.equal(o, first) for o in other)  # other epochs, other crops


class _Keys(Dataset):
    """Items that show which key produced them."""

    def __len__(self) -> int:
        return 11

    def __getitem__(self, key: SampleKey) -> torch.Tensor:
        return torch.tensor([key.index, key.augment_seed])


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loader_state_resumes_mid_epoch(num_workers: int) -> None:
    def loader():
        return resumable_loader(
            _Keys(), 2, num_workers=num_workers, pin_memory=False, seed=1, epoch=3
        )

    full = list(loader())
    first = loader()
    it = iter(first)
    head = [next(it) for _ in range(2)]
    state = first.state_dict()
    resumed = loader()
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(head) + len(rest) == len(full) == 6
    assert all(torch.equal(a, b) for a, b in zip(head + rest, full, strict=True))


def test_global_rng_state_round_trips_through_a_weights_only_checkpoint() -> None:
    callback = GlobalRngState()
    buffer = io.BytesIO()
    torch.save({"callbacks": {"rng": callback.state_dict()}}, buffer)
    draws = (torch.rand(3), np.random.rand(3), random.random())
    buffer.seek(0)
    callback.load_state_dict(torch.load(buffer, weights_only=True)["callbacks"]["rng"])
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(draws[0], again[0]) and np.array_equal(draws[1], again[1])
    assert draws[2] == again[2]


def test_checkpoint_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="callbacks.last_checkpoint.every_n_train_steps"):
        LastCheckpoint("ckpts", every_n_train_steps=0)


# ---------------------------------------------------------------- killed runs, compared bit for bit


def logged_losses(run_dir: Path) -> dict[str, str]:
    """Step -> training loss from the CSV log; a step logged twice counts with its later row."""
    with (run_dir / "csv" / "metrics.csv").open() as f:
        return {r["step"]: r["train/loss_step"] for r in csv.DictReader(f) if r["train/loss_step"]}


def final_state(run_dir: Path) -> tuple[dict, dict]:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return ckpt, json.loads((run_dir / "metrics.json").read_text())


def assert_same_run(run_dir: Path, reference: Path) -> None:
    (ckpt, metrics), (ref_ckpt, ref_metrics) = final_state(run_dir), final_state(reference)
    assert ckpt["state_dict"].keys() == ref_ckpt["state_dict"].keys()
    for key, value in ref_ckpt["state_dict"].items():
        assert torch.equal(ckpt["state_dict"][key], value), key
    for state, ref in zip(
        ckpt["optimizer_states"][0]["state"].values(),
        ref_ckpt["optimizer_states"][0]["state"].values(),
        strict=True,
    ):
        assert torch.equal(state["exp_avg_sq"], ref["exp_avg_sq"])
    assert ckpt["lr_schedulers"] == ref_ckpt["lr_schedulers"]
    assert metrics["best_val_psnr"] == ref_metrics["best_val_psnr"] is not None
    assert metrics["global_step"] == ref_metrics["global_step"] == EPOCHS * STEPS_PER_EPOCH
    assert logged_losses(run_dir) == logged_losses(reference)


def kill_at(run_dir: Path, data_dir: Path, stop_step: int, how: str, *extra: str) -> int:
    """Run to the write of last.ckpt at ``stop_step`` (before it or half-way), SIGKILL.

    Returns the step of the last.ckpt left behind.
    """
    marker = run_dir.parent / f"{run_dir.name}.stopped"
    env = child_env(
        NRKNET_TEST_STOP_AT_STEP=str(stop_step),
        NRKNET_TEST_STOP=how,
        NRKNET_TEST_MARKER=str(marker),
    )
    proc = subprocess.Popen(
        child_command(data_dir, run_dir, *extra),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(marker.exists, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert_checkpoints_complete(run_dir)
    return last_step(run_dir)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, synthetic_data_dir) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    run_to_completion(child_command(synthetic_data_dir, run_dir, *EVERY_STEP), child_env())
    return run_dir


# (moment, stop at the write of last.ckpt at this step, stop how, step last.ckpt then holds, workers).
# The epoch boundary with 0 workers is the quickstart test below.
KILLS = [
    ("epoch_boundary", 2 * STEPS_PER_EPOCH + 1, "before", 2 * STEPS_PER_EPOCH, 2),
    ("mid_epoch", 2 * STEPS_PER_EPOCH + 2, "before", 2 * STEPS_PER_EPOCH + 1, 0),
    ("mid_epoch", 2 * STEPS_PER_EPOCH + 2, "before", 2 * STEPS_PER_EPOCH + 1, 2),
    # the epoch-end write of last.ckpt, after best.ckpt of the same epoch was written
    ("checkpoint_write", 2 * STEPS_PER_EPOCH, "during", 2 * STEPS_PER_EPOCH - 1, 0),
    ("checkpoint_write", 2 * STEPS_PER_EPOCH, "during", 2 * STEPS_PER_EPOCH - 1, 2),
]


@pytest.mark.slow
@pytest.mark.parametrize(("moment", "stop_step", "how", "saved_step", "num_workers"), KILLS)
def test_killed_run_resumes_bit_identical(
    moment, stop_step, how, saved_step, num_workers, tmp_path, synthetic_data_dir, reference_run
):
    run_dir = tmp_path / "run"
    extra = (*EVERY_STEP, f"data.num_workers={num_workers}")
    assert kill_at(run_dir, synthetic_data_dir, stop_step, how, *extra) == saved_step
    assert not (run_dir / "metrics.json").exists()
    run_to_completion(
        child_command(synthetic_data_dir, run_dir, *extra, "auto_resume=true"), child_env()
    )
    assert_same_run(run_dir, reference_run)
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))


@pytest.mark.slow
def test_quickstart_killed_in_epoch_3_ends_as_uninterrupted(
    tmp_path, synthetic_data_dir, reference_run
):
    """Default checkpoint settings (epoch ends only here); the reference saved every step."""
    run_dir = tmp_path / "run"
    # stopped before the end-of-epoch-3 save: epoch 3 trained and validated, last.ckpt from epoch 2
    saved = kill_at(
        run_dir, synthetic_data_dir, 3 * STEPS_PER_EPOCH, "before", "trainer.log_every_n_steps=1"
    )
    assert saved == 2 * STEPS_PER_EPOCH
    run_to_completion(
        child_command(synthetic_data_dir, run_dir, "trainer.log_every_n_steps=1", "ckpt_path=last"),
        child_env(),
    )
    assert_same_run(run_dir, reference_run)


@pytest.mark.slow
def test_quickstart_validating_every_2nd_epoch_saves_and_resumes_at_every_epoch_end(
    tmp_path, synthetic_data_dir
):
    """The quickstart's own cadence: epoch 3 is not validated, yet last.ckpt is written at its
    end (Lightning would otherwise save only after validations), and a run killed before that
    write ends as the uninterrupted one."""
    cadence = ("trainer.check_val_every_n_epoch=2", "trainer.log_every_n_steps=1")
    reference = tmp_path / "uninterrupted"
    run_to_completion(child_command(synthetic_data_dir, reference, *cadence), child_env())
    run_dir = tmp_path / "run"
    assert kill_at(run_dir, synthetic_data_dir, 3 * STEPS_PER_EPOCH, "before", *cadence) == (
        2 * STEPS_PER_EPOCH
    )
    run_to_completion(
        child_command(synthetic_data_dir, run_dir, *cadence, "ckpt_path=last"), child_env()
    )
    assert_same_run(run_dir, reference)
