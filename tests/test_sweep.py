"""Hydra multiruns over two ablations, one job after another (logged to CSV and to wandb
offline) and two at once (hydra/launcher=parallel), collected into a table; where concurrent
jobs run; the sweep benchmark's reading of the jobs' folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from benchmarks import bench_sweep, sweep_timing
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import open_dict, read_write

from conftest import tiny_overrides
from nrknet.train import place_concurrent_job, refuse_ddp_in_a_local_multirun

ROOT = Path(__file__).resolve().parents[1]


def _collect_table3(sweep_dir: Path) -> dict:
    collect = subprocess.run(
        [sys.executable, "-m", "experiments.collect", "--study", "table3_rkr", "--runs", str(sweep_dir)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
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
        # the run's row is logged with its settings, for the loggers' run tables
        hparams = yaml.safe_load((job / "csv" / "hparams.yaml").read_text())
        assert any(o.startswith("experiment=table3_") for o in hparams["overrides"])
        assert hparams["study"] == "table3_rkr" and "model" in hparams
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
    rows = _collect_table3(sweep_dir)["rows"]
    assert {r["experiment"] for r in rows if r["status"] == "done"} == {
        "table3_gaussian",
        "table3_rkr",
    }
    # the same study started again in its folder, rows in another order and without
    # auto_resume, is refused; the finished runs and the table stay as they were
    swapped = [
        o if not o.startswith("experiment=") else "experiment=table3_rkr,table3_gaussian"
        for o in cmd
    ]
    proc = subprocess.run(
        swapped, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "already holds the checkpoints" in proc.stderr, proc.stderr[-4000:]
    assert _collect_table3(sweep_dir)["rows"] == rows


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


@pytest.mark.parametrize(
    ("settings", "refused"),
    [
        (["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"], True),
        (["trainer=ddp"], True),  # all of the 4 GPUs
        (["trainer=ddp", "trainer.devices=1"], False),
        (
            ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "hydra/launcher=slurm"],
            False,
        ),
        (["trainer=gpu"], False),
    ],
)
def test_ddp_in_a_local_multirun_is_refused(
    compose_train, tmp_path, monkeypatch, settings, refused
):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    cfg = compose_train(["experiment=table3_rkr", f"paths.root_dir={tmp_path}", *settings])
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.mode = RunMode.MULTIRUN
    HydraConfig.instance().set_config(cfg)
    if refused:
        with pytest.raises(ValueError, match="runs the whole sweep again"):
            refuse_ddp_in_a_local_multirun(cfg)
    else:
        refuse_ddp_in_a_local_multirun(cfg)


def _timed_job(job: Path, batch: int, start: float, ends: list[float]) -> None:
    (job / ".hydra").mkdir(parents=True)
    config, metrics = job / ".hydra" / "config.yaml", job / "metrics.json"
    config.write_text(yaml.safe_dump({"data": {"batch_size": batch}}))
    metrics.write_text(json.dumps({"global_step": 2 + len(ends)}))
    record = {"start": start, "ends": ends, "waited_s": 0.5, "timed_out": False}
    (job / sweep_timing.RECORD).write_text(json.dumps(record))
    os.utime(config, (start - 10, start - 10))
    os.utime(metrics, (ends[-1] + 1, ends[-1] + 1))


def test_sweep_benchmark_counts_only_the_window_in_which_all_jobs_trained(tmp_path):
    # job 0: batch 2, steps end at 101..110; job 1: batch 4, starts later, ends at 106..108
    _timed_job(tmp_path / "0", 2, 100.0, [100.0 + i for i in range(1, 11)])
    _timed_job(tmp_path / "1", 4, 105.0, [106.0, 107.0, 108.0])
    figures = bench_sweep.throughput(bench_sweep.read_jobs(tmp_path))
    # window 105..108: job 0 ends steps at 106, 107, 108; job 1 at 106, 107, 108
    assert figures["window_s"] == pytest.approx(3.0)
    assert figures["images_in_window"] == 3 * 2 + 3 * 4
    assert figures["images_per_s"] == pytest.approx(18 / 3)
    assert figures["per_job_images_per_s"] == pytest.approx((20 / 10 + 12 / 3) / 2)
    assert figures["span_s"] == pytest.approx(111.0 - 90.0)
    assert figures["images_per_s_whole_span"] == pytest.approx((12 * 2 + 5 * 4) / 21.0)
    assert not figures["barrier_timed_out"]


def test_sweep_benchmark_refuses_jobs_that_never_overlapped(tmp_path):
    _timed_job(tmp_path / "0", 2, 100.0, [101.0, 102.0])
    _timed_job(tmp_path / "1", 2, 103.0, [104.0, 105.0])
    with pytest.raises(RuntimeError, match="never trained at the same time"):
        bench_sweep.throughput(bench_sweep.read_jobs(tmp_path))
    (tmp_path / "1" / sweep_timing.RECORD).unlink()
    with pytest.raises(RuntimeError, match="no step_times.json"):
        bench_sweep.read_jobs(tmp_path)


def test_barrier_holds_every_job_until_all_arrive(tmp_path):
    """Two timers (threads standing in for two jobs): the first waits for the second."""

    class Trainer:
        global_step = 3

    class Module:
        device = torch.device("cpu")

    timers = [
        sweep_timing.SteadyStateTimer(tmp_path / str(i), tmp_path / "barrier", 2, warmup_steps=3)
        for i in range(2)
    ]
    first = threading.Thread(
        target=timers[0].on_train_batch_end, args=(Trainer, Module, None, None, 0)
    )
    first.start()
    time.sleep(0.3)
    assert first.is_alive(), "the first job must wait at the barrier for the second"
    timers[1].on_train_batch_end(Trainer, Module, None, None, 0)
    first.join(timeout=5)
    assert not first.is_alive()
    assert timers[0].waited_s >= 0.3 and timers[1].waited_s < 0.3
    assert abs(timers[0].start - timers[1].start) < 0.2
    lonely = sweep_timing.SteadyStateTimer(tmp_path / "x", tmp_path / "alone", 2, 3, timeout_s=0.1)
    lonely.on_train_batch_end(Trainer, Module, None, None, 0)
    assert lonely.timed_out and lonely.start is not None


def test_sweep_benchmark_runs_two_tiny_jobs_at_once(one_thread):
    result = bench_sweep.run(size_name="tiny", jobs=(2,), steps=3)
    (two,) = result["results"]
    assert two["concurrent"] == 2 and two["jobs"] == 2 and not two["barrier_timed_out"]
    assert two["images_in_window"] > 0 and two["images_per_s"] > 0
