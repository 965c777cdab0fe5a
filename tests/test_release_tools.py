"""The release scripts: packaging a run as a bundled model, and scoring models on a split."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from experiments.release import demo, package, score, verify
from PIL import Image

from nrknet.models.unet_baseline import UNetBaseline
from nrknet.weights import Registry, resolve_checkpoint
from nrknet.weights.checkpoint import load_model, save_model
from nrknet.weights.registry import REGISTRY_FILE


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A finished training run: a Lightning-style checkpoint and the Hydra config beside it."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / ".hydra").mkdir()
    torch.manual_seed(0)
    model = UNetBaseline(width=4)
    torch.nn.init.normal_(model.tail.weight, std=0.01)
    save_model(model, run / "checkpoints" / "last.ckpt")
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    ckpt.update(epoch=4, global_step=1280, optimizer_states=[{"big": torch.zeros(1000)}])
    torch.save(ckpt, run / "checkpoints" / "last.ckpt")
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"seed": 0, "data": {"x": 1}}))
    return run


def test_package_writes_weights_and_a_registry_entry_that_resolves(run_dir, tmp_path):
    files = tmp_path / "weights" / "files"
    files.mkdir(parents=True)
    registry = tmp_path / "weights" / "registry.yaml"
    shutil.copyfile(REGISTRY_FILE, registry)
    target, entry = package.package(run_dir, "tiny-unet", files_dir=files)
    package.write_entry("tiny-unet", {**entry, "description": "a test"}, registry=registry)
    package.write_entry("tiny-unet", {**entry, "description": "replaced"}, registry=registry)
    loaded = Registry.from_yaml(registry)
    assert {"authors-dpdd", "authors-lfdof", "tiny-unet"} <= set(loaded)
    assert loaded.get("tiny-unet").description == "replaced"  # replaced in place, not added twice
    assert registry.read_text().count("tiny-unet:") == 1
    assert resolve_checkpoint("tiny-unet", registry=loaded, home=tmp_path / "home") == target
    release = torch.load(target, weights_only=False)["nrknet"]["release"]
    assert release == {"name": "tiny-unet", "epoch": 4, "global_step": 1280,
                       "recipe": {"seed": 0, "data": {"x": 1}}}  # fmt: skip
    assert "optimizer_states" not in torch.load(target, weights_only=False)
    x = torch.rand(1, 3, 16, 16)
    original = load_model(run_dir / "checkpoints" / "last.ckpt").eval()
    assert torch.equal(load_model(target).eval()(x), original(x))


def test_score_reports_the_model_and_the_blurry_input(run_dir, tmp_path):
    folder = tmp_path / "split"
    rng = np.random.default_rng(0)
    for sub in ("source", "target"):
        (folder / sub).mkdir(parents=True)
    for i in range(2):
        sharp = rng.integers(0, 240, (20, 24, 3), dtype=np.uint8)
        Image.fromarray(sharp).save(folder / "target" / f"{i}.png")
        Image.fromarray(sharp + 9).save(folder / "source" / f"{i}.png")
    row = score.score(str(run_dir / "checkpoints" / "last.ckpt"), score.split_pairs(folder))
    assert row["class"] == "UNetBaseline" and row["images"] == 2
    assert row["input_psnr"] == pytest.approx(20 * np.log10(255 / 9), abs=1e-6)
    assert np.isfinite(row["psnr"]) and 0 < row["ssim"] <= 1
    (folder / "target" / "1.png").unlink()
    with pytest.raises(SystemExit, match=r"1\.png is missing"):
        score.split_pairs(folder)


def _registry_with(run_dir: Path, tmp_path: Path, name: str):
    files = tmp_path / "weights" / "files"
    files.mkdir(parents=True, exist_ok=True)
    registry_file = tmp_path / "weights" / "registry.yaml"
    shutil.copyfile(REGISTRY_FILE, registry_file)
    _, entry = package.package(run_dir, name, files_dir=files)
    package.write_entry(name, entry, registry=registry_file)
    return Registry.from_yaml(registry_file)


def test_verify_accepts_a_bit_identical_rerun_and_names_what_differs(run_dir, tmp_path):
    registry = _registry_with(run_dir, tmp_path, "tiny-unet")
    home = tmp_path / "home"
    report = verify.verify(run_dir, "tiny-unet", registry=registry, home=home)
    assert report["reproduced"] and report["max_abs_difference"] == 0.0
    assert report["worst_tensor"] is None and report["recipe_differences"] == []
    assert report["identical_tensors"] == report["tensors"] > 0
    assert report["rerun_step"] == report["bundled_step"] == 1280

    # a rerun whose tail moved by 1e-3: refused bit for bit, accepted within a tolerance
    ckpt_file = run_dir / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_file, weights_only=False)
    key = next(k for k in ckpt["state_dict"] if k.endswith("tail.weight"))
    ckpt["state_dict"][key] = ckpt["state_dict"][key] + 1e-3
    torch.save(ckpt, ckpt_file)
    report = verify.verify(run_dir, "tiny-unet", registry=registry, home=home)
    assert not report["reproduced"]
    assert report["worst_tensor"].endswith("tail.weight")
    assert report["max_abs_difference"] == pytest.approx(1e-3, rel=1e-3)
    assert verify.verify(run_dir, "tiny-unet", atol=2e-3, registry=registry, home=home)[
        "reproduced"
    ]


def test_verify_compares_recipes_but_not_where_runs_write(run_dir, tmp_path):
    registry = _registry_with(run_dir, tmp_path, "tiny-unet")
    config = run_dir / ".hydra" / "config.yaml"
    config.write_text(yaml.safe_dump({"seed": 0, "data": {"x": 1}, "paths": {"data_dir": "/else"}}))
    report = verify.verify(run_dir, "tiny-unet", registry=registry, home=tmp_path / "home")
    assert report["recipe_differences"] == [] and report["reproduced"]
    config.write_text(yaml.safe_dump({"seed": 1, "data": {"x": 2}}))
    report = verify.verify(run_dir, "tiny-unet", registry=registry, home=tmp_path / "home")
    assert report["recipe_differences"] == ["data.x", "seed"]
    assert not report["reproduced"]


def test_verify_cli_refuses_a_missing_checkpoint_in_one_line(run_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        verify.main([str(tmp_path / "missing"), "unet-synthetic"])
    assert "no such checkpoint" in capsys.readouterr().err


def test_map_agreement_scores_a_defocus_map_against_the_rendered_blur():
    height, width = 120, 40
    blur = np.abs(demo.inverse_depth(height) - 1 / demo.FOCUS)  # (height, 1), by row only
    correlation, between = demo.map_agreement(np.repeat(blur, width, axis=1))
    assert correlation == pytest.approx(1.0) and between == pytest.approx(1.0)
    texture = np.random.default_rng(0).random((height, width))  # no blur information at all
    correlation, between = demo.map_agreement(texture)
    assert abs(correlation) < 0.3 and between < 0.1


def test_demo_draws_the_figure_and_scores_it(tmp_path, capsys):
    assert demo.main(["--out", str(tmp_path / "demo.png")]) == 0
    assert Image.open(tmp_path / "demo.png").size[0] > 1000
    out = capsys.readouterr().out
    gain = float(out.split("dB (")[1].split(")")[0])
    assert gain > 0.2  # the default bundled model deblurs the defocused photograph
    assert "Spearman" in out and "for comparison" in out
