"""Speed and memory: our accelerated model against the reference-style computation.

"Ours" is the model with the acceleration layer on (``nrknet.accel``, as
``accel: auto`` gives on CPU). Three measurements, each alternating between it
and the reference-style path (:mod:`benchmarks.reference_style`: the same
weights evaluated the way the reference implementation does, every padding a
copy and the 66-channel atom stack materialised) in the same run, so the
ratios hold on a busy machine too:

* CPU inference of one 1280x720 image at full width (6.09 M parameters): wall
  time of the whole process and of the forward pass, CPU time, peak resident
  memory of the whole process (``ru_maxrss``), each in a fresh interpreter,
  median over the repeats;
* one CPU training step (forward, backward, Adam) at batch 4 x 3 x 256 x 256,
  in a fresh interpreter after one warm-up step, median step time, peak memory;
* the RKR operator (atom stack, coefficients, mixing) at 1280x720 against the
  direct form that materialises all 66 channels, in process, same result.

The figures of the reference implementation itself, measured on a 2-core
machine of the same class, are quoted for context.
"""

from __future__ import annotations

import os
import statistics
import time

import torch

from nrknet.accel import accelerate
from nrknet.ops.atoms import RecursiveAtoms
from nrknet.ops.rkr import RKRBlur

try:
    from benchmarks.common import run_child
    from benchmarks.reference_style import reference_blur
except ImportError:  # run as a script from the benchmarks folder
    from common import run_child
    from reference_style import reference_blur

#: Lets the children import ``benchmarks.reference_style`` from any working directory.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The reference implementation at full width on a 2-core CPU machine (one run each).
REFERENCE = {
    "inference_s": 30.0,
    "inference_peak_gb": 2.5,
    "train_step_s": 26.0,
    "train_peak_gb": 4.5,
}
#: The project's targets, as fractions of the reference's figures.
TARGETS = {"inference_s": 0.75, "inference_peak": 0.5, "train_step_s": 0.8, "train_peak": 0.6}

INFERENCE_CHILD = """
import json, resource, sys, time, torch
from benchmarks.reference_style import reference_forward
from nrknet.accel import accelerate
from nrknet.models.nrknet import NRKNet
torch.manual_seed(0)
model = accelerate(NRKNet(width={width}).eval(), "on" if {ours} else "off")
x = torch.rand(1, 3, {height}, {width_px})
start, cpu = time.perf_counter(), time.process_time()
with torch.inference_mode():
    y = model(x) if {ours} else reference_forward(model, x)
elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
print(json.dumps({{"forward_s": elapsed, "cpu_s": cpu,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "checksum": float(y.double().mean())}}))
"""

TRAIN_CHILD = """
import json, resource, statistics, sys, time, torch
import torch.nn.functional as F
from benchmarks.reference_style import reference_forward
from nrknet.accel import accelerate
from nrknet.models.nrknet import NRKNet
torch.manual_seed(0)
model = accelerate(NRKNet(width={width}).train(), "on" if {ours} else "off", training=True)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
blurry = torch.rand({batch}, 3, {size}, {size})
sharp = torch.rand({batch}, 3, {size}, {size})

def step():
    out = model(blurry, sharp) if {ours} else reference_forward(model, blurry, sharp)
    loss = sum(
        F.mse_loss(s, F.interpolate(sharp, size=s.shape[-2:], mode="bilinear", align_corners=False))
        for s in out.scales
    )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()

step()  # first-call costs (kernel generation) are not part of a step
times, cpu = [], []
for _ in range({steps}):
    start, c = time.perf_counter(), time.process_time()
    loss = step()
    times.append(time.perf_counter() - start)
    cpu.append(time.process_time() - c)
print(json.dumps({{"step_s": statistics.median(times), "cpu_s": statistics.median(cpu),
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "loss": loss}}))
"""


