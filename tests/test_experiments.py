"""Every experiment config composes and trains one fast_dev_run step on CPU, on tiny data;
every study's multirun, built from its table.yaml, runs exactly the rows its collector reports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from experiments import collect, study
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from conftest import CONFIG_DIR, tiny_overrides
from nrknet.train import train
from nrknet.utils.config import require_numbers

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
STUDIES = study.known_studies()


def test_experiment_list_covers_the_paper_tables():
    expected = {
        "quickstart", "nrknet_dpdd", "nrknet_lfdof",
        "table3_gaussian", "table3_non_recursive", "table3_non_separable", "table3_rkr",
        "table4_full_expansion", "table4_two_scales", "table4_four_scales", "table4_no_convlstm", "table4_original",
        "table5_no_reblur", "table5_no_fdr", "table5_single_scale", "table5_full",
        "atoms_J", "quickstart_gate", "quickstart_no_gate",
        "release_cpu", "release_cpu_unet", "release_cpu_residual", "release_gpu", "release_gpu_unet", "unet_dpdd", "unet_lfdof",
    }  # fmt: skip
    assert expected <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_with_its_own_settings(compose_train, experiment, tmp_path):
    cfg = compose_train(
        [f"experiment={experiment}", f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path}"]
    )
    expected_model = "unet_baseline.UNetBaseline" if "unet" in experiment else "nrknet.NRKNet"
    assert cfg.model._target_ == f"nrknet.models.{expected_model}"
    assert cfg.study and cfg.trainer.max_epochs >= 1
    require_numbers(cfg)  # every numeric setting is a number of the kind it needs
    # nrknet-eval takes the experiment too, for its data and trainer (the checkpoint brings the model)
    scoring = compose_train(
        [f"experiment={experiment}", "ckpt_path=x.ckpt", f"paths.root_dir={tmp_path}"], "eval"
    )
    assert scoring.data == cfg.data and scoring.trainer.accelerator == cfg.trainer.accelerator
    if experiment.startswith("table") or experiment.startswith("atoms"):
        assert cfg.data._target_.endswith("DPDDDataModule")
        assert cfg.trainer.accelerator == "gpu" and cfg.trainer.max_epochs == 4000


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_epochs=abc", "trainer.max_epochs='abc': expected a whole number"),
        ("optimizer.lr=1e-4x", "optimizer.lr='1e-4x': expected a number"),
        ("data.crop_size=31.5", "data.crop_size=31.5: expected a whole number"),
        ("seed=true", "seed=True: expected a whole number"),
    ],
)
def test_a_numeric_setting_given_as_text_is_named(compose_train, tmp_path, override, message):
    cfg = compose_train([override, f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path}"])
    with pytest.raises(ValueError, match=re.escape(message)):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()


@pytest.fixture
def training_steps(monkeypatch) -> list[dict]:
    """What each training step of the run saw: its loss, and the autocast state around it."""
    import torch

    from nrknet.training.module import NRKNetModule

    steps: list[dict] = []
    real_step = NRKNetModule.training_step

    def recording_step(self, batch, batch_idx):
        loss = real_step(self, batch, batch_idx)
        steps.append(
            {
                "loss": None if loss is None else float(loss.detach()),
                "autocast": torch.is_autocast_enabled("cpu"),
                "dtype": torch.get_autocast_dtype("cpu"),
            }
        )
        return loss

    monkeypatch.setattr(NRKNetModule, "training_step", recording_step)
    return steps


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_runs_one_training_step(
    compose_train, experiment, tmp_path, synthetic_data_dir, training_steps
):
    """Mutation this catches: an experiment whose step returns a NaN or skips every batch."""
    import math

    import torch

    overrides = [
        f"experiment={experiment}",
        *tiny_overrides(synthetic_data_dir, tmp_path),
        "+trainer.fast_dev_run=1",
    ]
    cfg = compose_train(overrides)
    train(cfg)
    metrics = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert metrics["global_step"] == 1 and metrics["skipped_nonfinite"] == 0
    assert metrics["machine"]["cpu"] and metrics["machine"]["torch"] == torch.__version__
    assert metrics["test_files_sha256"].keys() == metrics["test"].keys()
    assert len(training_steps) == 1
    assert training_steps[0]["loss"] is not None and math.isfinite(training_steps[0]["loss"])
    # autocast exactly when the experiment asks for mixed precision
    assert training_steps[0]["autocast"] == ("mixed" in str(cfg.trainer.get("precision", "32")))


def test_mixed_precision_training_step(compose_train, tmp_path, synthetic_data_dir, training_steps):
    """``trainer.precision=bf16-mixed`` runs the whole model (RKR kept in float32). On a CPU
    Lightning turns 16-mixed into bf16-mixed; float16 autocast is tested in test_accel.

    Mutation this catches: a precision setting that never reaches the trainer (no autocast).
    """
    import math

    import torch

    overrides = [
        "experiment=quickstart",
        *tiny_overrides(synthetic_data_dir, tmp_path),
        "+trainer.fast_dev_run=1",
        "trainer.precision=bf16-mixed",
    ]
    cfg = compose_train(overrides)
    train(cfg)
    assert (Path(cfg.paths.output_dir) / "metrics.json").is_file()
    assert len(training_steps) == 1
    assert training_steps[0]["autocast"] and training_steps[0]["dtype"] == torch.bfloat16
    assert math.isfinite(training_steps[0]["loss"])


def test_experiments_leave_tags_to_the_composition(compose_train, tmp_path):
    for path in (CONFIG_DIR / "experiment").glob("*.yaml"):
        assert "tags" not in (yaml.safe_load(path.read_text()) or {}), f"{path.name} sets tags"
    paths = [f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path}"]
    cfg = compose_train(["experiment=table5_no_fdr", *paths])
    assert list(cfg.tags) == ["nrknet", "dpdd", "table5_losses", "nrknet", "no_fdr"]
    assert cfg.run_name == "table5_no_fdr"
    # without an experiment every tag is still a string (wandb refuses anything else)
    assert all(isinstance(tag, str) for tag in compose_train(paths).tags)


# ---------------------------------------------------------------- studies: table.yaml -> multirun
def hydra_jobs(overrides: list[str]) -> list[list[str]]:
    """The jobs Hydra's basic sweeper makes of a multirun command line."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


