"""What a measurement ran on: the CPU model, the cores and threads, and the software versions.

A run's figures depend on its machine beyond its config: the same command, seed and thread count
give the same result to the last bit on one CPU model, but not across models (their math
libraries take other kernel paths). ``metrics.json`` and the benchmark results record this.

Virtual machines often report a generic model name ("AMD EPYC", "Intel(R) Xeon(R) Processor"),
so the record also holds the vendor, family, model and stepping, the vector extensions the CPU
announces, and the kernel path PyTorch picked for them (``torch.backends.cpu``). The dependencies
are declared as ranges, so two installs of one commit can differ: the record lists the installed
version of each."""

from __future__ import annotations

import os
import platform
import re
from importlib import metadata
from pathlib import Path

import torch

#: The ``/proc/cpuinfo`` flags that decide which kernels the math libraries run.
VECTOR_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512cd", "avx512dq",
    "avx512bw", "avx512vl", "avx512ifma", "avx512vbmi", "avx512_vbmi2", "avx512_vnni",
    "avx512_bitalg", "avx512_vpopcntdq", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16",
    "amx_int8",
)  # fmt: skip

#: ``/proc/cpuinfo`` fields that identify an x86 CPU beyond its name, and their label.
ID_FIELDS = {"vendor_id": "", "cpu family": "family", "model": "model", "stepping": "stepping"}


def cpuinfo(text: str | None = None) -> dict[str, str]:
    """The first processor's fields of ``/proc/cpuinfo`` (or of ``text``); empty where there is none."""
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return {}
    fields: dict[str, str] = {}
    for line in text.strip().split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_model(info: dict[str, str]) -> str:
    """The CPU's model name, else what ``platform`` knows."""
    return info.get("model name") or platform.processor() or "unknown"


def cpu_id(info: dict[str, str]) -> str | None:
    """Vendor, family, model and stepping, e.g. ``AuthenticAMD family 25 model 17 stepping 1``;
    None where cpuinfo has no vendor (not x86, or no ``/proc``)."""
    if "vendor_id" not in info:
        return None
    return " ".join(
        f"{label} {info[key]}".strip() for key, label in ID_FIELDS.items() if key in info
    )


def vector_flags(info: dict[str, str]) -> list[str]:
    """Which of :data:`VECTOR_FLAGS` the CPU announces, in that order."""
    present = set(info.get("flags", "").split())
    return [flag for flag in VECTOR_FLAGS if flag in present]


def package_versions(distribution: str = "nrknet") -> dict[str, str | None]:
    """The installed version of each runtime requirement of ``distribution`` (None: not installed)."""
    try:
        requirements = metadata.requires(distribution) or []
    except metadata.PackageNotFoundError:
        return {}
    versions: dict[str, str | None] = {}
    for requirement in requirements:
        if "extra ==" in requirement:
            continue
        name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement).group(0)
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def describe() -> dict:
    info = cpuinfo()
    return {
        "cpu": cpu_model(info),
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
