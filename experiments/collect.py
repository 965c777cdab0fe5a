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
    for overrides_file in sorted(runs.rglob(".hydra/overrides.yaml")):
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
    spec = load_study(study)
    jobs = find_jobs(runs)
    tested = sorted({d for j in jobs if j["metrics"] for d in (j["metrics"].get("test") or {})})
    datasets = [d for d in spec.get("datasets") or [] if d in tested]
    if not datasets:  # e.g. a smoke run of the study on synthetic data: report what was tested
        datasets = tested
    rows = []
    for row in spec["rows"]:
        matching = [j for j in jobs if row_matches(row, j["settings"])]
        job = matching[-1] if matching else None
        metrics = job["metrics"] if job else None
        rows.append(
            {
                "label": row["label"],
                "experiment": row["experiment"],
                "overrides": row.get("overrides") or [],
                "paper_psnr": row.get("paper"),
                "val_psnr": _metric(metrics, None),
                "test": {
                    d: {k: _metric(metrics, d, k) for k in ("psnr", "ssim", "lpips")}
                    for d in datasets
                },
                "run": str(job["dir"]) if job else None,
                "status": "missing"
                if job is None
                else ("incomplete" if metrics is None else "done"),
            }
        )
    return {"study": study, "title": spec.get("title", study), "datasets": datasets, "rows": rows}


def _f(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


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
        cells = [r["label"], _f(r["paper_psnr"]), _f(r["val_psnr"])]
        for d in datasets:
            t = r["test"][d]
            cells.append(f"{_f(t['psnr'])} / {_f(t['ssim'])} / {_f(t['lpips'])}")
        cells.append(r["status"] if r["status"] != "done" else Path(r["run"]).name)
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
    paper = [r["paper_psnr"] or 0.0 for r in table["rows"]]
    x = range(len(labels))
    fig, ax = plt.subplots(figsize=(1.6 * len(labels) + 2, 3.5))
    ax.bar([i - 0.2 for i in x], paper, width=0.4, label="paper")
    ax.bar([i + 0.2 for i in x], ours, width=0.4, label=f"this run ({dataset or 'val'})")
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
