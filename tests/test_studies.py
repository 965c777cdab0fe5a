"""The paper's studies at a scale: the CPU scale's recipe, one run per distinct row, resumable
keyed run folders, and a rerun that reproduces a row's test score exactly."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
from experiments import collect, runs
from experiments.study import load_study
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import tiny_overrides
from nrknet.utils.config import config_differences

STUDIES = ["table3_rkr", "table4_pipeline", "table5_losses", "atoms_J"]
ROOT = Path(__file__).resolve().parents[1]


def _resolved(cfg) -> dict:
    """The composed config, resolved, less Hydra's own node."""
    return {
        key: OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        for key, value in cfg.items()
        if key != "hydra"
    }


def test_the_cpu_scale_replaces_the_gpu_recipe_and_keeps_what_each_row_changes(compose_train):
    no_fdr = _resolved(compose_train(["experiment=table5_no_fdr", "scale=cpu"]))
    assert no_fdr["loss"]["beta"] == 0.0 and no_fdr["loss"]["alpha"] == 0.1  # the row's change
    assert no_fdr["model"]["width"] == 16 and no_fdr["model"]["num_levels"] == 20
    assert no_fdr["model"]["blur_residual"] is True and no_fdr["model"]["residual_gate"] is False
    assert no_fdr["data"]["root"].endswith("synthetic_studies")
    assert no_fdr["data"]["val_scenes"] == "train" and no_fdr["data"]["crop_size"] == 128
    assert no_fdr["trainer"]["accelerator"] == "cpu" and no_fdr["trainer"]["benchmark"] is False
    assert no_fdr["test_checkpoint"] == "last" and no_fdr["run_group"] == "table5_losses-cpu"

    gaussian = _resolved(compose_train(["experiment=table3_gaussian", "scale=cpu"]))
    assert gaussian["model"]["atoms"] == "gaussian" and gaussian["model"]["width"] == 16

    # without a scale, the paper's settings are untouched
    paper = _resolved(compose_train(["experiment=table3_rkr"]))
    assert paper["model"]["width"] == 64 and paper["model"]["num_levels"] == 21
    assert paper["model"]["blur_residual"] is False and paper["data"]["crop_size"] == 256
    assert paper["test_checkpoint"] == "best" and paper["run_group"] == "table3_rkr"

    # the U-Net keeps its own width: the width-16 NRKNet's number of parameters
    unet_cfg = compose_train(["experiment=study_unet", "scale=cpu"])
    nrknet_cfg = compose_train(["experiment=table3_rkr", "scale=cpu"])
    sizes = [
        sum(p.numel() for p in instantiate(cfg.model).parameters())
        for cfg in (unet_cfg, nrknet_cfg)
    ]
    assert type(instantiate(unet_cfg.model)).__name__ == "UNetBaseline"
    assert abs(sizes[0] - sizes[1]) / sizes[1] < 0.1, sizes


def test_at_the_cpu_scale_each_row_differs_from_the_reference_only_where_the_paper_row_does():
    reference, _ = runs.compose_run(["experiment=table3_rkr", "scale=cpu"])
    # four scales weigh one more output: its loss has a fifth scale weight
    allowed = {
        "table3_rkr": ("model.",),
        "table4_pipeline": ("model.", "loss.scale_weights"),
        "table5_losses": ("loss.",),
    }
    for study, prefix in allowed.items():
        for row in load_study(study)["rows"]:
            config, _ = runs.compose_run(runs.row_overrides(row, "cpu"))
            changed = [key for key, _, _ in config_differences(reference, config)]
            assert all(key.startswith(prefix) for key in changed), (study, row["label"], changed)
    for row in load_study("atoms_J")["rows"]:
        config, _ = runs.compose_run(runs.row_overrides(row, "cpu"))
        changed = [key for key, _, _ in config_differences(reference, config)]
        assert changed in ([], ["model.num_levels"]), (row["label"], changed)


def test_a_run_shared_by_several_studies_is_planned_once(tmp_path):
    plan = runs.plan(STUDIES, "cpu", root=tmp_path)
    by_rows = {tuple(run.rows): run for run in plan}
    reference = next(run for run in plan if ("table3_rkr", "RKR") in run.rows)
    assert reference.rows == [
        ("table3_rkr", "RKR"),
        ("table4_pipeline", "original"),
        ("table5_losses", "full loss"),
        ("atoms_J", "J = 20"),
    ]
    unet = next(run for run in plan if run.folder.name.startswith("unet_baseline-"))
    assert [study for study, _ in unet.rows] == STUDIES
    rows = sum(len(load_study(s)["rows"]) + 1 for s in STUDIES)
    assert len(plan) == rows - 3 - 3 == 16  # the reference and the U-Net counted once each
    assert len(by_rows) == len({run.folder for run in plan}) == 16
    # a key does not depend on which study asks first, nor on the checkout
    again = runs.plan(list(reversed(STUDIES)), "cpu", root=tmp_path)
    assert {run.folder for run in again} == {run.folder for run in plan}


