"""Concurrent sweep jobs: aggregate training throughput of one GPU with N jobs at once.

For each N, N jobs of one experiment (seeds 0..N-1, so that every job does the same work) run
as one Hydra multirun: ``hydra/launcher=parallel hydra.launcher.n_jobs=N``, N = 1 being
Hydra's sequential launcher. Each job loads :class:`benchmarks.sweep_timing.SteadyStateTimer`:
after a warm-up (start-up, compilation) the jobs of a wave wait for one another, then time
their steps. The aggregate images/s is that of the window in which all N trained at once
(:func:`benchmarks.sweep_timing.steady_throughput`); a long sweep pays start-up and
compilation once per job, so they are reported apart (``span_s``: first job's start to last
job's end, from its files).

* ``--size gpu`` (the default where CUDA is present): ``table3_rkr`` (the full model),
  256x256 crops, batch 4, ``bf16-mixed``, compiled regions (``trainer=gpu``'s default), all
  jobs on one GPU (``CUDA_VISIBLE_DEVICES`` picks it), N = 1, 2, 4, 8;
* ``--size tiny`` (the default on a CPU): width 4, 32x32 crops, N = 1, 2.

Usage: python -m benchmarks.bench_sweep [--size tiny|gpu] [--jobs 1,2] [--steps 5]
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

from benchmarks.sweep_timing import RECORD, steady_throughput

ROOT = Path(__file__).resolve().parents[1]

SIZES = {
    "tiny": {
        "experiment": "table3_rkr",
        "warmup_steps": 2,
        "steps": 4,
        "barrier_timeout_s": 120,
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
        "experiment": "table3_rkr",
        "warmup_steps": 5,
        "steps": 100,
        # the spread of the jobs' warm-ups (compiles); a job that failed is not waited for longer
        "barrier_timeout_s": 120,
        "jobs": (1, 2, 4, 8),
        "data": {"num_train": 64, "num_val": 1, "num_test": 1, "size": 256},
        "overrides": [
            "trainer=gpu",
            "trainer.precision=bf16-mixed",
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
TIMER = "+callbacks.steady_state_timer"


def render_data(data_dir: Path, settings: dict) -> None:
    """Render the synthetic set once, before timing, rather than in every job."""
    from nrknet.data.datamodules import SyntheticDataModule

    SyntheticDataModule(root=data_dir / "synthetic", progress=False, **settings).prepare_data()


def read_jobs(sweep_dir: Path) -> list[dict]:
    """Every finished job of a multirun folder: batch size, start and end (from its files) and
    its step times (``step_times.json``)."""
    jobs = []
    for config_file in sorted(sweep_dir.glob("*/.hydra/config.yaml")):
        job_dir = config_file.parent.parent
        metrics_file, record_file = job_dir / "metrics.json", job_dir / RECORD
        for needed in (metrics_file, record_file):
            if not needed.is_file():
                raise RuntimeError(f"{job_dir}: no {needed.name}; the job did not finish")
        config = yaml.safe_load(config_file.read_text())
        jobs.append(
            {
                "job": job_dir.name,
                "batch_size": config["data"]["batch_size"],
                "steps": json.loads(metrics_file.read_text())["global_step"],
                "first_written": config_file.stat().st_mtime,
                "last_written": metrics_file.stat().st_mtime,
                **json.loads(record_file.read_text()),
            }
        )
    if not jobs:
        raise RuntimeError(f"no job folders (*/.hydra/config.yaml) under {sweep_dir}")
    return jobs


def throughput(jobs: list[dict]) -> dict:
    """The steady-state figures, and the whole span (start-up and compilation included)."""
    span = max(j["last_written"] for j in jobs) - min(j["first_written"] for j in jobs)
    return {
        "jobs": len(jobs),
        **steady_throughput(jobs),
        "span_s": span,
        "images_per_s_whole_span": sum(j["steps"] * j["batch_size"] for j in jobs) / span,
        "longest_wait_at_barrier_s": max(j["waited_s"] for j in jobs),
    }


def sweep(workdir: Path, size: dict, concurrent: int, steps: int) -> dict:
    """Run ``concurrent`` identical jobs (seeds differ) at once; returns the throughput figures."""
    sweep_dir = workdir / f"jobs_{concurrent}"
    launcher = (
        []
        if concurrent == 1
        else ["hydra/launcher=parallel", f"hydra.launcher.n_jobs={concurrent}"]
    )
    cmd = [
        sys.executable, "-m", "nrknet.train", "-m",
        f"experiment={size['experiment']}",
        f"seed={','.join(str(s) for s in range(concurrent))}",
        f"paths.root_dir={workdir}",
        f"paths.data_dir={workdir / 'data'}",
        *(f"data.{k}={v}" for k, v in size["data"].items()),
        *size["overrides"],
        *COMMON,
        f"trainer.max_steps={size['warmup_steps'] + steps}",
        f"{TIMER}._target_=benchmarks.sweep_timing.SteadyStateTimer",
        f"{TIMER}.out_dir=${{paths.output_dir}}",
        f"{TIMER}.barrier_dir={workdir / f'barrier_{concurrent}'}",
        f"{TIMER}.parties={concurrent}",
        f"{TIMER}.warmup_steps={size['warmup_steps']}",
        f"{TIMER}.timeout_s={size['barrier_timeout_s']}",
        *launcher,
        f"hydra.sweep.dir={sweep_dir}",
    ]  # fmt: skip
    env = {
        # each job's compiler would start a worker per core: share the cores among the jobs
        "TORCHINDUCTOR_COMPILE_THREADS": str(max(1, (os.cpu_count() or 1) // concurrent)),
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, check=False)
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
    partial: Path | None = None,
) -> dict:
    """Every N of ``jobs`` in turn; ``partial``: a file that gets the results so far after
    each N (a timeout then keeps them)."""
    import torch

    size_name = size_name or ("gpu" if torch.cuda.is_available() else "tiny")
    size = SIZES[size_name]
    steps = steps or (max(size["steps"] // 4, 1) if quick else size["steps"])
    device = torch.cuda.get_device_name(0) if size_name == "gpu" else "cpu"
    result = {
        "size": size_name,
        "device": device,
        "experiment": size["experiment"],
        "warmup_steps": size["warmup_steps"],
        "timed_steps_per_job": steps,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "results": [],
    }
    with tempfile.TemporaryDirectory(prefix="bench_sweep_") as tmp:
        workdir = Path(tmp)
        render_data(workdir / "data", size["data"])
        for n in jobs or size["jobs"]:
            result["results"].append(sweep(workdir, size, n, steps))
            if partial is not None:
                from benchmarks.common import machine

                partial.write_text(json.dumps({"machine": machine(), **result}, indent=2))
    return result


def rows(result: dict) -> list[tuple[str, str]]:
    out = [
        (
            "experiment, device",
            f"{result['experiment']}, {result['size']} size, {result['warmup_steps']} warm-up + "
            f"{result['timed_steps_per_job']} timed steps per job, {result['device']}",
        )
    ]
    for r in result["results"]:
        out.append(
            (
                f"{r['concurrent']} job(s) at once",
                f"{r['images_per_s']:.1f} img/s aggregate, {r['per_job_images_per_s']:.1f} "
                f"img/s per job (over {r['window_s']:.1f} s; whole span {r['span_s']:.1f} s, "
                f"{r['images_per_s_whole_span']:.1f} img/s with start-up)",
            )
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default=None)
    parser.add_argument("--jobs", default=None, help="comma-separated N, e.g. 1,2,4,8")
    parser.add_argument("--steps", type=int, default=None, help="training steps per job")
    parser.add_argument("--quick", action="store_true", help="a quarter of the steps")
    parser.add_argument("--partial", type=Path, help="save the results so far here after each N")
    args = parser.parse_args(argv)
    try:
        jobs = tuple(int(n) for n in args.jobs.split(",")) if args.jobs else None
    except ValueError:
        parser.error(f"--jobs: expected comma-separated integers, got {args.jobs!r}")
    if jobs and min(jobs) < 1:
        parser.error(f"--jobs: every N must be at least 1, got {args.jobs!r}")
    if args.size == "gpu":
        import torch

        if not torch.cuda.is_available():
            parser.error("--size gpu: torch sees no CUDA device here; use --size tiny")
    result = run(args.quick, args.size, jobs, args.steps, args.partial)
    for key, value in rows(result):
        print(f"{key}: {value}")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
