"""nrknet-train: compose the config, build data, model and trainer, fit, then test the best checkpoint."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from nrknet.analysis.reporting import print_run_summary, write_reports
from nrknet.cli import reported, tidy_console
from nrknet.training.batch_log import for_batch_jobs
from nrknet.training.callbacks import AtomicCheckpointIO
from nrknet.utils.atomic import atomic_write_text, remove_stale_temporaries
from nrknet.utils.checks import choice
from nrknet.utils.config import CONFIG_DIR, instantiate_group, require_accelerator, require_numbers
from nrknet.utils.machine import describe as describe_machine
from nrknet.weights import resolve_checkpoint
from nrknet.weights.init import apply_init_from, require_same_run, require_training_state

log = logging.getLogger("nrknet.train")


def test_fingerprints(datamodule) -> dict[str, str]:
    """Each test set's :meth:`~nrknet.data.datasets.PairedImageDataset.fingerprint`, by name."""
    sets = zip(datamodule.test_set_names, datamodule.test_datasets, strict=True)
    return {name: dataset.fingerprint() for name, dataset in sets}


def resolve_resume_path(cfg: DictConfig) -> str | None:
    """``ckpt_path`` as given, ``last`` for this run's last checkpoint, or the latter when ``auto_resume``."""
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    if cfg.ckpt_path == "last" or (cfg.ckpt_path is None and cfg.get("auto_resume")):
        if last.is_file():
            return require_training_state(last, setting="ckpt_path")
        if cfg.ckpt_path == "last":
            raise FileNotFoundError(
                f"ckpt_path=last but there is no {last}; start a new run or give a path"
            )
        return None
    if cfg.ckpt_path is None:
        return None
    return require_training_state(resolve_checkpoint(cfg.ckpt_path), setting="ckpt_path")


#: The settings a resumed run must share with its checkpoint (``resume_check``).
RESUMED_SETTINGS = ("model", "loss", "optimizer")


def run_settings(cfg: DictConfig) -> dict[str, Any]:
    """The resolved settings a resumed run must match, and the command-line overrides of the run."""
    from hydra.core.hydra_config import HydraConfig

    settings = {
        k: OmegaConf.to_container(cfg[k], resolve=True) for k in RESUMED_SETTINGS if k in cfg
    }
    if HydraConfig.initialized():
        settings["overrides"] = list(HydraConfig.get().overrides.task)
    return settings


