from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def parity_fixture() -> dict:
    return torch.load(FIXTURES / "nrknet_reference_parity_w8.pt", weights_only=True)
