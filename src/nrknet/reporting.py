"""Result files of a run (per-image CSV, summary JSON, paper-layout markdown) and the end-of-run summary."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from nrknet.utils.atomic import atomic_open, atomic_write_text

COLUMNS = ("name", "psnr", "ssim", "lpips", "input_psnr", "input_ssim")
#: A dataset's self-ensembled scores (eight flips and rotations averaged) are reported as its own entry.
SELF_ENSEMBLE_SUFFIX = " (x8)"


def self_ensemble_name(dataset: str) -> str:
    """The results key of ``dataset`` scored with the self-ensemble."""
    return dataset + SELF_ENSEMBLE_SUFFIX


def _fmt(value: float | None, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def markdown_table(results: dict[str, dict[str, Any]]) -> str:
    """PSNR / SSIM / LPIPS per dataset, as in the paper's Tables 1-2 (and the blurry input for reference).

    Self-ensembled scores (see :func:`self_ensemble_name`) make a row of their own.
    """
    names = [n for n in results if not n.endswith(SELF_ENSEMBLE_SUFFIX)]
    header = "| | " + " | ".join(f"{n} PSNR | {n} SSIM | {n} LPIPS" for n in names) + " |"
    rule = "|---|" + "---|---|---|" * len(names)
    rows = []
    layout = [("input", "input_", ""), ("NRKNet", "", "")]
    if any(self_ensemble_name(n) in results for n in names):
        layout.append(("NRKNet" + SELF_ENSEMBLE_SUFFIX, "", SELF_ENSEMBLE_SUFFIX))
    for label, prefix, suffix in layout:
        cells = []
        for n in names:
            s = results.get(n + suffix, {}).get("summary", {})
            lp = s.get("lpips") if not prefix else None
            cells += [_fmt(s.get(prefix + "psnr"), 3), _fmt(s.get(prefix + "ssim"), 3), _fmt(lp, 3)]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join([header, rule, *rows]) + "\n"


def write_reports(
    results: dict[str, dict[str, Any]], out_dir: str | Path, extra: dict | None = None
) -> dict[str, Path]:
    """Write ``per_image.csv``, ``summary.json`` and ``table.md`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "per_image.csv"
    with atomic_open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["dataset", *COLUMNS])
        for dataset, result in results.items():
            for row in result["per_image"]:
                writer.writerow(
                    [dataset, *("" if row.get(c) is None else row.get(c) for c in COLUMNS)]
                )
    summary = {name: r["summary"] for name, r in results.items()}
    json_path = out_dir / "summary.json"
    atomic_write_text(
        json_path, json.dumps({"datasets": summary, **(extra or {})}, indent=2) + "\n"
    )
    md_path = out_dir / "table.md"
    atomic_write_text(md_path, markdown_table(results))
    return {"per_image": csv_path, "summary": json_path, "table": md_path}


def print_run_summary(
    title: str, results: dict[str, dict[str, Any]], locations: dict[str, str | Path]
) -> None:
    """A short end-of-run summary: input vs output scores per dataset and where the files are."""
    console = Console(stderr=False)
    table = Table(title=title)
    for column in ("dataset", "images", "input PSNR", "output PSNR", "SSIM", "LPIPS"):
        table.add_column(column, justify="right" if column != "dataset" else "left")
    for name, result in results.items():
        s = result["summary"]
        table.add_row(
            name,
            str(s.get("count", "")),
            _fmt(s.get("input_psnr"), 2),
            _fmt(s.get("psnr"), 2),
            _fmt(s.get("ssim"), 3),
            _fmt(s.get("lpips"), 3),
        )
    if results:
        console.print(table)
    for label, where in locations.items():
        if where:
            console.print(f"[bold]{label}[/]: {where}")
