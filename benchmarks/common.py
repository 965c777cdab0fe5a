"""Shared helpers for the benchmarks: machine description, timing in a fresh process."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def machine() -> dict:
    from nrknet.utils.machine import describe

    return {**describe(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _with_root(pythonpath: str | None) -> str:
    """``PYTHONPATH`` with the repository root first, so that a child imports ``benchmarks.*``."""
    return os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]), pythonpath]))


def run_child(code: str, repeats: int = 1, env: dict | None = None) -> dict:
    """Run ``code`` in fresh interpreters; it must print one JSON line. Returns median figures.

    Wall time is measured around the whole process; the child reports its own
    peak resident memory (whole process) and the time of the measured section.
    """
    walls, results = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env={
                **os.environ,
                "PYTHONPATH": _with_root(os.environ.get("PYTHONPATH")),
                **(env or {}),
            },
            check=False,
        )
        walls.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise RuntimeError(f"benchmark child failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    keys = results[0].keys()
    summary = {k: statistics.median(r[k] for r in results) for k in keys}
    summary["process_wall_s"] = statistics.median(walls)
    summary["repeats"] = repeats
    return summary


def save(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
    return path
