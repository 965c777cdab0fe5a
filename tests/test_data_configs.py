"""Every conf/data/*.yaml instantiates its DataModule with the documented test sets."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from nrknet.data import datamodules as dms
from nrknet.data.io import NRKNetDataError

CONF = Path(__file__).resolve().parents[1] / "conf" / "data"

EXPECTED = {
    "synthetic": (dms.SyntheticDataModule, ["synthetic"], "synthetic"),
    "dpdd": (dms.DPDDDataModule, ["dpdd", "realdof", "rtf"], "dd_dp_dataset_png"),
    "lfdof": (dms.LFDOFDataModule, ["lfdof", "rtf"], "LFDOF"),
    "realdof": (dms.RealDOFDataModule, ["realdof"], "RealDOF"),
    "rtf": (dms.RTFDataModule, ["rtf"], "RTF"),
    "cuhk": (dms.CUHKDataModule, [], "CUHK-BD"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_data_config_instantiates(tmp_path: Path, name: str) -> None:
    cfg = OmegaConf.merge(
        {"paths": {"data_dir": str(tmp_path)}}, {"data": OmegaConf.load(CONF / f"{name}.yaml")}
    )
    dm = instantiate(cfg.data)
    cls, names, folder = EXPECTED[name]
    assert type(dm) is cls
    assert dm.test_set_names == names
    assert dm.root == tmp_path / folder
    for spec in dm.extra_test_sets.values():
        assert Path(spec["root"]).parent == tmp_path


def test_all_configs_are_covered() -> None:
    assert {p.stem for p in CONF.glob("*.yaml")} == set(EXPECTED)


def test_a_missing_extra_test_set_names_the_setting_that_leaves_it_out(tmp_path: Path) -> None:
    for sub in ("source", "target"):
        folder = tmp_path / "dd_dp_dataset_png" / "test_c" / sub
        folder.mkdir(parents=True)
        cv2.imwrite(str(folder / "0.png"), np.full((32, 32, 3), 128, np.uint8))
    cfg = OmegaConf.merge(
        {"paths": {"data_dir": str(tmp_path)}}, {"data": OmegaConf.load(CONF / "dpdd.yaml")}
    )
    dm = instantiate(cfg.data)
    with pytest.raises(
        NRKNetDataError, match=r"extra test set 'realdof' .*~data\.extra_test_sets\.realdof"
    ):
        dm.setup("test")
    without = instantiate(OmegaConf.merge(cfg.data, {"extra_test_sets": None}))
    without.setup("test")
    assert [len(d) for d in without.test_datasets] == [1]
