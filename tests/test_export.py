"""nrknet-export: the ONNX graphs of width-8 models agree with PyTorch at several sizes.

The variants compared cover the structurally different graphs: the default
model, the plain U-Net head (``no_convlstm``), four scales (another size
multiple), the full Neumann expansion, and the independent atoms
(``non_separable`` and the fixed ``gaussian`` bank, whose levels are traced
with a constant channel count and whose large atoms raise the smallest size
the graph serves), and the U-Net baseline.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from nrknet.export import export_onnx, minimum_size
from nrknet.export import main as export_main
from nrknet.models.nrknet import NRKNet
from nrknet.models.unet_baseline import UNetBaseline
from nrknet.weights.checkpoint import save_model

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.slow

# float32 through ~40 layers: the two runtimes differ by a few ulps of values in [0, 1]
TOLERANCE = 1e-5
MODEL_CONFIGS = Path(__file__).resolve().parents[1] / "conf" / "model"
SIZES = [(64, 96), (50, 70)]
# the graph of 20 radius-20 atoms at three scales serves 81 px and more
LARGE_SIZES = [(96, 128), (81, 110)]


def variant_kwargs(name: str) -> dict:
    """NRKNet keyword arguments of ``conf/model/<name>.yaml`` at width 8."""
    config = OmegaConf.load(MODEL_CONFIGS / "nrknet.yaml")
    if name != "nrknet":
        config = OmegaConf.merge(config, OmegaConf.load(MODEL_CONFIGS / f"{name}.yaml"))
    kwargs = OmegaConf.to_container(config, resolve=True)
    kwargs.pop("_target_")
    kwargs.pop("defaults", None)
    return {**kwargs, "width": 8}


def session(path: Path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def max_difference(model: NRKNet, graph, size: tuple[int, int]) -> float:
    blurry = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(blurry).numpy()
    (got,) = graph.run(None, {"blurry": blurry.numpy()})
    assert got.shape == expected.shape
    return float(abs(got - expected).max())


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The default model written by the command line, as a checkpoint and its ONNX file."""
    torch.manual_seed(0)
    model = NRKNet(width=8).eval()
    folder = tmp_path_factory.mktemp("export")
    save_model(model, folder / "w8.ckpt")
    assert export_main([str(folder / "w8.ckpt"), str(folder / "w8.onnx")]) == 0
    return model, folder


@pytest.mark.parametrize("size", SIZES, ids=["64x96", "50x70"])
def test_onnx_matches_pytorch_at_any_size(exported, size, one_thread):
    model, folder = exported
    assert max_difference(model, session(folder / "w8.onnx"), size) < TOLERANCE


def test_smallest_size_is_exact(exported, one_thread):
    model, folder = exported
    graph = session(folder / "w8.onnx")
    smallest = minimum_size(model)
    assert smallest == model.size_multiple + 1
    assert max_difference(model, graph, (smallest, 40)) < TOLERANCE
    with pytest.raises(Exception, match="Pad"):  # onnxruntime's own error type
        max_difference(model, graph, (smallest - 1, 40))


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("no_convlstm", marks=pytest.mark.slow),
        pytest.param("four_scales", marks=pytest.mark.slow),
        pytest.param("full_expansion", marks=pytest.mark.slow),
        pytest.param("non_separable", marks=pytest.mark.slow),
        pytest.param("gaussian", marks=pytest.mark.slow),
        pytest.param("two_scales", marks=pytest.mark.slow),
        pytest.param("sum_mixing", marks=pytest.mark.slow),
        pytest.param("free_atoms", marks=pytest.mark.slow),
        pytest.param("paper_rkr", marks=pytest.mark.slow),
        pytest.param("non_recursive", marks=pytest.mark.slow),
        pytest.param("nrknet_small", marks=pytest.mark.slow),
    ],
)
def test_variant_onnx_matches_pytorch_at_two_sizes(name, tmp_path, one_thread):
    torch.manual_seed(0)
    model = NRKNet(**variant_kwargs(name)).eval()
    export_onnx(model, tmp_path / f"{name}.onnx")
    assert "levels" not in vars(model.atoms)  # the export leaves the model as it was
    graph = session(tmp_path / f"{name}.onnx")
    sizes = SIZES if minimum_size(model) <= 50 else LARGE_SIZES
    assert all(min(size) >= minimum_size(model) for size in sizes)
    for size in sizes:
        assert max_difference(model, graph, size) < TOLERANCE, size


def test_residual_blur_operator_onnx_matches_pytorch(tmp_path, one_thread):
    # the model of the bundled nrknet-synthetic; R's mixing starts at zero, so give it weights
    torch.manual_seed(0)
    model = NRKNet(**variant_kwargs("nrknet_small_residual")).eval()
    assert model.blur.residual and model.gate is None
    torch.nn.init.normal_(model.blur.mixer.weight, std=0.05)
    export_onnx(model, tmp_path / "residual.onnx")
    graph = session(tmp_path / "residual.onnx")
    for size in SIZES:
        assert max_difference(model, graph, size) < TOLERANCE, size


def test_an_atom_bank_of_ones_own_gets_the_one_step_padding_bound():
    from test_extension import GaussianAtoms  # radius j at level j, padded in one step

    model = NRKNet(width=4, num_levels=8, atoms=GaussianAtoms)
    # the coarsest of three scales needs more than 8 px: 4 * 9 = 36, i.e. a padded 48, inputs > 32
    assert minimum_size(model) == 33
    assert minimum_size(NRKNet(width=4, num_levels=8)) == 17  # recursive atoms pad in small steps


def test_unet_baseline_exports_through_the_command_line(tmp_path, one_thread, capsys):
    # its output convolution starts at zero (the identity): give it weights
    torch.manual_seed(0)
    model = UNetBaseline(width=8, levels=3).eval()
    torch.nn.init.normal_(model.tail.weight, std=0.05)
    save_model(model, tmp_path / "unet.ckpt")
    assert export_main([str(tmp_path / "unet.ckpt"), str(tmp_path / "unet.onnx")]) == 0
    smallest = minimum_size(model)
    assert smallest == model.size_multiple == 4
    assert "UNetBaseline width 8" in capsys.readouterr().out
    graph = session(tmp_path / "unet.onnx")
    for size in [*SIZES, (smallest, smallest + 3)]:
        assert max_difference(model, graph, size) < TOLERANCE, size


def test_existing_output_and_unknown_checkpoint_are_one_line_errors(exported, capsys):
    _, folder = exported
    assert export_main([str(folder / "w8.ckpt"), str(folder / "w8.onnx")]) == 2
    assert "output exists" in capsys.readouterr().err
    assert export_main([str(folder / "absent.ckpt"), str(folder / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not found" in err


def test_export_refuses_to_write_over_its_input(exported, capsys):
    _, folder = exported
    ckpt = folder / "w8.ckpt"
    before = ckpt.read_bytes()
    assert export_main([str(ckpt), str(ckpt), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "would overwrite the input" in err
    assert ckpt.read_bytes() == before