# folders of records that serve every study and so have no table of their own
RECORD_FOLDERS = {"scales"}


def test_every_study_folder_has_a_table():
    folders = {p.name for p in study.HERE.iterdir() if (p / "README.md").is_file()}
    assert folders >= RECORD_FOLDERS, "a record folder was renamed: update RECORD_FOLDERS"
    assert sorted(folders - RECORD_FOLDERS) == STUDIES and "atoms_J" in STUDIES
    assert not any((study.HERE / name / "table.yaml").exists() for name in RECORD_FOLDERS)


@pytest.mark.parametrize("name", STUDIES)
def test_study_sweep_composes_and_collects_one_row_per_job(compose_train, name, tmp_path):
    spec = study.load_study(name)
    jobs = hydra_jobs(study.sweep_overrides(spec, name))
    assert len(jobs) == len(spec["rows"])
    runs = tmp_path / "sweep"
    run_names = set()
    for number, job in enumerate(jobs):
        cfg = compose_train([*job, f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path}"])
        assert cfg.study == name, f"{job}: the experiment belongs to study {cfg.study}"
        run_names.add(cfg.run_name)
        job_dir = runs / str(number)
        (job_dir / ".hydra").mkdir(parents=True)
        (job_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(job))
        (job_dir / "metrics.json").write_text(json.dumps({"best_val_psnr": 20.0 + number}))
    assert len(run_names) == len(jobs), "every job of a study needs a run name of its own"
    table = collect.collect(name, runs)
    assert [row["label"] for row in table["rows"]] == [row["label"] for row in spec["rows"]]
    assert all(row["status"] == "done" for row in table["rows"])
    assert sorted(row["run"] for row in table["rows"]) == sorted(
        str(runs / str(number)) for number in range(len(jobs))
    )


def test_atoms_J_is_one_experiment_swept_over_the_number_of_levels(compose_train, tmp_path):
    spec = study.load_study("atoms_J")
    assert study.sweep_overrides(spec, "atoms_J") == [
        "experiment=atoms_J",
        "model.num_levels=15,18,20,22,25",
    ]
    cfg = compose_train(["experiment=atoms_J", "model.num_levels=18", f"paths.root_dir={tmp_path}"])
    assert cfg.model.num_levels == 18 and cfg.run_name == "atoms_J18"
    # the collector tells the rows apart by the override, whatever else the jobs were given
    for number, levels in enumerate((25, 15)):
        job_dir = tmp_path / str(number)
        (job_dir / ".hydra").mkdir(parents=True)
        overrides = ["experiment=atoms_J", f"model.num_levels={levels}", "trainer=cpu"]
        (job_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    rows = {row["label"]: row for row in collect.collect("atoms_J", tmp_path)["rows"]}
    assert rows["J = 15"]["run"] == str(tmp_path / "1")
    assert rows["J = 25"]["run"] == str(tmp_path / "0")
    assert rows["J = 20"]["status"] == "missing"
    assert rows["J = 15"]["overrides"] == ["model.num_levels=15"]


def test_study_command_prints_the_multirun_overrides(capsys):
    assert study.main(["table3_rkr"]) == 0
    assert capsys.readouterr().out.split() == study.sweep_overrides(
        study.load_study("table3_rkr"), "table3_rkr"
    )
    assert study.main(["no_such_study"]) == 2
    assert "unknown study 'no_such_study'" in capsys.readouterr().err


def _rows(*rows: dict) -> dict:
    spec = {"rows": [{"label": str(i), **row} for i, row in enumerate(rows)]}
    for row in spec["rows"]:
        row["settings"] = study.row_settings(row, "test row")
    return spec


def test_study_rows_must_form_a_full_grid():
    grid = _rows(
        {"experiment": "a", "overrides": ["seed=1"]},
        {"experiment": "b", "overrides": ["seed=1"]},
        {"experiment": "a", "overrides": ["seed=2"]},
        {"experiment": "b", "overrides": ["seed=2"]},
    )
    assert study.sweep_overrides(grid) == ["experiment=a,b", "seed=1,2"]
    with pytest.raises(
        study.StudyError, match=r"not form a full grid .*no row for experiment=b seed=2"
    ):
        study.sweep_overrides(_rows(*[r for r in grid["rows"] if r["label"] != "3"]))
    with pytest.raises(study.StudyError, match="every row must set the same keys"):
        study.sweep_overrides(
            _rows({"experiment": "a"}, {"experiment": "b", "overrides": ["seed=1"]})
        )
    with pytest.raises(study.StudyError, match="same experiment and overrides"):
        study.sweep_overrides(_rows({"experiment": "a"}, {"experiment": "a"}))


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"experiment": "a", "overrides": ["seed=1,2"]}, "must set one value"),
        ({"experiment": "a", "overrides": ["seed=1", "seed=2"]}, "repeats a key"),
        ({"experiment": "a", "overrides": ["experiment=b"]}, "repeats a key or sets experiment"),
        ({"experiment": "a", "overrides": ["run_name='x y'"]}, "contains whitespace"),
        ({"experiment": "a", "overrides": "seed=1"}, "must be a list of strings"),
        ({"experiment": "a", "overrides": ["seed=["]}, "test row"),
        ({"overrides": ["seed=1"]}, "an 'experiment' name"),
    ],
)
def test_bad_study_rows_are_named(row, message):
    with pytest.raises(study.StudyError, match=message):
        study.row_settings({"label": "x", **row}, "test row")


