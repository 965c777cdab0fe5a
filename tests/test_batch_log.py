"""Plain progress lines when stdout is not a terminal: a tiny training run, and the pieces."""

from __future__ import annotations

import io
import re
import sys

import pytest
from lightning.pytorch.callbacks import RichProgressBar

from conftest import tiny_overrides
from nrknet.train import build, train
from nrknet.training.batch_log import BatchLog, _batch_size, _clock, for_batch_jobs

LINE = re.compile(
    r"^\[(train|val)\] epoch=(\d+) step=(\d+)/(\d+) loss=(\d+\.\d{5}) img/s=(\d+\.\d) "
    r"eta=(\d+:\d\d:\d\d) val_psnr=(-|\d+\.\d{3})$"
)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.slow
def test_training_prints_one_plain_line_per_event(
    compose_train, tmp_path, synthetic_data_dir, capsys
):
    cfg = compose_train(
        [
            "experiment=quickstart",
            *tiny_overrides(synthetic_data_dir, tmp_path / "run"),
            "trainer.max_epochs=2",
            "callbacks.batch_log.every_n_steps=2",
            "test=false",
        ]
    )
    train(cfg)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[")]
    parsed = [LINE.match(ln) for ln in lines]
    assert all(parsed), lines
    events = [(m[1], int(m[3])) for m in parsed]
    # 6 training images, batches of 2: 3 steps per epoch, a line every 2 steps and per validation
    assert events == [("train", 2), ("val", 3), ("train", 4), ("train", 6), ("val", 6)]
    assert {int(m[4]) for m in parsed} == {6}
    assert [m[8] for m in parsed][:1] == ["-"] and all(m[8] != "-" for m in parsed[1:])
    assert [int(m[2]) for m in parsed] == [0, 0, 1, 1, 1]
    assert parsed[-1][7] == "0:00:00"


def test_enabled_follows_the_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stdout", _Terminal())
    assert not BatchLog().enabled and BatchLog(enabled=True).enabled
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert BatchLog().enabled and not BatchLog(enabled=False).enabled


def test_progress_bar_dropped_only_when_lines_are_printed():
    bar, active, silent = RichProgressBar(), BatchLog(enabled=True), BatchLog(enabled=False)
    assert for_batch_jobs([bar, active]) == ([active], {"enable_progress_bar": False})
    assert for_batch_jobs([bar, silent]) == ([bar, silent], {})


def test_build_gives_a_trainer_without_progress_bar_off_terminal(compose_train, tmp_path):
    overrides = [o for o in tiny_overrides(tmp_path, tmp_path) if "progress_bar" not in o]
    trainer = build(compose_train(overrides))[2]
    assert trainer.progress_bar_callback is None  # pytest's stdout is not a terminal
    assert any(isinstance(c, BatchLog) and c.enabled for c in trainer.callbacks)


def test_bad_settings_name_the_setting():
    with pytest.raises(ValueError, match=r"callbacks\.batch_log\.every_n_steps must be >= 1"):
        BatchLog(every_n_steps=0)
    with pytest.raises(ValueError, match=r"callbacks\.batch_log\.enabled must be auto"):
        BatchLog(enabled="sometimes")


def test_helpers():
    import torch

    assert _batch_size({"name": ["a", "b"], "blurry": torch.zeros(3, 1)}) == 3
    assert _batch_size((torch.tensor(1.0),)) == 1 and _batch_size("x") == 0
    assert _clock(3725.4) == "1:02:05" and _clock(float("inf")) == "?"
