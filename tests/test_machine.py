"""The machine record of a run: the CPU's identity and vector extensions read from cpuinfo."""

from pathlib import Path

import numpy as np

from nrknet.utils import machine
from nrknet.utils.machine import VECTOR_FLAGS, cpu_id, describe, vector_flags

XEON = {
    "vendor_id": "GenuineIntel",
    "cpu family": "6",
    "model": "143",
    "model name": "Intel(R) Xeon(R) Processor",
    "stepping": "8",
    "flags": "fpu sse4_2 avx avx2 fma avx512f avx512bw avx512vl amx_tile amx_bf16 lm",
}


def test_cpu_id_names_vendor_family_model_and_stepping():
    assert cpu_id(XEON) == "GenuineIntel family 6 model 143 stepping 8"
    assert cpu_id({}) is None


def test_vector_flags_keep_only_kernel_relevant_ones_in_a_fixed_order():
    assert vector_flags(XEON) == [
        "sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "amx_tile", "amx_bf16",
    ]  # fmt: skip
    assert vector_flags({"flags": "fpu lm"}) == []


def test_describe_reads_this_machines_cpuinfo():
    record = describe()
    if Path("/proc/cpuinfo").is_file():
        assert record["cpu_id"] and record["cpu_id"].split()[1] == "family"
    assert set(record["cpu_flags"]) <= set(VECTOR_FLAGS)
    assert record["torch_cpu_capability"]
    assert record["packages"]["numpy"] == np.__version__


def test_a_package_that_is_not_installed_is_recorded_as_none(monkeypatch):
    monkeypatch.setattr(machine, "PACKAGES", ("numpy", "no-such-distribution-nrknet"))
    versions = machine.package_versions()
    assert versions == {"numpy": np.__version__, "no-such-distribution-nrknet": None}
