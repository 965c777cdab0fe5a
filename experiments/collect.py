"""Collect the runs of a study (a Hydra multirun folder) into the paper's table and a bar chart.

    python -m experiments.collect --study table3_rkr --runs logs/train/multiruns/<date_time>

Reads every job's ``metrics.json`` (written by nrknet-train: the scores, and the
overrides that say which row it ran, see ``study.py``; ``.hydra/overrides.yaml``
for runs without them), and writes ``table.md``,
``table.json`` and ``chart.png`` into ``--out`` (default: the multirun folder).
Rows and the paper's figures come from ``experiments/<study>/table.yaml``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

import yaml

from experiments.runs import compose_run, default_root, row_overrides, run_key, study_rows
from experiments.study import StudyError, job_settings, load_study, row_matches


class CollectError(ValueError):
    pass


def find_jobs(runs: Path) -> list[dict]:
    """Every job folder under ``runs`` with its experiment name, overrides and metrics."""
    if not runs.is_dir():
        raise CollectError(f"runs folder not found: {runs}")
    jobs = []
    for overrides_file in sorted(runs.rglob(".hydra/overrides.yaml"), key=_natural):
        job_dir = overrides_file.parent.parent
        metrics_file = job_dir / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
        # the finished run's own record first: a later start in the folder (refused, say)
        # rewrites .hydra/ before it stops
        overrides = (metrics or {}).get("overrides")
        if overrides is None:
            overrides = yaml.safe_load(overrides_file.read_text()) or []
        experiment = next(
            (o.split("=", 1)[1] for o in overrides if o.startswith("experiment=")), None
        )
        jobs.append(
            {
                "dir": job_dir,
                "experiment": experiment,
                "overrides": overrides,
                "settings": job_settings(overrides),
                "metrics": metrics,
            }
        )
    if not jobs:
        raise CollectError(f"no Hydra job folders (.hydra/overrides.yaml) under {runs}")
    return jobs


def _metric(metrics: dict | None, dataset: str | None, key: str = "psnr") -> float | None:
    if not metrics:
        return None
    if dataset is None:  # validation: of the checkpoint that was tested
        tested_last = metrics.get("tested_checkpoint") not in (None, metrics.get("best_checkpoint"))
        return metrics.get("last_val_psnr" if tested_last else "best_val_psnr")
    value = (metrics.get("test") or {}).get(dataset, {}).get(key)
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def collect(study: str, runs: Path) -> dict:
    """The study's table from a multirun folder: each row with its runs (one per seed) and
    their mean and spread; see :func:`table`."""
    spec = load_study(study)
    jobs = find_jobs(runs)
    rows = [
        (row, {_seed(j): j for j in jobs if row_matches(row, j["settings"])})
        for row in study_rows(spec)
    ]
    if spec.get("baseline") and not rows[-1][1]:  # a multirun runs the paper's rows only
        rows.pop()
    return table(study, spec, rows)


def collect_scale(study: str, scale: str, root: Path | None = None, extra: list[str] = ()) -> dict:
    """The study's table at a scale, from the keyed run folders of ``experiments/runs.py``
    (a run shared with other studies is read where it was run once); ``extra``: the
    overrides the runs were given after ``--``."""
    spec = load_study(study)
    root = root or default_root(scale)
    rows = []
    for row in study_rows(spec):
        folder = run_folder(row, scale, root, extra)
        jobs = find_jobs(folder) if folder.is_dir() else []
        rows.append((row, {_seed(j): j for j in jobs}))
    if not any(by_seed for _, by_seed in rows):
        raise CollectError(f"no runs of {study} at scale={scale} under {root}")
    return table(study, spec, rows)


def run_folder(row: dict, scale: str, root: Path, extra: list[str] = ()) -> Path:
    config, model = compose_run(row_overrides(row, scale, list(extra)))
    return root / f"{model}-{run_key(config)}"


def table(study: str, spec: dict, rows_jobs: list[tuple[dict, dict[str | None, dict]]]) -> dict:
    """Each row with its runs (one per seed) and their mean and spread.

    A row's ``test`` and ``val_psnr`` are the means over its finished runs,
    ``test_std`` and ``val_psnr_std`` the sample standard deviations (``None``
    for a single run), ``n`` the number of finished runs; ``runs`` lists each
    seed's own figures. A seed run twice counts once (the later). ``input`` is the blurry
    input's test PSNR and SSIM, the mean over the runs (whose ``metrics.json`` records the
    sha256 of the test files each scored).
    """
    jobs = [job for _, by_seed in rows_jobs for job in by_seed.values()]
    tested = sorted({d for j in jobs if j["metrics"] for d in (j["metrics"].get("test") or {})})
    datasets = [d for d in spec.get("datasets") or [] if d in tested]
    if not datasets:  # e.g. a smoke run of the study on synthetic data: report what was tested
        datasets = tested
    rows = []
    for row, by_seed in rows_jobs:
        seed_runs = [
            _run(seed, job, datasets) for seed, job in sorted(by_seed.items(), key=_by_seed)
        ]
        done = [r for r in seed_runs if r["status"] == "done"]
        latest = list(by_seed.values())[-1] if by_seed else None
        rows.append(
            {
                "label": row["label"],
                "experiment": row["experiment"],
                "overrides": row.get("overrides") or [],
                "paper_psnr": row.get("paper"),
                "n": len(done),
                "val_psnr": _mean([r["val_psnr"] for r in done]),
                "val_psnr_std": _std([r["val_psnr"] for r in done]),
                "test": {
                    d: {k: _mean([r["test"][d][k] for r in done]) for k in METRICS}
                    for d in datasets
                },
                "test_std": {
                    d: {k: _std([r["test"][d][k] for r in done]) for k in METRICS} for d in datasets
                },
                "runs": seed_runs,
                "run": str(latest["dir"]) if latest else None,
                "status": "missing"
                if not seed_runs
                else ("done" if len(done) == len(seed_runs) else "incomplete"),
            }
        )
    inputs = {
        d: {
            k: _mean([_metric(j["metrics"], d, f"input_{k}") for j in jobs])
            for k in ("psnr", "ssim")
        }
        for d in datasets
    }
    return {
        "study": study,
        "title": spec.get("title", study),
        "datasets": datasets,
        "input": inputs,
        "rows": rows,
    }


def _by_seed(item: tuple[str | None, dict]) -> tuple:
    seed = item[0]
    return (0, int(seed), "") if seed is not None and seed.isdigit() else (1, 0, str(seed))


METRICS = ("psnr", "ssim", "lpips")


def _natural(path: Path) -> list:
    """Sort key in which job 10 comes after job 9 (Hydra numbers a multirun's jobs)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def _seed(job: dict) -> str | None:
    """The seed a job ran with: its ``seed`` override, else its composed config's."""
    if "seed" in job["settings"]:
        return job["settings"]["seed"]
    config = job["dir"] / ".hydra" / "config.yaml"
    seed = (yaml.safe_load(config.read_text()) or {}).get("seed") if config.is_file() else None
    return None if seed is None else str(seed)


def _run(seed: str | None, job: dict, datasets: list[str]) -> dict:
    metrics = job["metrics"]
    return {
        "seed": seed,
        "val_psnr": _metric(metrics, None),
        "test": {d: {k: _metric(metrics, d, k) for k in METRICS} for d in datasets},
        "steps": (metrics or {}).get("global_step"),
        "seconds": (metrics or {}).get("fit_seconds"),
        "cpu": ((metrics or {}).get("machine") or {}).get("cpu"),  # None in older records
        "run": str(job["dir"]),
        "status": "incomplete" if metrics is None else "done",
    }


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def _std(values: list[float | None]) -> float | None:
    """Sample standard deviation (n - 1); ``None`` below two values."""
    known = [v for v in values if v is not None]
    if len(known) < 2:
        return None
    mean = sum(known) / len(known)
    return math.sqrt(sum((v - mean) ** 2 for v in known) / (len(known) - 1))


def _f(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _pm(mean: float | None, std: float | None, digits: int = 3) -> str:
    """``mean ± std`` (or the mean alone for one run)."""
    return _f(mean, digits) if std is None else f"{_f(mean, digits)} ± {_f(std, digits)}"


def to_markdown(table: dict) -> str:
    datasets = table["datasets"]
    head = [
        "variant",
        "paper PSNR",
        "val PSNR",
        *(f"{d} PSNR / SSIM / LPIPS" for d in datasets),
        "run",
    ]
    title = table["title"] + (f"; here at scale {table['scale']}" if table.get("scale") else "")
    lines = [f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table["rows"]:
        cells = [r["label"], _f(r["paper_psnr"]), _pm(r["val_psnr"], r["val_psnr_std"])]
        for d in datasets:
            t, sd = r["test"][d], r["test_std"][d]
            cells.append(" / ".join(_pm(t[k], sd[k], 2 if k == "psnr" else 3) for k in METRICS))
        if r["status"] != "done":
            cells.append(r["status"])
        elif r["n"] > 1:
            cells.append(f"{r['n']} seeds")
        else:
            cells.append(Path(r["run"]).name)
        lines.append("| " + " | ".join(cells) + " |")
    if any(v["psnr"] is not None for v in (table.get("input") or {}).values()):
        cells = ["blurry input", "", ""]
        for d in datasets:
            given = table["input"][d]
            cells.append(f"{_f(given['psnr'], 2)} / {_f(given['ssim'])} / ")
        lines.append("| " + " | ".join([*cells, ""]) + " |")
    return "\n".join(lines) + "\n"


def bar_chart(table: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r["label"] for r in table["rows"]]
    dataset = table["datasets"][0] if table["datasets"] else None
    ours = [
        (r["test"][dataset]["psnr"] if dataset else r["val_psnr"]) or 0.0 for r in table["rows"]
    ]
    spread = [
        (r["test_std"][dataset]["psnr"] if dataset else r["val_psnr_std"]) or 0.0
        for r in table["rows"]
    ]
    paper = [r["paper_psnr"] or 0.0 for r in table["rows"]]
    x = range(len(labels))
    fig, ax = plt.subplots(figsize=(1.6 * len(labels) + 5, 3.5))
    ax.bar([i - 0.2 for i in x], paper, width=0.4, label="paper")
    ax.bar(
        [i + 0.2 for i in x],
        ours,
        width=0.4,
        yerr=spread,
        capsize=3,
        label=f"this run ({dataset or 'val'}; mean ± std over seeds)",
    )
    given = (table.get("input") or {}).get(dataset, {}).get("psnr") if dataset else None
    if given is not None:
        ax.axhline(
            given, color="grey", linestyle="--", linewidth=1, label=f"blurry input ({dataset})"
        )
    ax.set_xticks(list(x), labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("PSNR (dB)")
    values = [v for v in [*paper, *ours, given] if v]
    if values:
        ax.set_ylim(min(values) - 1.0, max(values) + 0.5)
    here = (
        f"; here: {dataset or 'val'} PSNR at scale {table['scale']}" if table.get("scale") else ""
    )
    ax.set_title(table["title"] + here, fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def copy_configs(table: dict, out: Path) -> None:
    """Each run's composed config and command into ``out/configs/<row>_seed<seed>.yaml``."""
    folder = out / "configs"
    folder.mkdir(parents=True, exist_ok=True)
    for row in table["rows"]:
        slug = re.sub(r"[^a-z0-9]+", "_", row["label"].lower()).strip("_")
        for run in row["runs"]:
            source = Path(run["run"]) / ".hydra" / "config.yaml"
            if not source.is_file():
                continue
            command = Path(run["run"]) / "command.txt"
            head = f"# {command.read_text().strip()}\n" if command.is_file() else ""
            (folder / f"{slug}_seed{run['seed']}.yaml").write_text(head + source.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--study", required=True)
    parser.add_argument("--runs", type=Path, default=None, help="the multirun folder of the study")
    parser.add_argument(
        "--scale", default=None, help="read the keyed runs of experiments/runs.py at this scale"
    )
    parser.add_argument(
        "--root", type=Path, default=None, help="with --scale: logs/studies/<scale>"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write (default: --runs, or experiments/<study>/results/<scale>)",
    )
    parser.epilog = "With --scale, the overrides the runs were given follow --"
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if (args.runs is None) == (args.scale is None):
        parser.error("give either --runs (a multirun folder) or --scale (keyed runs)")
    try:
        if args.scale:
            table_ = collect_scale(args.study, args.scale, args.root, extra)
        else:
            table_ = collect(args.study, args.runs)
    except (CollectError, StudyError) as exc:
        print(f"collect: error: {exc}", file=sys.stderr)
        return 2
    out = args.out or args.runs or Path(__file__).parent / args.study / "results" / args.scale
    out.mkdir(parents=True, exist_ok=True)
    table_["scale"] = args.scale
    (out / "table.md").write_text(to_markdown(table_))
    (out / "table.json").write_text(json.dumps(table_, indent=2) + "\n")
    bar_chart(table_, out / "chart.png")
    if args.scale:
        copy_configs(table_, out)
    print(to_markdown(table_))
    print(f"wrote {out / 'table.md'}, {out / 'table.json'}, {out / 'chart.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
