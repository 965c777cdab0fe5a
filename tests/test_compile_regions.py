"""``compile``: the switch, the compiled regions against eager, the fall-back to eager on failure.

The tests that compile use the ``aot_eager`` backend: it traces the regions
through TorchDynamo and AOTAutograd (the graphs inductor would receive,
forward and backward) without generating C++ code, which on a small CPU
takes minutes per graph. Inductor itself is exercised by
``benchmarks/bench_gpu.py`` on a GPU.
"""

from __future__ import annotations

import functools
import logging

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from nrknet.accel import is_accelerated
from nrknet.accel.compile import (
    REGIONS,
    CompileOptions,
    compile_regions,
    plan,
    region_status,
    uncompile_regions,
)
from nrknet.models.nrknet import NRKNet
from nrknet.training.losses import NRKNetLoss
from nrknet.training.module import NRKNetModule

LOGGER = "nrknet.accel.compile"
ALL_COMPILED = dict.fromkeys(REGIONS, "compiled")


def tiny_model(seed: int = 0) -> NRKNet:
    torch.manual_seed(seed)
    return NRKNet(width=4, num_levels=2, num_scales=2)


def tiny_batch(seed: int = 1, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, size, size, generator=g), torch.rand(2, 3, size, size, generator=g)


def tiny_pairs(size: int = 16) -> list[dict]:
    """The two pairs of :func:`tiny_batch` as dataset items (named, as validation needs)."""
    blurry, sharp = tiny_batch(size=size)
    return [
        {"blurry": b, "sharp": s, "name": f"{i}.png"}
        for i, (b, s) in enumerate(zip(blurry, sharp, strict=True))
    ]


def tiny_module(lr: float = 1e-3, **settings) -> NRKNetModule:
    """A training module around :func:`tiny_model` with the paper's loss and Adam."""
    return NRKNetModule(
        tiny_model(),
        loss=NRKNetLoss(),
        optimizer=functools.partial(torch.optim.Adam, lr=lr),
        lpips="off",
        **settings,
    )


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelname == "WARNING"]


def failing_compile(error: str):
    """A stand-in for ``torch.compile`` whose result raises ``error`` when called (lazy failure)."""

    def compile_(fn, **kwargs):
        def compiled(*args, **kw):
            raise RuntimeError(error)

        return compiled

    return compile_


# ------------------------------------------------------------------ the switch
@pytest.mark.parametrize(
    "compile_mode, accel, device, training, expected",
    [
        ("auto", "auto", "cuda", True, (True, "off")),  # GPU training compiles
        ("auto", "auto", "cuda", False, (False, "auto")),  # evaluation stays eager
        ("auto", "auto", "cpu", True, (False, "auto")),  # the CPU keeps accel
        ("on", "auto", "cpu", True, (True, "off")),  # explicit on wins, accel skipped
        ("on", "on", "cpu", True, (True, "off")),
        ("on", "auto", "cuda", False, (True, "off")),
        ("auto", "on", "cuda", True, (False, "on")),  # explicit accel beats auto compile
        ("off", "auto", "cuda", True, (False, "auto")),
        (True, "off", "cpu", True, (True, "off")),
        (" OFF ", "auto", "cpu", True, (False, "auto")),
    ],
)
def test_plan_resolves_the_switch(compile_mode, accel, device, training, expected):
    assert plan(compile_mode, accel, device, training=training) == expected


def test_compile_on_the_cpu_skips_accel_and_says_so(caplog):
    with caplog.at_level(logging.INFO, logger=LOGGER):
        plan("on", "auto", "cpu", training=True)
        plan("off", "auto", "cpu", training=True)
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert lines == ["compile: on, so accel is skipped (compiled regions run the plain model)"]


def test_bad_settings_are_refused_naming_the_setting():
    with pytest.raises(
        ValueError, match="compile='fast' is not known; expected one of auto, on, off"
    ):
        plan("fast", "auto", "cpu", training=True)
    with pytest.raises(ValueError, match="compile='sometimes' is not known"):
        NRKNetModule(tiny_model(), compile="sometimes")
    with pytest.raises(
        ValueError, match="compile_options.mode='fastest' is not known; expected one of default, "
    ):
        CompileOptions(mode="fastest")
    with pytest.raises(ValueError, match="applies to the inductor backend only"):
        CompileOptions(backend="aot_eager", mode="reduce-overhead")
    with pytest.raises(ValueError, match="compile_options: unknown setting.s. dynamic; expected"):
        NRKNetModule(tiny_model(), compile_options={"dynamic": True})
    with pytest.raises(
        ValueError,
        match="compile_options.channels_last='yes' is not known; expected one of True, False",
    ):
        CompileOptions(channels_last="yes")
    with pytest.raises(ValueError, match="compile regions must be among unet, coefficients, blur"):
        compile_regions(tiny_model(), regions=("head",))


