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
    if dataset is None:
        return metrics.get("best_val_psnr")
    value = (metrics.get("test") or {}).get(dataset, {}).get(key)
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def collect(study: str, runs: Path) -> dict:
    """The study's table: each row with its runs (one per seed) and their mean and spread.

    A row's ``test`` and ``val_psnr`` are the means over its finished runs,
    ``test_std`` and ``val_psnr_std`` the sample standard deviations (``None``
    for a single run), ``n`` the number of finished runs; ``runs`` lists each
    seed's own figures. A seed run twice in the folder counts once (the later).
    """
    spec = load_study(study)
    jobs = find_jobs(runs)
    tested = sorted({d for j in jobs if j["metrics"] for d in (j["metrics"].get("test") or {})})
    datasets = [d for d in spec.get("datasets") or [] if d in tested]
    if not datasets:  # e.g. a smoke run of the study on synthetic data: report what was tested
        datasets = tested
    rows = []
    for row in spec["rows"]:
        by_seed = {_seed(j): j for j in jobs if row_matches(row, j["settings"])}
        seed_runs = [_run(seed, job, datasets) for seed, job in by_seed.items()]
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
    return {"study": study, "title": spec.get("title", study), "datasets": datasets, "rows": rows}


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
    lines = [f"## {table['title']}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
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
    fig, ax = plt.subplots(figsize=(1.6 * len(labels) + 2, 3.5))
    ax.bar([i - 0.2 for i in x], paper, width=0.4, label="paper")
    ax.bar(
        [i + 0.2 for i in x],
        ours,
        width=0.4,
        yerr=spread,
        capsize=3,
        label=f"this run ({dataset or 'val'}; mean ± std over seeds)",
    )
    ax.set_xticks(list(x), labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("PSNR (dB)")
    values = [v for v in paper + ours if v]
    if values:
        ax.set_ylim(min(values) - 1.0, max(values) + 0.5)
    ax.set_title(table["title"], fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--study", required=True)
    parser.add_argument("--runs", required=True, type=Path, help="the multirun folder of the study")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: --runs)")
    args = parser.parse_args(argv)
    try:
        table = collect(args.study, args.runs)
    except (CollectError, StudyError) as exc:
        print(f"collect: error: {exc}", file=sys.stderr)
        return 2
    out = args.out or args.runs
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(to_markdown(table))
    (out / "table.json").write_text(json.dumps(table, indent=2) + "\n")
    bar_chart(table, out / "chart.png")
    print(to_markdown(table))
    print(f"wrote {out / 'table.md'}, {out / 'table.json'}, {out / 'chart.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