def _alternate(codes: dict[str, str], repeats: int) -> dict[str, dict]:
    """Run each child ``repeats`` times, alternating between them; median of each figure."""
    runs: dict[str, list[dict]] = {name: [] for name in codes}
    for _ in range(repeats):
        for name, code in codes.items():
            runs[name].append(run_child(code, repeats=1))
    summary = {}
    for name, results in runs.items():
        keys = [k for k in results[0] if k != "repeats"]
        summary[name] = {k: statistics.median(r[k] for r in results) for k in keys}
        summary[name]["runs"] = [{k: r[k] for k in keys} for r in results]
        summary[name]["repeats"] = repeats
    return summary


def inference(height: int, width_px: int, repeats: int, width: int = 64) -> dict:
    codes = {
        name: INFERENCE_CHILD.format(
            root=ROOT, width=width, height=height, width_px=width_px, ours=ours
        )
        for name, ours in (("ours", True), ("reference_path", False))
    }
    result = _alternate(codes, repeats)
    result["size"] = f"{width_px}x{height}"
    return result


def training(batch: int, size: int, steps: int, repeats: int, width: int = 64) -> dict:
    codes = {
        name: TRAIN_CHILD.format(
            root=ROOT, width=width, batch=batch, size=size, steps=steps, ours=ours
        )
        for name, ours in (("ours", True), ("reference_path", False))
    }
    result = _alternate(codes, repeats)
    result["shape"] = f"{batch}x3x{size}x{size}"
    return result


def rkr_operator(height: int, width_px: int, repeats: int) -> dict:
    """Our (accelerated) RKR operator against the direct 66-channel form, alternating, median wall time."""
    torch.manual_seed(0)
    op = accelerate(RKRBlur(RecursiveAtoms(21), mixing="conv1x1"), "on")
    with torch.no_grad():
        op.atoms.logits.normal_(0, 1.5)
    x = torch.rand(1, 3, height, width_px)
    gamma = torch.randn(1, 22, height, width_px)
    times: dict[str, list[float]] = {"ours": [], "direct": []}
    with torch.inference_mode():
        fast = op(x, gamma)
        direct = reference_blur(op, x, gamma)
        max_diff = (fast - direct).abs().max().item()
        del fast, direct
        for _ in range(repeats):
            for name, fn in (("ours", op), ("direct", lambda a, b: reference_blur(op, a, b))):
                start = time.perf_counter()
                fn(x, gamma)
                times[name].append(time.perf_counter() - start)
    ours, direct = statistics.median(times["ours"]), statistics.median(times["direct"])
    return {
        "size": f"{width_px}x{height}",
        "ours_s": ours,
        "direct_s": direct,
        "speedup": direct / ours,
        "max_abs_diff": max_diff,
        "times": times,
    }


#: Sizes of the full run (the quoted figures' settings) and of the quick one.
SIZES = {
    "full": {
        "inference": dict(height=720, width_px=1280, repeats=3),
        "training": dict(batch=4, size=256, steps=2, repeats=2),
        "rkr_operator": dict(height=720, width_px=1280, repeats=5),
    },
    "quick": {  # smaller sizes, one repeat: checks that everything runs
        "inference": dict(height=352, width_px=640, repeats=1),
        "training": dict(batch=2, size=128, steps=1, repeats=1),
        "rkr_operator": dict(height=352, width_px=640, repeats=3),
    },
}


