"""Lightning DataModules, one per benchmark, sharing :class:`DefocusDataModule`.

Common arguments: ``root``, ``batch_size``, ``crop_size``, ``num_workers``,
``on_bad_image``, ``pin_memory``, ``val_batch_size``, ``extra_test_sets`` and
``cache``.

* Training: random crops of ``crop_size`` with the same flips and 90-degree
  rotation for both images of a pair, shuffled, ``drop_last=False``; order
  and augmentation follow from (seed, epoch, position) and the loader's
  position is saved in checkpoints (:mod:`nrknet.data.resumable`).
  ``cache="ram"``: decoded once in :meth:`setup` (per process) into shared
  memory all loader workers read (:mod:`nrknet.data.cache`).
* Validation: whole images of the validation split only (DPDD ``val_c``; for
  LFDOF, which has none, a fixed set of held-out training scenes). The test
  sets are never used for validation.
* Test: ``test_dataloader()`` returns a list of loaders, one per name in
  ``test_set_names`` and in that order: the module's own test set (if any)
  then ``extra_test_sets``, e.g. a DPDD model scored on DPDD, RealDOF and RTF
  in one run. Each test dataset carries ``score_crop`` (RTF: rows/cols 4..363).
* RealDOF and RTF are test-only; CUHK-BD (no ground truth) only has
  ``predict_dataloader()``. Asking them for other loaders raises
  :class:`~nrknet.data.io.NRKNetDataError`.

``extra_test_sets`` maps a name to ``{"kind": dpdd|lfdof|realdof|rtf|synthetic,
"root": path}`` plus optional ``list_file`` (LFDOF), ``subset`` (RTF) or
``score_crop``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from nrknet.data.cache import check_cache_mode
from nrknet.data.datasets import BlurryOnlyDataset, PairedImageDataset, make_test_dataset
from nrknet.data.io import NRKNetDataError
from nrknet.data.layouts import (
    Pair,
    scan_cuhk,
    scan_dpdd,
    scan_lfdof,
    split_lfdof_scenes,
)
from nrknet.data.resumable import resumable_loader, run_seed
from nrknet.data.scene_groups import dpdd_scene_groups
from nrknet.data.synthetic import SynthSettings, generate_dataset, is_complete_dataset

__all__ = [
    "CUHKDataModule",
    "DPDDDataModule",
    "DefocusDataModule",
    "LFDOFDataModule",
    "RTFDataModule",
    "RealDOFDataModule",
    "SyntheticDataModule",
]

TEST_SET_KINDS = ("dpdd", "lfdof", "realdof", "rtf", "synthetic")


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
        entry["kind"] = str(entry["kind"]).lower()
        if entry["kind"] not in TEST_SET_KINDS:
            raise ValueError(
                f"extra_test_sets[{name!r}]: unknown kind {entry['kind']!r} "
                f"(expected one of {', '.join(TEST_SET_KINDS)})"
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
        for spec in self.extra_test_sets.values():
            options = {k: v for k, v in spec.items() if k not in ("kind", "root")}
            sets.append(
                make_test_dataset(
                    spec["kind"],
                    spec["root"],
                    on_bad_image=self.on_bad_image,
                    check_files=self.check_files,
                    **options,
                )
            )
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
                f"{self.dataset_name} has no ground truth, so no test set: use predict_dataloader()"
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


class DPDDDataModule(DefocusDataModule):
    """DPDD (Canon dual-pixel defocus, ``train_c``/``val_c``/``test_c``); test set name ``dpdd``.

    ``scene_groups``: group name -> list file of test images, scored as results
    of their own; by default DPDD's indoor/outdoor label files when they are in
    the root (see :mod:`nrknet.data.scene_groups`).
    """

    dataset_name = "DPDD"
    test_name = "dpdd"
    looks_for_scene_labels = True

    def __init__(
        self, root: str | os.PathLike, scene_groups: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(root, **kwargs)
        self.scene_groups = scene_groups

    def _train_pairs(self) -> list[Pair]:
        return scan_dpdd(self.root, "train")

    def _val_pairs(self) -> list[Pair]:
        return scan_dpdd(self.root, "val")

    def _own_test_dataset(self) -> PairedImageDataset:
        pairs = scan_dpdd(self.root, "test")
        # label files are checked before the images are probed: a bad list fails fast
        groups = dpdd_scene_groups(self.root, pairs, self.scene_groups, self.looks_for_scene_labels)
        dataset = PairedImageDataset(
            pairs, on_bad_image=self.on_bad_image, check_files=self.check_files
        )
        dataset.scene_groups = groups
        return dataset


class LFDOFDataModule(DefocusDataModule):
    """LFDOF (light-field defocus); test set name ``lfdof``.

    LFDOF has no validation split: ``num_val_scenes`` training scenes, evenly
    spaced in sorted scene order (a fixed choice), are held out of training
    and all their inputs form the validation set. ``train_list`` /
    ``test_list`` optionally name list files to use instead of folder scans.
    """

    dataset_name = "LFDOF"
    test_name = "lfdof"

    def __init__(
        self,
        root: str | os.PathLike,
        num_val_scenes: int = 20,
        train_list: str | os.PathLike | None = None,
        test_list: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, **kwargs)
        if int(num_val_scenes) < 0:
            raise ValueError("num_val_scenes must be >= 0")
        self.num_val_scenes = int(num_val_scenes)
        self.train_list = train_list
        self.test_list = test_list
        self._split_cache: tuple[list[Pair], list[Pair]] | None = None

    def _split(self) -> tuple[list[Pair], list[Pair]]:
        if self._split_cache is None:
            pairs = scan_lfdof(self.root, "train", self.train_list)
            self._split_cache = split_lfdof_scenes(pairs, self.num_val_scenes)
        return self._split_cache

    def _train_pairs(self) -> list[Pair]:
        return self._split()[0]

    def _val_pairs(self) -> list[Pair]:
        val = self._split()[1]
        if not val:
            raise NRKNetDataError(
                "LFDOF validation set is empty: set num_val_scenes >= 1 (and have at least 2 training scenes)"
            )
        return val

    def _own_test_dataset(self) -> PairedImageDataset:
        return make_test_dataset(
            "lfdof",
            self.root,
            on_bad_image=self.on_bad_image,
            check_files=self.check_files,
            list_file=self.test_list,
        )


class RealDOFDataModule(DefocusDataModule):
    """RealDOF (50 test pairs, test only); test set name ``realdof``."""

    dataset_name = "RealDOF"
    test_name = "realdof"
    has_training_data = False

    def _own_test_dataset(self) -> PairedImageDataset:
        return make_test_dataset(
            "realdof", self.root, on_bad_image=self.on_bad_image, check_files=self.check_files
        )


class RTFDataModule(DefocusDataModule):
    """RTF (22 test pairs, test only, scored on rows/cols 4..363); test set name ``rtf``."""

    dataset_name = "RTF"
    test_name = "rtf"
    has_training_data = False

    def __init__(self, root: str | os.PathLike, subset: str = "0", **kwargs: Any) -> None:
        super().__init__(root, **kwargs)
        self.subset = str(subset)

    def _own_test_dataset(self) -> PairedImageDataset:
        return make_test_dataset(
            "rtf",
            self.root,
            on_bad_image=self.on_bad_image,
            check_files=self.check_files,
            subset=self.subset,
        )


class CUHKDataModule(DefocusDataModule):
    """CUHK-BD (blurry photos, no ground truth): ``predict_dataloader()`` only."""

    dataset_name = "CUHK-BD"
    test_name = None
    has_training_data = False

    def _test_only_error(self, what: str) -> NRKNetDataError:
        return NRKNetDataError(
            f"CUHK-BD has no ground truth and no {what} split: use predict_dataloader() "
            "for visual results"
        )

    def _predict_dataset(self) -> BlurryOnlyDataset:
        return BlurryOnlyDataset(
            scan_cuhk(self.root), on_bad_image=self.on_bad_image, check_files=self.check_files
        )


class SyntheticDataModule(DPDDDataModule):
    """Synthetic defocus pairs rendered on first use (see :mod:`nrknet.data.synthetic`).

    :meth:`prepare_data` generates the set under ``root`` (with a progress
    bar) unless a complete set with the same settings is already there, in
    which case it is reused; a set generated with other settings is replaced.
    The files are then read through the same DPDD-layout loader as real data.
    Test set name ``synthetic``. ``crop_size`` larger than ``size`` is reduced
    to ``size`` (whole images).
    """

    dataset_name = "synthetic"
    test_name = "synthetic"
    # rendered sets have no label files (data.scene_groups still applies)
    looks_for_scene_labels = False

    def __init__(
        self,
        root: str | os.PathLike,
        num_train: int = 64,
        num_val: int = 8,
        num_test: int = 16,
        size: int = 256,
        seed: int = 0,
        max_coc: float | None = None,
        bit_depth: int = 8,
        noise: float = 0.0,
        read_noise: float = 0.0,
        num_layers: int = 16,
        generation_workers: int = 1,
        progress: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, **kwargs)
        self.settings = SynthSettings(
            num_train=num_train,
            num_val=num_val,
            num_test=num_test,
            size=size,
            seed=seed,
            max_coc=max_coc,
            bit_depth=bit_depth,
            noise=noise,
            read_noise=read_noise,
            num_layers=num_layers,
        ).resolved()
        if self.crop_size is not None and self.crop_size > self.settings.size:
            self.crop_size = self.settings.size
        self.generation_workers = int(generation_workers)
        self.progress = bool(progress)

    def is_prepared(self) -> bool:
        return is_complete_dataset(self.root, self.settings)

    def prepare_data(self) -> None:
        generate_dataset(
            self.root,
            num_train=self.settings.num_train,
            num_val=self.settings.num_val,
            num_test=self.settings.num_test,
            size=self.settings.size,
            seed=self.settings.seed,
            max_coc=self.settings.max_coc,
            bit_depth=self.settings.bit_depth,
            noise=self.settings.noise,
            read_noise=self.settings.read_noise,
            num_layers=self.settings.num_layers,
            workers=self.generation_workers,
            progress=self.progress,
        )

    def setup(self, stage: str | None = None) -> None:
        if not self.is_prepared():
            self.prepare_data()
        super().setup(stage)
