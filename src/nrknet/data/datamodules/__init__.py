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

from nrknet.data.datamodules.base import TEST_SET_KINDS, DefocusDataModule
from nrknet.data.datamodules.benchmarks import (
    CUHKDataModule,
    DPDDDataModule,
    LFDOFDataModule,
    RealDOFDataModule,
    RTFDataModule,
)
from nrknet.data.datamodules.synthetic import SyntheticDataModule

__all__ = [
    "TEST_SET_KINDS",
    "CUHKDataModule",
    "DPDDDataModule",
    "DefocusDataModule",
    "LFDOFDataModule",
    "RTFDataModule",
    "RealDOFDataModule",
    "SyntheticDataModule",
]
