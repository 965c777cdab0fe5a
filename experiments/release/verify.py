"""Check that a rerun of the release recipe reproduces a bundled model.

    python -m experiments.release.verify RUN_DIR NAME [--ckpt last] [--atol 0] [--json FILE]

Loads ``RUN_DIR/checkpoints/<ckpt>.ckpt`` (the rerun) and the bundled model
``NAME`` (resolved through the registry, its sha256 checked), and compares
them tensor by tensor: parameters and buffers, same names, same shapes. It
also compares the training config of the rerun with the recipe recorded in
the bundled file (run-specific paths aside), so that a match means "same
recipe, same weights". Exit status 0 when every tensor is within ``--atol``
(0: bit for bit) and the recipes agree, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from experiments.release.package import read_run
from nrknet.utils.config import config_differences

# Where a run writes, not how it trains: these may differ between a run and its rerun.
RUN_SPECIFIC_KEYS = ("paths", "hydra", "ckpt_path", "logger")


def tensor_differences(
    rerun: dict[str, torch.Tensor], bundled: dict[str, torch.Tensor]
) -> dict[str, float]:
    """Largest absolute difference per tensor; ``inf`` for a tensor missing on one side or reshaped."""
    out = {}
    for name in sorted(set(rerun) | set(bundled)):
        a, b = rerun.get(name), bundled.get(name)
        if a is None or b is None or a.shape != b.shape:
            out[name] = float("inf")
        elif a.numel() == 0:
            out[name] = 0.0
        else:
            out[name] = (a.double() - b.double()).abs().max().item()
    return out


def recipe_differences(rerun: dict | None, bundled: dict | None) -> list[str]:
    """Keys whose values differ between two Hydra configs, run-specific keys left out."""
    if rerun is None or bundled is None:
        return [] if rerun == bundled else ["<recipe>"]

    def recipe(config: dict) -> dict:
        return {k: v for k, v in config.items() if k not in RUN_SPECIFIC_KEYS}

    return [key for key, _, _ in config_differences(recipe(rerun), recipe(bundled))]


def verify(
    run_dir: Path, name: str, ckpt: str = "last", atol: float = 0.0, registry=None, home=None
) -> dict:
    """Compare a rerun's checkpoint with the bundled model ``name``; the report as a dict.

    ``registry`` and ``home`` as for :func:`nrknet.weights.resolve_checkpoint`.
    """
    from nrknet.weights import resolve_checkpoint
    from nrknet.weights.checkpoint import load_model, read_checkpoint

    source, lightning, recipe = read_run(run_dir, ckpt)
    bundled_file = resolve_checkpoint(name, registry=registry, home=home)
    rerun_model = load_model(source)
    bundled_model = load_model(bundled_file)
    diffs = tensor_differences(rerun_model.state_dict(), bundled_model.state_dict())
    release = read_checkpoint(bundled_file)["nrknet"].get("release", {})
    recipe_diffs = recipe_differences(recipe, release.get("recipe"))
    worst = max(diffs.values(), default=0.0)
    return {
        "rerun": str(source),
        "bundled": name,
        "rerun_step": int(lightning.get("global_step", -1)),
        "bundled_step": int(release.get("global_step", -1)),
        "tensors": len(diffs),
        "identical_tensors": sum(d == 0.0 for d in diffs.values()),
        "max_abs_difference": worst,
        "worst_tensor": max(diffs, key=diffs.get) if worst > 0 else None,
        "recipe_differences": recipe_diffs,
        "atol": atol,
        "reproduced": worst <= atol and not recipe_diffs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="verify", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="the rerun's output directory")
    parser.add_argument("name", help="the bundled model, e.g. unet-synthetic")
    parser.add_argument("--ckpt", default="last", help="checkpoint name in RUN_DIR/checkpoints")
    parser.add_argument(
        "--atol", type=float, default=0.0, help="largest allowed difference (0: bit for bit)"
    )
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    source = args.run_dir / "checkpoints" / f"{args.ckpt}.ckpt"
    if not source.is_file():
        parser.error(
            f"{source}: no such checkpoint (expected RUN_DIR/checkpoints/{args.ckpt}.ckpt)"
        )
    report = verify(args.run_dir, args.name, args.ckpt, args.atol)
    print(json.dumps(report, indent=2))
    if args.json:
        from nrknet.utils.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
    verdict = "reproduced" if report["reproduced"] else "NOT reproduced"
    print(
        f"{args.name}: {verdict} ({report['identical_tensors']}/{report['tensors']} tensors "
        f"identical, largest difference {report['max_abs_difference']:.3g})"
    )
    return 0 if report["reproduced"] else 1


if __name__ == "__main__":
    sys.exit(main())
