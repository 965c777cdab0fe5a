"""Training-loader throughput on DPDD-sized pairs: decoding every crop vs ``data.cache=ram``.

Writes a few synthetic 1680x1120 pairs (8- and 16-bit PNG, like DPDD) to a
temporary folder and measures, for each bit depth and each cache setting,
the training dataset of ``conf/data/dpdd.yaml`` (its crop size, flips and
rotations):

* per worker: samples per second drawn in this process with one torch and
  one OpenCV thread, as in a DataLoader worker;
* in total: samples per second out of a DataLoader with the config's
  ``num_workers`` and ``batch_size`` (worker start-up not counted).

Targets: the cache at least 50x faster per worker than decoding, and the
cached DPDD loader at least 320 samples/s (twice a GPU step rate of 160
images/s). Timings are wall-clock; the machine's load average is recorded
with them because other work on the machine lowers every figure.

Usage: python -m benchmarks.bench_data [--quick]  (or make bench ARGS="--only data")
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, RandomSampler

from nrknet.data.datasets import PairedImageDataset

try:
    from benchmarks.bench_predict import _photo
except ImportError:  # run as a script from the benchmarks folder
    from bench_predict import _photo

DPDD_CONFIG = Path(__file__).resolve().parents[1] / "conf" / "data" / "dpdd.yaml"
DPDD_SIZE = (1120, 1680)  # height, width of a DPDD image
PER_WORKER_TARGET = 50.0  # cached / decoded samples per second, one worker
TOTAL_TARGET = 320.0  # samples per second: twice a GPU step rate of 160 images/s


def _write_pairs(folder: Path, bit_depth: int, count: int, size: tuple[int, int]) -> list:
    """``count`` blurry/sharp PNG pairs; 16-bit files get fine detail in their low byte."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(bit_depth)
    pairs = []
    for i in range(count):
        sharp = _photo(*size, seed=i)
        blurry = cv2.GaussianBlur(sharp, (0, 0), 3)
        if bit_depth == 16:
            sharp, blurry = (
                im.astype(np.uint16) * 257 + rng.integers(0, 256, im.shape, dtype=np.uint16)
                for im in (sharp, blurry)
            )
        paths = folder / f"{i}_blurry.png", folder / f"{i}_sharp.png"
        for path, image in zip(paths, (blurry, sharp), strict=True):
            cv2.imwrite(str(path), image)
        pairs.append((*paths, str(i)))
    return pairs


def _per_worker(dataset: PairedImageDataset, seconds: float) -> float:
    torch_threads, cv2_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        count, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds or count < 2:
            dataset[count % len(dataset)]
            count += 1
        return count / elapsed
    finally:
        torch.set_num_threads(torch_threads)
        cv2.setNumThreads(cv2_threads)


def _total(dataset: PairedImageDataset, workers: int, batch_size: int, seconds: float) -> float:
    sampler = RandomSampler(dataset, replacement=True, num_samples=1 << 30)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers)
    batches = iter(loader)
    next(batches)  # workers started and running
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or count < 2 * batch_size:
        count += len(next(batches)["name"])
    del batches  # stops the workers
    return count / elapsed


def _measure(pairs: list, cache: str, settings: dict, seconds: float) -> dict:
    start = time.perf_counter()
    dataset = PairedImageDataset(
        pairs,
        crop_size=settings["crop_size"],
        augment=True,
        cache=cache,
        cache_workers=settings["workers"],
    )
    ready = time.perf_counter() - start
    result = {
        "per_worker": _per_worker(dataset, seconds),
        "total": _total(dataset, settings["workers"], settings["batch_size"], seconds),
    }
    if dataset.cache is not None:
        result.update(fill_s=ready, cache_gib=dataset.cache.nbytes / (1 << 30))
    return result


def run(
    quick: bool = False,
    *,
    size: tuple[int, int] = DPDD_SIZE,
    pairs: int = 6,
    seconds: float | None = None,
    workers: int | None = None,
) -> dict:
    """Loader figures for 8- and 16-bit pairs, decoding vs cached; sizes and times can be shrunk."""
    config = OmegaConf.load(DPDD_CONFIG)
    settings = {
        "workers": int(config.num_workers if workers is None else workers),
        "batch_size": int(config.batch_size),
        "crop_size": min(int(config.crop_size), *size),
    }
    seconds = (2.0 if quick else 8.0) if seconds is None else seconds
    result: dict = {
        "image_size": list(size),
        "pairs": pairs,
        **settings,
        "load_average": list(os.getloadavg()),
        "targets": {"per_worker_ratio": PER_WORKER_TARGET, "total_samples_per_s": TOTAL_TARGET},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for bits in (8, 16):
            files = _write_pairs(Path(tmp) / f"{bits}bit", bits, pairs, size)
            figures = {mode: _measure(files, mode, settings, seconds) for mode in ("none", "ram")}
            decoded, cached = figures["none"], figures["ram"]
            result[f"{bits}bit"] = {
                **figures,
                "per_worker_ratio": cached["per_worker"] / decoded["per_worker"],
                "total_ratio": cached["total"] / decoded["total"],
            }
    return result


def rows(result: dict) -> list[tuple[str, str]]:
    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    workers = result["workers"]
    out = [
        (
            "pairs, image size",
            f"{result['pairs']} x {result['image_size'][1]}x{result['image_size'][0]}",
        ),
        (
            "crop, batch, workers (conf/data/dpdd.yaml)",
            f"{result['crop_size']}, {result['batch_size']}, {workers}",
        ),
        ("load average at start", " ".join(f"{v:.1f}" for v in result["load_average"])),
    ]
    for bits in ("8bit", "16bit"):
        r = result[bits]
        ratio, total = r["per_worker_ratio"], r["ram"]["total"]
        out += [
            (
                f"{bits} decode: per worker / total",
                f"{r['none']['per_worker']:.1f} / {r['none']['total']:.1f} samples/s",
            ),
            (
                f"{bits} ram: per worker / total",
                f"{r['ram']['per_worker']:.1f} / {total:.1f} samples/s",
            ),
            (
                f"{bits} ram: fill time, size",
                f"{r['ram']['fill_s']:.1f} s, {r['ram']['cache_gib']:.2f} GiB",
            ),
            (
                f"{bits} per-worker speed-up (target >= {PER_WORKER_TARGET:.0f}x)",
                f"{ratio:.0f}x, {verdict(ratio >= PER_WORKER_TARGET)}",
            ),
            (
                f"{bits} total with ram, {workers} workers (target >= {TOTAL_TARGET:.0f}/s)",
                f"{total:.0f} samples/s, {verdict(total >= TOTAL_TARGET)}",
            ),
        ]
    return out


if __name__ == "__main__":  # the same as run_all.py --only data: prints the table, saves the JSON
    from benchmarks.run_all import main

    raise SystemExit(main(["--only", "data", *sys.argv[1:]]))