def resumed_settings(cfg: DictConfig, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The part of ``settings`` a resume must match (``resume_check``), or None when not checked."""
    if not cfg.get("resume_check", True):
        return None
    return {k: v for k, v in settings.items() if k in RESUMED_SETTINGS}


def refuse_to_overwrite_checkpoints(
    folder: Path, resume: str | None, auto_resume: bool = False
) -> None:
    """A one-line error when ``folder`` holds checkpoints of an earlier run that this one does not resume.

    A new run would replace its ``best.ckpt`` and ``last.ckpt``; continuing it
    is ``auto_resume=true`` (or ``ckpt_path=last``). With ``auto_resume`` and
    no ``last.ckpt`` (the run was stopped before its first one was written),
    there is nothing to resume and the run starts again.
    """
    earlier = sorted(p.name for p in folder.glob("*.ckpt") if p.is_file())
    if not earlier or (resume is not None and Path(resume).resolve().parent == folder.resolve()):
        return
    if auto_resume and resume is None:
        log.warning(
            "auto_resume: %s has no last.ckpt (the run stopped before writing one); it starts again",
            folder,
        )
        return
    raise FileExistsError(
        f"{folder} already holds the checkpoints of an earlier run ({', '.join(earlier)}); "
        "continue that run with auto_resume=true, or choose another hydra.run.dir"
    )


def remove_partial_checkpoints(folder: Path) -> None:
    """Delete temporary files left by a checkpoint write that was killed (complete files are never touched)."""
    for partial in remove_stale_temporaries(folder, "*.ckpt"):
        log.warning("removed the partial checkpoint write %s left by an interrupted run", partial)


def build(cfg: DictConfig):
    """Instantiate datamodule, LightningModule and trainer from the config."""
    require_accelerator(cfg.trainer)
    datamodule = instantiate(cfg.data)
    net = instantiate(cfg.model)
    module = instantiate(
        cfg.module,
        net=net,
        loss=instantiate(cfg.loss),
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
    )
    callbacks, console_settings = for_batch_jobs(instantiate_group(cfg.get("callbacks")))
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=instantiate_group(cfg.get("logger")) or False,
        plugins=[AtomicCheckpointIO()],
        **console_settings,
    )
    return datamodule, module, trainer


def refuse_ddp_in_a_local_multirun(cfg: DictConfig) -> None:
    """A one-line error for a DDP job of several processes in a multirun on this machine.

    Lightning starts the other processes by running the command line again,
    which in a multirun is the whole sweep; SLURM starts them itself.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    launcher = str(OmegaConf.select(HydraConfig.get(), "launcher._target_", default=""))
    if "submitit" in launcher or "ddp" not in str(cfg.trainer.get("strategy", "")):
        return
    devices = cfg.trainer.get("devices", 1)
    if devices == -1:
        devices = torch.cuda.device_count()
    count = len(devices) if isinstance(devices, list | ListConfig) else devices
    if isinstance(count, int) and count > 1 or cfg.trainer.get("num_nodes", 1) > 1:
        raise ValueError(
            f"trainer.strategy=ddp with trainer.devices={cfg.trainer.devices} in a multirun on this "
            "machine: Lightning starts the other processes by running the command again, which "
            "runs the whole sweep again; train each row with its own nrknet-train, or submit the "
            "sweep with hydra/launcher=slurm"
        )


def place_concurrent_job(cfg: DictConfig) -> None:
    """In a multirun that runs several jobs at once (``hydra/launcher=parallel``), a one-GPU job
    takes GPU <job number> mod <visible GPUs>, so that the jobs spread over the node."""
    import multiprocessing

    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    if not HydraConfig.initialized():
        return
    job = HydraConfig.get().job
    if OmegaConf.select(HydraConfig.get(), "launcher.n_jobs", default=1) == 1:
        return
    # The launcher's worker processes make their own start method the default, under which
    # DataLoader workers fail to start; go back to the platform's.
    multiprocessing.set_start_method(None, force=True)
    gpus = torch.cuda.device_count()  # counts without initialising CUDA
    if cfg.trainer.accelerator in ("gpu", "cuda") and cfg.trainer.devices == 1 and gpus:
        cfg.trainer.devices = [job.num % gpus]
    log.info(
        "concurrent job %s: devices %s, %d torch threads",
        job.num,
        cfg.trainer.devices,
        torch.get_num_threads(),
    )


def train(cfg: DictConfig) -> float | None:
    """Train (and test) as configured; returns the best validation PSNR."""
    require_numbers(cfg)
    test_checkpoint = choice(
        "test_checkpoint", cfg.get("test_checkpoint", "best"), ("best", "last")
    )
    refuse_ddp_in_a_local_multirun(cfg)
    place_concurrent_job(cfg)
    torch.set_float32_matmul_precision(cfg.get("matmul_precision", "high"))
    L.seed_everything(cfg.seed, workers=True)
    out_dir = Path(cfg.paths.output_dir)
    resume = None
    if cfg.get("train", True):
        resume = resolve_resume_path(cfg)
        refuse_to_overwrite_checkpoints(
            out_dir / "checkpoints", resume, cfg.get("auto_resume", False)
        )
    datamodule, module, trainer = build(cfg)
    module.run_settings = run_settings(cfg)
    for logger in trainer.loggers:
        # the command-line overrides name the study row and seed (wandb's run table compares them)
        logger.log_hyperparams(
            {**_loggable(cfg), "overrides": module.run_settings.get("overrides")}
        )
    best_psnr = fit_seconds = None
    if cfg.get("train", True):
        if resume is not None:
            require_same_run(module.model, resume, resumed_settings(cfg, module.run_settings))
        apply_init_from(module.model, cfg.get("init_from"), cfg.get("init_strict", True), resume)
        remove_partial_checkpoints(out_dir / "checkpoints")
        started = time.perf_counter()
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True)
        fit_seconds = time.perf_counter() - started
    ckpt = trainer.checkpoint_callback
    best_path = getattr(ckpt, "best_model_path", "") or None
    if ckpt is not None and ckpt.best_model_score is not None:
        best_psnr = float(ckpt.best_model_score)
    last_val = trainer.callback_metrics.get("val/psnr")  # the last validation, before testing
    last = out_dir / "checkpoints" / "last.ckpt"
    tested = best_path if test_checkpoint == "best" else (str(last) if last.is_file() else None)
    results = {}
    if cfg.get("test", True):
        trainer.test(module, datamodule=datamodule, ckpt_path=tested, weights_only=True)
        results = module.test_results
    if trainer.is_global_zero:
        metrics = {
            "best_val_psnr": best_psnr,
            "best_checkpoint": best_path,
            "last_val_psnr": None if last_val is None else float(last_val),
            "last_checkpoint": str(last) if last.is_file() else None,
            "tested_checkpoint": tested,
            "epochs": trainer.current_epoch,
            "global_step": trainer.global_step,
            "seed": cfg.get("seed"),
            # wall-clock seconds of training in this process (a resumed run: since the resume)
            "fit_seconds": fit_seconds,
            "resumed": resume is not None,
            "skipped_nonfinite": module.skipped_nonfinite,
            # the row this run is: collect.py reads it here, where only a finished run writes it
            "overrides": module.run_settings.get("overrides"),
            "test": {name: r["summary"] for name, r in results.items()},
            # sha256 of each test set's files: the same figures need the same images
            "test_files_sha256": test_fingerprints(datamodule) if results else {},
            # the same command gives the same figures to the last bit only on the same CPU model
            "machine": describe_machine(),
        }
        atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        files = (
            write_reports(results, out_dir, method=type(module.model).__name__) if results else {}
        )
        print_run_summary(
            "nrknet-train",
            results,
            {
                "best checkpoint": best_path,
                "best val PSNR": f"{best_psnr:.3f} dB" if best_psnr is not None else None,
                "metrics": out_dir / "metrics.json",
                "table": files.get("table"),
                "images": out_dir / "images",
            },
        )
    return best_psnr


def _loggable(cfg: DictConfig) -> dict:
    from omegaconf import OmegaConf

    keys = ("model", "data", "loss", "optimizer", "scheduler", "seed", "study")
    return {
        k: OmegaConf.to_container(cfg[k], resolve=True)
        if isinstance(cfg[k], DictConfig)
        else cfg[k]
        for k in keys
        if k in cfg
    }


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
@reported("nrknet-train", exits=True)
def main(cfg: DictConfig) -> float | None:
    tidy_console()
    return train(cfg)


if __name__ == "__main__":
    main()
