"""Piecewise-constant learning-rate schedules: steps at fractions of the run (shorter runs scale them) or at fixed epochs."""

from __future__ import annotations

from collections.abc import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def _check_one_factor_each(milestones: Sequence[float], factors: Sequence[float]) -> None:
    if len(milestones) != len(factors):
        raise ValueError(
            f"scheduler: {len(milestones)} milestones but {len(factors)} factors; give one factor per milestone"
        )


class EpochSteps:
    """Multiplier of the base learning rate: ``factors[i]`` from epoch ``milestones[i]`` on (picklable for checkpoints)."""

    def __init__(self, milestones: Sequence[int], factors: Sequence[float]) -> None:
        _check_one_factor_each(milestones, factors)
        if any(int(m) != m or m < 0 for m in milestones) or list(milestones) != sorted(
            set(milestones)
        ):
            raise ValueError(
                f"scheduler: milestones must be increasing epoch numbers, got {list(milestones)}"
            )
        self.epochs = [int(m) for m in milestones]
        self.factors = list(factors)

    def __call__(self, epoch: int) -> float:
        factor = 1.0
        for milestone, value in zip(self.epochs, self.factors, strict=True):
            if epoch >= milestone:
                factor = value
        return factor


class FractionalSteps(EpochSteps):
    """:class:`EpochSteps` whose milestones are fractions of ``max_epochs``."""

    def __init__(
        self, max_epochs: int, milestones: Sequence[float], factors: Sequence[float]
    ) -> None:
        _check_one_factor_each(milestones, factors)
        if any(not 0 < m <= 1 for m in milestones) or list(milestones) != sorted(milestones):
            raise ValueError(
                f"scheduler: milestones must be increasing fractions in (0, 1], got {list(milestones)}"
            )
        if max_epochs is None or max_epochs < 1:
            raise ValueError(f"scheduler: max_epochs must be >= 1, got {max_epochs}")
        self.epochs = [round(m * max_epochs) for m in milestones]
        self.factors = list(factors)


def epoch_step_lr(
    optimizer: Optimizer, milestones: Sequence[int], factors: Sequence[float]
) -> LambdaLR:
    """Piecewise-constant schedule: the learning rate is ``base * factors[i]`` from epoch ``milestones[i]`` on.

    Epochs count from 0 and do not scale with the run's length (the reference
    code's schedule is given this way). Stepped once per epoch.
    """
    return LambdaLR(optimizer, EpochSteps(milestones, factors))


def fractional_step_lr(
    optimizer: Optimizer,
    max_epochs: int,
    milestones: Sequence[float] = (0.5, 0.75),
    factors: Sequence[float] = (0.5, 0.25),
) -> LambdaLR:
    """Piecewise-constant schedule: the learning rate is ``base * factors[i]`` from ``milestones[i] * max_epochs`` on.

    The paper's schedule (lr halved at epoch 2000 of 4000 and again at 3000)
    is ``milestones=(0.5, 0.75), factors=(0.5, 0.25)``; the reference code's
    (x0.5 at 2000, x0.25 at 3000, x0.1 at 4000 of 5000) is close to
    ``(0.4, 0.6, 0.8), (0.5, 0.25, 0.1)`` (``scheduler=reference_code`` has
    it exactly, with :func:`epoch_step_lr`). Stepped once per epoch.
    """
    return LambdaLR(optimizer, FractionalSteps(max_epochs, milestones, factors))
