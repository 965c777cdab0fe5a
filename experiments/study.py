"""A study's rows (``experiments/<study>/table.yaml``) and the Hydra multirun that runs them.

    python -m experiments.study table3_rkr      # prints the multirun overrides

Each row names an ``experiment`` and, where rows of one experiment differ in a setting,
``overrides`` in Hydra syntax (e.g. ``[model.num_levels=15]``). The rows must form a full
grid over the settings they name: the multirun is then one sweep per setting, and Hydra's
product of the sweeps runs every row once and nothing else. A ``baseline`` (the U-Net, the
same keys as a row) is not a row of the paper's table: ``experiments/runs.py`` runs it with
the rows at a scale, and the collector reports it last.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

HERE = Path(__file__).resolve().parent

Settings = dict[str, str]  # override key (as written, e.g. "+foo") -> value in Hydra syntax


class StudyError(ValueError):
    pass


def known_studies() -> list[str]:
    return sorted(p.parent.name for p in HERE.glob("*/table.yaml"))


def load_study(study: str) -> dict:
    """The study's table.yaml, with each row's settings checked and stored under ``settings``."""
    path = HERE / study / "table.yaml"
    if not path.is_file():
        raise StudyError(
            f"unknown study {study!r}: no {path}; known studies: {', '.join(known_studies())}"
        )
    spec = yaml.safe_load(path.read_text()) or {}
    rows = spec.get("rows")
    if not isinstance(rows, list) or not rows:
        raise StudyError(f"{path}: expected a non-empty list under 'rows'")
    for number, row in enumerate(rows, start=1):
        row["settings"] = row_settings(row, f"{path}, row {number}")
    if spec.get("baseline") is not None:
        spec["baseline"]["settings"] = row_settings(spec["baseline"], f"{path}, baseline")
    labels = [row["label"] for row in rows]
    if "reference" in spec and spec["reference"] not in labels:
        raise StudyError(f"{path}: reference {spec['reference']!r} is not a row's label")
    return spec


def row_settings(row: object, where: str) -> Settings:
    """``experiment`` and the row's own overrides as one mapping key -> value."""
    if not isinstance(row, dict) or not isinstance(row.get("experiment"), str):
        raise StudyError(f"{where}: expected a mapping with an 'experiment' name")
    if "label" not in row:
        raise StudyError(f"{where}: expected a 'label'")
    overrides = row.get("overrides") or []
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise StudyError(f"{where}: 'overrides' must be a list of strings like key=value")
    settings = parse_settings([f"experiment={row['experiment']}", *overrides], where)
    if len(settings) != 1 + len(overrides):
        raise StudyError(f"{where}: 'overrides' repeats a key or sets experiment again")
    return settings


def parse_settings(overrides: list[str], where: str) -> Settings:
    """Single-valued Hydra overrides as key -> value text; whitespace is refused because
    ``make sweep`` passes the overrides as separate shell words."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as exc:
        raise StudyError(f"{where}: {exc}") from None
    settings: Settings = {}
    for override in parsed:
        if override.is_sweep_override() or override.is_delete():
            raise StudyError(f"{where}: {override.input_line!r} must set one value")
        value = override.get_value_element_as_str()
        if any(c.isspace() for c in override.input_line):
            raise StudyError(f"{where}: {override.input_line!r} contains whitespace")
        settings[override.get_key_element()] = value
    return settings


def job_settings(overrides: list[str]) -> Settings:
    """What a finished job was run with (its ``.hydra/overrides.yaml``), as key -> value."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    return {o.get_key_element(): o.get_value_element_as_str() for o in parsed}


def row_matches(row: dict, settings: Settings) -> bool:
    return all(settings.get(key) == value for key, value in row["settings"].items())


def settings_key(settings: Settings) -> str:
    """A row's settings as one string, sorted: the key of its measured cost."""
    return " ".join(f"{key}={value}" for key, value in sorted(settings.items()))


def sweep_overrides(spec: dict, study: str = "") -> list[str]:
    """One override per setting, swept over its values (first-seen order), e.g.
    ``["experiment=atoms_J", "model.num_levels=15,18"]``."""
    where = f"experiments/{study}/table.yaml" if study else "table.yaml"
    rows = [row["settings"] for row in spec["rows"]]
    keys = list(rows[0])
    for number, settings in enumerate(rows, start=1):
        if set(settings) != set(keys):
            raise StudyError(
                f"{where}: row {number} sets {sorted(settings)} but row 1 sets {sorted(keys)}; "
                "every row must set the same keys"
            )
    values = {key: list(dict.fromkeys(settings[key] for settings in rows)) for key in keys}
    grid = {tuple(combination) for combination in itertools.product(*values.values())}
    given = [tuple(settings[key] for key in keys) for settings in rows]
    if len(set(given)) != len(given):
        raise StudyError(f"{where}: two rows have the same experiment and overrides")
    if missing := grid - set(given):
        example = " ".join(f"{k}={v}" for k, v in zip(keys, sorted(missing)[0], strict=True))
        raise StudyError(
            f"{where}: the rows do not form a full grid over {', '.join(keys)} "
            f"(no row for {example}), so one multirun would run more than the rows"
        )
    return [f"{key}={','.join(vals)}" for key, vals in values.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("study", help="a folder of experiments/ with a table.yaml")
    args = parser.parse_args(argv)
    try:
        print(" ".join(sweep_overrides(load_study(args.study), args.study)))
    except StudyError as exc:
        print(f"study: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
