"""The shared DataModule: loaders, crops, caching, test sets; one subclass per dataset."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from nrknet.data.cache import check_cache_mode
from nrknet.data.datasets import TEST_SET_KINDS, PairedImageDataset, make_test_dataset
from nrknet.data.io import NRKNetDataError
from nrknet.data.layouts import Pair
from nrknet.data.resumable import resumable_loader, run_seed
from nrknet.utils.checks import choice


def _normalise_extra(extra: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    if extra is None:
        return {}
    if not isinstance(extra, Mapping):
        raise ValueError(
            f"extra_test_sets must map a name to {{kind, root}}, got {type(extra).__name__}"
        )
    out: dict[str, dict[str, Any]] = {}
    for name, spec in extra.items():
        if spec is None:  # allows removing an entry from a config with `name: null`
            continue
        if not isinstance(spec, Mapping) or "kind" not in spec or "root" not in spec:
            raise ValueError(f"extra_test_sets[{name!r}] must have 'kind' and 'root', got {spec!r}")
        entry = {str(k): v for k, v in spec.items()}
        entry["kind"] = choice(
            f"extra_test_sets[{name!r}].kind", str(entry["kind"]).lower(), TEST_SET_KINDS
        )
        if "score_crop" in entry and entry["score_crop"] is not None:
            entry["score_crop"] = tuple(int(v) for v in entry["score_crop"])
        out[str(name)] = entry
    return out


class DefocusDataModule(LightningDataModule):
    """Shared machinery: datasets built in :meth:`setup`, loaders, test-set bookkeeping.

    Subclasses set ``dataset_name`` and ``test_name`` (``None`` when the
    dataset has no test split of its own) and override ``_train_pairs``,
    ``_val_pairs`` and ``_own_test_dataset`` as needed.
    """

    dataset_name = "dataset"
    test_name: str | None = None
    has_training_data = True

    def __init__(
        self,
        root: str | os.PathLike,
        batch_size: int = 4,
        crop_size: int | None = 256,
        num_workers: int = 0,
        on_bad_image: str = "raise",
        pin_memory: bool = False,
        val_batch_size: int = 1,
        extra_test_sets: Mapping[str, Any] | None = None,
        augment: bool = True,
        pad_if_smaller: bool = True,
        check_files: bool = True,
        cache: str = "none",
    ) -> None:
        super().__init__()
        if root is None:
            raise ValueError(f"{type(self).__name__} needs a root folder")
        if int(batch_size) < 1 or int(val_batch_size) < 1:
            raise ValueError("batch_size and val_batch_size must be >= 1")
        if int(num_workers) < 0:
            raise ValueError("num_workers must be >= 0")
        if on_bad_image not in ("raise", "skip"):
            raise ValueError(f"on_bad_image must be 'raise' or 'skip', got {on_bad_image!r}")
        self.root = Path(root).expanduser()
        self.batch_size = int(batch_size)
        self.crop_size = None if crop_size is None else int(crop_size)
        self.num_workers = int(num_workers)
        self.on_bad_image = on_bad_image
        self.pin_memory = bool(pin_memory)
        self.val_batch_size = int(val_batch_size)
        self.augment = bool(augment)
        self.pad_if_smaller = bool(pad_if_smaller)
        self.check_files = bool(check_files)
        self.cache = check_cache_mode(cache)
        self.extra_test_sets = _normalise_extra(extra_test_sets)
        names = ([self.test_name] if self.test_name else []) + list(self.extra_test_sets)
        if len(set(names)) != len(names):
            raise ValueError(f"test set names must be unique, got {names}")
        self.test_set_names: list[str] = names
        self.train_dataset: PairedImageDataset | None = None
        self.val_dataset: PairedImageDataset | None = None
        self.test_datasets: list[PairedImageDataset] = []
        self.predict_dataset: Dataset | None = None

    # ------------------------------------------------------------------ hooks for subclasses

    def _test_only_error(self, what: str) -> NRKNetDataError:
        return NRKNetDataError(
            f"{self.dataset_name} is a test-only dataset and has no {what} split: "
            "train on another dataset and add this one to its extra_test_sets"
        )

    def _train_pairs(self) -> list[Pair]:
        raise self._test_only_error("training")

    def _val_pairs(self) -> list[Pair]:
        raise self._test_only_error("validation")

    def _own_test_dataset(self) -> PairedImageDataset | None:
        return None

    # ------------------------------------------------------------------ datasets

    def _train_dataset(self) -> PairedImageDataset:
        return PairedImageDataset(
            self._train_pairs(),
            crop_size=self.crop_size,
            augment=self.augment,
            on_bad_image=self.on_bad_image,
            pad_if_smaller=self.pad_if_smaller,
            check_files=self.check_files,
            cache=self.cache,
            cache_workers=max(1, self.num_workers),
        )

    def _val_dataset(self) -> PairedImageDataset:
        return PairedImageDataset(
            self._val_pairs(), on_bad_image=self.on_bad_image, check_files=self.check_files
        )

    def _test_datasets(self) -> list[PairedImageDataset]:
        sets: list[PairedImageDataset] = []
        if self.test_name:
            own = self._own_test_dataset()
            if own is None:
                raise NRKNetDataError(f"{self.dataset_name} has no test set")
            sets.append(own)
        for name, spec in self.extra_test_sets.items():
            options = {k: v for k, v in spec.items() if k not in ("kind", "root")}
            try:
                dataset = make_test_dataset(
                    spec["kind"],
                    spec["root"],
                    on_bad_image=self.on_bad_image,
                    check_files=self.check_files,
                    **options,
                )
            except NRKNetDataError as exc:
                raise NRKNetDataError(
                    f"extra test set '{name}' (leave it out with '~data.extra_test_sets.{name}', "
                    f"or all of them with data.extra_test_sets=null): {exc}"
                ) from exc
            sets.append(dataset)
        return sets

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets a stage needs (``fit``, ``validate``, ``test``, ``predict`` or all)."""
        if stage in (None, "fit") and self.has_training_data:
            self.train_dataset = self._train_dataset()
        if stage in (None, "fit", "validate") and self.has_training_data:
            self.val_dataset = self._val_dataset()
        if stage in (None, "test") and self.test_set_names:
            self.test_datasets = self._test_datasets()
        if stage in (None, "predict"):
            self.predict_dataset = self._predict_dataset()

    def _predict_dataset(self) -> Dataset | None:
        return None

    # ------------------------------------------------------------------ loaders

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            drop_last=False,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        if not self.has_training_data:
            raise self._test_only_error("training")
        if self.train_dataset is None:
            self.setup("fit")
        assert self.train_dataset is not None
        trainer = self.trainer
        # A resumed run starts at the epoch its loop state says (later epochs come with set_epoch).
        return resumable_loader(
            self.train_dataset,
            self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            seed=run_seed(),
            epoch=trainer.fit_loop.epoch_progress.current.processed if trainer else 0,
            num_replicas=trainer.world_size if trainer else 1,
            rank=trainer.global_rank if trainer else 0,
        )

    def val_dataloader(self) -> DataLoader:
        if not self.has_training_data:
            raise self._test_only_error("validation")
        if self.val_dataset is None:
            self.setup("validate")
        assert self.val_dataset is not None
        return self._loader(self.val_dataset, self.val_batch_size, shuffle=False)

    def test_dataloader(self) -> list[DataLoader]:
        """One loader per entry of ``test_set_names``, in that order."""
        if not self.test_set_names:
            raise NRKNetDataError(
                f"{self.dataset_name} has no ground truth, so no test set: deblur its photos with nrknet-predict "
                "(or use predict_dataloader() in Python)"
            )
        if not self.test_datasets:
            self.setup("test")
        return [self._loader(ds, self.val_batch_size, shuffle=False) for ds in self.test_datasets]

    def predict_dataloader(self) -> DataLoader:
        if self.predict_dataset is None:
            self.setup("predict")
        if self.predict_dataset is None:
            raise NRKNetDataError(f"{self.dataset_name} has no prediction set")
        return self._loader(self.predict_dataset, self.val_batch_size, shuffle=False)
