"""Learning-rate schedules expressed as fractions of the run, so shorter runs scale them."""

from __future__ import annotations

from collections.abc import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


class FractionalSteps:
    """Multiplier of the base learning rate at a given epoch (picklable for checkpoints)."""

    def __init__(
        self, max_epochs: int, milestones: Sequence[float], factors: Sequence[float]
    ) -> None:
        if len(milestones) != len(factors):
            raise ValueError(
                f"scheduler: {len(milestones)} milestones but {len(factors)} factors; give one factor per milestone"
            )
        if any(not 0 < m <= 1 for m in milestones) or list(milestones) != sorted(milestones):
            raise ValueError(
                f"scheduler: milestones must be increasing fractions in (0, 1], got {list(milestones)}"
            )
        if max_epochs is None or max_epochs < 1:
            raise ValueError(f"scheduler: max_epochs must be >= 1, got {max_epochs}")
        self.epochs = [round(m * max_epochs) for m in milestones]
        self.factors = list(factors)

    def __call__(self, epoch: int) -> float:
        factor = 1.0
        for milestone, value in zip(self.epochs, self.factors, strict=True):
            if epoch >= milestone:
                factor = value
        return factor


def fractional_step_lr(
    optimizer: Optimizer,
    max_epochs: int,
    milestones: Sequence[float] = (0.5, 0.75),
    factors: Sequence[float] = (0.5, 0.25),
) -> LambdaLR:
    """Piecewise-constant schedule: the learning rate is ``base * factors[i]`` from ``milestones[i] * max_epochs`` on.

    The paper's schedule (lr halved at epoch 2000 of 4000 and again at 3000)
    is ``milestones=(0.5, 0.75), factors=(0.5, 0.25)``; the reference code's
    (x0.5 at 2000, x0.25 at 3000, x0.1 at 4000 of 5000) is
    ``(0.4, 0.6, 0.8), (0.5, 0.25, 0.1)``. Stepped once per epoch.
    """
    return LambdaLR(optimizer, FractionalSteps(max_epochs, milestones, factors))
