"""Short real training runs: loss goes down, checkpoints, evaluation, resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from conftest import tiny_overrides
from nrknet.eval import evaluate
from nrknet.train import train
from nrknet.weights.checkpoint import load_model

pytestmark = pytest.mark.slow


def epoch_losses(run_dir: Path) -> list[float]:
    with (run_dir / "csv" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    return [float(r["train/loss_epoch"]) for r in rows if r.get("train/loss_epoch")]


#: where the quickstart's data differ from the default synthetic set (conf/experiment/quickstart.yaml)
QUICKSTART_DATA = ("data.root=${paths.data_dir}/synthetic_quickstart", "data.val_scenes=train")


def eval_overrides(data_dir: Path, out_dir: Path, ckpt: Path, split: str) -> list[str]:
    """nrknet-eval on the data of the tests' tiny quickstart runs."""
    keep = ("paths.", "data", "trainer", "metrics.")
    overrides = [
        o
        for o in tiny_overrides(data_dir, out_dir)
        if o.startswith(keep) and "progress_bar" not in o
    ]
    return [*overrides, *QUICKSTART_DATA, f"ckpt_path={ckpt}", f"split={split}"]


def test_short_training_lowers_loss_and_eval_reproduces_val_psnr(
    compose_train, tmp_path, synthetic_data_dir
):
    run_dir = tmp_path / "train"
    cfg = compose_train(
        [
            "experiment=quickstart",
            *tiny_overrides(synthetic_data_dir, run_dir),
            "model.width=8",
            "trainer.max_epochs=6",
        ]
    )
    best_psnr = train(cfg)
    losses = epoch_losses(run_dir)
    assert len(losses) == 6
    assert losses[-1] < losses[0]
    best, last = run_dir / "checkpoints" / "best.ckpt", run_dir / "checkpoints" / "last.ckpt"
    assert best.is_file() and last.is_file()
    assert not list((run_dir / "checkpoints").glob("*.tmp"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["best_val_psnr"] == pytest.approx(best_psnr)
    assert (run_dir / "table.md").is_file() and (run_dir / "per_image.csv").is_file()
    for figure in (
        "val_atoms.png",
        "val_defocus_map.png",
        "val_coefficients.png",
        "val_triplet_0.png",
    ):
        assert list((run_dir / "images").rglob(figure)), f"{figure} was not logged"
    # the checkpoint is usable outside Lightning too
    model = load_model(best)
    assert model.config["width"] == 8
    # scoring the best checkpoint on the validation split gives back the PSNR logged during training
    eval_dir = tmp_path / "eval"
    eval_cfg = compose_train(
        eval_overrides(synthetic_data_dir, eval_dir, best, "val"), config_name="eval"
    )
    psnr = evaluate(eval_cfg)
    assert psnr == pytest.approx(best_psnr, abs=1e-4)
    summary = json.loads((eval_dir / "summary.json").read_text())
    assert summary["datasets"]["val"]["psnr"] == pytest.approx(best_psnr, abs=1e-4)
    assert "| NRKNet |" in (eval_dir / "table.md").read_text()
    # neither the evaluation nor the training run's own scores are replaced by a later evaluation
    for folder in (eval_dir, run_dir):
        before = (folder / "summary.json").read_bytes()
        again = eval_overrides(synthetic_data_dir, folder, best, "val")
        with pytest.raises(FileExistsError, match="summary.json"):
            evaluate(compose_train(again, config_name="eval"))
        assert (folder / "summary.json").read_bytes() == before


def test_resume_from_last_checkpoint_continues_epoch_and_step(
    compose_train, tmp_path, synthetic_data_dir
):
    run_dir = tmp_path / "run"
    base = ["experiment=quickstart", *tiny_overrides(synthetic_data_dir, run_dir), "test=false"]
    train(compose_train([*base, "trainer.max_epochs=2"]))
    first = json.loads((run_dir / "metrics.json").read_text())
    steps_per_epoch = first["global_step"] // 2
    assert first["epochs"] == 2 and steps_per_epoch > 0
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["epoch"] == 1 and last["global_step"] == first["global_step"]
    train(compose_train([*base, "trainer.max_epochs=3", "ckpt_path=last"]))
    resumed = json.loads((run_dir / "metrics.json").read_text())
    assert resumed["epochs"] == 3
    assert resumed["global_step"] == 3 * steps_per_epoch
    rows = epoch_losses(run_dir)
    assert len(rows) == 3  # the CSV log continues rather than starting over


def test_a_first_run_reads_clean(tmp_path, synthetic_data_dir):
    """No advertising tips, no deprecation warning from inside Lightning, and the LPIPS notice
    (offline here) once, on one line without the source line that raised it."""
    import os
    import subprocess
    import sys

    run = tmp_path / "run"
    args = [
        "experiment=quickstart", *tiny_overrides(synthetic_data_dir, tmp_path),
        f"hydra.run.dir={run}", "trainer.max_epochs=1", "metrics.lpips=auto",
    ]  # fmt: skip
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "offline",
        "TORCH_HOME": str(tmp_path / "torch"),
    }
    env.pop("NRKNET_DEBUG", None)
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run(
        [sys.executable, "-m", "nrknet.train", *args],
        env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "Tip:" not in out and "litlogger" not in out and "litmodels" not in out
    assert "LeafSpec" not in out
    lpips_lines = [line for line in out.splitlines() if "LPIPS unavailable" in line]
    assert len(lpips_lines) == 1, lpips_lines
    assert lpips_lines[0].startswith("RuntimeWarning: LPIPS unavailable")
    assert "warnings.warn" not in out
