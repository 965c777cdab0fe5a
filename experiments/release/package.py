"""Turn a training run's checkpoint into a bundled model: weights only, sha256, registry entry.

    python -m experiments.release.package RUN_DIR NAME [--ckpt last] [--description TEXT] [--write]

Reads ``RUN_DIR/checkpoints/<ckpt>.ckpt``, writes the model alone (no
optimizer state) to ``src/nrknet/weights/files/NAME.ckpt`` and prints the
registry entry to put under ``entries:`` in ``src/nrknet/weights/registry.yaml``
(with ``--write``, replaces or adds it there). The run's recipe (its
``.hydra/config.yaml``), epoch and step go into the file beside the weights, so
that the shipped model says how it was made.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

from nrknet.weights.checkpoint import read_checkpoint

ROOT = Path(__file__).resolve().parents[2]
FILES = ROOT / "src" / "nrknet" / "weights" / "files"
REGISTRY = ROOT / "src" / "nrknet" / "weights" / "registry.yaml"


def read_run(run_dir: Path, ckpt: str = "last") -> tuple[Path, dict, dict | None]:
    """A training run's checkpoint file, its contents, and its Hydra config (``None`` if absent)."""
    source = run_dir / "checkpoints" / f"{ckpt}.ckpt"
    lightning = read_checkpoint(source)
    config_file = run_dir / ".hydra" / "config.yaml"
    recipe = yaml.safe_load(config_file.read_text()) if config_file.is_file() else None
    return source, lightning, recipe


def package(
    run_dir: Path, name: str, ckpt: str = "last", files_dir: Path = FILES
) -> tuple[Path, dict]:
    """Write the weights of ``run_dir``'s checkpoint as ``files/NAME.ckpt``; return it and its entry."""
    from nrknet.weights.checkpoint import load_model, save_model
    from nrknet.weights.download import sha256_of

    source, lightning, recipe = read_run(run_dir, ckpt)
    model = load_model(source)
    target = files_dir / f"{name}.ckpt"
    save_model(
        model,
        target,
        release={
            "name": name,
            "epoch": int(lightning.get("epoch", -1)),
            "global_step": int(lightning.get("global_step", -1)),
            "recipe": recipe,
        },
    )
    entry = {
        "description": "",
        "kind": "bundled",
        "format": "nrknet",
        "filename": target.name,
        "sha256": sha256_of(target),
        "model": {
            **{k: v for k, v in model.config.items() if isinstance(v, int | float | str | bool)},
            "num_parameters": sum(p.numel() for p in model.parameters()),
        },
    }
    return target, entry


def write_entry(name: str, entry: dict, registry: Path = REGISTRY) -> None:
    """Replace entry ``name`` in the registry (or append it), keeping the rest of the file as is."""
    text = registry.read_text()
    block = yaml.safe_dump({name: entry}, sort_keys=False, default_flow_style=None)
    block = "\n".join("  " + line if line else line for line in block.splitlines()) + "\n"
    pattern = re.compile(rf"^  {re.escape(name)}:\n(?:(?:    .*)?\n)*", re.MULTILINE)
    if pattern.search(text):
        text = pattern.sub(block + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block
    registry.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="package", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("name")
    parser.add_argument("--ckpt", default="last", help="checkpoint name in RUN_DIR/checkpoints")
    parser.add_argument("--description", default="")
    parser.add_argument("--write", action="store_true", help="update registry.yaml")
    args = parser.parse_args(argv)
    target, entry = package(args.run_dir, args.name, args.ckpt)
    entry["description"] = args.description
    print(f"wrote {target} ({target.stat().st_size:,} bytes, sha256 {entry['sha256']})")
    print(yaml.safe_dump({args.name: entry}, sort_keys=False))
    if args.write:
        write_entry(args.name, entry)
        print(f"updated {REGISTRY}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