def test_a_row_run_with_several_seeds_reports_each_run_and_their_mean_and_spread(tmp_path):
    """Mutation: keep only the last job of a row (no per-seed runs) -> n, mean and std wrong."""
    import statistics

    scores = {"15": [30.0, 30.5, 31.5], "18": [29.0, 29.5, 29.5]}
    for levels, psnrs in scores.items():
        for seed, psnr in enumerate(psnrs):
            job_dir = tmp_path / f"J{levels}_s{seed}"
            (job_dir / ".hydra").mkdir(parents=True)
            overrides = ["experiment=atoms_J", f"model.num_levels={levels}", f"seed={seed}"]
            (job_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
            metrics = {
                "best_val_psnr": psnr + 1,
                "global_step": 100,
                "fit_seconds": 60.0 + seed,
                "test": {"synthetic": {"psnr": psnr, "ssim": 0.8, "lpips": None}},
            }
            (job_dir / "metrics.json").write_text(json.dumps(metrics))
    table = collect.collect("atoms_J", tmp_path)
    rows = {row["label"]: row for row in table["rows"]}
    for levels, psnrs in scores.items():
        row = rows[f"J = {levels}"]
        assert row["n"] == 3 and row["status"] == "done"
        assert [r["seed"] for r in row["runs"]] == ["0", "1", "2"]
        assert [r["test"]["synthetic"]["psnr"] for r in row["runs"]] == psnrs
        assert row["test"]["synthetic"]["psnr"] == pytest.approx(statistics.mean(psnrs))
        assert row["test_std"]["synthetic"]["psnr"] == pytest.approx(statistics.stdev(psnrs))
        assert row["val_psnr"] == pytest.approx(statistics.mean(psnrs) + 1)
        assert row["runs"][2]["seconds"] == 62.0 and row["runs"][0]["steps"] == 100
    assert rows["J = 20"]["status"] == "missing" and rows["J = 20"]["n"] == 0
    markdown = collect.to_markdown(table)
    assert "30.67 ± 0.76" in markdown and "3 seeds" in markdown
    collect.bar_chart(table, tmp_path / "chart.png")
    assert (tmp_path / "chart.png").stat().st_size > 0


def test_the_later_job_of_a_seed_wins_in_hydra_numbering_and_unset_seeds_come_from_the_config(
    tmp_path,
):
    """Mutations: plain string sort (job 10 before 9); seed None for a job without metrics."""
    for number, psnr in ((9, 28.0), (10, 29.0)):
        job_dir = tmp_path / str(number)
        (job_dir / ".hydra").mkdir(parents=True)
        (job_dir / ".hydra" / "overrides.yaml").write_text(
            yaml.safe_dump(["experiment=atoms_J", "model.num_levels=15"])
        )
        (job_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"seed": 42}))
        metrics = {"best_val_psnr": psnr, "test": {"synthetic": {"psnr": psnr}}}
        (job_dir / "metrics.json").write_text(json.dumps(metrics))
    row = next(r for r in collect.collect("atoms_J", tmp_path)["rows"] if r["label"] == "J = 15")
    assert row["n"] == 1 and row["runs"][0]["seed"] == "42"
    assert row["test"]["synthetic"]["psnr"] == 29.0  # job 10, the later one
