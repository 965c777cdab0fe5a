"""CPU: one training step of each Table 3 row at the studies' CPU scale, accelerated and plain.

The rows of ``table3_rkr`` differ only in their atom bank. At ``scale=cpu`` (width 16,
J = 20, the residual blur operator, batch 8 at 128 px, the paper's loss) each row's
network and loss are built from its composed config and trained for a few steps on
random crops with Adam, on one thread, as one run of ``make studies JOBS=2`` trains.
The accelerated (``accel=on``, what ``auto`` gives on the CPU) and the plain model
alternate step by step, so the ratio holds on a busy machine; the median step of each
is reported. The non-recursive and non-separable atoms are independent kernels up to
41 x 41, applied directly by the plain model and by FFT by the accelerated one
(:mod:`nrknet.accel.atoms`).

Usage: python -m benchmarks.bench_atoms [--quick]
(``--quick``: width 4, batch 2 at 64 px, one step each.)
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch
from omegaconf import OmegaConf

STUDY = "table3_rkr"


def _row_parts(row: dict) -> tuple[dict, dict, int, int]:
    from experiments.runs import compose_run, row_overrides

    config, _ = compose_run(row_overrides(row, "cpu"))
    return (
        config["model"],
        config["loss"],
        config["data"]["batch_size"],
        config["data"]["crop_size"],
    )


def _step_time(model, criterion, optimizer, blurry, sharp) -> float:
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    out = model(blurry, sharp)
    criterion(out, blurry, sharp, epoch=0)["loss"].backward()
    optimizer.step()
    return time.perf_counter() - start


def time_row(row: dict, quick: bool, steps: int) -> dict:
    from hydra.utils import instantiate

    from nrknet.accel import accelerate

    model_cfg, loss_cfg, batch, crop = _row_parts(row)
    if quick:
        model_cfg, batch, crop = dict(model_cfg, width=4), 2, 64
    torch.manual_seed(0)
    plain = instantiate(OmegaConf.create(model_cfg))
    fast = accelerate(copy.deepcopy(plain), "on", training=True)
    criterion = instantiate(OmegaConf.create(loss_cfg))
    blurry, sharp = torch.rand(2, batch, 3, crop, crop)
    pairs = {
        "accelerated": (fast, torch.optim.Adam(fast.parameters(), 1e-3)),
        "plain": (plain, torch.optim.Adam(plain.parameters(), 1e-3)),
    }
    times: dict[str, list[float]] = {name: [] for name in pairs}
    for model, optimizer in pairs.values():  # warm-up
        _step_time(model, criterion, optimizer, blurry, sharp)
    for _ in range(steps):
        for name, (model, optimizer) in pairs.items():
            times[name].append(_step_time(model, criterion, optimizer, blurry, sharp))
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "atoms": model_cfg.get("atoms", "recursive"),
        "shape": f"{batch}x3x{crop}x{crop}",
        "accelerated_step_s": medians["accelerated"],
        "plain_step_s": medians["plain"],
        "speedup": medians["plain"] / medians["accelerated"],
        "steps": steps,
    }


def run(quick: bool = False) -> dict:
    from experiments.study import load_study

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = {
            row["label"]: time_row(row, quick, steps=1 if quick else 3)
            for row in load_study(STUDY)["rows"]
        }
    finally:
        torch.set_num_threads(threads)
    return {"study": STUDY, "scale": "cpu", "threads": 1, "quick": quick, "rows": rows}


def rows(result: dict) -> list[tuple[str, str]]:
    return [
        (
            f"{label} ({figures['atoms']}, {figures['shape']})",
            f"{figures['accelerated_step_s']:.2f} s accelerated, {figures['plain_step_s']:.2f} s plain "
            f"({figures['speedup']:.1f}x)",
        )
        for label, figures in result["rows"].items()
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    result = run(args.quick)
    for label, value in rows(result):
        print(f"{label}: {value}")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
