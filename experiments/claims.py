"""What each difference the paper reports looks like in a study's collected table.

    python -m experiments.claims --scale cpu                        # print every study's claims
    python -m experiments.claims --scale cpu --write docs/studies.md   # rewrite its generated part

For every row of a study against the study's ``reference`` row (``table.yaml``), from the
collected ``experiments/<study>/results/<scale>/table.json``: the paper's difference in PSNR,
the difference here (test split), its standard error, and a verdict.

The seed drives both the initialisation and the order of the training data, and at a short
schedule it moves every row alike (one seed ends a few tenths of a decibel above another for
all rows). So where the two rows ran the same seeds (two or more), the difference is taken seed
by seed: ``d_s = row_s - ref_s``, here ``mean(d)``, standard error ``sd(d) / sqrt(n)`` (paired).
Otherwise the means are compared, with ``sqrt(s_row^2 / n_row + s_ref^2 / n_ref)`` (unpaired).

A difference is called only when it exceeds twice its standard error: then it *holds* (the
paper's sign) or is *reversed*. Otherwise this scale *cannot decide* its sign; the verdict then
says whether the paper's difference lies more than twice the standard error away from the one
here (this scale rules the paper's difference out), or else gives the number of seeds per row
at which a difference of the paper's size would exceed twice its standard error:
``ceil(4 sd(d)^2 / d_paper^2)`` paired, ``ceil(8 s^2 / d_paper^2)`` unpaired with ``s`` the
two rows' pooled standard deviation (at least 2).

``--write`` also rewrites the measured cost: each collected study's core-hours of training, the
sum of its finished runs' ``fit_seconds`` (one thread per run) less the pauses recorded in
``experiments/scales/pauses.json`` (runs stopped while the machine timed other work).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from pathlib import Path

from experiments.study import load_study

HERE = Path(__file__).resolve().parent
STUDIES = ("table3_rkr", "table4_pipeline", "table5_losses", "atoms_J")
START, END = "<!-- claims:start -->", "<!-- claims:end -->"
COST_START, COST_END = "<!-- cost-measured:start -->", "<!-- cost-measured:end -->"
PAUSES = HERE / "scales" / "pauses.json"


def _psnr(row: dict, dataset: str) -> tuple[float | None, float | None, int]:
    return row["test"][dataset]["psnr"], row["test_std"][dataset]["psnr"], row["n"]


def _by_seed(row: dict, dataset: str) -> dict[str, float]:
    """The row's finished runs' test PSNR by seed."""
    return {
        run["seed"]: run["test"][dataset]["psnr"]
        for run in row.get("runs", [])
        if run["status"] == "done" and run["test"][dataset]["psnr"] is not None
    }


def claims(study: str, table: dict) -> list[dict]:
    """One entry per row of the paper (the reference and the baseline left out)."""
    reference = load_study(study)["reference"]
    rows = {row["label"]: row for row in table["rows"]}
    ref = rows[reference]
    dataset = table["datasets"][0]
    ref_mean, ref_std, ref_n = _psnr(ref, dataset)
    theirs = _by_seed(ref, dataset)
    out = []
    for row in table["rows"]:
        if row["label"] == reference or row["paper_psnr"] is None:
            continue
        mean, std, n = _psnr(row, dataset)
        paper = row["paper_psnr"] - ref["paper_psnr"]
        entry = {"label": row["label"], "paper": paper, "here": None, "se": None, "n": (n, ref_n)}
        mine = _by_seed(row, dataset)
        common = [seed for seed in mine if seed in theirs]
        if len(common) > 1:
            diffs = [mine[seed] - theirs[seed] for seed in common]
            spread = statistics.stdev(diffs)
            entry.update(
                here=statistics.fmean(diffs), se=spread / math.sqrt(len(diffs)), paired=len(diffs)
            )
            entry["seeds_needed"] = _at_least_two(4 * spread**2 / paper**2) if paper else None
        else:
            if mean is not None and ref_mean is not None:
                entry["here"] = mean - ref_mean
            if std is not None and ref_std is not None and n > 1 and ref_n > 1:
                entry["se"] = math.sqrt(std**2 / n + ref_std**2 / ref_n)
                pooled = math.sqrt((std**2 + ref_std**2) / 2)
                entry["seeds_needed"] = _at_least_two(8 * pooled**2 / paper**2) if paper else None
        entry["verdict"] = verdict(entry)
        out.append(entry)
    return out


def _at_least_two(seeds: float) -> int:
    """Seeds per row for a standard error (one seed has none)."""
    return max(2, math.ceil(seeds))


def verdict(entry: dict) -> str:
    here, se, paper = entry["here"], entry["se"], entry["paper"]
    if here is None or se is None:
        return "not run (fewer than 2 seeds)"
    if abs(here) <= 2 * se:
        needed = entry.get("seeds_needed")
        if abs(here - paper) > 2 * se:
            return "cannot decide its sign, but rules out the paper's (beyond 2 s.e.)"
        if needed is None or needed <= entry.get("paired", min(entry["n"])):
            return "cannot decide with these seeds"
        return f"cannot decide: about {needed} seeds per row for the paper's size"
    if paper == 0 or (here > 0) == (paper > 0):
        return "holds"
    return "reversed"


def _signed(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:+.{digits}f}"


def markdown(study: str, table: dict) -> str:
    spec = load_study(study)
    lines = [
        f"#### {table['title']} (reference: {spec['reference']})",
        "",
        "| row | paper | here (mean over seeds) | 2 x s.e. | seeds | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for entry in claims(study, table):
        se = entry["se"]
        lines.append(
            f"| {entry['label']} | {_signed(entry['paper'], 3)} | {_signed(entry['here'])} | "
            f"{'n/a' if se is None else f'{2 * se:.2f}'} | {_seeds(entry)} | "
            f"{entry['verdict']} |"
        )
    return "\n".join(lines) + "\n"


def _seeds(entry: dict) -> str:
    paired = entry.get("paired")
    return f"{paired} paired" if paired else f"{entry['n'][0]} / {entry['n'][1]}"


def run_id(run: dict) -> str:
    """``<model>-<key>/seed<k>``: a run's folder under the scale's root."""
    path = Path(run["run"])
    return f"{path.parent.name}/{path.name}"


class ClaimsError(ValueError):
    pass


RUN_ID = re.compile(r"[\w.-]+-[0-9a-f]{10}/seed\d+")


def load_pauses(path: Path = PAUSES) -> dict[str, float]:
    """Seconds each run was stopped during its ``fit_seconds``, by ``run_id``."""
    if not path.is_file():
        return {}
    pauses = {}
    for run, item in json.loads(path.read_text()).items():
        seconds = item.get("seconds") if isinstance(item, dict) else None
        if not RUN_ID.fullmatch(run) or not isinstance(seconds, int | float) or seconds <= 0:
            raise ClaimsError(
                f"{path}: entry {run!r}: expected '<model>-<key>/seed<k>' with positive 'seconds'"
            )
        pauses[run] = float(seconds)
    return pauses


def measured_cost(tables: dict[str, dict], pauses: dict[str, float]) -> str:
    """Core-hours of training per collected study, and of the studies together (a run shared
    by several studies counted once)."""
    lines = [
        "| study | finished runs | core-hours of training | hours with `JOBS=2` | rerun |",
        "|---|---|---|---|---|",
    ]
    every: dict[str, float] = {}
    for study, table in tables.items():
        seconds = {
            run_id(run): run["seconds"] - pauses.get(run_id(run), 0.0)
            for row in table["rows"]
            for run in row.get("runs", [])
            if run["status"] == "done" and run["seconds"] is not None
        }
        every.update(seconds)
        hours = sum(seconds.values()) / 3600
        lines.append(
            f"| {study} | {len(seconds)} | {hours:.1f} | {hours / 2:.1f} | "
            f"`make sweep STUDY={study} SCALE=cpu JOBS=2` |"
        )
    hours = sum(every.values()) / 3600
    lines.append(
        f"| all collected, shared runs once | {len(every)} | {hours:.1f} | {hours / 2:.1f} | "
        "`make studies JOBS=2` |"
    )
    return "\n".join(lines) + "\n"


def _replace(doc: str, start: str, end: str, text: str) -> str:
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    return pattern.sub(lambda _: f"{start}\n{text}{end}", doc)


def load_table(study: str, scale: str) -> dict | None:
    path = HERE / study / "results" / scale / "table.json"
    return json.loads(path.read_text()) if path.is_file() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", default="cpu")
    parser.add_argument("--write", type=Path, default=None, help=f"replace {START}...{END} in it")
    args = parser.parse_args(argv)
    parts, tables = [], {}
    for study in STUDIES:
        table = load_table(study, args.scale)
        if table is None:
            parts.append(f"#### {study}\n\nNot collected yet at scale {args.scale}.\n")
        else:
            tables[study] = table
            parts.append(markdown(study, table))
    text = "\n".join(parts)
    try:
        cost = measured_cost(tables, load_pauses()) if tables else "No study collected yet.\n"
    except ClaimsError as exc:
        print(f"claims: error: {exc}", file=sys.stderr)
        return 2
    if args.write is None:
        print(text)
        print(cost)
        return 0
    doc = args.write.read_text()
    for start, end in ((START, END), (COST_START, COST_END)):
        if start not in doc or end not in doc:
            print(f"claims: error: {args.write} has no {start} ... {end} block", file=sys.stderr)
            return 2
    doc = _replace(doc, START, END, text)
    args.write.write_text(_replace(doc, COST_START, COST_END, cost))
    print(f"wrote the claims and the measured cost of {len(STUDIES)} studies into {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
