"""The ``accel`` switch: what ``accelerate`` swaps, what it leaves alone and says so, where it is set."""

from __future__ import annotations

import copy
import logging

import lightning as L
import pytest
import torch
from torch import nn

from nrknet.accel import ACCEL_MODES, accelerate, is_accelerated
from nrknet.models.coefficients import PlainCoefficientHead
from nrknet.models.nrknet import NRKNet
from nrknet.training.module import NRKNetModule

PLAIN_TYPES = {"FeatureUNet", "ConvLSTMCoefficientHead", "RKRBlur"}
FAST_TYPES = {"AcceleratedFeatureUNet", "AcceleratedConvLSTMHead", "AcceleratedRKRBlur"}


def type_names(model: nn.Module) -> set[str]:
    return {type(m).__name__ for m in model.modules()}


class HeadOfOurOwn(PlainCoefficientHead):
    """A coefficient head the acceleration layer does not know (a subclass counts as unknown)."""


def test_on_swaps_classes_keeps_state_and_off_restores():
    torch.manual_seed(0)
    model = NRKNet(width=4, num_levels=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert accelerate(model, "on") is model
    assert type_names(model) >= FAST_TYPES and not PLAIN_TYPES & type_names(model)
    assert is_accelerated(model)
    assert list(model.state_dict()) == list(before)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    accelerate(model, "on")  # idempotent
    assert accelerate(model, "off") is model
    assert type_names(model) >= PLAIN_TYPES and not FAST_TYPES & type_names(model)
    assert not is_accelerated(model)


@pytest.mark.parametrize(
    "mode, device, expected",
    [
        ("auto", None, True),  # parameters on the CPU
        ("auto", "cpu", True),
        ("auto", "cuda", False),  # only the device's type matters; no GPU needed
        ("on", "cuda", True),
        ("off", "cpu", False),
        (True, None, True),
        (False, None, False),
        (" ON ", None, True),
    ],
)
def test_modes(mode, device, expected):
    model = accelerate(NRKNet(width=4, num_levels=3), mode, device=device)
    assert is_accelerated(model) == expected


def test_auto_switches_an_accelerated_model_off_for_cuda():
    model = accelerate(NRKNet(width=4, num_levels=3), "on")
    assert not is_accelerated(accelerate(model, "auto", device="cuda"))


def test_unknown_mode_is_refused_with_the_choices():
    with pytest.raises(
        ValueError, match="accel='fast' is not known; expected one of auto, on, off"
    ):
        accelerate(NRKNet(width=4, num_levels=3), "fast")
    with pytest.raises(ValueError, match="accel='sometimes' is not known"):
        NRKNetModule(NRKNet(width=4, num_levels=3), accel="sometimes")
    assert ACCEL_MODES == ("auto", "on", "off")


def test_uncovered_atom_bank_runs_plain_and_is_logged_once(caplog):
    model = NRKNet(width=4, num_levels=3, atoms="gaussian")
    with caplog.at_level(logging.INFO, logger="nrknet.accel"):
        accelerate(model, "on")
    lines = [r.getMessage() for r in caplog.records if r.name == "nrknet.accel"]
    assert len(lines) == 1 and "IndependentAtoms" in lines[0] and "plain" in lines[0]
    assert type(model.blur).__name__ == "RKRBlur"  # the plain operator
    assert type(model.unet).__name__ == "AcceleratedFeatureUNet"  # the rest is accelerated


def test_learned_independent_atoms_take_the_fft_levels_and_say_so(caplog):
    model = NRKNet(width=4, num_levels=3, atoms="non_separable")
    with caplog.at_level(logging.INFO, logger="nrknet.accel"):
        accelerate(model, "on")
    lines = [r.getMessage() for r in caplog.records if r.name == "nrknet.accel"]
    assert len(lines) == 1 and "(non_separable)" in lines[0] and "levels by FFT" in lines[0]
    assert type(model.atoms).__name__ == "AcceleratedIndependentAtoms"
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="nrknet.accel"):
        accelerate(model, "on")  # after training, for testing: the same line
    assert [r.getMessage() for r in caplog.records if r.name == "nrknet.accel"] == lines
    accelerate(model, "off")
    assert type(model.atoms).__name__ == "IndependentAtoms"


def test_unknown_coefficient_head_runs_its_own_code_and_is_logged(caplog):
    torch.manual_seed(1)
    model = NRKNet(width=4, num_levels=3, recurrent=False, coefficient_head=HeadOfOurOwn)
    plain = copy.deepcopy(model)
    with caplog.at_level(logging.INFO, logger="nrknet.accel"):
        accelerate(model, "on", training=True)
    lines = [r.getMessage() for r in caplog.records if r.name == "nrknet.accel"]
    assert len(lines) == 1 and "HeadOfOurOwn" in lines[0] and "training" in lines[0]
    assert type(model.coefficients) is HeadOfOurOwn
    x = torch.rand(1, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(model.eval()(x), plain.eval()(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("accel, expected", [("auto", True), ("off", False)])
def test_lightning_module_applies_the_switch_at_setup(accel, expected):
    module = NRKNetModule(NRKNet(width=4, num_levels=3), accel=accel)
    module.trainer = L.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False
    )
    module.setup("fit")
    assert is_accelerated(module.model) == expected


def test_accel_is_a_top_level_setting_of_train_and_eval(compose_train, tmp_path):
    cfg = compose_train([f"paths.root_dir={tmp_path}"])
    assert cfg.accel == "auto" and cfg.module.accel == "auto"
    cfg = compose_train([f"paths.root_dir={tmp_path}", "accel=off"])
    assert cfg.module.accel == "off"
    eval_cfg = compose_train([f"paths.root_dir={tmp_path}", "ckpt_path=x.ckpt"], config_name="eval")
    assert eval_cfg.accel == "auto"
