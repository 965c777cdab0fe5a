"""What a measurement ran on: the CPU model, the cores and threads, and the software versions.

A run's figures depend on its machine beyond its config: the same command, seed and thread count
give the same result to the last bit on one CPU model, but not across models (their math
libraries take other kernel paths). ``metrics.json`` and the benchmark results record this.

Virtual machines often report a generic model name ("AMD EPYC", "Intel(R) Xeon(R) Processor"),
so the record also holds the vendor, family, model and stepping, the vector extensions the CPU
announces, and the kernel path PyTorch picked for them (``torch.backends.cpu``), and the versions
of the packages that compute a figure besides PyTorch."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

import torch

#: The ``/proc/cpuinfo`` flags that decide which kernels the math libraries run.
VECTOR_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
    "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8",
)  # fmt: skip


#: The distributions whose arithmetic reaches a figure: the renderer, the image files, training.
PACKAGES = ("numpy", "opencv-python-headless", "pillow", "scipy", "lightning", "torchmetrics")


def package_versions() -> dict[str, str | None]:
    """The installed version of each of :data:`PACKAGES` (``None`` where it is not installed).

    The dependencies are declared as ranges, so two installs of one commit can differ here."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of ``/proc/cpuinfo``; empty where there is none."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return fields
    for line in text.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    return _cpuinfo().get("model name") or platform.processor() or "unknown"


def cpu_id(info: dict[str, str] | None = None) -> str | None:
    """Vendor, family, model and stepping, e.g. ``AuthenticAMD family 25 model 17 stepping 1``."""
    info = _cpuinfo() if info is None else info
    if "vendor_id" not in info:
        return None
    parts = [info["vendor_id"]] + [
        f"{k} {info[k]}" for k in ("cpu family", "model", "stepping") if k in info
    ]
    return " ".join(parts).replace("cpu family", "family")


def vector_flags(info: dict[str, str] | None = None) -> list[str]:
    """Which of :data:`VECTOR_FLAGS` the CPU announces, in that order."""
    info = _cpuinfo() if info is None else info
    present = set(info.get("flags", "").split())
    return [flag for flag in VECTOR_FLAGS if flag in present]


def describe() -> dict:
    info = _cpuinfo()
    return {
        "cpu": cpu_model(),
        "cpu_id": cpu_id(info),
        "cpu_flags": vector_flags(info),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "packages": package_versions(),
    }
