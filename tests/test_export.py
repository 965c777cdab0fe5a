"""nrknet-export: the ONNX graph of a width-8 model agrees with PyTorch at several sizes."""

from __future__ import annotations

import pytest
import torch

from nrknet.checkpoint import save_model
from nrknet.export import main as export_main
from nrknet.models.nrknet import NRKNet

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.slow

# float32 through ~40 layers: the two runtimes differ by a few ulps of values in [0, 1]
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = NRKNet(width=8).eval()
    folder = tmp_path_factory.mktemp("export")
    save_model(model, folder / "w8.ckpt")
    assert export_main([str(folder / "w8.ckpt"), str(folder / "w8.onnx")]) == 0
    return model, folder


@pytest.mark.parametrize("size", [(64, 96), (50, 70)], ids=["64x96", "50x70"])
def test_onnx_matches_pytorch_at_any_size(exported, size):
    model, folder = exported
    session = ort.InferenceSession(str(folder / "w8.onnx"), providers=["CPUExecutionProvider"])
    blurry = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(blurry).numpy()
    (got,) = session.run(None, {"blurry": blurry.numpy()})
    assert got.shape == expected.shape
    assert abs(got - expected).max() < TOLERANCE


def test_existing_output_and_unknown_checkpoint_are_one_line_errors(exported, capsys):
    _, folder = exported
    assert export_main([str(folder / "w8.ckpt"), str(folder / "w8.onnx")]) == 2
    assert "output exists" in capsys.readouterr().err
    assert export_main([str(folder / "absent.ckpt"), str(folder / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not found" in err
