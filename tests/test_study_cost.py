"""``experiments/cost.py``: GPU-hours of a study's training from a measured rate."""

from __future__ import annotations

import json

import pytest
from experiments import cost
from experiments.study import StudyError
from omegaconf import OmegaConf

EAGER = {"32-true": {"images_per_s": 10.0}, "shape": "8x3x256x256"}


def test_gpu_hours_are_crops_over_the_measured_rate_scaled_by_model_cost():
    rows = {c.label: c for c in cost.study_costs("table1_dpdd", {"training": EAGER})}
    nrknet, unet = rows["NRKNet"], rows["U-Net baseline (same recipe)"]
    # the paper's DPDD run: 4000 epochs of one crop from each of the 350 training pairs
    assert nrknet.crops == unet.crops == 4000 * 350
    assert nrknet.relative_cost == pytest.approx(1.0)  # the network that was timed
    assert nrknet.gpu_hours == pytest.approx(4000 * 350 / 10.0 / 3600)
    assert 0 < unet.relative_cost < 0.5 and unet.gpu_hours < nrknet.gpu_hours
    assert nrknet.rate_source.startswith("eager, 32-true") and "row by MACs" in nrknet.rate_source


def test_the_compiled_rate_at_the_rows_batch_is_preferred_for_bf16():
    gpu = {
        "training": {**EAGER, "bf16-mixed": {"images_per_s": 20.0}},
        "compile": {"training_bf16_batch4": {"compiled": {"images_per_s": 100.0}}},
    }
    (row,) = [c for c in cost.study_costs("table3_rkr", gpu, "bf16-mixed") if c.label == "RKR"]
    assert row.images_per_s == pytest.approx(100.0)  # the paper's batch is 4
    assert row.rate_source == "compiled, bf16, batch 4; row by MACs"
    with pytest.raises(StudyError, match="no training rate for precision '16-mixed'"):
        cost.study_costs("table3_rkr", gpu, "16-mixed")


def test_a_synthetic_study_counts_its_rendered_pairs():
    pairs = cost.training_pairs(
        OmegaConf.create({"_target_": "x.SyntheticDataModule", "num_train": 96})
    )
    assert pairs == 96
    with pytest.raises(StudyError, match="no training-set size known for MyDataModule"):
        cost.training_pairs(OmegaConf.create({"_target_": "mine.MyDataModule"}))


