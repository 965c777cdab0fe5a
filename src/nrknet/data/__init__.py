"""Data: image I/O, synthetic defocus pairs, paired datasets and Lightning DataModules.

The DataModules (which import Lightning) live in :mod:`nrknet.data.datamodules`
and are not imported here, so ``nrknet.data.io`` stays light for the CLI tools.
"""

from nrknet.data.datasets import BlurryOnlyDataset, PairedImageDataset, make_test_dataset
from nrknet.data.io import (
    DatasetLayoutError,
    ImageReadError,
    ImageWriteError,
    LoadedImage,
    NRKNetDataError,
    PairingError,
    SizeMismatchError,
    read_image,
    read_image_full,
    write_image,
)
from nrknet.data.layouts import (
    scan_cuhk,
    scan_dpdd,
    scan_lfdof,
    scan_realdof,
    scan_rtf,
)

__all__ = [
    "BlurryOnlyDataset",
    "DatasetLayoutError",
    "ImageReadError",
    "ImageWriteError",
    "LoadedImage",
    "NRKNetDataError",
    "PairedImageDataset",
    "PairingError",
    "SizeMismatchError",
    "make_test_dataset",
    "read_image",
    "read_image_full",
    "scan_cuhk",
    "scan_dpdd",
    "scan_lfdof",
    "scan_realdof",
    "scan_rtf",
    "write_image",
]
