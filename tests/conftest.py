from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def one_thread():
    """Small tensors gain nothing from threads, and a busy machine makes them very slow."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def parity_fixture() -> dict:
    return torch.load(FIXTURES / "nrknet_reference_parity_w8.pt", weights_only=True)


# ---------------------------------------------------------------- Hydra composition for framework tests
CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"


def tiny_overrides(data_dir: Path, out_dir: Path) -> list[str]:
    """Small synthetic data and a narrow model, so a CPU run takes seconds."""
    return [
        f"paths.root_dir={out_dir}",
        f"paths.data_dir={data_dir}",
        f"paths.log_dir={out_dir}/logs",
        f"paths.output_dir={out_dir}",
        "data=synthetic",
        "data.num_train=6",
        "data.num_val=2",
        "data.num_test=2",
        "data.size=64",
        "data.max_coc=4",
        "data.crop_size=32",
        "data.batch_size=2",
        "data.num_workers=0",
        "data.progress=false",
        "trainer=cpu",
        "trainer.check_val_every_n_epoch=1",  # the quickstart validates every 2nd epoch
        "trainer.enable_progress_bar=false",
        "~callbacks.progress_bar",
        "logger=csv",
        "metrics.lpips=off",
        "model.width=4",
    ]


@pytest.fixture(scope="package")
def compose_train():
    """Compose ``conf/train.yaml`` with overrides, as ``nrknet-train`` would (Hydra config included)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    def _compose(overrides: list[str], config_name: str = "train"):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        return cfg

    yield _compose
    GlobalHydra.instance().clear()


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory) -> Path:
    """One tiny synthetic set shared by the framework tests (rendered on first use)."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A tiny NRKNet checkpoint (width 8, seed 0) for the inference tests."""
    from nrknet.models.nrknet import NRKNet
    from nrknet.weights.checkpoint import save_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    save_model(NRKNet(width=8), path)
    return path


@pytest.fixture(scope="module")
def unet_ckpt(tmp_path_factory) -> Path:
    """A tiny U-Net baseline checkpoint whose output differs from its input."""
    from nrknet.models.unet_baseline import UNetBaseline
    from nrknet.weights.checkpoint import save_model

    torch.manual_seed(0)
    model = UNetBaseline(width=4)
    torch.nn.init.normal_(model.tail.weight, std=0.1)  # untrained it is the identity
    path = tmp_path_factory.mktemp("ckpt") / "unet.ckpt"
    save_model(model, path)
    return path
