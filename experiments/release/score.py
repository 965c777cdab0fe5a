"""Score models on a split of a rendered set: PSNR / SSIM of each output and of the blurry input.

    python -m experiments.release.score                      # the bundled models, release test split
    python -m experiments.release.score --split val MODEL...  # checkpoints or registry names
    python -m experiments.release.score --folder DIR MODEL... # any DPDD-layout split (source/, target/)

Without ``--folder`` the images are the split of the set that the experiment
(``--experiment``, default ``release_cpu``) trains on, under ``--data-dir``;
the set is rendered first when it is not there (the renderer is
deterministic, so these are the files the release was scored on). Scores
follow the project's protocol (8-bit PSNR and SSIM, whole images), computed
by :class:`nrknet.metrics.ImageQualityMetrics`. ``--json`` writes them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODELS = ("nrknet-synthetic", "unet-synthetic")


def release_split(experiment: str, split: str, data_dir: Path) -> Path:
    """The ``split`` folder of ``experiment``'s synthetic set, rendered if missing."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[f"experiment={experiment}", f"paths.data_dir={data_dir.absolute()}"],
        )
    datamodule = instantiate(cfg.data)
    if not datamodule.is_prepared():
        datamodule.prepare_data()
    return Path(datamodule.root) / f"{split}_c"


def split_pairs(folder: Path) -> list[tuple[Path, Path]]:
    sources = sorted((folder / "source").glob("*.png"))
    if not sources:
        raise SystemExit(f"score: error: no source/*.png under {folder}")
    pairs = [(s, folder / "target" / s.name) for s in sources]
    if missing := [t for _, t in pairs if not t.is_file()]:
        raise SystemExit(f"score: error: {missing[0]} is missing (every source needs its target)")
    return pairs


def score(model_name: str, pairs: list[tuple[Path, Path]]) -> dict:
    """Mean scores of one model (and of the blurry input) over ``pairs``, with the time taken."""
    from nrknet.data.io import read_image
    from nrknet.inference import load_inference_model
    from nrknet.metrics import ImageQualityMetrics

    model = load_inference_model(model_name, torch.device("cpu"))
    metrics = ImageQualityMetrics(lpips="off")
    start = time.perf_counter()

    def tensor(path: Path) -> torch.Tensor:
        return torch.from_numpy(read_image(path)).permute(2, 0, 1)[None]

    with torch.inference_mode():
        for source, target in pairs:
            blurry, sharp = tensor(source), tensor(target)
            metrics.update(model(blurry).clamp(0, 1), sharp, [source.name], blurry=blurry)
    summary = metrics.summary()
    return {
        "model": str(model_name),
        "class": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "images": summary["count"],
        **{k: summary[k] for k in ("psnr", "ssim", "input_psnr", "input_ssim")},
        "seconds": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="score", description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="*", default=list(DEFAULT_MODELS), metavar="MODEL")
    parser.add_argument("--experiment", default="release_cpu")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    parser.add_argument("--folder", type=Path, default=None, help="a DPDD-layout split instead")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the scores here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = args.folder or release_split(args.experiment, args.split, args.data_dir)
    pairs = split_pairs(folder)
    rows = [score(name, pairs) for name in args.models]
    print(f"{len(pairs)} pairs from {folder}")
    print(f"{'model':<40} {'params':>9} {'PSNR':>7} {'SSIM':>7} {'gain dB':>8}")
    first = rows[0]
    print(f"{'blurry input':<40} {'':>9} {first['input_psnr']:7.3f} {first['input_ssim']:7.4f}")
    for row in rows:
        gain = row["psnr"] - row["input_psnr"]
        print(
            f"{row['model']:<40} {row['parameters']:>9,} {row['psnr']:7.3f} {row['ssim']:7.4f} {gain:+8.3f}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"folder": str(folder), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
