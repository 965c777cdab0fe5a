"""nrknet-train init_from: weights only, with a fresh optimizer, schedule and epoch (unlike ckpt_path)."""

from __future__ import annotations

import json

import pytest
import torch
from lightning.pytorch.callbacks import Callback

import nrknet.train as train_module
from conftest import tiny_overrides
from nrknet.train import train
from nrknet.weights import read_model_weights
from nrknet.weights.checkpoint import CheckpointError

pytestmark = pytest.mark.slow


class StartProbe(Callback):
    """What the run looks like when fitting starts: epoch, step, optimizer state, weights."""

    def on_train_start(self, trainer, pl_module) -> None:
        self.epoch, self.step = trainer.current_epoch, trainer.global_step
        self.optimizer_state = len(trainer.optimizers[0].state)
        self.lr = trainer.optimizers[0].param_groups[0]["lr"]
        self.weights = {k: v.clone() for k, v in pl_module.model.state_dict().items()}


@pytest.fixture
def probe(monkeypatch) -> StartProbe:
    probe = StartProbe()
    build = train_module.build

    def build_with_probe(cfg):
        datamodule, module, trainer = build(cfg)
        trainer.callbacks.append(probe)
        return datamodule, module, trainer

    monkeypatch.setattr(train_module, "build", build_with_probe)
    return probe


def test_init_from_starts_fresh_while_ckpt_path_resumes(
    compose_train, tmp_path, synthetic_data_dir, probe
):
    def run(folder, *extra):
        base = ["experiment=quickstart", *tiny_overrides(synthetic_data_dir, tmp_path / folder)]
        train(compose_train([*base, "test=false", *extra]))
        return json.loads((tmp_path / folder / "metrics.json").read_text())

    first = run("first", "trainer.max_epochs=2")
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    steps_per_epoch = first["global_step"] // 2

    tuned = run("tuned", "trainer.max_epochs=1", f"init_from={last}")
    assert (probe.epoch, probe.step, probe.optimizer_state) == (0, 0, 0)
    assert probe.lr == pytest.approx(1.0e-3)  # the schedule starts again too
    expected = read_model_weights(last)
    assert all(torch.equal(probe.weights[k], expected[k]) for k in expected)
    assert tuned["epochs"] == 1 and tuned["global_step"] == steps_per_epoch

    resumed = run("first", "trainer.max_epochs=3", f"ckpt_path={last}")
    assert (probe.epoch, probe.step) == (2, 2 * steps_per_epoch)
    assert probe.optimizer_state > 0
    assert resumed["epochs"] == 3


def test_authors_weights_fine_tune_a_gated_model_only_when_not_strict(
    compose_train, tmp_path, synthetic_data_dir, parity_fixture, probe
):
    pth = tmp_path / "authors_w8.pth"
    torch.save(parity_fixture["state_dict"], pth)
    base = [
        "experiment=quickstart_gate",
        *tiny_overrides(synthetic_data_dir, tmp_path / "run"),
        "model.width=8",
        "trainer.max_epochs=1",
        "test=false",
        f"init_from={pth}",
    ]
    # the gated quickstart model has a residual gate that the authors' model lacks
    with pytest.raises(CheckpointError, match=r"authors_w8.pth: .*missing: gate"):
        train(compose_train(base))
    train(compose_train([*base, "init_strict=false"]))
    assert float(probe.weights["gate"]) == 0.0
    assert torch.equal(
        probe.weights["unet.head.weight"], read_model_weights(pth)["unet.head.weight"]
    )


def test_ckpt_path_to_a_weights_only_file_points_to_init_from(
    compose_train, tmp_path, synthetic_data_dir
):
    from nrknet.models.nrknet import NRKNet
    from nrknet.weights.checkpoint import save_model

    weights = tmp_path / "weights.ckpt"
    save_model(NRKNet(width=8), weights)
    cfg = compose_train(
        [*tiny_overrides(synthetic_data_dir, tmp_path / "run"), f"ckpt_path={weights}"]
    )
    with pytest.raises(CheckpointError, match="holds weights only.*init_from="):
        train(cfg)


