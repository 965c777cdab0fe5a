"""The release recipe (`experiment=release_cpu`) is deterministic: a rerun gives the same weights.

The bundled weights come from one run of this recipe with its seed; on the same
kind of machine (one torch thread, as recorded in docs/pretrained.md) a rerun
reproduces them. Here a shortened run is made twice and must agree bit for bit.
"""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_overrides
from nrknet.train import train
from nrknet.weights.checkpoint import load_model

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("experiment", ["release_cpu", "release_cpu_unet", "release_cpu_residual"])
def test_release_recipe_reruns_to_the_same_weights(compose_train, tmp_path, experiment, one_thread):
    states = []
    for run in ("first", "second"):
        cfg = compose_train(
            [
                f"experiment={experiment}",
                *tiny_overrides(tmp_path / "data", tmp_path / run),
                "data.num_train=8",
                "trainer.max_epochs=2",
                "test=false",
            ]
        )
        assert cfg.data.noise_per_pair and cfg.data.cache == "ram" and cfg.seed == 0
        train(cfg)
        states.append(load_model(tmp_path / run / "checkpoints" / "last.ckpt").state_dict())
    first, second = states
    assert first.keys() == second.keys()
    changed = False
    for key, value in first.items():
        assert torch.equal(value, second[key]), f"{experiment}: {key} differs between reruns"
        changed |= bool(value.is_floating_point() and value.abs().sum() > 0)
    assert changed
