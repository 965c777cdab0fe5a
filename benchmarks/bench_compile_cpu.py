"""Compiled regions on the CPU: does ``compile: on`` pay for CPU training?

One NRKNet training step (forward, the paper's loss, backward, Adam) at the paper's batch of
4 256x256 crops, full width,
three ways, each in a fresh model: the plain model eagerly, the acceleration layer
(``accel: on``), and the plain model with its regions compiled by inductor
(:mod:`nrknet.accel.compile`), the last twice, each in a fresh process: with an empty
inductor cache (a first run) and with the graphs the first left in it (a later run or
sweep job). Reports the first step (for the compiled ones: the compile) and the median of
the later ones. ``compile: auto`` stays off on the CPU; this is the
measurement behind that choice. On a GPU, ``bench_gpu.py`` compares the compiled step.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def training_steps(
    way: str, steps: int, batch: int, size: int, width: int, backend: str = "inductor"
) -> list[float]:
    """Seconds of each of ``steps`` training steps of a fresh model, run ``way``."""
    from nrknet.accel import accelerate
    from nrknet.accel.compile import compile_regions, region_status
    from nrknet.models.nrknet import NRKNet
    from nrknet.training.losses import NRKNetLoss

    torch.manual_seed(0)
    model = NRKNet(width=width).train()
    if way == "accel":
        accelerate(model, "on", training=True)
    elif way == "compiled":
        compile_regions(model, {"backend": backend})
    loss = NRKNetLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(1)
    blurry, sharp = torch.rand(2, batch, 3, size, size, generator=g)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        out = model(blurry, sharp)
        loss(out, blurry, sharp, epoch=0)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    if way == "compiled":
        failed = {k: v for k, v in region_status(model).items() if v != "compiled"}
        if failed:
            raise RuntimeError(f"regions did not compile: {failed}")
    return times


def _compiled_in_fresh_process(
    steps: int, batch: int, size: int, width: int, backend: str, cache: str
) -> dict:
    """The compiled way in a new interpreter whose inductor cache is ``cache``."""
    from benchmarks.common import run_child

    code = (
        "import json; "
        "from benchmarks.bench_compile_cpu import training_steps; "
        f"t = training_steps('compiled', {steps}, {batch}, {size}, {width}, {backend!r}); "
        "print(json.dumps({'first_step_s': t[0], 'median_step_s': __import__('statistics').median(t[1:])}))"
    )
    return run_child(code, env={"TORCHINDUCTOR_CACHE_DIR": cache})


def run(quick: bool = False, backend: str = "inductor") -> dict:
    """Plain and accel here; compiled twice in fresh processes sharing a new, empty inductor
    cache: the first compiles from scratch, the second finds the graphs in the cache."""
    batch, size, width, steps = (1, 64, 8, 3) if quick else (4, 256, 64, 4)
    result = {
        "shape": f"{batch}x3x{size}x{size}",
        "width": width,
        "backend": backend,
        "torch_threads": torch.get_num_threads(),
    }
    for way in ("plain", "accel"):
        times = training_steps(way, steps, batch, size, width, backend)
        result[way] = {"first_step_s": times[0], "median_step_s": statistics.median(times[1:])}
    with tempfile.TemporaryDirectory(prefix="inductor_cache_") as cache:
        for way in ("compiled", "compiled_cached"):
            result[way] = _compiled_in_fresh_process(steps, batch, size, width, backend, cache)
    for way in ("plain", "accel", "compiled", "compiled_cached"):
        result[way]["steps"] = steps
    plain = result["plain"]["median_step_s"]
    result["compiled_vs_plain"] = plain / result["compiled"]["median_step_s"]
    result["accel_vs_plain"] = plain / result["accel"]["median_step_s"]
    return result


def rows(result: dict) -> list[tuple[str, str]]:
    out = [("training step", f"{result['shape']}, width {result['width']}, CPU, "
            f"{result['torch_threads']} threads")]  # fmt: skip
    labels = {
        "plain": "plain",
        "accel": "accel",
        "compiled": f"compiled ({result['backend']}), empty cache",
        "compiled_cached": f"compiled ({result['backend']}), cached graphs",
    }
    for way, label in labels.items():
        r = result[way]
        out.append(
            (
                label,
                f"{r['median_step_s']:.2f} s per step (first step {r['first_step_s']:.1f} s)",
            )
        )
    out.append(("speed-up against plain", f"compiled x{result['compiled_vs_plain']:.2f}, "
                f"accel x{result['accel_vs_plain']:.2f}"))  # fmt: skip
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
