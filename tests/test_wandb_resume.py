"""A resumed run folder logs to the same Weights & Biases run (offline here)."""

from __future__ import annotations

import json

import pytest

from conftest import tiny_overrides
from nrknet.cli import finish_wandb
from nrknet.train import train
from nrknet.training.wandb_logger import ResumableWandbLogger, persistent_run_id

pytest.importorskip("wandb")


def test_run_id_is_written_once_and_read_back(tmp_path):
    id_file = tmp_path / "run" / "wandb_id.txt"
    run_id = persistent_run_id(id_file)
    assert id_file.read_text().strip() == run_id and len(run_id) == 8
    assert persistent_run_id(id_file) == run_id
    id_file.write_text("two ids\n")
    with pytest.raises(ValueError, match="wandb_id.txt: expected one wandb run id"):
        persistent_run_id(id_file)


def test_explicit_id_wins_and_resume_is_allowed(tmp_path):
    logger = ResumableWandbLogger(
        save_dir=str(tmp_path), id_file=tmp_path / "wandb_id.txt", id="fixed123", offline=True
    )
    assert logger._wandb_init["id"] == "fixed123"
    assert logger._wandb_init["resume"] == "allow"
    assert not (tmp_path / "wandb_id.txt").exists()


@pytest.mark.slow
def test_two_starts_of_a_run_folder_log_to_one_wandb_run(
    compose_train, tmp_path, synthetic_data_dir, monkeypatch
):
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = tmp_path / "run"
    base = [
        "experiment=quickstart",
        *tiny_overrides(synthetic_data_dir, run_dir),
        "logger=wandb",
        "test=false",
        "auto_resume=true",
    ]
    ids = []
    for epochs in (1, 2):
        try:
            train(compose_train([*base, f"trainer.max_epochs={epochs}"]))
        finally:
            finish_wandb()
        ids.append((run_dir / "wandb_id.txt").read_text().strip())
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 2  # it did resume
    assert ids[0] == ids[1]
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 2
    assert all(run.name.endswith(f"-{ids[0]}") for run in runs)
