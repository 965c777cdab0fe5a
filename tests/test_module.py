"""NRKNetModule's optimiser set-up."""

from __future__ import annotations

import functools

import pytest
import torch

from nrknet.models.nrknet import NRKNet
from nrknet.training.module import NRKNetModule


def make_module(gate: bool, scale: float) -> NRKNetModule:
    return NRKNetModule(
        NRKNet(width=4, residual_gate=gate),
        optimizer=functools.partial(torch.optim.Adam, lr=1e-3),
        scheduler=functools.partial(torch.optim.lr_scheduler.LambdaLR, lr_lambda=lambda e: 0.5),
        lpips="off",
        gate_lr_scale=scale,
    )


def test_gate_gets_its_own_learning_rate():
    config = make_module(gate=True, scale=10.0).configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    main, gate = optimizer.param_groups
    assert len(gate["params"]) == 1 and gate["params"][0].dim() == 0
    assert len(main["params"]) == len(list(make_module(True, 1.0).parameters())) - 1
    # the scheduler scales both groups from their own base rates
    assert scheduler.base_lrs == pytest.approx([1e-3, 1e-2])
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([5e-4, 5e-3])


@pytest.mark.parametrize(("gate", "scale"), [(True, 1.0), (False, 10.0)])
def test_one_group_without_a_scaled_gate(gate, scale):
    optimizer = make_module(gate, scale).configure_optimizers()["optimizer"]
    assert len(optimizer.param_groups) == 1
    assert optimizer.param_groups[0]["lr"] == pytest.approx(5e-4)  # base 1e-3, scheduler factor 0.5


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan")])
def test_bad_gate_scale_is_refused(scale):
    with pytest.raises(ValueError, match="gate_lr_scale"):
        make_module(True, scale)
