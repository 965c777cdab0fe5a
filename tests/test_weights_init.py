"""init_from: weights from our checkpoints, converted ones and the authors' .pth; strict and not."""

from __future__ import annotations

import logging

import pytest
import torch

from nrknet.models.nrknet import NRKNet
from nrknet.weights import load_weights, read_model_weights
from nrknet.weights.checkpoint import MODEL_PREFIX, CheckpointError, load_model, save_model
from nrknet.weights.init import apply_init_from, require_training_state
from nrknet.weights.reference import REFERENCE_TO_OURS, convert_file, from_official


def assert_same_weights(model: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert set(state) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0, msg=key)


def test_lightning_checkpoint_loads(tmp_path):
    torch.manual_seed(1)
    source = NRKNet(width=8)
    path = tmp_path / "run.ckpt"
    state = {MODEL_PREFIX + k: v for k, v in source.state_dict().items()}
    # what a Lightning checkpoint holds besides the weights
    torch.save({"state_dict": state, "epoch": 7, "optimizer_states": [{}], "loops": {}}, path)
    target = NRKNet(width=8)
    report = load_weights(target, path)
    assert report.complete and len(report.loaded) == len(source.state_dict())
    assert_same_weights(target, source.state_dict())


def test_converted_checkpoint_loads(tmp_path):
    torch.manual_seed(2)
    source = NRKNet(width=8)
    save_model(source, tmp_path / "converted.ckpt")
    target = NRKNet(width=8)
    load_weights(target, tmp_path / "converted.ckpt")
    assert_same_weights(target, source.state_dict())


def test_authors_pth_is_converted_on_the_fly(tmp_path, parity_fixture):
    path = tmp_path / "authors.pth"
    torch.save(parity_fixture["state_dict"], path)
    target = NRKNet(width=8)
    load_weights(target, path)
    assert_same_weights(target, from_official(parity_fixture["state_dict"]).state_dict())


def test_strict_failure_names_file_and_keys_in_one_line(tmp_path):
    save_model(NRKNet(width=8), tmp_path / "w8.ckpt")
    target = NRKNet(width=8, num_levels=15, residual_gate=True)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        load_weights(target, tmp_path / "w8.ckpt")
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "w8.ckpt") in message
    assert "missing: gate" in message
    assert "shape mismatch: " in message
    assert "blur.atoms.logits (63, 1, 1, 2) vs (45, 1, 1, 2) in the model" in message
    assert "init_strict=false" in message
    assert_same_weights(target, before)  # nothing loaded


def test_non_strict_loads_what_fits_and_lists_the_rest(tmp_path, caplog):
    torch.manual_seed(3)
    source = NRKNet(width=8, recurrent=False)  # a deeper U-Net, no ConvLSTM
    save_model(source, tmp_path / "plain.ckpt")
    target = NRKNet(width=8, num_levels=15)
    with caplog.at_level(logging.WARNING, logger="nrknet.weights"):
        report = load_weights(target, tmp_path / "plain.ckpt", strict=False)
    assert report.missing and report.unexpected and report.mismatched
    assert any(k.startswith("coefficients.lstm") for k in report.missing)
    assert any(k.startswith("unet.") for k in report.unexpected)
    assert "blur.atoms.logits (63, 1, 1, 2) vs (45, 1, 1, 2) in the model" in report.mismatched
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 3  # one line for each list
    assert any("missing" in w and "coefficients.lstm_conv.weight" in w for w in warnings)
    assert any("unexpected" in w for w in warnings)
    assert any("shape mismatch" in w and "blur.atoms.logits" in w for w in warnings)
    loaded = target.state_dict()
    for key in report.loaded:
        torch.testing.assert_close(loaded[key], source.state_dict()[key], rtol=0, atol=0)
    assert "unet.head.weight" in report.loaded


@pytest.mark.parametrize(
    "variant",
    [{"atoms": "gaussian"}, {"num_scales": 2}, {"fusion": "full_expansion"}, {"mixing": "sum"}],
)
def test_variants_whose_shapes_allow_it_load_strictly(tmp_path, variant):
    torch.manual_seed(4)
    source = NRKNet(width=8, **variant)
    save_model(source, tmp_path / "variant.ckpt")
    target = NRKNet(width=8, **variant)
    load_weights(target, tmp_path / "variant.ckpt")
    assert_same_weights(target, source.state_dict())


def test_foreign_file_is_refused_with_its_name(tmp_path):
    path = tmp_path / "foreign.pth"
    torch.save({"encoder.weight": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="foreign.pth is neither an nrknet checkpoint"):
        read_model_weights(path)
    with pytest.raises(CheckpointError, match="not found"):
        read_model_weights(tmp_path / "absent.ckpt")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "the file is empty"),
        (b"\xaa" * 300, "not a PyTorch file"),
        (b"\x80\x02\x8a\x0a" + b"\xaa" * 60, "cannot read checkpoint"),  # a pickle, cut short
    ],
)
def test_unreadable_files_are_one_line_errors_everywhere(tmp_path, content, reason):
    path = tmp_path / "broken.ckpt"
    path.write_bytes(content)
    for read in (read_model_weights, load_model, lambda p: convert_file(p, tmp_path / "out.ckpt")):
        with pytest.raises(CheckpointError, match=reason) as error:
            read(path)
        message = str(error.value)
        assert "\n" not in message and "broken.ckpt" in message and "weights_only" not in message
    assert not (tmp_path / "out.ckpt").exists()


def test_a_run_folder_given_as_a_checkpoint_names_its_checkpoints(tmp_path):
    save_model(NRKNet(width=8), tmp_path / "run" / "checkpoints" / "best.ckpt")
    with pytest.raises(CheckpointError, match=r"is a folder.*run/checkpoints/best\.ckpt"):
        load_model(tmp_path / "run")


def test_convert_refuses_a_checkpoint_that_is_already_converted(tmp_path):
    save_model(NRKNet(width=8), tmp_path / "w.ckpt")
    with pytest.raises(CheckpointError, match="already an nrknet checkpoint"):
        convert_file(tmp_path / "w.ckpt", tmp_path / "out.ckpt")


def test_resumed_run_does_not_apply_init_from(tmp_path):
    save_model(NRKNet(width=8), tmp_path / "w.ckpt")
    model = NRKNet(width=8)
    assert apply_init_from(model, str(tmp_path / "w.ckpt"), resume="last.ckpt") is None
    assert apply_init_from(model, None) is None
    assert apply_init_from(model, str(tmp_path / "w.ckpt")).complete


def test_weights_only_checkpoint_cannot_be_resumed(tmp_path):
    save_model(NRKNet(width=8), tmp_path / "w.ckpt")
    with pytest.raises(CheckpointError, match=r"holds weights only.*init_from="):
        require_training_state(tmp_path / "w.ckpt")
    torch.save({"state_dict": {}, "optimizer_states": []}, tmp_path / "full.ckpt")
    assert require_training_state(tmp_path / "full.ckpt") == str(tmp_path / "full.ckpt")


def test_reference_names_cover_the_model():
    # init_from of the authors' files relies on the converter's complete mapping
    assert set(REFERENCE_TO_OURS.values()) == set(NRKNet(width=8).state_dict())
