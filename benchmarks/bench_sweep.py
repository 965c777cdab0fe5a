"""Concurrent sweep jobs: aggregate training throughput of one study with N jobs at once.

Runs the same jobs (a study's rows x seeds, short training on synthetic data, no validation
or test) as one Hydra multirun for each N: ``hydra/launcher=parallel hydra.launcher.n_jobs=N``,
N = 1 being Hydra's sequential launcher. Then reads every job's folder: images trained =
``global_step`` (metrics.json) x ``data.batch_size`` (.hydra/config.yaml); a job runs from the
writing of .hydra/config.yaml to that of metrics.json. Aggregate images/s = all jobs' images /
(last job's end - first job's start).

* ``--size gpu`` (the default where CUDA is present): the full-width model, 256x256 crops,
  batch 4, all jobs on one GPU (``CUDA_VISIBLE_DEVICES`` picks it), N = 1, 2, 4, 8;
* ``--size tiny`` (the default on a CPU): width 4, 32x32 crops, N = 1, 2.

Usage: python benchmarks/bench_sweep.py [--size tiny|gpu] [--jobs 1,2] [--steps 5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

from study import load_study, sweep_overrides  # noqa: E402

SIZES = {
    "tiny": {
        "study": "table3_rkr",
        "seeds": 1,
        "steps": 3,
        "jobs": (1, 2),
        "data": {"num_train": 8, "num_val": 1, "num_test": 1, "size": 64, "max_coc": 4},
        "overrides": [
            "trainer=cpu",
            "model.width=4",
            "data.crop_size=32",
            "data.batch_size=2",
            "data.num_workers=0",
        ],
    },
    "gpu": {
        "study": "table3_rkr",
        "seeds": 2,  # 4 rows x 2 seeds: 8 jobs, so that every N divides them
        "steps": 200,
        "jobs": (1, 2, 4, 8),
        "data": {"num_train": 64, "num_val": 1, "num_test": 1, "size": 256},
        "overrides": [
            "trainer=gpu",
            "data.crop_size=256",
            "data.batch_size=4",
            "data.num_workers=2",
        ],
    },
}

# Training only: no validation, checkpoints, test or progress output inside the measured window.
COMMON = [
    "data=synthetic",
    "data.progress=false",
    "logger=csv",
    "callbacks=none",
    "test=false",
    "metrics.lpips=off",
    "trainer.max_epochs=100000",
    "+trainer.limit_val_batches=0",
    "trainer.enable_progress_bar=false",
    "+trainer.enable_checkpointing=false",
]


def render_data(data_dir: Path, settings: dict) -> None:
    """Render the synthetic set once, before timing, rather than in every job."""
    from nrknet.data.datamodules import SyntheticDataModule

    SyntheticDataModule(root=data_dir / "synthetic", progress=False, **settings).prepare_data()


def read_jobs(sweep_dir: Path) -> list[dict]:
    """Images trained and start / end time of every finished job of a multirun folder."""
    jobs = []
    for config_file in sorted(sweep_dir.glob("*/.hydra/config.yaml")):
        job_dir = config_file.parent.parent
        metrics_file = job_dir / "metrics.json"
        if not metrics_file.is_file():
            raise RuntimeError(f"{job_dir}: no metrics.json; the job did not finish")
        config = yaml.safe_load(config_file.read_text())
        steps = json.loads(metrics_file.read_text())["global_step"]
        jobs.append(
            {
                "job": job_dir.name,
                "images": steps * config["data"]["batch_size"],
                "start": config_file.stat().st_mtime,
                "end": metrics_file.stat().st_mtime,
            }
        )
    if not jobs:
        raise RuntimeError(f"no job folders (*/.hydra/config.yaml) under {sweep_dir}")
    return jobs


def throughput(jobs: list[dict]) -> dict:
    span = max(j["end"] for j in jobs) - min(j["start"] for j in jobs)
    images = sum(j["images"] for j in jobs)
    per_job = [j["images"] / (j["end"] - j["start"]) for j in jobs]
    return {
        "jobs": len(jobs),
        "images": images,
        "span_s": span,
        "images_per_s": images / span,
        "per_job_images_per_s": sum(per_job) / len(per_job),
    }


def sweep(workdir: Path, size: dict, concurrent: int, steps: int) -> dict:
    """Run the study's jobs ``concurrent`` at a time; returns the throughput figures."""
    sweep_dir = workdir / f"jobs_{concurrent}"
    seeds = ",".join(str(s) for s in range(size["seeds"]))
    launcher = (
        []
        if concurrent == 1
        else ["hydra/launcher=parallel", f"hydra.launcher.n_jobs={concurrent}"]
    )
    cmd = [
        sys.executable, "-m", "nrknet.train", "-m",
        *sweep_overrides(load_study(size["study"]), size["study"]),
        f"seed={seeds}",
        f"paths.root_dir={workdir}",
        f"paths.data_dir={workdir / 'data'}",
        *(f"data.{k}={v}" for k, v in size["data"].items()),
        *size["overrides"],
        *COMMON,
        f"trainer.max_steps={steps}",
        *launcher,
        f"hydra.sweep.dir={sweep_dir}",
    ]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(
            f"the sweep with {concurrent} jobs at once failed:\n{proc.stderr[-3000:]}"
        )
    return {"concurrent": concurrent, "wall_s": wall, **throughput(read_jobs(sweep_dir))}


def run(
    quick: bool = False,
    size_name: str | None = None,
    jobs: tuple[int, ...] | None = None,
    steps: int | None = None,
) -> dict:
    import torch

    size_name = size_name or ("gpu" if torch.cuda.is_available() else "tiny")
    size = SIZES[size_name]
    steps = steps or (max(size["steps"] // 4, 1) if quick else size["steps"])
    device = torch.cuda.get_device_name(0) if size_name == "gpu" else "cpu"
    with tempfile.TemporaryDirectory(prefix="bench_sweep_") as tmp:
        workdir = Path(tmp)
        render_data(workdir / "data", size["data"])
        results = [sweep(workdir, size, n, steps) for n in jobs or size["jobs"]]
    return {
        "size": size_name,
        "device": device,
        "study": size["study"],
        "seeds": size["seeds"],
        "steps_per_job": steps,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "results": results,
    }


def rows(result: dict) -> list[tuple[str, str]]:
    out = [
        (
            "study, device",
            f"{result['study']} x {result['seeds']} seed(s), {result['size']} size, "
            f"{result['steps_per_job']} steps per job, {result['device']}",
        )
    ]
    for r in result["results"]:
        out.append(
            (
                f"{r['concurrent']} job(s) at once ({r['jobs']} jobs)",
                f"{r['images_per_s']:.1f} img/s aggregate, {r['per_job_images_per_s']:.1f} "
                f"img/s per job, {r['span_s']:.1f} s (sweep {r['wall_s']:.1f} s)",
            )
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default=None)
    parser.add_argument("--jobs", default=None, help="comma-separated N, e.g. 1,2,4,8")
    parser.add_argument("--steps", type=int, default=None, help="training steps per job")
    parser.add_argument("--quick", action="store_true", help="a quarter of the steps")
    args = parser.parse_args(argv)
    try:
        jobs = tuple(int(n) for n in args.jobs.split(",")) if args.jobs else None
    except ValueError:
        parser.error(f"--jobs: expected comma-separated integers, got {args.jobs!r}")
    if jobs and min(jobs) < 1:
        parser.error(f"--jobs: every N must be at least 1, got {args.jobs!r}")
    result = run(quick=args.quick, size_name=args.size, jobs=jobs, steps=args.steps)
    for key, value in rows(result):
        print(f"{key}: {value}")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
