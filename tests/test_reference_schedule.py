"""scheduler=reference_code: the reference's learning-rate steps and its restarts from the best checkpoint."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf

from conftest import CONFIG_DIR, tiny_overrides
from nrknet.train import build
from nrknet.training.restarts import RestartFromBest
from nrknet.training.schedules import EpochSteps, FractionalSteps
from nrknet.weights import read_model_weights


def test_shipped_schedule_is_the_reference_epoch_for_epoch():
    cfg = OmegaConf.load(Path(CONFIG_DIR) / "scheduler" / "reference_code.yaml")
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = instantiate(cfg.scheduler)(optimizer=optimizer)
    factor = scheduler.lr_lambdas[0]
    # the reference script: 2000 <= epoch <= 3000 -> 0.5, 3000 < epoch <= 4000 -> 0.25, > 4000 -> 0.1
    expected = {0: 1, 1999: 1, 2000: 0.5, 3000: 0.5, 3001: 0.25, 4000: 0.25, 4001: 0.1, 4999: 0.1}
    assert {epoch: factor(epoch) for epoch in expected} == expected
    assert list(cfg.callbacks.restart_from_best.epochs) == [2000, 3000, 4000]


def test_epoch_steps_validate_and_fractions_still_scale():
    with pytest.raises(ValueError, match="increasing epoch numbers"):
        EpochSteps([3, 2], [0.5, 0.1])
    with pytest.raises(ValueError, match="one factor per milestone"):
        EpochSteps([2], [0.5, 0.1])
    assert FractionalSteps(4000, [0.5, 0.75], [0.5, 0.25]).epochs == [2000, 3000]
    with pytest.raises(ValueError, match="increasing epoch numbers >= 1"):
        RestartFromBest([0])


class RestartProbe(Callback):
    """Records, at the start of each epoch, what the restart callback (which runs before) left."""

    def __init__(self) -> None:
        self.at_start: dict[int, dict] = {}
        self.end_weights: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        best = trainer.checkpoint_callback.best_model_path
        self.at_start[trainer.current_epoch] = {
            "optimizer_state": len(trainer.optimizers[0].state),
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
            "weights": {k: v.clone() for k, v in pl_module.model.state_dict().items()},
            "best": read_model_weights(best) if best else None,
        }

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.end_weights[trainer.current_epoch] = {
            k: v.clone() for k, v in pl_module.model.state_dict().items()
        }


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_milestones_reload_best_weights_and_restart_adam(
    compose_train, tmp_path, synthetic_data_dir
):
    cfg = compose_train(
        [
            "experiment=quickstart",
            *tiny_overrides(synthetic_data_dir, tmp_path / "run"),
            "test=false",
            "trainer.max_epochs=4",
            "scheduler=reference_code",
            "scheduler.milestones=[2,4]",
            "scheduler.factors=[0.5,0.25]",
            "callbacks.restart_from_best.epochs=[2,3]",
            # best = epoch 0 for good, so a restart visibly changes the weights
            "callbacks.model_checkpoint.monitor=epoch",
            "callbacks.model_checkpoint.mode=min",
        ]
    )
    datamodule, module, trainer = build(cfg)
    probe = RestartProbe()
    trainer.callbacks.append(probe)
    trainer.fit(module, datamodule=datamodule)
    starts = probe.at_start
    base_lr = cfg.optimizer.lr
    assert [starts[e]["lr"] / base_lr for e in range(4)] == pytest.approx([1, 1, 0.5, 0.5])
    assert starts[1]["optimizer_state"] > 0  # Adam's moments carry over between ordinary epochs
    for epoch in (2, 3):
        assert starts[epoch]["optimizer_state"] == 0, f"epoch {epoch}: Adam was not restarted"
        assert same(starts[epoch]["weights"], starts[epoch]["best"])
        assert not same(starts[epoch]["weights"], probe.end_weights[epoch - 1])
    assert trainer.callbacks[0].restarted == [2, 3]


def test_restart_is_not_repeated_after_resuming():
    callback = RestartFromBest([2])
    callback.load_state_dict({"restarted": [2]})
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
    optimizer.state["kept"] = {"step": 5}
    trainer = SimpleNamespace(current_epoch=2, optimizers=[optimizer], checkpoint_callbacks=[])
    callback.on_train_epoch_start(trainer, None)
    assert optimizer.state == {"kept": {"step": 5}}
    assert callback.state_dict() == {"restarted": [2]}


def test_restarts_need_a_best_checkpoint(compose_train, tmp_path, synthetic_data_dir):
    cfg = compose_train(
        [
            *(
                o
                for o in tiny_overrides(synthetic_data_dir, tmp_path / "run")
                if "callbacks" not in o
            ),
            "scheduler=reference_code",
            "callbacks=none",
        ]
    )
    datamodule, module, trainer = build(cfg)
    with pytest.raises(ValueError, match=r"need a ModelCheckpoint .*callbacks.model_checkpoint"):
        trainer.fit(module, datamodule=datamodule)


@pytest.mark.parametrize("max_epochs", [8, 20, 4000])
def test_the_paper_schedule_at_every_epoch(max_epochs):
    """``scheduler=paper``: x1 for the first half, x0.5 to three quarters, x0.25 after.

    Mutations this catches: a milestone off by one epoch, factors applied in the wrong order,
    a schedule stepped per batch or not at all.
    """
    cfg = OmegaConf.load(Path(CONFIG_DIR) / "scheduler" / "paper.yaml")
    cfg.max_epochs = max_epochs
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2e-4)
    scheduler = instantiate(cfg)(optimizer=optimizer)
    for epoch in range(max_epochs):
        expected = 1.0 if epoch < max_epochs // 2 else 0.5 if epoch < 3 * max_epochs // 4 else 0.25
        assert optimizer.param_groups[0]["lr"] == pytest.approx(2e-4 * expected), epoch
        optimizer.step()
        scheduler.step()
