"""Training: the LightningModule, the losses and schedules, and every Lightning plug-in.

:mod:`~nrknet.training.module` (the LightningModule), :mod:`~nrknet.training.losses`,
:mod:`~nrknet.training.schedules`, and the callbacks, loggers and restarts the configs
name (:mod:`~nrknet.training.callbacks`, :mod:`~nrknet.training.ema`,
:mod:`~nrknet.training.batch_log`, :mod:`~nrknet.training.wandb_logger`,
:mod:`~nrknet.training.restarts`).
"""
