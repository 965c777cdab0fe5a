"""nrknet-eval: score a checkpoint on every test set of a data config (or its validation split)."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from nrknet.analysis.reporting import print_run_summary, write_reports
from nrknet.cli import reported, tidy_console
from nrknet.training.module import NRKNetModule
from nrknet.utils.checks import choice
from nrknet.utils.config import CONFIG_DIR, instantiate_group, require_accelerator
from nrknet.weights import resolve_checkpoint
from nrknet.weights.checkpoint import load_model

log = logging.getLogger("nrknet.eval")


def evaluate(cfg: DictConfig) -> float | None:
    """Returns the mean PSNR over the scored images of the first dataset."""
    if cfg.split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got {cfg.split!r}")
    tta = choice("tta", cfg.get("tta", False), (True, False))
    require_accelerator(cfg.trainer)
    out_dir = Path(cfg.paths.output_dir)
    if (out_dir / "summary.json").is_file():
        raise FileExistsError(
            f"{out_dir} already holds the scores of an earlier run (summary.json); "
            "choose another hydra.run.dir"
        )
    torch.set_float32_matmul_precision(cfg.get("matmul_precision", "high"))
    L.seed_everything(cfg.seed, workers=True)
    trust_code = choice("trust_code", cfg.get("trust_code", False), (True, False))
    net = load_model(resolve_checkpoint(cfg.ckpt_path), trust_code=trust_code)
    module = NRKNetModule(
        net,
        lpips=cfg.metrics.lpips,
        psnr16=cfg.metrics.get("psnr16", False),
        save_images_dir=str(out_dir / "images") if cfg.get("save_images") else None,
        accel=cfg.get("accel", "auto"),
        self_ensemble=tta,
    )
    datamodule = instantiate(cfg.data)
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        logger=instantiate_group(cfg.get("logger")) or False,
        callbacks=[],
        max_epochs=1,
    )
    if cfg.split == "test":
        trainer.test(module, datamodule=datamodule)
    else:
        datamodule.prepare_data()
        datamodule.setup("validate")
        trainer.nrknet_test_set_names = ["val"]
        trainer.test(module, dataloaders=datamodule.val_dataloader())
    results = module.test_results
    if not trainer.is_global_zero:
        return None
    files = write_reports(
        results,
        out_dir,
        extra={"checkpoint": str(cfg.ckpt_path), "split": cfg.split},
        method=type(module.model).__name__,
    )
    print_run_summary(
        f"nrknet-eval ({cfg.split})",
        results,
        {
            "checkpoint": cfg.ckpt_path,
            "per-image scores": files["per_image"],
            "summary": files["summary"],
            "table": files["table"],
        },
    )
    first = next(iter(results.values()), None)
    return None if first is None else first["summary"]["psnr"]


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
@reported("nrknet-eval", exits=True)
def main(cfg: DictConfig) -> float | None:
    tidy_console()
    return evaluate(cfg)


if __name__ == "__main__":
    main()
