"""Run the rows of one or more studies at a scale, each distinct run once, and resume the rest.

    python -m experiments.runs table3_rkr table4_pipeline --scale cpu --seeds 0,1,2 --jobs 2
    python -m experiments.runs table3_rkr --scale cpu --seeds 0 --dry-run   # list the runs

Each row (and the study's ``baseline``) is composed as
``experiment=<row> <row overrides> scale=<scale>`` plus any extra overrides after ``--``.
What the composed config trains, less its names (study, run name, group, tags, paths,
loggers), is the run's key: rows of different studies that train the same thing (the full
model is the reference of Tables 3, 4 and 5 and the J study's J = 20; the U-Net baseline of
all four) share one run. A run lives in ``<root>/<model>-<key>/seed<seed>/`` (the default
root is ``logs/studies/<scale>``), where ``collect.py --scale`` finds it again.

A run whose ``metrics.json`` holds test scores is done and skipped; any other resumes from
its ``last.ckpt`` (``auto_resume=true``), so the same command continues a study after a kill
or in a later session. ``--jobs`` runs that many at once, each on its share of the cores
(``OMP_NUM_THREADS``); a lock file keeps two runners off one run.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from experiments.study import StudyError, known_studies, load_study

ROOT = Path(__file__).resolve().parents[1]

#: Settings that name a run or say where it writes, not what it trains: left out of the key.
NAME_KEYS = (
    "study", "study_rows", "run_name", "run_group", "tags", "task_name", "paths", "hydra",
    "logger", "seed", "auto_resume", "ckpt_path",
)  # fmt: skip


@dataclass
class Run:
    """One distinct run of a plan: what it trains (``overrides``), where, and which rows use it."""

    key: str
    folder: Path
    overrides: list[str]
    rows: list[tuple[str, str]] = field(default_factory=list)  # (study, row label)

    @property
    def study(self) -> str:
        return self.rows[0][0]


def study_rows(spec: dict) -> list[dict]:
    """The study's rows, then its ``baseline`` row (the U-Net) where it names one."""
    return [*spec["rows"], *([spec["baseline"]] if spec.get("baseline") else [])]


def row_overrides(row: dict, scale: str | None, extra: list[str] = ()) -> list[str]:
    """The command-line overrides of a row at a scale (``None``: the experiment's own settings)."""
    return [
        f"experiment={row['experiment']}",
        *(row.get("overrides") or []),
        *([f"scale={scale}"] if scale else []),
        *extra,
    ]


