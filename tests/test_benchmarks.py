"""The speed and GPU benchmarks run (at toy sizes) and their tables format real results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from benchmarks import (
    bench_compile_cpu,
    bench_data,
    bench_gpu,
    bench_gpu_variants,
    bench_speed,
)

ROOT = Path(__file__).resolve().parents[1]


TOY = {
    "inference": dict(
        height=48, width_px=64, repeats=1
    ),  # the reference path needs multiples of 16
    "training": dict(batch=1, size=32, steps=1, repeats=1),
    "rkr_operator": dict(height=24, width_px=40, repeats=1),
}


@pytest.mark.slow
def test_speed_benchmark_measures_both_paths_and_the_same_numbers():
    result = bench_speed.run(sizes=TOY, width=4)
    inf, train = result["inference"], result["training"]
    # same weights, same input: our path and the reference-style path agree
    assert inf["ours"]["checksum"] == pytest.approx(inf["reference_path"]["checksum"], abs=1e-6)
    assert train["ours"]["loss"] == pytest.approx(train["reference_path"]["loss"], rel=1e-5)
    assert result["rkr_operator"]["max_abs_diff"] < 1e-5
    for r in (inf["ours"], inf["reference_path"], train["ours"], train["reference_path"]):
        assert r["peak_rss_mb"] > 50 and r["process_wall_s"] > 0
    assert "inference_time_vs_quoted" not in result["ratios"]  # toy sizes: no comparison
    labels = [label for label, _ in bench_speed.rows(result)]
    assert any("RKR operator" in label for label in labels)


def test_speed_table_of_the_committed_full_run():
    result = json.loads((ROOT / "benchmarks" / "results" / "speed.json").read_text())
    table = dict(bench_speed.rows(result))
    assert "reference implementation (quoted, 2-core machine)" in table


def test_cpu_compile_benchmark_times_the_three_ways(one_thread):
    """At toy size, with the tracing backend (inductor's C++ compile takes minutes here)."""
    result = bench_compile_cpu.run(quick=True, backend="aot_eager")
    for way in ("plain", "accel", "compiled", "compiled_cached"):
        assert result[way]["steps"] == 3 and result[way]["median_step_s"] > 0
    assert result["compiled_vs_plain"] > 0
    table = dict(bench_compile_cpu.rows(result))
    assert "first step" in table["compiled (aot_eager), empty cache"]
    assert "first step" in table["compiled (aot_eager), cached graphs"]


@pytest.mark.slow
def test_variant_rates_cover_every_row_of_a_study_at_toy_size(one_thread):
    result = bench_gpu_variants.run(quick=True, studies=("table5_losses",))
    assert result["reference"] == "v0" and result["quick"]
    assert result["variants"]["v0"]["first_row"] == "the full model"
    # the study's full-loss row trains the reference network and loss; three others differ
    assert len(result["variants"]) == 4
    assert result["rows"]["experiment=table5_full"] == "v0"
    for figures in result["variants"].values():
        assert figures["images_per_s"] > 0, figures
    table = dict(bench_gpu_variants.rows(result))
    assert any("without reblur" in label for label in table)


def test_gpu_benchmark_without_cuda_says_so(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = bench_gpu.run(quick=True)
    assert result == {"skipped": "no CUDA device"}
    assert bench_gpu.rows(result) == [("GPU", "skipped: no CUDA device")]


def test_gpu_table_of_the_committed_run():
    result = json.loads((ROOT / "benchmarks" / "results" / "gpu.json").read_text())
    table = dict(bench_gpu.rows(result))
    assert table["device"].startswith("NVIDIA")
    assert any(label.startswith("training") and "img/s" in value for label, value in table.items())


def test_compile_comparison_keeps_order_notes_failures_and_the_budget(monkeypatch):
    """The compiled parts run most telling first; each is noted as unfinished in the saved
    results before it starts (a timeout then shows which one it cut), a failing part keeps the
    others, and parts not started within the budget are skipped."""
    calls, saved = [], []

    def fake_training(batch, size, warmup, steps, width=64, precisions=(), compile="off", **kw):
        calls.append(("training", batch, compile))
        return {"bf16-mixed": {"images_per_s": 10.0 * batch * (4 if compile == "on" else 1)}}

    def fake_inference(*args, mode="default", **kwargs):
        calls.append(("inference", mode))
        raise RuntimeError("inductor failed")

    def fake_curves(batch, size, steps):
        calls.append(("loss_curves", batch, steps))
        monkeypatch.setattr(bench_gpu.time, "monotonic", lambda: float("inf"))  # budget spent
        return {"steps": steps}

    monkeypatch.setattr(bench_gpu, "training", fake_training)
    monkeypatch.setattr(bench_gpu, "compiled_inference", fake_inference)
    monkeypatch.setattr(bench_gpu, "loss_curves", fake_curves)
    result = bench_gpu.compile_comparison(
        quick=False, budget_s=100, on_part=lambda r: saved.append(json.loads(json.dumps(r)))
    )
    assert calls == [
        ("training", 8, "off"), ("training", 8, "on"), ("inference", "default"),
        ("training", 4, "off"), ("training", 4, "on"), ("loss_curves", 4, 200),
    ]  # fmt: skip
    assert result["training_bf16_batch8"]["speed_up"] == pytest.approx(4.0)
    assert result["inference_bf16"]["error"] == "RuntimeError: inductor failed"
    assert "not started" in result["inference_bf16_reduce_overhead"]["skipped"]
    assert "unfinished" in saved[0]["training_bf16_batch8"]  # saved before the part ran
    assert "unfinished" in saved[-1]["loss_curves"] or saved[-1]["loss_curves"]["steps"] == 200
    table = dict(bench_gpu._compile_rows(saved[0]))
    assert table["compile: training bf16 batch8"].startswith("started 0 s into")


@pytest.mark.slow
def test_gpu_training_throughput_loop_runs_on_cpu(one_thread):
    result = bench_gpu.training(batch=2, size=32, warmup=1, steps=1, width=4, accelerator="cpu")
    assert set(result) == {*bench_gpu.PRECISIONS, "shape"}
    for precision in bench_gpu.PRECISIONS:
        assert result[precision]["images_per_s"] > 0
        assert result[precision]["steps"] == 1


def test_data_benchmark_runs_at_toy_size():
    result = bench_data.run(size=(40, 56), pairs=2, seconds=0.05, workers=1)
    for bits in ("8bit", "16bit"):
        r = result[bits]
        assert r["none"]["per_worker"] > 0 and r["ram"]["total"] > 0
        assert r["per_worker_ratio"] == r["ram"]["per_worker"] / r["none"]["per_worker"]
        assert r["ram"]["cache_gib"] > 0 and "cache_gib" not in r["none"]
    table = dict(bench_data.rows(result))
    assert any(label.startswith("16bit per-worker speed-up") for label in table)


def test_reference_style_baseline_computes_the_plain_model():
    """The speed baseline is the same function as the model: outputs and gradients, float64."""
    from benchmarks.reference_style import reference_forward

    from nrknet.models.nrknet import NRKNet

    torch.manual_seed(6)
    model = NRKNet(width=8, num_levels=5).double()
    blurry, sharp = torch.rand(2, 1, 3, 32, 32, dtype=torch.double)
    out, ref = model(blurry, sharp), reference_forward(model, blurry, sharp)
    ours, theirs = out.scales + out.reblurred, ref.scales + ref.reblurred
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    weights = [torch.randn_like(t) for t in ours]
    params = list(model.parameters())

    def projected(outputs):
        return sum((w * t).sum() for w, t in zip(weights, outputs, strict=True))

    got = torch.autograd.grad(projected(ours), params)
    expected = torch.autograd.grad(projected(theirs), params)
    for (name, _), a, b in zip(model.named_parameters(), got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11, msg=name)


def test_synthetic_benchmark_writes_a_set_at_toy_size(one_thread):
    """The renderer benchmark renders and writes a set through generate_dataset's own API."""
    from benchmarks import bench_synthetic

    figures = bench_synthetic._generate(2, size=64)
    assert figures["pairs"] == 2 and figures["pairs_per_s"] > 0


def test_atom_bank_step_benchmark_times_every_table3_row_both_ways():
    from benchmarks import bench_atoms

    result = bench_atoms.run(quick=True)
    atoms = {figures["atoms"] for figures in result["rows"].values()}
    assert atoms == {"recursive", "gaussian", "non_recursive", "non_separable"}
    for figures in result["rows"].values():
        assert figures["accelerated_step_s"] > 0 and figures["plain_step_s"] > 0
    assert len(bench_atoms.rows(result)) == 4
