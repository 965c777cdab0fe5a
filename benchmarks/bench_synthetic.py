"""Synthetic defocus renderer throughput on one CPU core (pairs per second).

Measures :func:`nrknet.data.synthetic.render_pair` (scene, depth, layered
defocus rendering and quantisation; photographs already loaded) at 256x256
and 512x512, and a whole small set written by ``generate_dataset`` (PNG
encoding and ``meta.json`` included) at 256x256.

Usage: python -m benchmarks.bench_synthetic [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import cv2
import torch

from nrknet.data.synthetic import SynthSettings, generate_dataset, render_pair


def _throughput(size: int, count: int) -> dict:
    settings = SynthSettings(num_train=count, num_val=0, num_test=0, size=size)
    render_pair(settings, "train", 10_000)  # warm-up: loads the photographs
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(count):
        render_pair(settings, "train", i)
    return _figures(count, time.perf_counter() - start, time.process_time() - cpu)


def _figures(count: int, wall: float, cpu: float) -> dict:
    # CPU seconds are reported too: on a busy machine wall time overstates the cost.
    return {
        "pairs": count,
        "seconds": wall,
        "pairs_per_s": count / wall,
        "cpu_seconds": cpu,
        "pairs_per_cpu_s": count / max(cpu, 1e-9),
    }


def _generate(count: int, size: int = 256) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        start, cpu = time.perf_counter(), time.process_time()
        settings = SynthSettings(num_train=count, num_val=0, num_test=0, size=size)
        generate_dataset(f"{tmp}/set", settings, progress=False)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return _figures(count, wall, cpu)


def run(quick: bool = False) -> dict:
    """Time the renderer on one core; returns the figures (pairs per second)."""
    torch_threads, cv2_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        n256, n512, ngen = (4, 2, 4) if quick else (32, 8, 32)
        return {
            "threads": 1,
            "render_256": _throughput(256, n256),
            "render_512": _throughput(512, n512),
            "generate_256": _generate(ngen),
        }
    finally:
        torch.set_num_threads(torch_threads)
        cv2.setNumThreads(cv2_threads)


def rows(result: dict) -> list[tuple[str, str]]:
    def fmt(r: dict) -> str:
        return (
            f"{r['pairs_per_s']:.2f} pairs/s ({r['seconds'] / r['pairs'] * 1000:.0f} ms/pair; "
            f"{r['pairs_per_cpu_s']:.2f} per CPU-s)"
        )

    return [
        ("render 256x256, 1 core", fmt(result["render_256"])),
        ("render 512x512, 1 core", fmt(result["render_512"])),
        ("generate_dataset 256x256 incl. PNG, 1 core", fmt(result["generate_256"])),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images")
    args = parser.parse_args(argv)
    result = run(quick=args.quick)
    from rich.console import Console
    from rich.table import Table

    table = Table(title="synthetic renderer" + (" (quick)" if args.quick else ""))
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in rows(result):
        table.add_row(key, value)
    Console().print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
