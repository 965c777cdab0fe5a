"""A Hydra multirun over two ablations, logged to CSV and to wandb (offline), collected into a table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_overrides

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def test_multirun_two_ablations_csv_and_wandb_offline_then_collect(tmp_path, synthetic_data_dir):
    sweep_dir = tmp_path / "sweep"
    overrides = [
        o
        for o in tiny_overrides(synthetic_data_dir, tmp_path)
        if not o.startswith(("paths.output_dir", "logger="))
    ]
    cmd = [
        sys.executable, "-m", "nrknet.train", "-m",
        "experiment=table3_gaussian,table3_rkr",
        *overrides,
        "logger=[csv,wandb]",
        "trainer.max_epochs=1",
        "trainer.check_val_every_n_epoch=1",
        f"hydra.sweep.dir={sweep_dir}",
    ]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
    env.pop("WANDB_API_KEY", None)
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and (p / "metrics.json").is_file())
    assert len(jobs) == 2
    run_ids = set()
    for job in jobs:
        assert (job / "csv" / "metrics.csv").is_file()
        runs = list((job / "wandb").glob("offline-run-*"))
        assert len(runs) == 1, f"{job}: expected one wandb run, found {runs}"
        run_ids.add(runs[0].name.rsplit("-", 1)[-1])
    assert len(run_ids) == 2, "each job must be its own wandb run"

    collect = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "collect.py"), "--study", "table3_rkr", "--runs", str(sweep_dir)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert collect.returncode == 0, collect.stderr
    table = (sweep_dir / "table.md").read_text()
    data = json.loads((sweep_dir / "table.json").read_text())
    done = {r["experiment"]: r for r in data["rows"] if r["status"] == "done"}
    assert set(done) == {"table3_gaussian", "table3_rkr"}
    for row in done.values():
        assert row["val_psnr"] is not None and row["test"]["synthetic"]["psnr"] is not None
    assert "fixed Gaussian atoms" in table and "RKR" in table and "25.309" in table
    assert (sweep_dir / "chart.png").stat().st_size > 1000
