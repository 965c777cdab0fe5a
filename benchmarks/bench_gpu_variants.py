"""GPU: the eager training rate of every network and loss that the paper studies train.

``experiments/cost.py`` turns a measured rate into GPU-hours per study; without this file it
scales the full model's rate by MACs for the other rows, which misjudges networks whose time
goes to memory traffic or kernel launches rather than arithmetic (the U-Net baseline above
all). Here each distinct (network, loss, batch, crop) among the rows of the studies is timed
through Lightning in ``bf16-mixed``, eagerly (compiling each would take minutes): median step
after a warm-up, images per second. ``cost.py --variants`` reads the result.

Usage: python -m benchmarks.bench_gpu_variants [--out FILE] [--quick] [STUDY ...]
(``--quick``: width 4, 32x32 crops, a step or two, on whatever device is present.)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from benchmarks.bench_gpu import training

ROOT = Path(__file__).resolve().parents[1]

#: the studies whose rows ``cost.py`` prices by default
STUDIES = (
    "table1_dpdd",
    "table2_lfdof",
    "table3_rkr",
    "table4_pipeline",
    "table5_losses",
    "atoms_J",
)
PRECISION = "bf16-mixed"


def distinct_variants(studies: tuple[str, ...]) -> tuple[dict[str, dict], dict[str, str]]:
    """The distinct (network, loss, batch, crop) of the studies' rows, and each row's variant."""
    from experiments.cost import REFERENCE_ROW, compose_row
    from experiments.study import load_study, settings_key

    variants: dict[str, dict] = {}
    rows: dict[str, str] = {}
    # the full model first: cost.py prices every other row against it
    labelled = [("the full model", REFERENCE_ROW)]
    for study in studies:
        labelled += [
            (f"{study}: {row['label']}", row["settings"]) for row in load_study(study)["rows"]
        ]
    for label, settings in labelled:
        cfg = compose_row([f"{k}={v}" for k, v in settings.items()])
        spec = {
            "model": OmegaConf.to_container(cfg.model, resolve=True),
            "loss": OmegaConf.to_container(cfg.loss, resolve=True),
            "batch": int(cfg.data.batch_size),
            "crop": int(cfg.data.crop_size),
        }
        variant = json.dumps(spec, sort_keys=True)
        variants.setdefault(variant, {"spec": spec, "first_row": label})
        rows[settings_key(settings)] = variant
    return variants, rows


def time_variant(spec: dict, quick: bool, accelerator: str) -> dict:
    from hydra.utils import instantiate

    model_cfg = dict(spec["model"], **({"width": 4} if quick else {}))
    batch, crop = (1, 32) if quick else (spec["batch"], spec["crop"])

    def build():
        return instantiate(model_cfg), instantiate(spec["loss"])

    start = time.perf_counter()
    result = training(
        batch, crop, warmup=1 if quick else 3, steps=1 if quick else 10,
        precisions=(PRECISION,), accelerator=accelerator, build=build,
    )[PRECISION]  # fmt: skip
    return {
        "images_per_s": result["images_per_s"],
        "median_step_s": result["median_step_s"],
        "shape": f"{batch}x3x{crop}x{crop}",
        "wall_s": time.perf_counter() - start,
    }


def run(quick: bool = False, studies: tuple[str, ...] = STUDIES, on_variant=None) -> dict:
    """Every distinct variant's rate; ``rows`` maps each row's overrides to its variant.
    ``on_variant`` gets the result so far after each variant (to save it)."""
    if not quick and not torch.cuda.is_available():
        return {"skipped": "no CUDA device"}
    accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    variants, rows = distinct_variants(studies)
    names = {variant: f"v{i}" for i, variant in enumerate(variants)}
    result = {
        "device": torch.cuda.get_device_name() if accelerator == "gpu" else "cpu",
        "torch": torch.__version__,
        "precision": PRECISION,
        "quick": quick,
        "variants": {},
        "rows": {key: names[variant] for key, variant in rows.items()},
        "reference": names[next(iter(variants))],
    }
    for variant, entry in variants.items():
        try:
            figures = time_variant(entry["spec"], quick, accelerator)
        except Exception as exc:  # noqa: BLE001 - one variant failing must not lose the others
            figures = {"error": f"{type(exc).__name__}: {str(exc).strip()[:300]}"}
        result["variants"][names[variant]] = {"first_row": entry["first_row"], **figures}
        if on_variant is not None:
            on_variant(result)
    return result


def rows(result: dict) -> list[tuple[str, str]]:
    if "skipped" in result:
        return [("GPU variants", f"skipped: {result['skipped']}")]
    out = []
    for name, figures in result["variants"].items():
        value = figures.get("error") or (
            f"{figures['images_per_s']:.1f} img/s ({figures['shape']}, {result['precision']}, eager)"
        )
        out.append((f"{name}: {figures['first_row']}", value))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="*", help=f"default: {', '.join(STUDIES)}")
    parser.add_argument("--out", type=Path, help="write the JSON here")
    parser.add_argument("--quick", action="store_true", help="toy sizes, any device")
    args = parser.parse_args(argv)
    from benchmarks.common import machine

    def save(result: dict) -> None:
        if args.out:
            args.out.write_text(json.dumps({"machine": machine(), **result}, indent=2) + "\n")

    result = run(args.quick, tuple(args.studies) or STUDIES, on_variant=save)
    save(result)
    for key, value in rows(result):
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
