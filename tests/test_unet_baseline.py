"""The U-Net baseline: a model config like any other, trained by the same module and loss."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_overrides
from nrknet.models.unet_baseline import UNetBaseline
from nrknet.training.losses import NRKNetLoss
from nrknet.weights.checkpoint import load_model, save_model


def test_untrained_unet_is_the_identity_at_any_size(one_thread):
    torch.manual_seed(0)
    model = UNetBaseline(width=4, levels=3).eval()
    for size in ((32, 32), (37, 50), (9, 13)):
        x = torch.rand(2, 3, *size)
        assert torch.equal(model(x), x)


def test_default_width_has_the_documented_size():
    assert sum(p.numel() for p in UNetBaseline().parameters()) == pytest.approx(0.47e6, rel=0.02)


def test_unet_trains_with_the_nrknet_loss(one_thread):
    torch.manual_seed(0)
    model = UNetBaseline(width=4)
    blurry, sharp = torch.rand(2, 3, 24, 24), torch.rand(2, 3, 24, 24)
    out = model(blurry, sharp)
    assert len(out.scales) == 1 and out.reblurred == []
    terms = NRKNetLoss()(out, blurry, sharp)
    terms["loss"].backward()
    # the zero output convolution gets a gradient, so the model leaves the identity
    assert model.tail.weight.grad.abs().sum() > 0
    assert float(terms["reblur"]) == 0.0


def test_checkpoint_rebuilds_the_unet(tmp_path, one_thread):
    torch.manual_seed(0)
    model = UNetBaseline(width=4, levels=2)
    torch.nn.init.normal_(model.tail.weight, std=0.1)
    save_model(model, tmp_path / "unet.ckpt")
    loaded = load_model(tmp_path / "unet.ckpt").eval()
    assert isinstance(loaded, UNetBaseline) and loaded.levels == 2
    x = torch.rand(1, 3, 20, 20)
    assert torch.equal(loaded(x), model.eval()(x))


def test_unknown_model_class_in_a_checkpoint_is_named(tmp_path):
    from nrknet.weights.checkpoint import CheckpointError

    torch.save(
        {"state_dict": {}, "nrknet": {"model_config": {"_target_": "nrknet.models.nowhere.Net"}}},
        tmp_path / "odd.ckpt",
    )
    with pytest.raises(CheckpointError, match=r"odd\.ckpt.*nrknet\.models\.nowhere\.Net"):
        load_model(tmp_path / "odd.ckpt")


def test_only_nrknet_has_a_blur_operator_and_compiled_regions(caplog):
    from nrknet.accel.compile import compile_regions, region_status
    from nrknet.models.nrknet import NRKNet, has_blur_operator

    assert has_blur_operator(NRKNet(width=4, num_levels=2))
    unet = UNetBaseline(width=4)
    assert not has_blur_operator(unet)
    with caplog.at_level("INFO", logger="nrknet.accel.compile"):
        assert compile_regions(unet) == []
    lines = [r.getMessage() for r in caplog.records if r.name == "nrknet.accel.compile"]
    assert lines == ["compile: UNetBaseline is not an NRKNet; it runs eagerly"]
    assert region_status(unet) == {}


@pytest.mark.slow
def test_unet_baseline_from_yaml_trains_tests_and_predicts(
    compose_train, tmp_path, synthetic_data_dir, capsys
):
    from PIL import Image

    from nrknet.predict import main as predict_main
    from nrknet.train import train

    run_dir = tmp_path / "run"
    cfg = compose_train(
        [
            *tiny_overrides(synthetic_data_dir, run_dir),
            "model=unet_baseline",
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=2",
        ]
    )
    train(cfg)
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    assert isinstance(load_model(ckpt), UNetBaseline)
    rows = [line.split("|")[1].strip() for line in (run_dir / "table.md").read_text().splitlines()]
    assert "UNetBaseline" in rows and "NRKNet" not in rows  # the table names the network
    Image.new("RGB", (40, 30), (90, 120, 150)).save(tmp_path / "photo.png")
    assert predict_main([str(tmp_path / "photo.png"), "--out", str(tmp_path / "out"),
                         "--ckpt", str(ckpt), "--quiet"]) == 0  # fmt: skip
    assert Image.open(tmp_path / "out" / "photo.png").size == (40, 30)
    # side files need blur kernels, which the U-Net does not have: a usage error, nothing written
    code = predict_main([str(tmp_path / "photo.png"), "--out", str(tmp_path / "out2"),
                         "--ckpt", str(ckpt), "--defocus-map", "--quiet"])  # fmt: skip
    assert code == 2
    assert "--defocus-map and --figures need an NRKNet" in capsys.readouterr().err
    assert not (tmp_path / "out2" / "photo.png").exists()