def run(quick: bool = False, sizes: dict | None = None, width: int = 64) -> dict:
    """Measure at ``sizes`` (default: the full or quick set); compare with the quoted
    reference figures only at the full sizes and width."""
    sizes = sizes or SIZES["quick" if quick else "full"]
    load_before = os.getloadavg()
    result = {
        "inference": inference(**sizes["inference"], width=width),
        "training": training(**sizes["training"], width=width),
        "rkr_operator": rkr_operator(**sizes["rkr_operator"]),
        "width": width,
        "reference_quoted": REFERENCE,
        "targets": TARGETS,
        "load_average": {"before": load_before, "after": os.getloadavg()},
    }
    ours_inf, ours_train = result["inference"]["ours"], result["training"]["ours"]
    ref_inf, ref_train = result["inference"]["reference_path"], result["training"]["reference_path"]
    result["ratios"] = {
        "inference_time_vs_reference_path": ours_inf["process_wall_s"] / ref_inf["process_wall_s"],
        "inference_peak_vs_reference_path": ours_inf["peak_rss_mb"] / ref_inf["peak_rss_mb"],
        "train_step_vs_reference_path": ours_train["step_s"] / ref_train["step_s"],
        "train_peak_vs_reference_path": ours_train["peak_rss_mb"] / ref_train["peak_rss_mb"],
    }
    if sizes == SIZES["full"] and width == 64:
        result["ratios"].update(
            {
                "inference_time_vs_quoted": ours_inf["process_wall_s"] / REFERENCE["inference_s"],
                "inference_peak_vs_quoted": _gb(ours_inf["peak_rss_mb"])
                / REFERENCE["inference_peak_gb"],
                "train_step_vs_quoted": ours_train["step_s"] / REFERENCE["train_step_s"],
                "train_peak_vs_quoted": _gb(ours_train["peak_rss_mb"]) / REFERENCE["train_peak_gb"],
            }
        )
    return result


def _gb(mib: float) -> float:
    """``ru_maxrss`` in MiB to GB (10^9 bytes), the unit of the quoted figures."""
    return mib * 2**20 / 1e9


def rows(result: dict) -> list[tuple[str, str]]:
    inf, train, rkr = result["inference"], result["training"], result["rkr_operator"]
    ratios = result["ratios"]

    def inference_row(r: dict) -> str:
        return (
            f"{r['process_wall_s']:.1f} s process ({r['forward_s']:.1f} s forward, "
            f"{r['cpu_s']:.0f} s CPU), peak {_gb(r['peak_rss_mb']):.2f} GB"
        )

    def train_row(r: dict) -> str:
        return f"{r['step_s']:.1f} s/step ({r['cpu_s']:.0f} s CPU), peak {_gb(r['peak_rss_mb']):.2f} GB"

    out = [
        (f"inference {inf['size']}, ours", inference_row(inf["ours"])),
        (f"inference {inf['size']}, reference-style path", inference_row(inf["reference_path"])),
        (
            "  ours / reference-style (time, peak)",
            f"{ratios['inference_time_vs_reference_path']:.2f} x, "
            f"{ratios['inference_peak_vs_reference_path']:.2f} x",
        ),
        (f"training step {train['shape']}, ours", train_row(train["ours"])),
        (f"training step {train['shape']}, reference-style", train_row(train["reference_path"])),
        (
            "  ours / reference-style (time, peak)",
            f"{ratios['train_step_vs_reference_path']:.2f} x, "
            f"{ratios['train_peak_vs_reference_path']:.2f} x",
        ),
    ]
    if "inference_time_vs_quoted" in ratios:
        ref = result["reference_quoted"]
        out += [
            (
                "reference implementation (quoted, 2-core machine)",
                f"inference {ref['inference_s']:.0f} s, {ref['inference_peak_gb']} GB; "
                f"step {ref['train_step_s']:.0f} s, {ref['train_peak_gb']} GB",
            ),
            (
                "  ours / quoted: inference (target <= 0.75, 0.5)",
                f"{ratios['inference_time_vs_quoted']:.2f} x, "
                f"{ratios['inference_peak_vs_quoted']:.2f} x",
            ),
            (
                "  ours / quoted: training (target <= 0.8, 0.6)",
                f"{ratios['train_step_vs_quoted']:.2f} x, {ratios['train_peak_vs_quoted']:.2f} x",
            ),
        ]
    out += [
        (
            f"RKR operator {rkr['size']}: ours / 66-channel stack",
            f"{rkr['ours_s'] * 1000:.0f} ms / {rkr['direct_s'] * 1000:.0f} ms",
        ),
        (
            "  speed-up (target >= 3) / max |diff|",
            f"{rkr['speedup']:.1f} x / {rkr['max_abs_diff']:.1e}",
        ),
        (
            "load average before / after",
            " / ".join(f"{v[0]:.1f}" for v in result["load_average"].values()),
        ),
    ]
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
