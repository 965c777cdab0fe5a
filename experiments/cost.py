"""GPU-hours of each study's training at the speed measured on a GPU (``gpu.json``).

    python -m experiments.cost [STUDY ...] [--gpu benchmarks/results/gpu.json]
                               [--precision bf16-mixed] [--markdown]
                               [--variants benchmarks/results/gpu_variants.json]
                               [--sweep benchmarks/results/sweep_gpu.json]

For each row of a study (``experiments/<study>/table.yaml``), composed as
``make sweep`` runs it:

* crops = ``trainer.max_epochs`` x training pairs (one crop per pair per
  epoch; DPDD has 350 training pairs, LFDOF 11,261, a rendered set
  ``data.num_train``);
* the row's speed = the measured training rate / the row's relative cost: its
  eager bf16 step time over the full model's where ``--variants`` (a
  ``bench_gpu_variants.py`` result; by default
  ``benchmarks/results/gpu_variants.json`` where it exists) measured it, else
  its MACs over the full model's, both counted for one crop on the meta
  device; the measured model is NRKNet at full width on 256x256 crops;
* GPU-hours = crops / speed / 3600, for one job alone on one GPU.

The rate is the compiled bf16 rate at the row's batch size when ``gpu.json``
holds one (and the precision is ``bf16-mixed``), else the eager rate at the
row's precision (measured at batch 8). Validation and test are not counted.

With ``--sweep`` (a ``bench_sweep.py --size gpu`` result; by default
``benchmarks/results/sweep_gpu.json`` where it exists), each study also gets
the wall-clock hours of running its rows several at a time on one GPU, as
``make sweep ... JOBS=n`` does: the measured aggregate speed-up of k jobs at
once (linear between the measured k, flat beyond the largest) shared by the
k running jobs, jobs started in order as slots free up, for each measured n;
the fastest n is shown. The speed-ups were measured on the full model at
batch 4; other rows are assumed to share the GPU alike.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from experiments.study import StudyError, known_studies, load_study, settings_key
from nrknet.analysis.complexity import forward_macs

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "conf"
GPU_RESULTS = ROOT / "benchmarks" / "results" / "gpu.json"
VARIANT_RESULTS = ROOT / "benchmarks" / "results" / "gpu_variants.json"
SWEEP_RESULTS = ROOT / "benchmarks" / "results" / "sweep_gpu.json"
#: training pairs of the benchmark datasets (docs/datasets.md)
TRAINING_PAIRS = {"DPDDDataModule": 350, "LFDOFDataModule": 11_261}
MEASURED_MODEL = "model=nrknet"  # the network bench_gpu.py times
#: the row bench_gpu_variants.py prices the others against: the full model, the paper's recipe
REFERENCE_ROW = {"experiment": "nrknet_dpdd"}
MEASURED_CROP = 256


@dataclass
class RowCost:
    label: str
    crops: int
    relative_cost: float  # time (or MACs) per crop against the measured model
    images_per_s: float
    rate_source: str

    @property
    def gpu_hours(self) -> float:
        return self.crops / self.images_per_s / 3600


def compose_row(overrides: list[str]) -> DictConfig:
    """``conf/train.yaml`` with a row's overrides, as ``nrknet-train`` composes it."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def training_pairs(data: DictConfig) -> int:
    kind = str(data._target_).rsplit(".", 1)[-1]
    if kind == "SyntheticDataModule":
        return int(data.num_train)
    if kind not in TRAINING_PAIRS:
        raise StudyError(
            f"data._target_ {data._target_}: no training-set size known for {kind}; "
            f"expected one of {', '.join([*TRAINING_PAIRS, 'SyntheticDataModule'])}"
        )
    return TRAINING_PAIRS[kind]


def macs_per_crop(model: DictConfig, crop: int) -> float:
    """Multiply-accumulates of one forward pass on a ``crop`` x ``crop`` image."""
    return forward_macs(lambda: instantiate(model), crop, crop)


