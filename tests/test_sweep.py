"""Hydra multiruns over two ablations, one job after another (logged to CSV and to wandb
offline) and two at once (hydra/launcher=parallel), collected into a table; where concurrent
jobs run; the sweep benchmark's reading of the jobs' folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import open_dict, read_write

from conftest import tiny_overrides
from nrknet.train import place_concurrent_job

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import bench_sweep  # noqa: E402


def _collect_table3(sweep_dir: Path) -> dict:
    collect = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "collect.py"), "--study", "table3_rkr", "--runs", str(sweep_dir)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert collect.returncode == 0, collect.stderr
    return json.loads((sweep_dir / "table.json").read_text())


@pytest.mark.slow
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

    data = _collect_table3(sweep_dir)
    table = (sweep_dir / "table.md").read_text()
    done = {r["experiment"]: r for r in data["rows"] if r["status"] == "done"}
    assert set(done) == {"table3_gaussian", "table3_rkr"}
    for row in done.values():
        assert row["val_psnr"] is not None and row["test"]["synthetic"]["psnr"] is not None
    assert "fixed Gaussian atoms" in table and "RKR" in table and "25.309" in table
    assert (sweep_dir / "chart.png").stat().st_size > 1000


@pytest.mark.slow
def test_two_concurrent_jobs_then_collect(tmp_path, synthetic_data_dir, compose_train):
    overrides = [
        o
        for o in tiny_overrides(synthetic_data_dir, tmp_path)
        if not o.startswith(("paths.output_dir", "data.num_workers"))
    ]
    overrides.append("data.num_workers=1")  # DataLoader workers start inside the launcher's workers
    # render the data set once here rather than in both jobs at the same time
    instantiate(compose_train(tiny_overrides(synthetic_data_dir, tmp_path)).data).prepare_data()
    sweep_dir = tmp_path / "sweep"
    cmd = [
        sys.executable, "-m", "nrknet.train", "-m",
        "experiment=table3_gaussian,table3_rkr",
        *overrides,
        "trainer.max_epochs=1",
        "trainer.check_val_every_n_epoch=1",
        "hydra/launcher=parallel",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={sweep_dir}",
    ]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "offline"}
    env.pop("OMP_NUM_THREADS", None)  # the launcher then shares the cores out itself
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and (p / "metrics.json").is_file())
    assert [job.name for job in jobs] == ["0", "1"]
    # at once: each job started (Hydra wrote its config) before the other one finished
    (start0, end0), (start1, end1) = (
        ((job / ".hydra" / "config.yaml").stat().st_mtime, (job / "metrics.json").stat().st_mtime)
        for job in jobs
    )
    assert start0 < end1 and start1 < end0
    from joblib import cpu_count

    for job in jobs:
        log = (job / "train.log").read_text()
        assert (
            f"concurrent job {job.name}: devices 1, {max(cpu_count() // 2, 1)} torch threads" in log
        )
    done = {r["experiment"] for r in _collect_table3(sweep_dir)["rows"] if r["status"] == "done"}
    assert done == {"table3_gaussian", "table3_rkr"}


PARALLEL = ["hydra/launcher=parallel", "hydra.launcher.n_jobs=8"]


@pytest.mark.parametrize(
    ("settings", "job_num", "devices"),
    [
        ([*PARALLEL, "trainer=gpu"], 5, [1]),
        ([*PARALLEL, "trainer=gpu"], 6, [2]),
        (["trainer=gpu"], 5, 1),  # one job after another: as configured
        ([*PARALLEL, "trainer=cpu"], 5, 1),
        ([*PARALLEL, "trainer=ddp"], 5, -1),  # a job that asks for all GPUs keeps them
    ],
)
def test_concurrent_gpu_jobs_take_the_gpus_in_turn(
    compose_train, tmp_path, monkeypatch, settings, job_num, devices
):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    cfg = compose_train(["experiment=table3_rkr", f"paths.root_dir={tmp_path}", *settings])
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.job.num = job_num
    HydraConfig.instance().set_config(cfg)
    place_concurrent_job(cfg)
    assert cfg.trainer.devices == devices


def test_sweep_benchmark_reads_images_and_times_from_the_job_folders(tmp_path):
    for number, (steps, start, end) in enumerate([(10, 100.0, 110.0), (30, 105.0, 120.0)]):
        job = tmp_path / str(number)
        (job / ".hydra").mkdir(parents=True)
        config, metrics = job / ".hydra" / "config.yaml", job / "metrics.json"
        config.write_text(yaml.safe_dump({"data": {"batch_size": 2}}))
        metrics.write_text(json.dumps({"global_step": steps}))
        os.utime(config, (start, start))
        os.utime(metrics, (end, end))
    figures = bench_sweep.throughput(bench_sweep.read_jobs(tmp_path))
    assert figures["images"] == 80 and figures["span_s"] == pytest.approx(20.0)
    assert figures["images_per_s"] == pytest.approx(4.0)
    assert figures["per_job_images_per_s"] == pytest.approx((20 / 10 + 60 / 15) / 2)
    (tmp_path / "1" / "metrics.json").unlink()
    with pytest.raises(RuntimeError, match="no metrics.json"):
        bench_sweep.read_jobs(tmp_path)
