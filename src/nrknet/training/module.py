"""The LightningModule: NRKNet, its losses, validation and test scoring."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

from nrknet.accel import resolve_mode as resolve_accel_mode
from nrknet.accel.compile import CompileOptions
from nrknet.accel.compile import apply as apply_compile
from nrknet.accel.compile import resolve_mode as resolve_compile_mode
from nrknet.analysis.reporting import result_entries, self_ensemble_name
from nrknet.errors import NonFiniteLossError
from nrknet.inference.self_ensemble import self_ensemble
from nrknet.metrics import METRIC_KEYS, ImageQualityMetrics
from nrknet.models.nrknet import NRKNet
from nrknet.utils.checks import choice, number
from nrknet.utils.distributed import is_distributed

log = logging.getLogger(__name__)

# Lightning asks for sync_dist on every epoch-level value under DDP; these are the same on every
# process already (gathered scores, a shared parameter), and a mean over processes could change
# their last bit.
warnings.filterwarnings(
    "ignore",
    message=r"It is recommended to use `self\.log\('(val|test)/|It is recommended to use `self\.log\('train/gate'",
)

LOSS_TERMS = ("mse", "fdr", "reblur", "ssim")


class NRKNetModule(L.LightningModule):
    """Trains NRKNet with the multi-scale loss; validates and tests with the paper's protocol.

    ``net``: the network; ``loss``: an :class:`nrknet.training.losses.NRKNetLoss` (may be
    ``None`` for evaluation only); ``optimizer`` / ``scheduler``: partials
    taking the parameters / the optimizer (Hydra ``_partial_: true``);
    ``gate_lr_scale``: learning-rate multiplier of the model's residual gate, if
    it has one (the gate is one scalar that must travel from 0 towards 1);
    ``accel``: ``auto`` | ``on`` | ``off``, the acceleration layer (:mod:`nrknet.accel`),
    applied when Lightning sets the module up (``auto``: on for a CPU run);
    ``compile``: ``auto`` | ``on`` | ``off``, ``torch.compile`` of the model's regions
    (:mod:`nrknet.accel.compile`, ``auto``: on for training on CUDA; a run that
    compiles skips ``accel``), with ``compile_options`` (backend, mode, channels_last, fullgraph);
    ``self_ensemble``: the test also scores the average over the eight flips and
    rotations (:mod:`nrknet.inference.self_ensemble`), as a result of its own;
    ``psnr16``: the test also reports the PSNR without 8-bit rounding (``psnr16``).
    A test set with scene groups (DPDD's indoor/outdoor) also gets a result per group.
    """

    def __init__(
        self,
        net: NRKNet,
        loss: nn.Module | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        skip_nonfinite: bool = False,
        lpips: str = "auto",
        save_images_dir: str | None = None,
        gate_lr_scale: float = 1.0,
        accel: str = "auto",
        compile: str = "auto",
        compile_options: dict[str, Any] | None = None,
        self_ensemble: bool = False,
        psnr16: bool = False,
    ) -> None:
        super().__init__()
        number("module.gate_lr_scale", gate_lr_scale, above=0)
        choice("metrics.psnr16", psnr16, (True, False))  # here, not after a whole training run
        resolve_accel_mode(accel)
        resolve_compile_mode(compile)
        self.compile_options = CompileOptions.from_config(compile_options)
        # Partials and config objects stay out of the hyper-parameters so that checkpoints load
        # with weights_only=True.
        self.save_hyperparameters(
            ignore=["net", "loss", "optimizer", "scheduler", "compile_options"], logger=False
        )
        self.model = net
        self.criterion = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.val_metrics = ImageQualityMetrics(lpips="off")
        self.test_metrics = nn.ModuleList()
        self.self_ensemble_metrics = nn.ModuleList()
        self.test_set_names: list[str] = []
        self.test_scene_groups: list[dict[str, frozenset[str]] | None] = []
        self.test_results: dict[str, dict[str, Any]] = {}
        self.skipped_nonfinite = 0
        self.run_settings: dict[str, Any] | None = None

    def setup(self, stage: str) -> None:
        # the strategy knows the device before the model moves there; ``auto`` decides by it
        device = self.trainer.strategy.root_device
        apply_compile(
            self.model,
            self.hparams.compile,
            self.hparams.accel,
            self.compile_options,
            device=device,
            training=stage == "fit",
        )

    # ------------------------------------------------------------------ inference
    def forward(self, blurry: torch.Tensor) -> torch.Tensor:
        return self.model(blurry)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        if self.criterion is None:
            raise RuntimeError(
                "NRKNetModule was built without a loss; it can evaluate but not train"
            )
        blurry, sharp = batch["blurry"], batch["sharp"]
        out = self.model(blurry, sharp)
        terms = self.criterion(out, blurry, sharp, epoch=self.current_epoch)
        loss = terms["loss"]
        if not self._finite_everywhere(loss):
            detail = ", ".join(f"{k}={float(v):.4g}" for k, v in terms.items())
            if torch.isfinite(loss):
                detail = f"on another process (here: {detail})"
            if self.hparams.skip_nonfinite:
                self.skipped_nonfinite += 1
                log.warning(
                    "skipping batch at step %d: non-finite loss (%s)", self.global_step, detail
                )
                self.log("train/skipped_nonfinite", float(self.skipped_nonfinite), on_step=True)
                if is_distributed():
                    # Returning None under DDP leaves the other processes waiting for gradients:
                    # every process backpropagates zero instead (Adam's moments still advance).
                    return sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
                return None
            raise NonFiniteLossError(
                f"non-finite training loss at epoch {self.current_epoch}, step {self.global_step}: {detail}. "
                "Lower the learning rate, check the data, or set skip_nonfinite=true to skip such batches."
            )
        batch_size = blurry.shape[0]
        # sync_dist: under DDP the logged losses are the means over all processes
        self.log(
            "train/loss",
            loss,
            prog_bar=True,
            on_step=True,
            on_epoch=True,
            batch_size=batch_size,
            sync_dist=True,
        )
        for key in LOSS_TERMS:
            if key in terms:
                self.log(
                    f"train/{key}",
                    terms[key],
                    on_step=True,
                    on_epoch=True,
                    batch_size=batch_size,
                    sync_dist=True,
                )
        if self.model.gate is not None:
            self.log(
                "train/gate",
                self.model.gate.detach(),
                on_step=False,
                on_epoch=True,
                batch_size=batch_size,
            )
        return loss

    def _finite_everywhere(self, loss: torch.Tensor) -> bool:
        """Whether the loss is finite on every process (all processes must agree to skip or stop)."""
        finite = torch.isfinite(loss.detach()).float()
        if is_distributed():
            torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
        return bool(finite > 0)

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise RuntimeError("no optimizer configured")
        optimizer = self.optimizer_factory(params=self._parameter_groups())
        if len(optimizer.param_groups) == 2:
            optimizer.param_groups[1]["lr"] *= self.hparams.gate_lr_scale
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }

    def _parameter_groups(self):
        """All parameters; the residual gate in a group of its own when its lr is scaled."""
        gate = getattr(self.model, "gate", None)
        if gate is None or self.hparams.gate_lr_scale == 1.0:
            return self.parameters()
        others = [p for p in self.parameters() if p is not gate]
        return [{"params": others}, {"params": [gate]}]

    # ------------------------------------------------------------------ validation
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """Scores the batch; returns the predictions (the figures callback draws some)."""
        blurry, sharp = batch["blurry"], batch["sharp"]
        pred = self.model(blurry)
        self.val_metrics.update(pred, sharp, batch["name"], blurry=blurry)
        return pred.detach()

    def on_validation_epoch_end(self) -> None:
        summary = self.val_metrics.summary()
        self.val_metrics.reset()
        if summary["count"]:
            # summaries already cover all processes' images (identical on every process)
            self.log("val/psnr", summary["psnr"], prog_bar=True, sync_dist=False)
            self.log("val/ssim", summary["ssim"])
            self.log("val/input_psnr", summary["input_psnr"])
            self.log("val/mae", summary["mae"])

    # ------------------------------------------------------------------ test
    def on_test_start(self) -> None:
        names, crops, self.test_scene_groups = test_sets_of(self.trainer)
        self.test_set_names = names
        self.test_metrics = self._new_test_metrics(crops)
        self.self_ensemble_metrics = self._new_test_metrics(
            crops if self.hparams.self_ensemble else []
        )
        self.test_results = {}

    def _new_test_metrics(self, crops: list[tuple[int, int] | None]) -> nn.ModuleList:
        return nn.ModuleList(
            ImageQualityMetrics(
                lpips=self.hparams.lpips, score_crop=crop, psnr16=self.hparams.psnr16
            )
            for crop in crops
        ).to(self.device)

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        blurry, sharp = batch["blurry"], batch["sharp"]
        pred = self.model(blurry)
        self.test_metrics[dataloader_idx].update(pred, sharp, batch["name"], blurry=blurry)
        if self.hparams.self_ensemble:
            ensembled = self_ensemble(self.model, blurry)
            self.self_ensemble_metrics[dataloader_idx].update(
                ensembled, sharp, batch["name"], blurry=blurry
            )
        if self.hparams.save_images_dir:
            from nrknet.data.io import write_image

            folder = Path(self.hparams.save_images_dir) / self.test_set_names[dataloader_idx]
            for i, name in enumerate(batch["name"]):
                rgb = pred[i].detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
                write_image(folder / f"{Path(str(name)).stem}.png", rgb)

    def on_test_epoch_end(self) -> None:
        for i, name in enumerate(self.test_set_names):
            groups = self.test_scene_groups[i]
            self._record_test_result(name, self.test_metrics[i], groups)
            if self.hparams.self_ensemble:
                ensembled = self.self_ensemble_metrics[i]
                self._record_test_result(self_ensemble_name(name), ensembled, groups)

    def _record_test_result(
        self, name: str, metrics: ImageQualityMetrics, groups: dict[str, frozenset[str]] | None
    ) -> None:
        entries = result_entries(name, metrics.summary(), metrics.per_image(), groups)
        for entry, result in entries.items():
            self.test_results[entry] = result
            summary = result["summary"]
            for key in METRIC_KEYS:  # those computed, per test set and scene group
                if summary.get(key) is not None:
                    self.log(f"test/{entry}/{key}", summary[key], add_dataloader_idx=False)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["nrknet"] = {
            "model_config": dict(self.model.config),
            "skipped_nonfinite": self.skipped_nonfinite,
        }
        if self.run_settings is not None:  # set by nrknet-train: what a resumed run must match
            checkpoint["nrknet"]["run_settings"] = self.run_settings

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.skipped_nonfinite = int(checkpoint.get("nrknet", {}).get("skipped_nonfinite", 0))


def test_sets_of(
    trainer: L.Trainer,
) -> tuple[list[str], list[tuple[int, int] | None], list[dict[str, frozenset[str]] | None]]:
    """Names, scoring crops and scene groups of the test loaders the trainer is running."""
    loaders = trainer.test_dataloaders
    if loaders is None:
        return [], [], []
    if not isinstance(loaders, list | tuple):
        loaders = [loaders]
    datamodule = getattr(trainer, "datamodule", None)
    names = list(
        getattr(trainer, "nrknet_test_set_names", None)
        or getattr(datamodule, "test_set_names", [])
        or []
    )
    if len(names) != len(loaders):
        names = [f"test_{i}" for i in range(len(loaders))]
    crops = [getattr(loader.dataset, "score_crop", None) for loader in loaders]
    groups = [getattr(loader.dataset, "scene_groups", None) for loader in loaders]
    return names, crops, groups