def compose_run(overrides: list[str]) -> tuple[dict, str]:
    """What a run trains, resolved (its names left out, see ``NAME_KEYS``; the ``paths``
    placeholders kept, so that the key is the same in every checkout), and its model's
    config name."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    from nrknet.utils.config import CONFIG_DIR

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
            cfg = compose("train", overrides=overrides, return_hydra_config=True)
    except HydraException as exc:
        raise StudyError(f"{' '.join(overrides)}: {exc}") from None
    finally:
        GlobalHydra.instance().clear()
    model = str(cfg.hydra.runtime.choices.get("model"))
    config = OmegaConf.to_container(cfg, resolve=False)
    config["paths"] = {key: f"<paths.{key}>" for key in config["paths"]}
    kept = {key: value for key, value in config.items() if key not in NAME_KEYS or key == "paths"}
    return OmegaConf.to_container(OmegaConf.create(kept), resolve=True), model


def run_key(config: dict) -> str:
    """A short hash of what a run trains (``compose_run``'s config)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]


def default_root(scale: str | None) -> Path:
    return ROOT / "logs" / "studies" / (scale or "paper")


def plan(
    studies: list[str], scale: str | None, root: Path | None = None, extra: list[str] = ()
) -> list[Run]:
    """The distinct runs of the studies' rows, in study and row order (seeds not included)."""
    root = root or default_root(scale)
    runs: dict[str, Run] = {}
    for study in studies:
        for row in study_rows(load_study(study)):
            overrides = row_overrides(row, scale, list(extra))
            config, model = compose_run(overrides)
            key = run_key(config)
            run = runs.setdefault(key, Run(key, root / f"{model}-{key}", overrides))
            run.rows.append((study, row["label"]))
    return list(runs.values())


def is_done(seed_dir: Path) -> bool:
    metrics = seed_dir / "metrics.json"
    return metrics.is_file() and bool(json.loads(metrics.read_text()).get("test"))


@contextmanager
def locked(seed_dir: Path) -> Iterator[bool]:
    """Hold ``seed_dir/.lock`` while inside; yields False when another runner holds it."""
    seed_dir.mkdir(parents=True, exist_ok=True)
    with open(seed_dir / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def train_command(run: Run, seed: int) -> list[str]:
    """The nrknet-train command of one run and seed (what ``command.txt`` records)."""
    return [
        "nrknet-train",
        *run.overrides,
        f"study={run.study}",
        "study_rows=["
        + ",".join(json.dumps(f"{study}: {label}") for study, label in run.rows)
        + "]",
        f"seed={seed}",
        f"hydra.run.dir={_shown(run.folder / f'seed{seed}')}",
        "auto_resume=true",
    ]


def _shown(path: Path) -> Path:
    """``path`` relative to the repository when inside it (commands run from there)."""
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def execute(run: Run, seed: int, threads: int) -> str:
    """Train one run and seed unless it is done or running elsewhere; returns what happened."""
    seed_dir = run.folder / f"seed{seed}"
    with locked(seed_dir) as mine:
        if not mine:
            return "running elsewhere"
        if is_done(seed_dir):
            return "done before"
        command = train_command(run, seed)
        (seed_dir / "command.txt").write_text(shlex.join(command) + "\n")
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        argv = [sys.executable, "-m", "nrknet.train", *command[1:]]
        with open(seed_dir / "stdout.log", "a") as log:
            status = subprocess.run(argv, cwd=ROOT, env=env, stdout=log, stderr=log).returncode
        if status != 0:
            return f"failed (exit status {status}; see {seed_dir / 'stdout.log'})"
        return "trained"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("studies", nargs="+", help=f"studies, of: {', '.join(known_studies())}")
    parser.add_argument(
        "--scale", default=None, help="a conf/scale/ name (cpu); none: paper settings"
    )
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated (default 0,1,2)")
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs at once (each gets cores/jobs threads)"
    )
    parser.add_argument("--root", type=Path, default=None, help="default: logs/studies/<scale>")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and their state")
    parser.epilog = "Overrides for every run follow --, e.g. -- logger=many"
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    args.extra = extra
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds={args.seeds!r}: expected whole numbers separated by commas")
    if args.jobs < 1:
        parser.error(f"--jobs={args.jobs}: expected at least 1")
    if args.scale and not (ROOT / "conf" / "scale" / f"{args.scale}.yaml").is_file():
        parser.error(f"--scale={args.scale}: no conf/scale/{args.scale}.yaml")
    try:
        runs = plan(args.studies, args.scale, args.root, args.extra)
    except StudyError as exc:
        print(f"runs: error: {exc}", file=sys.stderr)
        return 2
    # study by study, each run's seeds in turn: the first study's table is complete first
    todo = [(run, seed) for run in runs for seed in seeds]
    for run in runs:
        rows = "; ".join(f"{study}: {label}" for study, label in run.rows)
        state = ", ".join(
            f"seed {s} {'done' if is_done(run.folder / f'seed{s}') else 'to run'}" for s in seeds
        )
        print(f"{run.folder.name}  [{rows}]  {state}")
    print(f"{len(runs)} distinct runs x {len(seeds)} seeds = {len(todo)}")
    if args.dry_run:
        return 0
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    failed = 0

    def one(item: tuple[Run, int]) -> None:
        nonlocal failed
        run, seed = item
        started = time.monotonic()
        outcome = execute(run, seed, threads)
        failed += outcome.startswith("failed")
        minutes = (time.monotonic() - started) / 60
        print(f"{run.folder.name} seed {seed}: {outcome} ({minutes:.1f} min)", flush=True)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(one, todo))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
