"""DataModules of the benchmark datasets: DPDD, LFDOF, RealDOF, RTF, CUHK-BD."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from nrknet.data.datamodules.base import DefocusDataModule
from nrknet.data.datasets import BlurryOnlyDataset, PairedImageDataset, make_test_dataset
from nrknet.data.io import NRKNetDataError
from nrknet.data.layouts import (
    Pair,
    scan_cuhk,
    scan_dpdd,
    scan_lfdof,
    split_lfdof_scenes,
)
from nrknet.data.scene_groups import dpdd_scene_groups


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
            f"CUHK-BD has no ground truth and no {what} split: deblur its photos with nrknet-predict "
            "(or predict_dataloader() in Python) for visual results"
        )

    def _predict_dataset(self) -> BlurryOnlyDataset:
        return BlurryOnlyDataset(
            scan_cuhk(self.root), on_bad_image=self.on_bad_image, check_files=self.check_files
        )
