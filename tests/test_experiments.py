"""Every experiment config composes and trains one fast_dev_run step on CPU, on tiny data."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import CONFIG_DIR, tiny_overrides
from nrknet.train import train

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))


def test_experiment_list_covers_the_paper_tables():
    expected = {
        "quickstart", "nrknet_dpdd", "nrknet_lfdof",
        "table3_gaussian", "table3_non_recursive", "table3_non_separable", "table3_rkr",
        "table4_full_expansion", "table4_two_scales", "table4_four_scales", "table4_no_convlstm", "table4_original",
        "table5_no_reblur", "table5_no_fdr", "table5_single_scale", "table5_full",
        "atoms_J15", "atoms_J18", "atoms_J20", "atoms_J22", "atoms_J25",
    }  # fmt: skip
    assert expected <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_with_its_own_settings(compose_train, experiment, tmp_path):
    cfg = compose_train(
        [f"experiment={experiment}", f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path}"]
    )
    assert cfg.model._target_ == "nrknet.models.nrknet.NRKNet"
    assert cfg.study and cfg.trainer.max_epochs >= 1
    if experiment.startswith("table") or experiment.startswith("atoms"):
        assert cfg.data._target_.endswith("DPDDDataModule")
        assert cfg.trainer.accelerator == "gpu" and cfg.trainer.max_epochs == 4000


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_runs_one_training_step(compose_train, experiment, tmp_path, synthetic_data_dir):
    overrides = [
        f"experiment={experiment}",
        *tiny_overrides(synthetic_data_dir, tmp_path),
        "+trainer.fast_dev_run=1",
    ]
    cfg = compose_train(overrides)
    train(cfg)
    assert (Path(cfg.paths.output_dir) / "metrics.json").is_file()


def test_mixed_precision_training_step(compose_train, tmp_path, synthetic_data_dir):
    """``trainer.precision=bf16-mixed`` runs the whole model (RKR kept in float32). On a CPU
    Lightning turns 16-mixed into bf16-mixed; float16 autocast is tested in test_speed_paths."""
    overrides = [
        "experiment=quickstart",
        *tiny_overrides(synthetic_data_dir, tmp_path),
        "+trainer.fast_dev_run=1",
        "trainer.precision=bf16-mixed",
    ]
    cfg = compose_train(overrides)
    train(cfg)
    assert (Path(cfg.paths.output_dir) / "metrics.json").is_file()
