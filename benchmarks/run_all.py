"""Run the benchmarks, print one table each and write benchmarks/results/<name>.json.

Usage: python -m benchmarks.run_all [--quick] [--only model,synthetic,data,...]
"""

from __future__ import annotations

import argparse
import importlib
import sys

from rich.console import Console
from rich.table import Table

from benchmarks.common import machine, save

BENCHMARKS = {
    "model": "benchmarks.bench_model",
    "synthetic": "benchmarks.bench_synthetic",
    "predict": "benchmarks.bench_predict",
    "speed": "benchmarks.bench_speed",
    "atoms": "benchmarks.bench_atoms",
    "compile_cpu": "benchmarks.bench_compile_cpu",
    "gpu": "benchmarks.bench_gpu",
    "gpu_variants": "benchmarks.bench_gpu_variants",
    "data": "benchmarks.bench_data",
    "sweep": "benchmarks.bench_sweep",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, one repeat")
    parser.add_argument(
        "--only", default="", help="comma-separated subset of: " + ", ".join(BENCHMARKS)
    )
    args = parser.parse_args(argv)
    selected = [s for s in args.only.split(",") if s] or list(BENCHMARKS)
    unknown = [s for s in selected if s not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    console = Console()
    info = machine()
    console.print(f"[bold]machine[/]: {info['cpu']}, {info['cores']} cores, torch {info['torch']}")
    for name in selected:
        module = importlib.import_module(BENCHMARKS[name])
        with console.status(f"running {name} benchmark"):
            result = module.run(quick=args.quick)
        table = Table(title=f"{name}{' (quick)' if args.quick else ''}")
        table.add_column("measure")
        table.add_column("value", justify="right")
        for key, value in module.rows(result):
            table.add_row(key, value)
        console.print(table)
        path = save(name + ("_quick" if args.quick else ""), {"quick": args.quick, **result})
        console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
