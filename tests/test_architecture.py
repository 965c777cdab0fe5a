"""The layers of docs/architecture.md, enforced: a module imports only its own folder and the
layers below it (every import, at the top of a file or inside a function), and the package root
holds the entry points and little else."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "nrknet"

#: From the top down; a unit may import the units of lower layers, not those of its own layer.
LAYERS: list[tuple[str, ...]] = [
    ("train", "eval", "predict", "export", "convert", "synth", "demo"),  # the entry points
    ("cli",),  # their error reporter
    ("training",),
    ("inference",),
    ("analysis",),
    ("accel", "data", "metrics", "weights"),
    ("models",),
    ("ops",),
    ("utils",),
    ("errors",),
]
LAYER_OF = {unit: depth for depth, units in enumerate(LAYERS) for unit in units}


def unit_of(module: str) -> str:
    """``nrknet.training.module`` -> ``training``; ``nrknet.train`` -> ``train``."""
    return module.split(".")[1]


def imports_of(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name.startswith("nrknet.")]


def test_every_import_goes_down_the_layers():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if module == "nrknet.__init__":
            continue
        source = unit_of(module)
        assert source in LAYER_OF, f"{path}: {source} is in no layer of docs/architecture.md"
        for line, name in imports_of(path):
            target = unit_of(name)
            if target == source:
                continue
            if target not in LAYER_OF or LAYER_OF[target] <= LAYER_OF[source]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}")
    assert not wrong, "imports that do not go down the layers:\n" + "\n".join(wrong)


def test_the_layers_cover_the_package_and_its_root_holds_little():
    units = {p.stem for p in PACKAGE.glob("*.py")} | {
        p.parent.name for p in PACKAGE.glob("*/__init__.py")
    }
    units -= {"__init__"}
    assert units == set(LAYER_OF)
    root_modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(root_modules) <= 10, root_modules


def test_the_architecture_document_names_every_layer():
    text = (PACKAGE.parents[1] / "docs" / "architecture.md").read_text()
    for unit in LAYER_OF:
        assert f"`{unit}" in text, unit


def test_only_the_demo_imports_gradio():
    """Gradio (the ``demo`` extra) is imported by ``nrknet.demo`` alone, so every other command
    works, and starts as fast, without it."""
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).parts[0] == "demo":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(name.split(".")[0] in ("gradio", "gradio_client") for name in names):
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert not wrong, wrong


def test_importing_the_data_package_loads_no_framework():
    code = (
        "import sys, nrknet.data, nrknet.models, nrknet.ops; "
        "print(sorted(m for m in ('omegaconf', 'hydra', 'lightning', 'wandb') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_scripts_import_the_package_as_a_package():
    """Benchmarks, experiments and tests import ``benchmarks.*`` and ``experiments.*`` as packages
    (run as ``python -m`` from the repository root); nothing edits ``sys.path``."""
    root = PACKAGE.parents[1]
    edits = [
        f"{path.relative_to(root)}:{number}"
        for folder in ("benchmarks", "experiments", "tests", "src")
        for path in sorted((root / folder).rglob("*.py"))
        if path != Path(__file__).resolve()
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if "sys.path.insert" in line or "sys.path.append" in line
    ]
    assert not edits, edits
