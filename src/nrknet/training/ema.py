"""An exponential moving average (EMA) of the weights, for validation, the checkpoints and the test.

:class:`EMA` is Lightning's :class:`~lightning.pytorch.callbacks.WeightAveraging`
with :func:`torch.optim.swa_utils.get_ema_multi_avg_fn`: after every optimizer
step ``ema = decay * ema + (1 - decay) * weights`` (the first update copies the
weights). What that gives a run:

* validation runs with the EMA weights (they are swapped in for the whole
  validation epoch, the logged figures included), so ``val/psnr`` and the
  choice of ``best.ckpt`` are the EMA's;
* every checkpoint holds the EMA weights in ``state_dict`` (what
  ``nrknet-eval``, ``nrknet-predict`` and the test after training load), the
  live weights in ``current_model_state`` and the average's step count in
  ``averaging_state``; resuming restores both, so the average continues
  exactly where it stopped;
* at the end of training the model keeps the EMA weights.

BatchNorm running statistics (the coefficient head's local branch) are
averaged with the same decay as the weights rather than copied from the live
model: the statistics then describe features of the same smoothed network the
averaged weights form, instead of those of the latest weights alone.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import WeightAveraging
from torch.optim.swa_utils import get_ema_multi_avg_fn

from nrknet.utils.checks import number

__all__ = ["EMA"]


class EMA(WeightAveraging):
    """Keep an EMA of the weights (and BatchNorm statistics), updated after every optimizer step.

    ``decay`` in [0, 1]: 0 follows the live weights, 1 keeps the weights after
    the first step; 0.999 averages over about the last thousand steps. The
    average lives on the training device.
    """

    def __init__(self, decay: float = 0.999) -> None:
        self.decay = float(number("callbacks.ema.decay", decay, minimum=0, maximum=1))
        super().__init__(use_buffers=True, multi_avg_fn=get_ema_multi_avg_fn(self.decay))

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # The module is still on the CPU here; the average belongs where it will train.
        self._device = trainer.strategy.root_device
        super().setup(trainer, pl_module, stage)

    # Lightning swaps the live weights back at the end of the validation epoch, before the
    # figures callback draws its figures; swap them back after the whole epoch instead.
    # Lightning runs checkpoint callbacks after all others, so they save with the live weights back.
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pass

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_epoch_end(trainer, pl_module)
