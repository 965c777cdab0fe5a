"""A training loader whose every batch is a pure function of (seed, epoch, position).

Exact resumption needs the order of the samples and their augmentation to be
reproducible from the checkpoint alone:

* :class:`EpochShuffleSampler` draws the order of epoch ``e`` from ``seed +
  e`` (as :class:`~torch.utils.data.DistributedSampler` does, which it is, so
  DDP shards it too) and yields :class:`SampleKey` items: the dataset index
  plus the seed of that sample's augmentation, derived from ``(seed, epoch,
  index)``. Loader workers therefore hold no random state worth saving.
* Its iterator is stateful (epoch and position). The loader is torchdata's
  :class:`~torchdata.stateful_dataloader.StatefulDataLoader`, whose
  ``state_dict`` Lightning stores in the checkpoint's loop state and gives
  back on resume, so a run resumed in the middle of an epoch goes on with
  exactly the samples it had not seen yet.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
from torch.utils.data import Dataset, DistributedSampler
from torchdata.stateful_dataloader import StatefulDataLoader

__all__ = ["EpochShuffleSampler", "SampleKey", "augment_seed", "resumable_loader", "run_seed"]


class SampleKey(NamedTuple):
    """What a sampler hands the dataset: which item, and the seed of its random augmentation."""

    index: int
    augment_seed: int


def augment_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for the augmentation of item ``index`` in ``epoch``, well mixed from all three."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(index)]).generate_state(2)
    return (int(state[0]) << 31 | int(state[1]) >> 1) & (2**63 - 1)


def run_seed() -> int:
    """The run's seed as ``lightning.seed_everything`` published it (0 when it was not called)."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


class _EpochIterator:
    """The keys of one epoch from a given position; its state is ``(epoch, position)``."""

    def __init__(self, sampler: EpochShuffleSampler, epoch: int) -> None:
        self.sampler = sampler
        self._start(epoch, 0)

    def _start(self, epoch: int, position: int) -> None:
        self.epoch, self.position = int(epoch), int(position)
        self.order = self.sampler.order(self.epoch)

    def __iter__(self) -> _EpochIterator:
        return self

    def __next__(self) -> SampleKey:
        if self.position >= len(self.order):
            raise StopIteration
        index = self.order[self.position]
        self.position += 1
        return SampleKey(index, augment_seed(self.sampler.seed, self.epoch, index))

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._start(state["epoch"], state["position"])


class EpochShuffleSampler(DistributedSampler):
    """Shuffled :class:`SampleKey` items; the order of an epoch depends only on ``seed`` and the epoch.

    ``epoch`` is the epoch of the first iteration (Lightning calls
    :meth:`set_epoch` before each later one). One process by default; under
    DDP give ``num_replicas`` and ``rank``.
    """

    def __init__(
        self,
        dataset: Dataset,
        seed: int,
        epoch: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.epoch = int(epoch)

    def order(self, epoch: int) -> list[int]:
        """The dataset indices this process sees in ``epoch``, in order."""
        current, self.epoch = self.epoch, epoch
        try:
            return list(super().__iter__())
        finally:
            self.epoch = current

    def __iter__(self) -> Iterator[SampleKey]:  # type: ignore[override]
        return _EpochIterator(self, self.epoch)


def resumable_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    num_workers: int,
    pin_memory: bool,
    seed: int,
    epoch: int = 0,
    num_replicas: int = 1,
    rank: int = 0,
) -> StatefulDataLoader:
    """The shuffled training loader: :class:`EpochShuffleSampler` in a ``StatefulDataLoader``."""
    sampler = EpochShuffleSampler(
        dataset, seed=seed, epoch=epoch, num_replicas=num_replicas, rank=rank
    )
    with warnings.catch_warnings():
        # torchdata 0.11 calls a torch function that newer torch marks deprecated, on every loader
        warnings.filterwarnings("ignore", message=".*set_vital.*deprecated")
        return StatefulDataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=num_workers,
            pin_memory=pin_memory,
            drop_last=False,
            persistent_workers=num_workers > 0,
        )