def measured_rate(gpu: dict, precision: str, batch: int) -> tuple[float, str]:
    """Training images/s from ``gpu.json`` for this precision and batch, and where it came from."""
    compiled = gpu.get("compile", {}).get(f"training_bf16_batch{batch}", {}).get("compiled")
    if precision == "bf16-mixed" and compiled and "images_per_s" in compiled:
        return compiled["images_per_s"], f"compiled, bf16, batch {batch}"
    eager = gpu.get("training", {}).get(precision)
    if not eager or "images_per_s" not in eager:
        measured = ", ".join(gpu.get("training", {})) or "none"
        raise StudyError(
            f"gpu.json has no training rate for precision {precision!r} (measured: {measured})"
        )
    return eager["images_per_s"], f"eager, {precision}, batch {gpu['training'].get('shape', '?')}"


def measured_relative_cost(variants: dict | None, settings: dict) -> float | None:
    """The row's step time over the full model's, from a ``bench_gpu_variants.py`` result."""
    if not variants:
        return None
    measured = variants.get("variants", {})
    row = measured.get(variants.get("rows", {}).get(settings_key(settings)), {})
    reference = measured.get(variants.get("reference"), {})
    if "images_per_s" not in row or "images_per_s" not in reference:
        return None
    return reference["images_per_s"] / row["images_per_s"]


def study_costs(
    study: str, gpu: dict, precision: str | None = None, variants: dict | None = None
) -> list[RowCost]:
    """Each row's crops and rate; ``variants``: measured costs of the rows (else MACs)."""
    reference_macs = macs_per_crop(compose_row([MEASURED_MODEL]).model, MEASURED_CROP)
    costs = []
    for row in load_study(study)["rows"]:
        cfg = compose_row([f"{key}={value}" for key, value in row["settings"].items()])
        crops = int(cfg.trainer.max_epochs) * training_pairs(cfg.data)
        rate, source = measured_rate(
            gpu, precision or str(cfg.trainer.precision), int(cfg.data.batch_size)
        )
        relative = measured_relative_cost(variants, row["settings"])
        if relative is None:
            relative = macs_per_crop(cfg.model, int(cfg.data.crop_size)) / reference_macs
            source += "; row by MACs"
        else:
            source += "; row by its eager bf16 step"
        costs.append(RowCost(row["label"], crops, relative, rate / relative, source))
    return costs


def concurrency_speedups(sweep: dict) -> dict[int, float]:
    """Aggregate images/s of k jobs at once over that of one job, per measured k."""
    rates = {int(r["concurrent"]): float(r["images_per_s"]) for r in sweep.get("results", [])}
    if 1 not in rates:
        measured = ", ".join(map(str, sorted(rates))) or "none"
        raise StudyError(f"the sweep result has no single-job rate (jobs at once: {measured})")
    return {k: rate / rates[1] for k, rate in sorted(rates.items())}


def speedup_function(speedups: dict[int, float]) -> Callable[[int], float]:
    """Speed-up for any k: linear between measured k, flat beyond the largest."""
    ks = sorted(speedups)
    return lambda k: float(np.interp(k, ks, [speedups[m] for m in ks]))


def concurrent_hours(durations: list[float], jobs: int, speedup: Callable[[int], float]) -> float:
    """Wall-clock time of runs that take ``durations`` alone, ``jobs`` at a time in order: with
    k running, each advances at ``speedup(k) / k`` of its speed alone."""
    pending, running, clock = list(durations), [], 0.0
    while pending or running:
        while pending and len(running) < jobs:
            running.append(pending.pop(0))
        pace = speedup(len(running)) / len(running)
        step = min(running) / pace
        clock += step
        running = [left - step * pace for left in running]
        running = [left for left in running if left > 1e-9 * max(durations)]
    return clock


def best_concurrency(costs: list[RowCost], speedups: dict[int, float]) -> tuple[int, float]:
    """The measured number of jobs at once that finishes the study first, and its hours."""
    durations, speedup = [c.gpu_hours for c in costs], speedup_function(speedups)
    options = [(concurrent_hours(durations, n, speedup), n) for n in speedups]
    hours_taken, n = min(options)
    return n, hours_taken


def hours(value: float) -> str:
    return f"{value:,.1f}" if value >= 1 else f"{value:.2f}"


