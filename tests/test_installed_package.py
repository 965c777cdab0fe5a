"""An installed package works outside the repository: the wheel carries the Hydra configs (the
top-level ``conf/`` is their one source; ``src/nrknet/conf`` links to it) and the bundled models.

The test builds the wheel, installs it into a temporary folder, and from another folder composes
every experiment, prints a job config through ``nrknet-train --cfg job``, and deblurs a photo with
``nrknet-predict``'s default model.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]

COMPOSE_EVERY_EXPERIMENT = r"""
import sys
from pathlib import Path
import nrknet
from hydra import compose, initialize_config_dir
from nrknet.utils.config import CONFIG_DIR
assert Path(nrknet.__file__).is_relative_to(Path(sys.argv[1])), nrknet.__file__
names = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))
with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
    for name in names:
        compose(config_name="train", overrides=[f"experiment={name}"])
        compose(config_name="eval", overrides=[f"experiment={name}", "ckpt_path=x"])
print(len(names), "experiments")
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    wheels, target = tmp_path_factory.mktemp("wheels"), tmp_path_factory.mktemp("site")
    source = tmp_path_factory.mktemp("source")  # a copy: building writes build/ beside the code
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("src", "conf"):
        ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
        shutil.copytree(ROOT / name, source / name, symlinks=True, ignore=ignore)
    pip = [sys.executable, "-m", "pip", "--quiet", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    (wheel,) = wheels.glob("nrknet-*.whl")
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(target), str(wheel)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    assert not (target / "nrknet" / "conf").is_symlink()  # real files in the wheel
    return target


def run(args: list[str], site: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_every_experiment_composes_from_the_installed_package(installed, tmp_path):
    proc = run(["-c", COMPOSE_EVERY_EXPERIMENT, str(installed)], installed, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    count = len(list((ROOT / "conf" / "experiment").glob("*.yaml")))
    assert proc.stdout.strip() == f"{count} experiments"
    job = run(["-m", "nrknet.train", "--cfg", "job", "experiment=quickstart"], installed, tmp_path)
    assert job.returncode == 0, job.stderr[-3000:]
    assert "nrknet.training.module.NRKNetModule" in job.stdout


def test_a_config_folder_of_ones_own_joins_the_search_path(installed, tmp_path):
    mine = tmp_path / "my_conf" / "experiment"
    mine.mkdir(parents=True)
    (mine / "mine.yaml").write_text("# @package _global_\nseed: 1234\n")
    args = ["-m", "nrknet.train", "--cfg", "job", "experiment=mine",
            f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]"]  # fmt: skip
    proc = run(args, installed, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "seed: 1234" in proc.stdout


def test_predict_runs_from_the_installed_package(installed, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(photos / "a.png"), rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    proc = run(["-m", "nrknet.predict", str(photos), "--out", "out", "-q"], installed, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "out" / "a.png").is_file()


def test_the_demo_runs_from_the_installed_package_with_its_examples(installed, tmp_path):
    from nrknet.demo.examples import EXAMPLES

    for example in EXAMPLES:
        assert (installed / "nrknet" / "demo" / "example_images" / example.filename).is_file()
    proc = run(["-m", "nrknet.demo", "--help"], installed, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--ckpt" in proc.stdout
