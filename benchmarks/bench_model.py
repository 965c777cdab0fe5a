"""Model figures: parameters, MACs, CPU inference at 1280x720, RKR operator vs explicit convolution."""

from __future__ import annotations

import time

import torch

from nrknet.accel import accelerate
from nrknet.analysis.complexity import forward_macs
from nrknet.models.nrknet import NRKNet, count_parameters
from nrknet.ops.atoms import RecursiveAtoms
from nrknet.ops.rkr import RKRBlur, explicit_spatially_varying_blur

try:
    from benchmarks.common import run_child
except ImportError:  # run as a script from the benchmarks folder
    from common import run_child

INFERENCE_CHILD = """
import json, resource, time, torch
from nrknet.accel import accelerate
from nrknet.models.nrknet import NRKNet
torch.manual_seed(0)
model = accelerate(NRKNet(width={width}).eval())
x = torch.rand(1, 3, {height}, {img_width})
start = time.perf_counter()
with torch.inference_mode():
    y = model(x)
elapsed = time.perf_counter() - start
print(json.dumps({{"inference_s": elapsed, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def macs(width: int = 64, height: int = 720, img_width: int = 1280) -> float:
    """Multiply-accumulates of one inference, counted on the meta device."""
    # The plain model: the accelerated inference path recomputes halo rows between bands.
    return forward_macs(lambda: NRKNet(width=width), height, img_width)


def rkr_vs_explicit(size: int = 512, band_rows: int = 16, repeats: int = 3) -> dict:
    torch.manual_seed(0)
    op = accelerate(RKRBlur(RecursiveAtoms(21), mixing="conv1x1"))
    x = torch.rand(1, 3, size, size)
    gamma = torch.randn(1, 22, size, size)
    with torch.inference_mode():
        fast_times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fast = op(x, gamma)
            fast_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        explicit = explicit_spatially_varying_blur(x, op, gamma, band_rows=band_rows)
        explicit_time = time.perf_counter() - start
    fast_time = sorted(fast_times)[len(fast_times) // 2]
    return {
        "size": size,
        "rkr_s": fast_time,
        "explicit_s": explicit_time,
        "speedup": explicit_time / fast_time,
        "max_abs_diff": (fast - explicit).abs().max().item(),
    }


def run(quick: bool = False) -> dict:
    height, img_width = 720, 1280
    result = {
        "parameters": count_parameters(NRKNet()),
        "macs_g_1280x720": macs(64, height, img_width) / 1e9,
    }
    code = INFERENCE_CHILD.format(width=64, height=height, img_width=img_width)
    result["inference_1280x720"] = run_child(code, repeats=1 if quick else 3)
    result["rkr_operator"] = rkr_vs_explicit(256 if quick else 512, repeats=1 if quick else 3)
    return result


def rows(result: dict) -> list[tuple[str, str]]:
    inf = result["inference_1280x720"]
    rkr = result["rkr_operator"]
    return [
        ("parameters", f"{result['parameters']:,}"),
        ("MACs at 1280x720", f"{result['macs_g_1280x720']:.1f} G"),
        (
            "CPU inference 1280x720 (median)",
            f"{inf['inference_s']:.1f} s (process {inf['process_wall_s']:.1f} s)",
        ),
        ("peak memory, whole process", f"{inf['peak_rss_mb'] / 1024:.2f} GiB"),
        (f"RKR operator {rkr['size']}x{rkr['size']}", f"{rkr['rkr_s'] * 1000:.0f} ms"),
        (
            f"explicit spatially varying conv {rkr['size']}x{rkr['size']}",
            f"{rkr['explicit_s']:.2f} s",
        ),
        ("RKR speed-up / max |diff|", f"{rkr['speedup']:.0f}x / {rkr['max_abs_diff']:.1e}"),
    ]


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