def test_command_line_prints_each_study_and_refuses_a_result_without_rates(tmp_path, capsys):
    gpu = tmp_path / "gpu.json"
    gpu.write_text(json.dumps({"device": "Test GPU", "training": EAGER}))
    assert cost.main(["table1_dpdd", "--gpu", str(gpu), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "Test GPU" in out and "| table1_dpdd |" in out and "**total**" in out
    gpu.write_text(json.dumps({"skipped": "no CUDA device"}))
    assert cost.main(["table1_dpdd", "--gpu", str(gpu)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no training rates" in err
    assert cost.main(["table1_dpdd", "--gpu", str(tmp_path / "absent.json")]) == 2
    assert "absent.json: cannot read" in capsys.readouterr().err
    gpu.write_text(json.dumps({"device": "Test GPU", "training": EAGER}))
    assert cost.main(["no_such_study", "--gpu", str(gpu)]) == 2
    assert "unknown study 'no_such_study'" in capsys.readouterr().err


def test_forward_macs_counts_a_convolution_exactly_without_allocating():
    from torch import nn

    from nrknet.analysis.complexity import forward_macs

    macs = forward_macs(lambda: nn.Conv2d(3, 8, 3, padding=1, bias=False), 10, 12)
    assert macs == 8 * 3 * 9 * 10 * 12  # out x in x taps x pixels


def test_concurrent_hours_share_the_measured_speed_up_among_the_running_jobs():
    flat = cost.speedup_function({1: 1.0, 2: 2.0, 4: 3.0})
    assert flat(3) == pytest.approx(2.5) and flat(8) == pytest.approx(3.0)  # linear, then flat
    # two equal runs, two at once at twice the aggregate rate: the time of one
    assert cost.concurrent_hours([4.0, 4.0], 2, flat) == pytest.approx(4.0)
    # one at a time: the sum
    assert cost.concurrent_hours([4.0, 2.0, 1.0], 1, flat) == pytest.approx(7.0)
    # 4 and 2 together (each at 1x): 2 h; then 2 h of the first with the 1 h run: 1 h; then 1 h
    assert cost.concurrent_hours([4.0, 2.0, 1.0], 2, flat) == pytest.approx(4.0)
    # no gain from sharing: as long as one after another
    none = cost.speedup_function({1: 1.0, 2: 1.0})
    assert cost.concurrent_hours([3.0, 1.0, 2.0], 2, none) == pytest.approx(6.0)


def test_a_study_gets_its_fastest_measured_concurrency(tmp_path, capsys):
    speedups = cost.concurrency_speedups(
        {"results": [{"concurrent": n, "images_per_s": r} for n, r in [(1, 50), (2, 90), (4, 160)]]}
    )
    assert speedups == pytest.approx({1: 1.0, 2: 1.8, 4: 3.2})
    costs = cost.study_costs("table3_rkr", {"training": EAGER})
    n, wall = cost.best_concurrency(costs, speedups)
    assert n == 4 and wall < sum(c.gpu_hours for c in costs) / 3
    gpu, sweep = tmp_path / "gpu.json", tmp_path / "sweep.json"
    gpu.write_text(json.dumps({"device": "Test GPU", "training": EAGER}))
    sweep.write_text(json.dumps({"results": [{"concurrent": 2, "images_per_s": 9.0}]}))
    assert cost.main(["table3_rkr", "--gpu", str(gpu), "--sweep", str(sweep)]) == 2
    assert "no single-job rate (jobs at once: 2)" in capsys.readouterr().err
    sweep.write_text(json.dumps({"device": "Test GPU", "results": [
        {"concurrent": 1, "images_per_s": 50.0}, {"concurrent": 4, "images_per_s": 160.0}]}))  # fmt: skip
    assert cost.main(["table3_rkr", "--gpu", str(gpu), "--sweep", str(sweep), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "1: x1.00, 4: x3.20" in out and "**one GPU, 4 jobs at once (wall-clock)**" in out


def test_measured_row_costs_replace_the_mac_estimate():
    variants = {
        "reference": "v0",
        "variants": {
            "v0": {"images_per_s": 40.0},
            "v1": {"images_per_s": 10.0},
            "v2": {"error": "x"},
        },
        "rows": {
            "experiment=table3_gaussian": "v1",
            "experiment=table3_non_recursive": "v2",  # failed: MACs instead
            "experiment=table3_rkr": "v0",
        },
    }
    rows = {c.label: c for c in cost.study_costs("table3_rkr", {"training": EAGER}, None, variants)}
    gaussian, recursive, rkr = rows["fixed Gaussian atoms"], rows["non-recursive"], rows["RKR"]
    assert gaussian.relative_cost == pytest.approx(4.0) and gaussian.images_per_s == pytest.approx(
        2.5
    )
    assert gaussian.rate_source.endswith("row by its eager bf16 step")
    assert rkr.relative_cost == pytest.approx(1.0)
    assert recursive.rate_source.endswith("row by MACs") and 0.5 < recursive.relative_cost < 2
    assert rows["non-separable"].rate_source.endswith("row by MACs")  # not in the file


def test_a_variants_result_without_measurements_leaves_the_mac_estimate(tmp_path, capsys):
    gpu, variants = tmp_path / "gpu.json", tmp_path / "gpu_variants.json"
    gpu.write_text(json.dumps({"device": "Test GPU", "training": EAGER}))
    variants.write_text(json.dumps({"skipped": "no CUDA device"}))  # `make bench` on a CPU
    assert cost.main(["table1_dpdd", "--gpu", str(gpu), "--variants", str(variants)]) == 0
    out = capsys.readouterr().out
    assert "no measured row costs (no CUDA device); rows priced by MACs" in out
    assert "row by MACs" in out
    variants.write_text("{not json")
    assert cost.main(["table1_dpdd", "--gpu", str(gpu), "--variants", str(variants)]) == 2
    assert "cannot read a variants result" in capsys.readouterr().err
