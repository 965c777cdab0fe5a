"""The machine record of a run: the CPU's identity and vector extensions, the installed packages."""

import numpy as np

from nrknet.utils import machine
from nrknet.utils.machine import VECTOR_FLAGS, cpu_id, cpuinfo, describe, vector_flags

TWO_XEONS = """\
processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Processor
stepping\t: 8
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512bw avx512vl amx_tile amx_bf16 lm

processor\t: 1
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 106
model name\t: another
stepping\t: 6
flags\t\t: fpu sse4_2
"""

ARM = """\
processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes sve
CPU implementer\t: 0x41
"""


def test_the_first_processors_fields_are_read():
    info = cpuinfo(TWO_XEONS)
    assert info["model name"] == "Intel(R) Xeon(R) Processor"
    assert cpu_id(info) == "GenuineIntel family 6 model 143 stepping 8"
    assert vector_flags(info) == [
        "sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "amx_tile", "amx_bf16",
    ]  # fmt: skip


def test_a_cpu_without_x86_fields_has_no_id_and_no_flags():
    info = cpuinfo(ARM)
    assert cpu_id(info) is None
    assert vector_flags(info) == []
    assert cpuinfo("") == {}


def test_describe_reads_this_machine():
    record = describe()
    if "vendor_id" in cpuinfo():
        assert record["cpu_id"].split()[1] == "family"
    assert set(record["cpu_flags"]) <= set(VECTOR_FLAGS)
    assert record["torch_cpu_capability"]
    assert record["packages"]["numpy"] == np.__version__


def test_packages_are_the_runtime_requirements_with_none_for_a_missing_one(monkeypatch):
    requires = ["numpy>=1.24", "no-such-distribution-nrknet>=1", 'ruff>=0.5; extra == "dev"']
    monkeypatch.setattr(machine.metadata, "requires", lambda name: requires)
    assert machine.package_versions() == {
        "numpy": np.__version__,
        "no-such-distribution-nrknet": None,
    }