def test_compile_is_a_top_level_setting_passed_to_the_module(compose_train, tmp_path):
    cfg = compose_train([f"paths.root_dir={tmp_path}"])
    assert cfg.compile == "auto" and cfg.module.compile == "auto"
    assert CompileOptions.from_config(cfg.module.compile_options) == CompileOptions()
    cfg = compose_train(
        [f"paths.root_dir={tmp_path}", "compile=on", "compile_options.mode=reduce-overhead"]
    )
    assert cfg.module.compile == "on" and cfg.module.compile_options.mode == "reduce-overhead"


@pytest.mark.parametrize(
    "compile_mode, compiled, accelerated", [("on", True, False), ("auto", False, True)]
)
def test_lightning_module_applies_the_switch_at_setup(compile_mode, compiled, accelerated):
    module = NRKNetModule(tiny_model(), compile=compile_mode)
    module.trainer = L.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False
    )
    module.setup("fit")
    assert (region_status(module.model) == ALL_COMPILED) == compiled
    assert is_accelerated(module.model) == accelerated
    module.hparams.compile = "off"  # a later stage set up with compile off runs eagerly again
    module.setup("test")
    assert set(region_status(module.model).values()) == {"eager"}


def test_compiling_is_idempotent_and_undone():
    model, options = tiny_model(), {"backend": "aot_eager"}
    assert compile_regions(model, options) == list(REGIONS)  # wrapped only: compiled when run
    wrapped = model.blur._compiled_call_impl
    compile_regions(model, options)
    assert model.blur._compiled_call_impl is wrapped
    uncompile_regions(model)
    assert set(region_status(model).values()) == {"eager"}


# ------------------------------------------------------------------ falling back to eager
def test_a_region_that_cannot_be_wrapped_runs_eagerly(monkeypatch, caplog):
    model = tiny_model()
    real_compile = torch.compile

    def compile_(fn, **kwargs):
        if fn.__self__ is model.coefficients:
            raise RuntimeError("no compiler for this region")
        return real_compile(fn, **kwargs)

    monkeypatch.setattr(torch, "compile", compile_)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert compile_regions(model, {"backend": "eager"}) == ["unet", "blur"]
    assert warnings_of(caplog) == [
        "compile: region coefficients runs eagerly, compiling it failed "
        "(RuntimeError: no compiler for this region)"
    ]
    status = region_status(model)
    assert status["coefficients"] == "eager (RuntimeError: no compiler for this region)"
    assert status["unet"] == status["blur"] == "compiled"


