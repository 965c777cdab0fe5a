"""NRKNet construction, shapes, variants, checkpoints and the converter."""

from __future__ import annotations

import functools

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from nrknet.cli import reported
from nrknet.convert import main as convert_main
from nrknet.models.coefficients import PlainCoefficientHead
from nrknet.models.components import factory_config
from nrknet.models.nrknet import NRKNet, NRKNetOutput, count_parameters
from nrknet.ops.atoms import RecursiveAtoms
from nrknet.weights.checkpoint import CheckpointError, load_model, save_model
from nrknet.weights.reference import convert_file, from_official

VARIANTS = {
    "default": {},
    "non_recursive": {"atoms": "non_recursive"},
    "non_separable": {"atoms": "non_separable"},
    "gaussian": {"atoms": "gaussian"},
    "J15": {"num_levels": 15},
    "J25": {"num_levels": 25},
    "two_scales": {"num_scales": 2},
    "four_scales": {"num_scales": 4},
    "full_expansion": {"fusion": "full_expansion"},
    "no_convlstm": {"recurrent": False},
    "sum_mixing": {"mixing": "sum"},
    "free_taps": {"symmetric_atoms": False},
    "shared_free_taps": {"symmetric_atoms": False, "per_channel_atoms": False, "num_levels": 20},
    "residual_gate": {"residual_gate": True},
    "xavier": {"init": "xavier"},
}


def test_default_parameter_count_matches_reference():
    assert count_parameters(NRKNet()) == 6_094_107


def test_plain_unet_variant_has_similar_size():
    full, plain = count_parameters(NRKNet()), count_parameters(NRKNet(recurrent=False))
    assert abs(plain - full) / full < 0.01