def render(
    study: str, costs: list[RowCost], markdown: bool, speedups: dict[int, float] | None = None
) -> str:
    total = sum(c.gpu_hours for c in costs)
    lines = [f"{study}: {hours(total)} GPU-hours in {len(costs)} runs"]
    if markdown:
        lines = [
            f"| {study} | row | crops | cost vs measured model | images/s | rate | GPU-hours |",
            "|---|---|---|---|---|---|---|",
        ]
    for c in costs:
        cells = [c.label, f"{c.crops:,}", f"{c.relative_cost:.2f}x", f"{c.images_per_s:.1f}"]
        cells += [c.rate_source, hours(c.gpu_hours)]
        lines.append("| | " + " | ".join(cells) + " |" if markdown else "  " + "; ".join(cells))
    if markdown:
        lines.append(f"| | **total** | | | | | **{hours(total)}** |")
    if speedups:
        n, wall = best_concurrency(costs, speedups)
        label = f"one GPU, {n} job{'s' if n > 1 else ''} at once (wall-clock)"
        lines.append(
            f"| | **{label}** | | | | | **{hours(wall)}** |"
            if markdown
            else f"  {label}: {hours(wall)} hours"
        )
    return "\n".join(lines)


def read_result(path: Path, what: str) -> dict:
    """A benchmark's JSON file, or a :class:`StudyError` naming the file and what it should be."""
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StudyError(f"{path}: cannot read a {what} ({exc})") from exc
    if not isinstance(result, dict):
        raise StudyError(f"{path}: cannot read a {what} (expected a JSON object)")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cost", description=__doc__.split("\n")[0])
    parser.add_argument("studies", nargs="*", help=f"default: all ({', '.join(known_studies())})")
    parser.add_argument("--gpu", type=Path, default=GPU_RESULTS, help="a bench_gpu.py result")
    parser.add_argument("--precision", help="instead of each row's trainer.precision")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument(
        "--variants",
        type=Path,
        default=VARIANT_RESULTS if VARIANT_RESULTS.is_file() else None,
        help="a bench_gpu_variants.py result: each row's measured cost instead of its MACs",
    )
    parser.add_argument(
        "--sweep",
        type=Path,
        default=SWEEP_RESULTS if SWEEP_RESULTS.is_file() else None,
        help="a bench_sweep.py --size gpu result, for the hours with several jobs at once",
    )
    args = parser.parse_args(argv)
    try:
        gpu = read_result(args.gpu, "GPU benchmark result")
        if "training" not in gpu:
            reason = gpu.get("skipped", "no 'training' key")
            raise StudyError(f"{args.gpu}: no training rates in it ({reason})")
        variants = read_result(args.variants, "variants result") if args.variants else None
        sweep = read_result(args.sweep, "sweep benchmark result") if args.sweep else None
        try:
            speedups = concurrency_speedups(sweep) if sweep else None
        except (KeyError, TypeError, ValueError) as exc:  # StudyError is a ValueError
            raise StudyError(f"{args.sweep}: cannot read a sweep benchmark result ({exc})") from exc
    except StudyError as exc:
        print(f"cost: {exc}", file=sys.stderr)
        return 2
    if variants is not None and "variants" in variants:
        toy = " at toy sizes, not for real estimates" if variants.get("quick") else ""
        print(f"row costs measured on {variants.get('device')}{toy}")
    elif variants is not None:  # e.g. `make bench` on a machine without a GPU: priced by MACs
        reason = variants.get("skipped", "no 'variants' key")
        print(f"{args.variants}: no measured row costs ({reason}); rows priced by MACs")
        variants = None
    if speedups:
        shown = ", ".join(f"{k}: x{v:.2f}" for k, v in speedups.items())
        print(f"jobs at once on one GPU, aggregate speed-up ({sweep.get('device')}): {shown}")
    machine = gpu.get("machine", {})
    print(
        f"rates measured on {gpu.get('device')} ({machine.get('date', '?')}, torch {gpu.get('torch')})"
    )
    try:
        for study in args.studies or known_studies():
            costs = study_costs(study, gpu, args.precision, variants)
            print(render(study, costs, args.markdown, speedups))
    except StudyError as exc:
        print(f"cost: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
