"""An atom bank and a coefficient head of one's own, chosen from YAML, trained and used for prediction.

Both components live in this file and nothing under ``src/`` knows them: the
model config names them by Hydra ``_target_``, the checkpoint records that
config, and ``nrknet-predict`` rebuilds them from it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from conftest import tiny_overrides
from nrknet.errors import UntrustedCodeError
from nrknet.ops.padding import reflect_pad
from nrknet.predict import main as predict_main
from nrknet.train import train
from nrknet.weights.checkpoint import load_model

pytestmark = pytest.mark.slow


class GaussianAtoms(nn.Module):
    """Separable Gaussian atoms whose widths are learned: level j has radius j, sigma exp(s_j) j / 2.

    The atom-bank interface: ``num_levels``, ``max_radius``, ``levels(x)`` and
    ``effective_kernels()``.
    """

    def __init__(self, num_levels: int, initial_log_scale: float = 0.0) -> None:
        super().__init__()
        self.num_levels = num_levels
        self.log_scale = nn.Parameter(torch.full((num_levels,), initial_log_scale))

    @property
    def max_radius(self) -> int:
        return self.num_levels

    def profile(self, j: int) -> torch.Tensor:
        """The 1-D kernel of level ``j + 1``: radius ``j + 1``, positive, summing to one."""
        radius = j + 1
        offsets = torch.arange(-radius, radius + 1, dtype=self.log_scale.dtype)
        sigma = self.log_scale[j].exp() * radius / 2
        return torch.softmax(-(offsets**2) / (2 * sigma**2), dim=0)

    def levels(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        yield x
        channels = x.shape[1]
        for j in range(self.num_levels):
            a = self.profile(j).to(x.dtype)
            r = j + 1
            # reflect_pad, unlike F.pad, mirrors as often as it takes: the coarsest scale is small
            y = F.conv2d(
                reflect_pad(x, (r, r, 0, 0)),
                a.view(1, 1, 1, -1).expand(channels, 1, 1, -1),
                groups=channels,
            )
            yield F.conv2d(
                reflect_pad(y, (0, 0, r, r)),
                a.view(1, 1, -1, 1).expand(channels, 1, -1, 1),
                groups=channels,
            )

    def effective_kernels(self) -> torch.Tensor:
        size = 2 * self.max_radius + 1
        kernels = self.log_scale.new_zeros(self.num_levels + 1, 1, size, size)
        kernels[0, 0, self.max_radius, self.max_radius] = 1.0
        for j in range(self.num_levels):
            a = self.profile(j)
            lo = self.max_radius - (j + 1)
            kernels[j + 1, 0, lo : lo + a.numel(), lo : lo + a.numel()] = torch.outer(a, a)
        return kernels


class SoftmaxHead(nn.Module):
    """Coefficients as a per-pixel softmax over the levels of one 3x3 convolution (no state).

    The coefficient-head interface: ``forward(features, state) -> (gamma, state)``
    and ``next_scale_state(state)``.
    """

    def __init__(self, width: int, num_maps: int, temperature: float = 1.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, num_maps, 3, padding=1, padding_mode="reflect")
        self.temperature = temperature

    def forward(self, features: torch.Tensor, state: None = None) -> tuple[torch.Tensor, None]:
        return torch.softmax(self.conv(features) / self.temperature, dim=1), None

    @staticmethod
    def next_scale_state(state: None) -> None:
        return None


def write_model_config(conf_dir: Path) -> None:
    """``model=extended``: the stock model with both components replaced, by ``_target_``."""
    (conf_dir / "model").mkdir(parents=True)
    (conf_dir / "model" / "extended.yaml").write_text(
        f"""defaults:
  - nrknet
  - _self_

num_levels: 3
atoms:
  _target_: {__name__}.GaussianAtoms
  _partial_: true
  initial_log_scale: 0.5
coefficient_head:
  _target_: {__name__}.SoftmaxHead
  _partial_: true
  temperature: 2.0
"""
    )


def test_custom_components_from_yaml_train_and_predict(
    compose_train, tmp_path, synthetic_data_dir, caplog, capsys
):
    conf_dir, run_dir = tmp_path / "conf", tmp_path / "run"
    write_model_config(conf_dir)
    cfg = compose_train(
        [
            f"hydra.searchpath=[file://{conf_dir}]",
            *tiny_overrides(synthetic_data_dir, run_dir),
            "model=extended",
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=1",
            "+trainer.limit_val_batches=1",
            "test=false",
        ]
    )
    assert cfg.model.atoms._target_ == f"{__name__}.GaussianAtoms"
    with caplog.at_level(logging.INFO, logger="nrknet.accel"):
        train(cfg)
    # the acceleration layer leaves both components to their own code, and says so
    messages = [r.getMessage() for r in caplog.records if r.name == "nrknet.accel"]
    assert any("GaussianAtoms" in m for m in messages)
    assert any("SoftmaxHead" in m for m in messages)

    ckpt = run_dir / "checkpoints" / "last.ckpt"
    # a checkpoint that names code outside nrknet is built only when the user trusts it
    with pytest.raises(
        UntrustedCodeError, match=rf"{__name__}\.\w+, code outside nrknet.*trust_code=true"
    ):
        load_model(ckpt)
    model = load_model(ckpt, trust_code=True)
    assert isinstance(model.atoms, GaussianAtoms) and isinstance(model.coefficients, SoftmaxHead)
    assert model.config["atoms"]["initial_log_scale"] == 0.5
    assert model.coefficients.temperature == 2.0
    # one optimizer step moved the learned atom widths away from their start
    assert not torch.allclose(model.atoms.log_scale, torch.full((3,), 0.5))

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(photos / "a.png")
    out = tmp_path / "out"
    assert predict_main([str(photos), "--out", str(out), "--ckpt", str(ckpt), "-q"]) == 2
    assert "--trust-code" in capsys.readouterr().err and not out.exists()
    args = [str(photos), "--out", str(out), "--ckpt", str(ckpt), "-q", "--trust-code"]
    assert predict_main(args) == 0
    result = np.asarray(Image.open(next(out.glob("a*.png"))))
    assert result.shape == (40, 56, 3)