def test_the_runner_refuses_an_unknown_scale_and_bad_seeds(capsys):
    with pytest.raises(SystemExit):
        runs.main(["table3_rkr", "--scale", "tpu"])
    assert "no conf/scale/tpu.yaml" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        runs.main(["table3_rkr", "--scale", "cpu", "--seeds", "0,x"])
    assert "--seeds='0,x'" in capsys.readouterr().err


def _tiny(data_dir: Path, out_dir: Path) -> list[str]:
    keep = ("paths.output_dir", "paths.root_dir", "paths.log_dir")
    return [
        *(o for o in tiny_overrides(data_dir, out_dir) if not o.startswith(keep)),
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "callbacks.figures.num_images=0",
    ]


@pytest.mark.slow
def test_a_row_rerun_from_its_command_reproduces_its_test_psnr_and_the_collector_reads_it(
    tmp_path, synthetic_data_dir, monkeypatch
):
    """The committed command of a row and seed, run twice on a shortened recipe: the same
    test PSNR to the last bit; the collector then finds the run through its key."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    extra = _tiny(synthetic_data_dir, tmp_path)
    scores, records = [], []
    for name in ("first", "again"):
        root = tmp_path / name
        plan = runs.plan(["table5_losses"], "cpu", root=root, extra=extra)
        run = next(r for r in plan if ("table5_losses", "full loss") in r.rows)
        assert runs.execute(run, 1, threads=1) == "trained"
        assert runs.execute(run, 1, threads=1) == "done before"
        seed_dir = run.folder / "seed1"
        metrics = json.loads((seed_dir / "metrics.json").read_text())
        assert metrics["tested_checkpoint"] == metrics["last_checkpoint"]
        assert metrics["last_val_psnr"] is not None and metrics["seed"] == 1
        assert (
            (seed_dir / "command.txt").read_text().startswith("nrknet-train experiment=table5_full")
        )
        scores.append(metrics["test"]["synthetic"]["psnr"])
        records.append(metrics)
    assert scores[0] == scores[1]

    table = collect.collect_scale("table5_losses", "cpu", tmp_path / "first", extra)
    rows = {row["label"]: row for row in table["rows"]}
    full = rows["full loss"]
    assert full["n"] == 1 and full["test"]["synthetic"]["psnr"] == scores[0]
    assert full["val_psnr"] == records[0]["last_val_psnr"]
    assert rows["U-Net baseline"]["status"] == "missing" and rows["without FDR loss"]["n"] == 0
    given = records[0]["test"]["synthetic"]["input_psnr"]
    assert table["input"]["synthetic"]["psnr"] == given
    assert f"| blurry input |  |  | {given:.2f} / " in collect.to_markdown(table)
    collect.copy_configs(table, tmp_path / "out")
    (config,) = (tmp_path / "out" / "configs").iterdir()
    assert config.name == "full_loss_seed1.yaml"
    assert config.read_text().startswith("# nrknet-train experiment=table5_full")


def _row(
    label: str, paper: float | None, runs_psnr: list[float], seeds: list | None = None
) -> dict:
    """A collected row; with ``seeds``, its per-seed runs too (what pairs two rows)."""
    n = len(runs_psnr)
    mean = sum(runs_psnr) / n
    std = (sum((v - mean) ** 2 for v in runs_psnr) / (n - 1)) ** 0.5
    runs = [
        {"seed": str(seed), "status": "done", "test": {"synthetic": {"psnr": value}}}
        for seed, value in zip(seeds or [], runs_psnr, strict=False)
    ]
    return {
        "label": label,
        "paper_psnr": paper,
        "n": n,
        "test": {"synthetic": {"psnr": mean}},
        "test_std": {"synthetic": {"psnr": std}},
        "runs": runs,
    }


def test_rows_run_with_the_same_seeds_are_compared_seed_by_seed():
    """A seed that lifts every row alike cancels in the paired difference."""
    from experiments import claims

    seeds = [0, 1, 2]
    ref = [26.5, 26.0, 26.9]
    table = {
        "title": "Table 3",
        "datasets": ["synthetic"],
        "rows": [
            _row("fixed Gaussian atoms", 25.309, [v - 0.05 for v in ref[:2]] + [26.83], seeds),
            _row("non-recursive", 25.994, [26.51, 25.99, 27.0], [0, 1, 5]),  # two in common
            _row("non-separable", 26.071, [26.5, 26.1, 26.8], seeds),
            _row("RKR", 26.109, ref, seeds),
        ],
    }
    verdicts = {c["label"]: c for c in claims.claims("table3_rkr", table)}
    gaussian = verdicts["fixed Gaussian atoms"]
    diffs = [-0.05, -0.05, -0.07]
    assert gaussian["paired"] == 3 and gaussian["verdict"] == "holds"
    assert abs(gaussian["here"] - statistics.fmean(diffs)) < 1e-9
    assert abs(gaussian["se"] - statistics.stdev(diffs) / 3**0.5) < 1e-9
    # the same values compared as means: the seed's spread hides the difference
    unpaired = claims.claims(
        "table3_rkr", {**table, "rows": [{**r, "runs": []} for r in table["rows"]]}
    )
    assert unpaired[0]["verdict"].startswith("cannot decide") and "paired" not in unpaired[0]
    # seed 5 has no partner; d = (+0.01, -0.01) cannot be signed but excludes the paper's -0.115
    smaller = verdicts["non-recursive"]
    assert smaller["paired"] == 2 and abs(smaller["here"]) < 1e-9
    assert smaller["verdict"] == "cannot decide its sign, but rules out the paper's (beyond 2 s.e.)"
    undecided = verdicts["non-separable"]
    assert undecided["verdict"].startswith("cannot decide")
    spread = statistics.stdev([0.0, 0.1, -0.1])
    assert undecided["seeds_needed"] == math.ceil(4 * spread**2 / (26.071 - 26.109) ** 2)
    assert "3 paired" in claims.markdown("table3_rkr", table)


def test_a_difference_is_called_only_beyond_twice_its_standard_error():
    from experiments import claims

    table = {
        "datasets": ["synthetic"],
        "rows": [
            _row("fixed Gaussian atoms", 25.309, [26.0, 26.1, 26.2]),  # -0.5 +- 0.08: holds
            _row("non-recursive", 25.994, [26.7, 26.8, 26.9]),  # +0.2 +- 0.08: reversed
            _row("non-separable", 26.071, [26.2, 26.9, 26.5]),  # -0.07 +- 0.21: undecided
            _row("RKR", 26.109, [26.5, 26.6, 26.7]),
            _row("U-Net baseline", None, [26.0, 26.0, 26.1]),
        ],
    }
    verdicts = {c["label"]: c for c in claims.claims("table3_rkr", table)}
    assert set(verdicts) == {"fixed Gaussian atoms", "non-recursive", "non-separable"}
    assert verdicts["fixed Gaussian atoms"]["verdict"] == "holds"
    assert verdicts["non-recursive"]["verdict"] == "reversed"
    undecided = verdicts["non-separable"]
    assert undecided["verdict"].startswith("cannot decide")
    # 8 s^2 / d^2, s^2 the mean of the two rows' variances, d the paper's difference
    pooled = (statistics.variance([26.2, 26.9, 26.5]) + statistics.variance([26.5, 26.6, 26.7])) / 2
    assert undecided["seeds_needed"] == math.ceil(8 * pooled / (26.071 - 26.109) ** 2)
    assert abs(undecided["here"] - (26.5333333 - 26.6)) < 1e-6


@pytest.mark.slow
def test_a_study_run_logs_its_group_rows_and_test_scores_to_wandb(tmp_path, synthetic_data_dir):
    """wandb (offline) gets the study-and-scale group, the rows the run stands for and the
    test scores, so that its run table compares the rows of a study."""
    import os
    import subprocess
    import sys

    extra = [*_tiny(synthetic_data_dir, tmp_path), "logger=[csv,wandb]"]
    run = next(
        r for r in runs.plan(["table3_rkr", "atoms_J"], "cpu", tmp_path, extra) if len(r.rows) > 1
    )
    command = runs.train_command(run, 0)
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
    env.pop("WANDB_API_KEY", None)
    proc = subprocess.run(
        [sys.executable, "-m", "nrknet.train", *command[1:]],
        cwd=runs.ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (record,) = (run.folder / "seed0" / "wandb").glob("offline-run-*/run-*.wandb")
    data = record.read_bytes()
    assert b"table3_rkr-cpu" in data  # the group: study and scale
    assert b'"table3_rkr: RKR"' in data and b'"atoms_J: J = 20"' in data
    assert b"test/synthetic/psnr" in data


def test_the_measured_cost_subtracts_pauses_and_counts_a_shared_run_once(tmp_path):
    from experiments import claims

    def run(folder: str, seed: int, seconds: float, status: str = "done") -> dict:
        path = f"/logs/studies/cpu/{folder}/seed{seed}"
        return {"seed": str(seed), "run": path, "seconds": seconds, "status": status}

    shared = [run("nrknet-aaaaaaaaaa", 0, 900.0), run("nrknet-aaaaaaaaaa", 1, 1800.0 + 900.0)]
    tables = {
        "table3_rkr": {
            "rows": [{"runs": shared}, {"runs": [run("gaussian-bbbbbbbbbb", 0, 1800.0)]}]
        },
        "table5_losses": {
            "rows": [{"runs": shared}, {"runs": [run("nrknet-cccccccccc", 0, 5.0, "x")]}]
        },
    }
    pauses = tmp_path / "pauses.json"
    pauses.write_text('{"nrknet-aaaaaaaaaa/seed1": {"seconds": 1800, "when": "a test"}}')
    text = claims.measured_cost(tables, claims.load_pauses(pauses))
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in text.splitlines()}
    assert rows["table3_rkr"][1:4] == ["3", "1.0", "0.5"]  # (900 + 900 + 1800) s
    assert rows["table5_losses"][1:3] == ["2", "0.5"]  # the unfinished run is not priced
    assert rows["all collected, shared runs once"][1:3] == ["3", "1.0"]
    assert claims.load_pauses(tmp_path / "none.json") == {}


def _committed_tables() -> list[Path]:
    return sorted((ROOT / "experiments").glob("*/results/cpu/table.json"))


@pytest.mark.parametrize("path", _committed_tables(), ids=lambda p: p.parts[-4])
def test_a_committed_cpu_table_is_the_mean_of_its_committed_runs(path):
    """Each row's mean and spread are recomputed from the run records in
    ``experiments/scales/cpu_runs``; each run's figures are read from its own ``metrics.json``."""
    table = json.loads(path.read_text())
    dataset = table["datasets"][0]
    assert table["scale"] == "cpu"
    for row in table["rows"]:
        runs = row["runs"]
        assert row["n"] == len(runs) >= 3 and row["status"] == "done", row["label"]
        scores = []
        for run in runs:
            metrics = json.loads((ROOT / run["run"] / "metrics.json").read_text())
            assert run["seed"] == str(metrics["seed"]) and run["steps"] == metrics["global_step"]
            assert run["test"][dataset]["psnr"] == metrics["test"][dataset]["psnr"]
            scores.append(metrics["test"][dataset]["psnr"])
        assert row["test"][dataset]["psnr"] == pytest.approx(statistics.fmean(scores), abs=1e-12)
        assert row["test_std"][dataset]["psnr"] == pytest.approx(
            statistics.stdev(scores), abs=1e-12
        )
    assert any(row["experiment"] == "study_unet" for row in table["rows"])


def test_every_recorded_pause_names_a_committed_run_and_is_shorter_than_its_training(tmp_path):
    from experiments import claims

    pauses = claims.load_pauses()
    assert pauses, "experiments/scales/pauses.json lists the paused runs"
    for run, seconds in pauses.items():
        metrics = ROOT / "experiments" / "scales" / "cpu_runs" / run / "metrics.json"
        assert metrics.is_file(), run
        assert 0 < seconds < json.loads(metrics.read_text())["fit_seconds"], run
    bad = tmp_path / "pauses.json"
    bad.write_text('{"nrknet-e2a48a4a3f/seed0": {"when": "no seconds"}}')
    with pytest.raises(claims.ClaimsError, match="pauses.json: entry 'nrknet-e2a48a4a3f/seed0'"):
        claims.load_pauses(bad)


def test_the_generated_parts_of_the_studies_page_match_the_committed_tables(tmp_path):
    """docs/studies.md's claims and measured cost are what the generator writes today."""
    from experiments import claims

    page = ROOT / "docs" / "studies.md"
    copy = tmp_path / "studies.md"
    copy.write_text(page.read_text())
    assert claims.main(["--scale", "cpu", "--write", str(copy)]) == 0
    assert copy.read_text() == page.read_text()
