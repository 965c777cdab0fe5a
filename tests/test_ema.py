"""EMA of the weights (callbacks=ema): validation, checkpoints, evaluation and resume use the average."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from conftest import tiny_overrides
from nrknet.eval import evaluate
from nrknet.train import build
from nrknet.training.ema import EMA
from nrknet.weights.checkpoint import MODEL_PREFIX, load_model
from test_train import eval_overrides

pytestmark = pytest.mark.slow
DECAY = 0.5  # far from 0 and 1, so the average differs clearly from any single step's weights


def floats(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The floating-point tensors of a state dict, cloned (integer step counters are left out)."""
    return {k: v.detach().clone() for k, v in state.items() if v.is_floating_point()}


def model_part(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in floats(state).items() if k.startswith(MODEL_PREFIX)}


def manual_ema(start: dict[str, torch.Tensor] | None, steps: list[dict[str, torch.Tensor]]):
    """decay * ema + (1 - decay) * weights per step; the first step is copied when there is no start."""
    ema = start
    for weights in steps:
        ema = (
            dict(weights)
            if ema is None
            else {k: DECAY * ema[k] + (1 - DECAY) * weights[k] for k in weights}
        )
    return ema


def assert_same(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert got.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], msg=key)


class Recorder(L.Callback):
    """The live weights after every optimizer step, and the weights each validation epoch runs with."""

    def __init__(self) -> None:
        self.steps: list[dict[str, torch.Tensor]] = []
        self.validated: list[tuple[int, int, dict[str, torch.Tensor]]] = []
        self.validated_at_epoch_end: list[dict[str, torch.Tensor]] = []
        self.at_train_start: dict[str, torch.Tensor] = {}

    def on_train_start(self, trainer, pl_module) -> None:
        self.at_train_start = floats(pl_module.state_dict())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append(floats(pl_module.state_dict()))

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            record = (trainer.current_epoch, len(self.steps), floats(pl_module.state_dict()))
            self.validated.append(record)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.validated_at_epoch_end.append(floats(pl_module.state_dict()))


def fit(compose_train, data_dir: Path, run_dir: Path, epochs: int, resume: Path | None = None):
    cfg = compose_train(
        [
            "experiment=quickstart",
            *tiny_overrides(data_dir, run_dir),
            "callbacks=ema",
            f"callbacks.ema.decay={DECAY}",
            f"trainer.max_epochs={epochs}",
        ]
    )
    L.seed_everything(cfg.seed, workers=True)
    datamodule, module, trainer = build(cfg)
    assert any(isinstance(cb, EMA) for cb in trainer.callbacks)
    recorder = Recorder()
    trainer.callbacks.append(recorder)
    trainer.fit(module, datamodule=datamodule, ckpt_path=None if resume is None else str(resume))
    return trainer, recorder


def test_decay_out_of_range_is_refused():
    for bad in (-0.1, 1.5, "0.9", True):
        with pytest.raises(ValueError, match=r"^callbacks.ema.decay must be a number"):
            EMA(decay=bad)


def test_validation_and_checkpoints_use_the_average(compose_train, tmp_path, synthetic_data_dir):
    run_dir = tmp_path / "run"
    trainer, recorder = fit(compose_train, synthetic_data_dir, run_dir, epochs=2)
    assert len(recorder.validated) == 2
    for (_, steps, weights), at_end in zip(
        recorder.validated, recorder.validated_at_epoch_end, strict=True
    ):
        expected = manual_ema(None, recorder.steps[:steps])
        assert_same(weights, expected)
        assert_same(at_end, expected)  # the figures of the epoch's end still see the average
        live = recorder.steps[steps - 1]
        assert steps > 1 and any(not torch.equal(weights[k], live[k]) for k in weights)

    # last.ckpt: the average in state_dict, the live weights beside it, the update count
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert_same(floats(last["state_dict"]), manual_ema(None, recorder.steps))
    assert_same(floats(last["current_model_state"]), recorder.steps[-1])
    assert int(last["averaging_state"]["n_averaged"]) == len(recorder.steps) == trainer.global_step

    # best.ckpt holds the average validated at its epoch, and that is what load_model returns
    best_path = Path(trainer.checkpoint_callback.best_model_path)
    best = torch.load(best_path, weights_only=True)
    validated = {epoch: weights for epoch, _, weights in recorder.validated}
    assert_same(floats(best["state_dict"]), validated[best["epoch"]])
    net_state = {MODEL_PREFIX + k: v for k, v in load_model(best_path).state_dict().items()}
    assert_same(model_part(net_state), model_part(validated[best["epoch"]]))

    # nrknet-eval on the validation split gives back the PSNR validation logged for the average
    eval_dir = tmp_path / "eval"
    psnr = evaluate(
        compose_train(
            eval_overrides(synthetic_data_dir, eval_dir, best_path, "val"), config_name="eval"
        )
    )
    assert psnr == pytest.approx(float(trainer.checkpoint_callback.best_model_score), abs=1e-4)


def test_resume_continues_the_average_exactly(compose_train, tmp_path, synthetic_data_dir):
    run_dir = tmp_path / "run"
    fit(compose_train, synthetic_data_dir, run_dir, epochs=1)
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    trainer, recorder = fit(
        compose_train,
        synthetic_data_dir,
        run_dir,
        epochs=2,
        resume=run_dir / "checkpoints" / "last.ckpt",
    )
    # training goes on from the live weights, not from the average stored in state_dict
    assert_same(recorder.at_train_start, floats(saved["current_model_state"]))
    assert recorder.steps  # the second epoch ran
    final = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    # the average continues from the saved one: not restarted from a copy of the live weights
    expected = manual_ema(floats(saved["state_dict"]), recorder.steps)
    assert_same(floats(final["state_dict"]), expected)
    assert int(final["averaging_state"]["n_averaged"]) == trainer.global_step