@pytest.mark.parametrize("size", [(64, 64), (50, 70)], ids=["64x64", "50x70"])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_forward_backward_keeps_size(name, size):
    torch.manual_seed(0)
    model = NRKNet(width=8, **VARIANTS[name])
    blurry = torch.rand(2, 3, *size)
    sharp = torch.rand(2, 3, *size)
    out = model(blurry, sharp)
    assert isinstance(out, NRKNetOutput)
    scales = model.num_scales
    assert len(out.scales) == scales + 1 and len(out.reblurred) == scales
    assert out.output.shape == blurry.shape
    for i, t in enumerate(out.reblurred):
        factor = 2 ** (scales - 1 - i)
        assert t.shape[-2:] == (-(-size[0] // factor), -(-size[1] // factor))
        assert out.scales[i].shape == t.shape
    loss = sum(t.square().mean() for t in out.scales + out.reblurred)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.no_grad():
        pred = model(blurry)
    assert pred.shape == blurry.shape and torch.isfinite(pred).all()


def test_inference_equals_training_output():
    torch.manual_seed(0)
    model = NRKNet(width=8).eval()
    blurry, sharp = torch.rand(2, 1, 3, 50, 70)
    with torch.no_grad():
        torch.testing.assert_close(model(blurry), model(blurry, sharp).output, rtol=0, atol=1e-6)


def test_residual_gate_starts_as_identity():
    model = NRKNet(width=8, residual_gate=True).eval()
    blurry = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        assert torch.equal(model(blurry), blurry)


@pytest.mark.parametrize("init", ["default", "xavier"])
def test_residual_blur_operator_starts_as_identity_and_learns(init):
    """``D = I + R`` with ``R = 0``: every Neumann term vanishes, so ``X = Y`` at every scale."""
    torch.manual_seed(0)
    model = NRKNet(width=8, num_levels=5, blur_residual=True, init=init)
    blurry, sharp = torch.rand(2, 1, 3, 32, 48)
    out = model(blurry, sharp)
    assert torch.equal(out.output, blurry)
    for s, r in zip(out.scales[:-1], out.reblurred, strict=True):
        factor = 32 // s.shape[-2]
        assert torch.equal(s, blurry[..., ::factor, ::factor])  # the running sums are Y too
        assert torch.equal(r, sharp[..., ::factor, ::factor])  # D(X) = X at the start
    # the first-order term reaches R's mixing weights, so the output can move from Y
    ((out.output - sharp) ** 2).mean().backward()
    assert model.blur.mixer.weight.grad.abs().sum() > 0


def test_invalid_options_are_refused():
    with pytest.raises(ValueError, match="blur_residual=true needs mixing='conv1x1'"):
        NRKNet(width=8, blur_residual=True, mixing="sum")
    for kwargs, word in [
        ({"atoms": "wavelet"}, "atoms"),
        ({"num_scales": 5}, "num_scales"),
        ({"fusion": "late"}, "fusion"),
        ({"mixing": "attention"}, "mixing"),
        ({"width": 0}, "width"),
        ({"num_levels": 0}, "num_levels"),
    ]:
        with pytest.raises(ValueError, match=word):
            NRKNet(**kwargs)


def test_checkpoint_round_trip(tmp_path):
    model = NRKNet(width=8, num_levels=5, atoms="non_recursive", residual_gate=True)
    save_model(model, tmp_path / "m.ckpt")
    loaded = load_model(tmp_path / "m.ckpt")
    assert loaded.config == model.config
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert not list(tmp_path.glob("*.tmp"))


def test_converter_cli_writes_a_loadable_checkpoint(tmp_path, parity_fixture, capsys):
    src = tmp_path / "ref.pth"
    torch.save(parity_fixture["state_dict"], src)
    dst = tmp_path / "nrknet.ckpt"
    assert convert_main([str(src), str(dst)]) == 0
    model = load_model(dst).eval()
    with torch.no_grad():
        out = model(parity_fixture["blurry_bgr"].flip(1))
    torch.testing.assert_close(out, parity_fixture["output_bgr"].flip(1), rtol=0, atol=1e-5)
    # never overwrites without being asked
    assert convert_main([str(src), str(dst)]) == 2
    assert "exists" in capsys.readouterr().err


def test_converter_names_missing_and_mismatched_keys(parity_fixture):
    state = dict(parity_fixture["state_dict"])
    del state["APU.conv_atten.conv.bias"]
    with pytest.raises(CheckpointError, match="missing keys: APU.conv_atten.conv.bias"):
        from_official(state)
    state = dict(parity_fixture["state_dict"])
    state["Encoder.1.layers.0.main.0.main.0.weight"] = torch.zeros(16, 16, 5, 5)
    with pytest.raises(CheckpointError, match=r"Encoder\.1\.layers\.0\.main\.0\.main\.0\.weight"):
        from_official(state)
    with pytest.raises(CheckpointError, match="unexpected keys: extra.weight"):
        from_official({**parity_fixture["state_dict"], "extra.weight": torch.zeros(1)})


def test_converter_rejects_truncated_file(tmp_path, parity_fixture, capsys):
    src = tmp_path / "ref.pth"
    torch.save(parity_fixture["state_dict"], src)
    data = src.read_bytes()
    src.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot read"):
        convert_file(src, tmp_path / "out.ckpt")
    assert convert_main([str(src), str(tmp_path / "out.ckpt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nrknet-convert: error:") and "Traceback" not in err
    assert not (tmp_path / "out.ckpt").exists()


def test_load_model_refuses_foreign_checkpoints(tmp_path, parity_fixture):
    ref = tmp_path / "ref.pth"
    torch.save(parity_fixture["state_dict"], ref)
    with pytest.raises(CheckpointError, match="nrknet-convert"):
        load_model(ref)
    other = tmp_path / "other.ckpt"
    torch.save(
        {"state_dict": {"model.x": torch.zeros(1)}, "nrknet": {"model_config": {"width": 8}}}, other
    )
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(other)
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "missing.ckpt")


def test_components_given_as_hydra_configs_rebuild_from_checkpoints(tmp_path):
    torch.manual_seed(0)
    model = NRKNet(
        width=4,
        num_levels=4,
        atoms={"_target_": "nrknet.ops.atoms.RecursiveAtoms", "per_channel": False},
        coefficient_head={"_target_": "nrknet.models.coefficients.PlainCoefficientHead"},
    )
    assert model.config["atoms"] == {
        "_target_": "nrknet.ops.atoms.RecursiveAtoms",
        "per_channel": False,
        "_partial_": True,
    }
    assert model.atoms.atom_channels == 1 and not model.coefficients.recurrent
    save_model(model, tmp_path / "m.ckpt")
    loaded = load_model(tmp_path / "m.ckpt")
    assert loaded.config == model.config
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), model.eval()(x), rtol=0, atol=0)


def test_components_given_as_callables_are_recorded_as_hydra_configs():
    model = NRKNet(width=4, num_levels=4, atoms=functools.partial(RecursiveAtoms, symmetric=False))
    assert model.config["atoms"] == {
        "_target_": "nrknet.ops.atoms.RecursiveAtoms",
        "_partial_": True,
        "symmetric": False,
    }
    assert model.config["coefficient_head"] is None  # the head `recurrent` selects
    model = NRKNet(width=4, num_levels=4, coefficient_head=PlainCoefficientHead)
    assert model.config["coefficient_head"] == {
        "_target_": "nrknet.models.coefficients.PlainCoefficientHead",
        "_partial_": True,
    }


class ClampedNRKNet(NRKNet):
    """A subclass, as a researcher makes one: checkpoints must rebuild it, not plain NRKNet."""

    def forward(self, blurry, sharp=None):
        out = super().forward(blurry, sharp)
        return out.clamp(0, 1) if sharp is None else out


module_level_lambda = lambda num_levels: RecursiveAtoms(num_levels)  # noqa: E731


def test_subclasses_and_yaml_keywords_are_recorded_so_that_checkpoints_rebuild_them(tmp_path):
    torch.manual_seed(0)
    model = ClampedNRKNet(width=4, num_levels=4)
    assert model.config["_target_"] == f"{__name__}.ClampedNRKNet"
    save_model(model, tmp_path / "m.ckpt")
    with pytest.raises(CheckpointError, match="ClampedNRKNet, code outside nrknet.*trust_code"):
        load_model(tmp_path / "m.ckpt")  # a class of one's own is built only when trusted
    assert type(load_model(tmp_path / "m.ckpt", trust_code=True)) is ClampedNRKNet
    # keywords that Hydra hands over as OmegaConf lists and dicts are stored as Python ones
    config = factory_config(
        "atoms", functools.partial(RecursiveAtoms, extra=OmegaConf.create({"radii": [1, 2]}))
    )
    assert config["extra"] == {"radii": [1, 2]} and type(config["extra"]["radii"]) is list


def test_a_component_defined_in_the_script_being_run_is_recorded_with_a_warning():
    class Script(RecursiveAtoms):
        pass

    Script.__module__, Script.__qualname__ = "__main__", "Script"
    with pytest.warns(UserWarning, match="__main__.*importable module"):
        assert factory_config("atoms", Script)["_target_"] == "__main__.Script"


def test_an_import_error_inside_a_components_module_is_named(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_broken_atoms.py").write_text("import not_installed_package\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = {"_target_": "my_broken_atoms.Atoms"}
    with pytest.raises(ValueError, match="No module named 'not_installed_package'"):
        NRKNet(width=4, num_levels=4, atoms=spec)

    # the same through a Hydra config of the whole model, as nrknet-train instantiates it
    @reported("nrknet-train", exits=True)
    def build():
        instantiate(OmegaConf.create({"_target_": "nrknet.models.nrknet.NRKNet", "atoms": spec}))

    with pytest.raises(SystemExit):
        build()
    assert (
        "cause: ModuleNotFoundError: No module named 'not_installed_package'"
        in capsys.readouterr().err
    )


class LevelsOnlyAtoms(torch.nn.Module):
    """A bank with levels(x) but neither max_radius nor effective_kernels()."""

    def __init__(self, num_levels: int) -> None:
        super().__init__()
        self.num_levels = num_levels

    def levels(self, x):
        yield x


def two_level_bank(num_levels: int) -> RecursiveAtoms:
    """An atom factory that ignores the model's number of levels."""
    return RecursiveAtoms(2)


def test_components_that_cannot_be_recorded_or_built_are_refused(tmp_path):
    for kwargs, message in [
        ({"atoms": lambda num_levels: RecursiveAtoms(num_levels)}, "atoms: expected a class"),
        ({"atoms": module_level_lambda}, "atoms: expected a class"),
        ({"atoms": functools.partial(RecursiveAtoms, 4)}, "atoms: give the arguments"),
        ({"atoms": {"per_channel": False}}, "atoms: expected a mapping with a _target_"),
        ({"atoms": {"_target_": "nowhere.Atoms"}}, "atoms: cannot build nowhere.Atoms"),
        ({"atoms": two_level_bank}, "num_levels=2, expected num_levels=4"),
        ({"atoms": LevelsOnlyAtoms}, "LevelsOnlyAtoms has no max_radius or effective_kernels"),
        ({"atoms": RecursiveAtoms(4)}, "atoms: expected a name"),
        ({"coefficient_head": torch.nn.Identity}, "coefficient_head: the factory must build"),
    ]:
        with pytest.raises(ValueError, match=message):
            NRKNet(width=4, num_levels=4, **kwargs)
    ckpt = tmp_path / "moved.ckpt"
    save_model(NRKNet(width=4, num_levels=4), ckpt)
    data = torch.load(ckpt, weights_only=False)
    data["nrknet"]["model_config"]["atoms"] = {"_target_": "nowhere.Atoms", "_partial_": True}
    torch.save(data, ckpt)
    with pytest.raises(CheckpointError, match="import nowhere.Atoms, code outside nrknet"):
        load_model(ckpt)
    with pytest.raises(CheckpointError, match="cannot import 'nowhere.Atoms'"):
        load_model(ckpt, trust_code=True)


def test_the_config_object_is_what_the_model_records_and_rebuilds_from():
    from dataclasses import FrozenInstanceError, replace

    from nrknet.models.config import NRKNetConfig

    config = NRKNetConfig(width=4, num_levels=3, atoms="gaussian", blur_residual=True)
    model = NRKNet(config)
    assert model.config == config.as_dict()
    assert NRKNetConfig(**model.config) == config  # a checkpoint's record rebuilds the same
    assert NRKNet(config, width=6).config["width"] == 6  # keywords replace the object's settings
    with pytest.raises(FrozenInstanceError):
        config.width = 8
    with pytest.raises(ValueError, match="mixing='sum'"):
        replace(config, mixing="sum")  # checked again when changed: blur_residual needs conv1x1


class TooManyMaps(torch.nn.Module):
    """A coefficient head of one's own that gives one map too many."""

    def __init__(self, width: int, num_maps: int) -> None:
        super().__init__()
        from nrknet.models.coefficients import PlainCoefficientHead

        self.inner = PlainCoefficientHead(width=width, num_maps=num_maps + 1)

    def forward(self, features, state=None):
        return self.inner(features, state)

    @staticmethod
    def next_scale_state(state):
        return None


def test_a_head_or_bank_of_ones_own_and_the_switches_are_checked_where_they_enter():
    """Mutations: no probe of the head's map count; no check of the five switches; no check of
    an IndependentAtoms variant given as a _target_ -> each would build silently."""
    from nrknet.ops.atoms import IndependentAtoms

    with pytest.raises(ValueError, match=r"TooManyMaps gives 6 coefficient maps, expected .* 5"):
        NRKNet(width=4, num_levels=4, coefficient_head=TooManyMaps)
    for switch in ("recurrent", "residual_gate", "blur_residual", "symmetric_atoms"):
        with pytest.raises(ValueError, match=rf"^{switch}='off' is not known"):
            NRKNet(width=4, num_levels=4, **{switch: "off"})
    with pytest.raises(ValueError, match="atoms.variant='gausian' is not known"):
        IndependentAtoms("gausian", 4)
