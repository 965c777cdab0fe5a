"""Every entry point answers bad input with one clear error line and a non-zero exit, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


def run(program: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [str(BIN / program), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def hydra_args(tmp_path: Path) -> list[str]:
    return [f"paths.root_dir={tmp_path}", f"hydra.run.dir={tmp_path}/run", "metrics.lpips=off"]


def tiny_train(tmp_path: Path, data_dir: Path) -> list[str]:
    return [
        *hydra_args(tmp_path), f"paths.data_dir={data_dir}", "data.num_train=4", "data.num_val=1",
        "data.num_test=1", "data.size=64", "data.progress=false", "model.width=4", "trainer.max_epochs=1",
    ]  # fmt: skip


@pytest.fixture
def corrupt_realdof(tmp_path) -> Path:
    root = tmp_path / "RealDOF"
    for sub in ("source", "target"):
        (root / sub).mkdir(parents=True)
        cv2.imwrite(str(root / sub / "00.png"), np.full((40, 40, 3), 128, np.uint8))
    good = (root / "source" / "00.png").read_bytes()
    (root / "source" / "01.png").write_bytes(good[: len(good) // 2])  # truncated
    cv2.imwrite(str(root / "target" / "01.png"), np.full((40, 40, 3), 128, np.uint8))
    return root


@pytest.fixture
def foreign_checkpoint(tmp_path) -> Path:
    path = tmp_path / "resnet.ckpt"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(4, 3, 3, 3)}}, path)
    return path


def assert_clean_error(proc: subprocess.CompletedProcess, program: str, *needles: str) -> None:
    assert proc.returncode != 0, proc.stdout[-2000:]
    err = proc.stderr
    assert "Traceback" not in err, err[-3000:]
    assert f"{program}: error:" in err, err[-3000:]
    for needle in needles:
        assert needle in err, f"{needle!r} not in:\n{err[-3000:]}"


def test_train_missing_dataset_root(tmp_path):
    proc = run(
        "nrknet-train",
        "data=dpdd",
        f"paths.data_dir={tmp_path}/nowhere",
        *hydra_args(tmp_path),
        cwd=tmp_path,
    )
    assert_clean_error(proc, "nrknet-train", "nowhere", "train_c")


def test_train_unknown_model_variant(tmp_path):
    proc = run("nrknet-train", "model.atoms=wavelet", *hydra_args(tmp_path), cwd=tmp_path)
    assert_clean_error(proc, "nrknet-train", "atoms='wavelet' is not known")


def test_train_unknown_config_option(tmp_path):
    proc = run("nrknet-train", "model=transformer", *hydra_args(tmp_path), cwd=tmp_path)
    # Hydra reports composition errors itself: what is missing and the options there are
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "Could not find 'model/transformer'" in proc.stderr and "nrknet_small" in proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
@pytest.mark.parametrize(
    "program, args", [("nrknet-train", []), ("nrknet-eval", ["ckpt_path=unet-synthetic"])]
)
def test_gpu_trainer_without_a_gpu(tmp_path, program, args):
    proc = run(program, "trainer=gpu", *args, *hydra_args(tmp_path), cwd=tmp_path)
    assert_clean_error(proc, program, "trainer.accelerator=gpu needs a GPU", "trainer=cpu")


def test_train_negative_crop(tmp_path):
    proc = run(
        "nrknet-train", *tiny_train(tmp_path, tmp_path / "data"), "data.crop_size=-8", cwd=tmp_path
    )
    assert_clean_error(proc, "nrknet-train", "crop_size")


def test_train_crop_larger_than_images_without_padding(tmp_path, corrupt_realdof):
    (corrupt_realdof / "source" / "01.png").unlink()
    (corrupt_realdof / "target" / "01.png").unlink()
    dpdd = tmp_path / "dd_dp_dataset_png"
    for split in ("train_c", "val_c", "test_c"):
        for sub in ("source", "target"):
            (dpdd / split / sub).mkdir(parents=True)
            cv2.imwrite(str(dpdd / split / sub / "a.png"), np.full((40, 40, 3), 100, np.uint8))
    proc = run(
        "nrknet-train", "data=dpdd", f"paths.data_dir={tmp_path}", "~data.extra_test_sets", "data.num_workers=0",
        "data.crop_size=64", "data.pad_if_smaller=false", "model.width=4", *hydra_args(tmp_path), cwd=tmp_path,
    )  # fmt: skip
    assert_clean_error(proc, "nrknet-train", "a.png", "64")


def test_eval_missing_checkpoint(tmp_path):
    proc = run(
        "nrknet-eval", f"ckpt_path={tmp_path}/none.ckpt", *hydra_args(tmp_path), cwd=tmp_path
    )
    assert_clean_error(proc, "nrknet-eval", "none.ckpt", "not found")


def test_eval_checkpoint_of_another_architecture(tmp_path, foreign_checkpoint):
    proc = run(
        "nrknet-eval", f"ckpt_path={foreign_checkpoint}", *hydra_args(tmp_path), cwd=tmp_path
    )
    assert_clean_error(proc, "nrknet-eval", "resnet.ckpt", "not an NRKNet checkpoint")


def test_eval_empty_dataset_folder_and_corrupt_image(tmp_path, corrupt_realdof):
    from nrknet.models.nrknet import NRKNet
    from nrknet.weights.checkpoint import save_model

    ckpt = tmp_path / "m.ckpt"
    save_model(NRKNet(width=4), ckpt)
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run(
        "nrknet-eval",
        f"ckpt_path={ckpt}",
        "data=realdof",
        f"data.root={empty}",
        *hydra_args(tmp_path),
        cwd=tmp_path,
    )
    assert_clean_error(proc, "nrknet-eval", "empty", "source")
    proc = run(
        "nrknet-eval", f"ckpt_path={ckpt}", "data=realdof", f"data.root={corrupt_realdof}", *hydra_args(tmp_path),
        cwd=tmp_path,
    )  # fmt: skip
    assert_clean_error(proc, "nrknet-eval", "01.png")


def test_convert_wrong_path_and_foreign_file(tmp_path, foreign_checkpoint):
    proc = run(
        "nrknet-convert", str(tmp_path / "missing.pth"), str(tmp_path / "out.ckpt"), cwd=tmp_path
    )
    assert_clean_error(proc, "nrknet-convert", "missing.pth")
    proc = run("nrknet-convert", str(foreign_checkpoint), str(tmp_path / "out.ckpt"), cwd=tmp_path)
    assert_clean_error(proc, "nrknet-convert", "missing keys")
    assert not (tmp_path / "out.ckpt").exists()


def test_synth_negative_sizes(tmp_path):
    proc = run("nrknet-synth", "--out", str(tmp_path / "s"), "--train", "-3", cwd=tmp_path)
    assert_clean_error(proc, "nrknet-synth", "train")
    proc = run("nrknet-synth", "--out", str(tmp_path / "s"), "--size", "0", cwd=tmp_path)
    assert_clean_error(proc, "nrknet-synth", "size")