def test_a_finished_run_is_neither_overwritten_nor_resumed_into_another_network(
    compose_train, tmp_path, synthetic_data_dir
):
    base = ["experiment=quickstart", *tiny_overrides(synthetic_data_dir, tmp_path / "run")]
    train(compose_train([*base, "test=false", "trainer.max_epochs=1"]))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    before = last.read_bytes()

    with pytest.raises(FileExistsError, match="auto_resume=true") as error:
        train(compose_train([*base, "test=false", "trainer.max_epochs=2"]))
    assert "best.ckpt" in str(error.value) and "last.ckpt" in str(error.value)

    # resuming another network: the settings that differ, in one line
    other = [*base, "test=false", "trainer.max_epochs=2", "model.width=8"]
    with pytest.raises(CheckpointError) as error:
        train(compose_train([*other, "ckpt_path=last"]))
    message = str(error.value)
    assert "model.width=4 in the checkpoint, 8 here" in message and "init_from=" in message
    assert "\n" not in message
    assert last.read_bytes() == before  # nothing written by the refused runs

    # resuming with another optimizer setting: refused unless asked for
    other = [*base, "test=false", "trainer.max_epochs=2", "optimizer.lr=0.5"]
    with pytest.raises(CheckpointError, match=r"optimizer\.lr=0\.001 in the checkpoint, 0\.5 here"):
        train(compose_train([*other, "auto_resume=true"]))
    assert last.read_bytes() == before
    train(compose_train([*other, "auto_resume=true", "resume_check=false"]))
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"] == 2

    # a run stopped before its first last.ckpt has nothing to resume: auto_resume starts it again
    last.unlink()
    train(compose_train([*base, "test=false", "trainer.max_epochs=1", "auto_resume=true"]))
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"] == 1

    # files that are no checkpoint at all, given to resume from another folder
    (tmp_path / "empty.ckpt").write_bytes(b"")
    (tmp_path / "garbage.ckpt").write_bytes(b"\xaa" * 300)
    (tmp_path / "folder.ckpt").mkdir()
    fresh = ["experiment=quickstart", *tiny_overrides(synthetic_data_dir, tmp_path / "fresh")]
    for name, reason in [
        ("empty.ckpt", "the file is empty"),
        ("garbage.ckpt", "not a PyTorch file"),
        ("folder.ckpt", "is a folder"),
    ]:
        with pytest.raises(CheckpointError, match=reason) as error:
            train(compose_train([*fresh, f"ckpt_path={tmp_path / name}"]))
        assert "\n" not in str(error.value)


def test_a_run_recorded_with_the_old_module_paths_resumes(
    compose_train, tmp_path, synthetic_data_dir
):
    """Mutation: compare the recorded settings without ``current_targets`` -> refused."""
    import torch

    from nrknet.weights.init import MOVED_MODULES

    base = ["experiment=quickstart", *tiny_overrides(synthetic_data_dir, tmp_path / "run")]
    train(compose_train([*base, "test=false", "trainer.max_epochs=1"]))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    new_to_old = {new: old for old, new in MOVED_MODULES.items()}
    loss = ckpt["nrknet"]["run_settings"]["loss"]
    module, _, name = loss["_target_"].rpartition(".")
    loss["_target_"] = f"{new_to_old[module]}.{name}"  # as written before the move
    torch.save(ckpt, last)

    train(compose_train([*base, "test=false", "trainer.max_epochs=2", "auto_resume=true"]))
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"] == 2


def test_every_moved_module_has_its_new_home():
    import importlib

    from nrknet.weights.init import MOVED_MODULES

    for old, new in MOVED_MODULES.items():
        importlib.import_module(new)
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(old)
