"""The DataModule of the rendered synthetic set (rendered on first use)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from nrknet.data.datamodules.benchmarks import DPDDDataModule
from nrknet.data.io import NRKNetDataError
from nrknet.data.synthetic import SynthSettings, generate_dataset, is_complete_dataset

#: the keyword arguments (``data.*`` keys) that make up the :class:`SynthSettings`
SETTING_KEYS = tuple(field.name for field in dataclasses.fields(SynthSettings))


class SyntheticDataModule(DPDDDataModule):
    """Synthetic defocus pairs rendered on first use (see :mod:`nrknet.data.synthetic`).

    The keyword arguments named as the fields of :class:`SynthSettings`
    (``num_train``, ``num_val``, ``num_test``, ``size``, ``seed``, ``max_coc``,
    ``bit_depth``, ``noise``, ``read_noise``, ``num_layers``,
    ``noise_per_pair``, ``val_scenes``; its defaults where left out) make up ``self.settings``,
    checked there; the others go to :class:`DPDDDataModule`.
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
        generation_workers: int = 1,
        progress: bool = True,
        **kwargs: Any,
    ) -> None:
        settings = {key: kwargs.pop(key) for key in SETTING_KEYS if key in kwargs}
        super().__init__(root, **kwargs)
        self.settings = SynthSettings(**settings)
        if self.crop_size is not None and self.crop_size > self.settings.size:
            self.crop_size = self.settings.size
        self.generation_workers = int(generation_workers)
        self.progress = bool(progress)

    def is_prepared(self) -> bool:
        return is_complete_dataset(self.root, self.settings)

    def prepare_data(self) -> None:
        generate_dataset(
            self.root, self.settings, workers=self.generation_workers, progress=self.progress
        )

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.settings.num_train < 1:
            raise NRKNetDataError(
                f"data.num_train={self.settings.num_train}: training needs at least one rendered pair"
            )
        if not self.is_prepared():
            self.prepare_data()
        super().setup(stage)
