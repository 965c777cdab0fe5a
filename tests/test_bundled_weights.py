"""The models shipped inside the package: checksums, the registry, and ``nrknet-predict`` without ``--ckpt``."""

from __future__ import annotations

import hashlib
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from nrknet.data.synthetic import SynthSettings, render_pair
from nrknet.metrics.image_quality import psnr
from nrknet.models.nrknet import NRKNet
from nrknet.models.unet_baseline import UNetBaseline
from nrknet.predict import DEFAULT_MODEL
from nrknet.predict import main as predict_main
from nrknet.weights import Registry, default_registry, resolve_checkpoint
from nrknet.weights.checkpoint import CheckpointError, load_model

REGISTRY = default_registry()
BUNDLED = sorted(name for name in REGISTRY if REGISTRY.get(name).kind == "bundled")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_release_and_its_baseline_are_bundled():
    assert {"nrknet-synthetic", "unet-synthetic"} <= set(BUNDLED)
    assert DEFAULT_MODEL in BUNDLED


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_file_matches_its_checksum_and_description(name):
    entry = REGISTRY.get(name)
    assert entry.sha256, f"bundled weights '{name}' need a sha256 in registry.yaml"
    assert sha256(entry.bundled_path) == entry.sha256
    model = load_model(resolve_checkpoint(name))
    assert sum(p.numel() for p in model.parameters()) == entry.model["num_parameters"]
    assert entry.bundled_path.stat().st_size < 4 * 2**20  # small enough to ship in the wheel
    release = torch.load(entry.bundled_path, weights_only=False)["nrknet"]["release"]
    assert release["name"] == name and release["global_step"] > 0
    assert release["recipe"]["data"]["_target_"].endswith("SyntheticDataModule")
    expected = {"nrknet-synthetic": NRKNet, "unet-synthetic": UNetBaseline}.get(name)
    if expected is not None:
        assert type(model) is expected
    if name == "nrknet-synthetic":  # learned as D = I + R, without the residual gate
        assert model.blur.residual and model.gate is None


def test_a_damaged_bundled_file_is_refused(tmp_path):
    entry = REGISTRY.get(DEFAULT_MODEL)
    (tmp_path / "files").mkdir()
    damaged = tmp_path / "files" / entry.filename
    shutil.copyfile(entry.bundled_path, damaged)
    with damaged.open("r+b") as f:
        f.seek(-5, 2)
        f.write(b"\x00\x01\x02\x03\x04")
    spec = {
        "kind": "bundled",
        "format": "nrknet",
        "filename": entry.filename,
        "sha256": entry.sha256,
    }
    (tmp_path / "registry.yaml").write_text(yaml.safe_dump({"entries": {"mine": spec}}))
    registry = Registry.from_yaml(tmp_path / "registry.yaml")
    with pytest.raises(CheckpointError, match=r"mine.*has sha256 .* not the expected .*reinstall"):
        resolve_checkpoint("mine", registry=registry, home=tmp_path / "home")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network and an empty weights cache: only what ships with the package can be used."""

    def refuse(*args, **kwargs):
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("NRKNET_HOME", str(tmp_path / "empty-cache"))


def test_predict_without_ckpt_deblurs_with_the_bundled_model_offline(offline, tmp_path, capsys):
    # a rendered test-split pair: sources disjoint from everything the model was trained on
    pair = render_pair(SynthSettings(size=128, max_coc=6.0, seed=3), "test", 0)
    Image.fromarray(pair.blurry).save(tmp_path / "blurry.png")
    code = predict_main([str(tmp_path / "blurry.png"), "--out", str(tmp_path / "out"), "--quiet"])
    assert code == 0
    assert f"model {DEFAULT_MODEL} (the default" in capsys.readouterr().err
    out = np.asarray(Image.open(tmp_path / "out" / "blurry.png"))
    assert out.shape == pair.blurry.shape and out.dtype == np.uint8

    def as_tensor(img: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255

    sharp = as_tensor(pair.sharp)
    gain = float(psnr(as_tensor(out), sharp) - psnr(as_tensor(pair.blurry), sharp))
    assert gain > 0.1, f"the bundled model gained only {gain:+.3f} dB on a rendered test pair"


def test_the_default_model_is_the_nrknet_so_side_files_work_offline(offline, tmp_path, capsys):
    """``nrknet-predict photos/ --out out/ --defocus-map --figures`` with no ``--ckpt``."""
    pair = render_pair(SynthSettings(size=96, max_coc=6.0, seed=3), "test", 1)
    (tmp_path / "photos").mkdir()
    Image.fromarray(pair.blurry).save(tmp_path / "photos" / "a.png")
    args = [str(tmp_path / "photos"), "--out", str(tmp_path / "out"), "--quiet"]
    assert predict_main([*args, "--defocus-map", "--figures"]) == 0
    assert "model nrknet-synthetic (the default" in capsys.readouterr().err
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert {"a.png", "a.defocus.png", "a.defocus_color.png", "atoms.png"} <= set(written)