def test_a_region_failing_at_its_first_call_falls_back_once(monkeypatch, caplog):
    model, eager = tiny_model(), tiny_model()
    blurry, sharp = tiny_batch()
    monkeypatch.setattr(torch, "compile", failing_compile("forced failure\nsecond line"))
    compile_regions(model)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        out = model(blurry, sharp)
        model(blurry, sharp)  # eager for good: no second warning
    assert warnings_of(caplog) == [
        f"compile: region {name} runs eagerly, compiling it failed (RuntimeError: forced failure)"
        for name in ("unet", "coefficients", "blur")  # in the order they first run
    ]
    expected = eager(blurry, sharp)
    for a, b in zip(out.scales + out.reblurred, expected.scales + expected.reblurred, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert all(s.startswith("eager (RuntimeError") for s in region_status(model).values())


def test_an_error_of_the_call_itself_is_raised_and_the_region_stays_compiled(monkeypatch, caplog):
    model = tiny_model()
    monkeypatch.setattr(torch, "compile", failing_compile("compiled call failed"))
    compile_regions(model)
    x = torch.rand(1, 3, 8, 8)
    with (
        caplog.at_level(logging.WARNING, logger=LOGGER),
        pytest.raises(RuntimeError, match="must match the size"),
    ):
        model.blur(x, torch.rand(1, 2, 8, 8))  # too few coefficient maps: the call itself fails
    assert not warnings_of(caplog)
    assert region_status(model)["blur"] == "compiled"


def test_training_continues_when_compiling_fails(monkeypatch, caplog, one_thread):
    monkeypatch.setattr(torch, "compile", failing_compile("forced failure"))
    pairs = tiny_pairs()
    module = tiny_module(compile="on")
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    with caplog.at_level(logging.INFO, logger=LOGGER):
        trainer.fit(module, train_dataloaders=DataLoader(pairs, batch_size=2))
    assert trainer.global_step == 2
    assert torch.isfinite(trainer.callback_metrics["train/loss_step"])
    assert len(warnings_of(caplog)) == 3
    assert "compile: on, so accel is skipped" in caplog.text
    assert not is_accelerated(module.model)


@pytest.mark.slow
def test_a_backend_failing_inside_dynamo_falls_back(caplog, one_thread):
    def broken_backend(graph, example_inputs):
        raise RuntimeError("backend refused the graph")

    model, eager = tiny_model(), tiny_model()
    compile_regions(model, {"backend": broken_backend}, regions=("blur",))
    x, gamma = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        out = model.blur(x, gamma)
    (line,) = warnings_of(caplog)
    assert line.startswith("compile: region blur runs eagerly, compiling it failed (")
    assert "backend refused the graph" in line and "\n" not in line
    torch.testing.assert_close(out, eager.blur(x, gamma), rtol=0, atol=0)


# ------------------------------------------------------------------ compiled against eager
@pytest.mark.slow
def test_compiled_regions_match_eager_outputs_and_gradients(one_thread):
    """Float32, training path (two scales, both outputs and reblurred images): outputs to 1e-5
    and parameter gradients to 1e-5, relative and absolute; every region really compiled
    (``fullgraph``: no graph break inside a region), twice (two scales' shapes) or more."""
    graphs = []

    def counting_aot_eager(graph, example_inputs):
        graphs.append(graph)
        return torch._dynamo.lookup_backend("aot_eager")(graph, example_inputs)

    model, eager = tiny_model(), tiny_model()
    compile_regions(model, {"backend": counting_aot_eager, "fullgraph": True})
    blurry, sharp = tiny_batch()
    weights = None
    grads = []
    for net in (model, eager):
        out = net(blurry, sharp)
        outputs = out.scales + out.reblurred
        if weights is None:
            weights = [torch.randn_like(t) for t in outputs]
        loss = sum((w * t).sum() for w, t in zip(weights, outputs, strict=True))
        grads.append((outputs, torch.autograd.grad(loss, list(net.parameters()))))
    assert region_status(model) == ALL_COMPILED
    assert len(graphs) >= 2 * len(REGIONS)  # one graph per region and scale, at least
    (compiled_out, compiled_grads), (eager_out, eager_grads) = grads
    for a, b in zip(compiled_out, eager_out, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for (name, _), a, b in zip(model.named_parameters(), compiled_grads, eager_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=name)
    # BatchNorm running statistics moved the same way
    for (name, a), b in zip(model.named_buffers(), eager.buffers(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=name)
    # inference (eval mode, a new shape): compiled again, same output
    with torch.no_grad():
        torch.testing.assert_close(
            model.eval()(blurry[:1, :, :24]), eager.eval()(blurry[:1, :, :24]), rtol=1e-5, atol=1e-5
        )


@pytest.mark.slow
def test_training_with_compiled_regions_validation_figures_and_ema_ends_as_eager(
    tmp_path, one_thread
):
    """Compiled regions through a run with validation, its figures (the defocus map captures
    the coefficient maps with a forward hook), checkpoints and EMA (Lightning's weight
    averaging copies the module): the same averaged weights as the eager run, the regions
    still compiled."""
    from nrknet.training.ema import EMA

    pairs = tiny_pairs()
    finals = {}
    for compile_mode in ("off", "on"):
        torch.manual_seed(0)
        module = tiny_module(
            lr=1e-2, accel="off", compile=compile_mode, compile_options={"backend": "aot_eager"}
        )
        trainer = L.Trainer(
            accelerator="cpu",
            max_steps=3,
            logger=False,
            default_root_dir=tmp_path / compile_mode,
            callbacks=[EMA(decay=0.5)],
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            val_check_interval=1,
            check_val_every_n_epoch=None,
            limit_val_batches=1,
        )
        loader = DataLoader(pairs, batch_size=1)
        trainer.fit(module, train_dataloaders=loader, val_dataloaders=DataLoader(pairs[:1]))
        assert trainer.global_step == 3
        finals[compile_mode] = {k: v.detach().clone() for k, v in module.model.state_dict().items()}
        if compile_mode == "on":
            assert region_status(module.model) == ALL_COMPILED
    live_moved = False
    for name, eager_value in finals["off"].items():
        torch.testing.assert_close(finals["on"][name], eager_value, rtol=1e-5, atol=1e-6, msg=name)
        live_moved |= not torch.equal(eager_value, tiny_model().state_dict()[name])
    assert live_moved, "training must have changed the weights"


def test_a_call_with_forward_hooks_runs_eagerly_so_that_they_fire(one_thread):
    """Compiled code skips the region's own hooks: while one is registered (the defocus-map
    capture of the validation figures), the region's calls run eagerly."""
    from nrknet.analysis.defocus import full_scale_coefficients

    compiled_calls = []

    def counting_aot_eager(graph, example_inputs):
        inner = torch._dynamo.lookup_backend("aot_eager")(graph, example_inputs)

        def run(*args):
            compiled_calls.append(1)
            return inner(*args)

        return run

    model, eager = tiny_model().eval(), tiny_model().eval()
    compile_regions(model, {"backend": counting_aot_eager}, regions=("coefficients",))
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        model(x)
    assert compiled_calls, "without hooks the region runs compiled"
    compiled_calls.clear()
    gamma = full_scale_coefficients(model, x)  # a forward hook captures the maps
    assert not compiled_calls
    torch.testing.assert_close(gamma, full_scale_coefficients(eager, x), rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        model(x)
    assert compiled_calls, "the hook removed, the region runs compiled again"
    assert region_status(model)["coefficients"] == "compiled"


VARIANTS = [
    ["experiment=table3_gaussian"],
    ["experiment=table3_non_recursive"],
    ["experiment=table3_non_separable"],
    ["experiment=table4_full_expansion"],
    ["experiment=table4_two_scales"],
    ["experiment=table4_four_scales"],
    ["experiment=table4_no_convlstm"],
    ["experiment=quickstart_gate"],  # the residual gate
    ["model=nrknet_small_residual"],  # the residual blur operator
]


@pytest.mark.slow
@pytest.mark.parametrize("overrides", VARIANTS, ids=lambda o: o[0].split("=")[1])
def test_every_ablation_variant_compiles_to_the_eager_result(
    compose_train, tmp_path, overrides, one_thread
):
    """Each region of each variant compiles (at least one graph) and the training outputs and
    parameter gradients equal the eager model's (float32, 1e-5)."""
    from hydra.utils import instantiate

    cfg = compose_train([*overrides, f"paths.root_dir={tmp_path}", "model.width=4"])
    torch._dynamo.reset()  # else another variant's graphs, still cached, could serve this one
    compiled_regions = set()

    def make_backend(name):
        def backend(graph, example_inputs):
            compiled_regions.add(name)
            return torch._dynamo.lookup_backend("aot_eager")(graph, example_inputs)

        return backend

    torch.manual_seed(0)
    model = instantiate(cfg.model)
    torch.manual_seed(0)
    eager = instantiate(cfg.model)
    for name in REGIONS:
        compile_regions(model, {"backend": make_backend(name)}, regions=(name,))
    g = torch.Generator().manual_seed(1)
    blurry, sharp = torch.rand(2, 1, 3, 64, 64, generator=g)
    results = []
    for net in (model, eager):
        out = net(blurry, sharp)
        outputs = [*out.scales, *out.reblurred]
        loss = sum((t * (i + 1)).mean() for i, t in enumerate(outputs))
        results.append((outputs, torch.autograd.grad(loss, list(net.parameters()))))
    assert compiled_regions == set(REGIONS) and region_status(model) == ALL_COMPILED
    (outputs, grads), (eager_outputs, eager_grads) = results
    for a, b in zip(outputs, eager_outputs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for (name, _), a, b in zip(model.named_parameters(), grads, eager_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=name)
