"""Result files of a run (per-image CSV, summary JSON, paper-layout markdown) and the end-of-run summary.

A run's results map an entry name to ``{"summary": means, "per_image": rows}``:
one entry per test set, one per scene group of a test set (DPDD's indoor and
outdoor scenes; see :func:`result_entries`) and, with the self-ensemble,
the same again under :func:`self_ensemble_name`.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from nrknet.metrics import METRIC_KEYS, summarize_rows
from nrknet.utils.atomic import atomic_open, atomic_write_text

COLUMNS = ("name", "scene_group", *METRIC_KEYS)
#: The optional 16-bit PSNR (metrics.psnr16): a table column only where it was computed.
PSNR16_KEYS = ("psnr16", "input_psnr16")
#: A dataset's self-ensembled scores (eight flips and rotations averaged) are reported as its own entry.
SELF_ENSEMBLE_SUFFIX = " (x8)"


def self_ensemble_name(dataset: str) -> str:
    """The results key of ``dataset`` scored with the self-ensemble."""
    return dataset + SELF_ENSEMBLE_SUFFIX


def scene_group_name(dataset: str, group: str) -> str:
    """The results key of a scene group of ``dataset``: ``dpdd/indoor``, ``dpdd/indoor (x8)``."""
    if dataset.endswith(SELF_ENSEMBLE_SUFFIX):
        return self_ensemble_name(scene_group_name(dataset[: -len(SELF_ENSEMBLE_SUFFIX)], group))
    return f"{dataset}/{group}"


def result_entries(
    name: str,
    summary: dict[str, Any],
    rows: list[dict[str, Any]],
    scene_groups: dict[str, frozenset[str]] | None,
) -> dict[str, dict[str, Any]]:
    """The results entries of one scored test set: the whole set, then each scene group.

    ``scene_groups`` maps a group name to the names of its images. Each row
    gets its ``scene_group`` (``None`` outside every group); a group's entry
    holds the means over its images and, so that no image is listed twice,
    no rows of its own (``"scene_group"`` marks it).
    """
    group_of = {image: group for group, images in (scene_groups or {}).items() for image in images}
    rows = [{**row, "scene_group": group_of.get(str(row["name"]))} for row in rows]
    entries = {name: {"summary": summary, "per_image": rows}}
    for group in scene_groups or {}:
        members = [row for row in rows if row["scene_group"] == group]
        entries[scene_group_name(name, group)] = {
            "summary": summarize_rows(members),
            "per_image": [],
            "scene_group": group,
        }
    return entries


def _fmt(value: float | None, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _metric_columns(results: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """``(label, key)`` of the reported metrics; the 16-bit PSNR only where it was computed."""
    columns = [("PSNR", "psnr"), ("SSIM", "ssim"), ("MAE", "mae"), ("LPIPS", "lpips")]
    if any(r["summary"].get(k) is not None for r in results.values() for k in PSNR16_KEYS):
        columns.append(("PSNR-16", "psnr16"))
    return columns


def _cells(summary: dict[str, Any], prefix: str, columns: list[tuple[str, str]]) -> list[str]:
    # the blurry input's LPIPS is not computed
    return [
        _fmt(None if prefix and key == "lpips" else summary.get(prefix + key), 3)
        for _, key in columns
    ]


def markdown_table(results: dict[str, dict[str, Any]], method: str = "NRKNet") -> str:
    """PSNR / SSIM / MAE / LPIPS per dataset, as in the paper's Tables 1-2 (and the blurry input
    for reference); then, for a dataset with scene groups, a table with a row per group and method.

    ``method`` labels the network's row. Self-ensembled scores (see
    :func:`self_ensemble_name`) make a row of their own.
    """
    columns = _metric_columns(results)
    names = [
        n for n, r in results.items() if not n.endswith(SELF_ENSEMBLE_SUFFIX) and not _is_group(r)
    ]
    header = "| | " + " | ".join(f"{n} {label}" for n in names for label, _ in columns) + " |"
    rule = "|---|" + "---|" * (len(columns) * len(names))
    rows = []
    layout = [("input", "input_", ""), (method, "", "")]
    if any(self_ensemble_name(n) in results for n in names):
        layout.append((method + SELF_ENSEMBLE_SUFFIX, "", SELF_ENSEMBLE_SUFFIX))
    for label, prefix, suffix in layout:
        cells = []
        for n in names:
            cells += _cells(results.get(n + suffix, {}).get("summary", {}), prefix, columns)
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    tables = ["\n".join([header, rule, *rows]) + "\n"]
    for n in names:
        groups = [
            r["scene_group"]
            for key, r in results.items()
            if _is_group(r) and key == scene_group_name(n, r["scene_group"])
        ]
        if not groups:
            continue
        header = f"| {n} scenes | | images | " + " | ".join(label for label, _ in columns) + " |"
        rows = [header, "|---|---|---|" + "---|" * len(columns)]
        scenes = [(scene_group_name(n, g), g) for g in groups] + [(n, "all")]
        for entry, scene in scenes:
            for label, prefix, suffix in layout:
                summary = results.get(entry + suffix, {}).get("summary", {})
                cells = [str(summary.get("count", "n/a")), *_cells(summary, prefix, columns)]
                rows.append(f"| {scene} | {label} | " + " | ".join(cells) + " |")
        tables.append("\n".join(rows) + "\n")
    return "\n".join(tables)


def _is_group(result: dict[str, Any]) -> bool:
    return result.get("scene_group") is not None


def write_reports(
    results: dict[str, dict[str, Any]],
    out_dir: str | Path,
    extra: dict | None = None,
    method: str = "NRKNet",
) -> dict[str, Path]:
    """Write ``per_image.csv``, ``summary.json`` and ``table.md`` (rows labelled ``method``)."""
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
    atomic_write_text(md_path, markdown_table(results, method))
    return {"per_image": csv_path, "summary": json_path, "table": md_path}


def print_run_summary(
    title: str, results: dict[str, dict[str, Any]], locations: dict[str, str | Path]
) -> None:
    """A short end-of-run summary: input vs output scores per dataset and where the files are."""
    console = Console(stderr=False)
    table = Table(title=title)
    # (header, summary key, decimals); the 16-bit PSNR only where it was computed
    shown = [
        ("input PSNR", "input_psnr", 2),
        ("output PSNR", "psnr", 2),
        ("SSIM", "ssim", 3),
        ("MAE", "mae", 4),
        ("LPIPS", "lpips", 3),
    ]
    if ("PSNR-16", "psnr16") in _metric_columns(results):
        shown.append(("output PSNR-16", "psnr16", 2))
    for column in ("dataset", "images", *(header for header, _, _ in shown)):
        table.add_column(column, justify="right" if column != "dataset" else "left")
    for name, result in results.items():
        s = result["summary"]
        cells = [_fmt(s.get(key), digits) for _, key, digits in shown]
        table.add_row(name, str(s.get("count", "")), *cells)
    if results:
        console.print(table)
    for label, where in locations.items():
        if where:
            console.print(f"[bold]{label}[/]: {where}")
