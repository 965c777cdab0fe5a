"""Seeded golden outputs of every model variant: each ablation computes today what it computed
when the goldens were written.

The ablation variants are otherwise checked for shape and finite gradients, and against their
own accelerated or compiled copies, which follow any change of the plain code. Here each
variant, built from a fixed seed and nudged by a fixed perturbation (so that the residual gate
and the residual operator are not the identity), deblurs a fixed input; its output and its
finest reblurred ground truth must equal the stored ones to 1e-5.

Regenerate after an intended change of a variant's computation, and say why in the commit:

    python tests/test_variant_golden.py --write
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from nrknet.models.nrknet import NRKNet
from nrknet.models.unet_baseline import UNetBaseline
from test_model import VARIANTS as MODEL_VARIANTS

GOLDEN = Path(__file__).parent / "fixtures" / "variant_golden.pt"
SIZE = (32, 40)
TOLERANCE = 1e-5

#: Every NRKNet variant of test_model (the ablations, J, init) at width 8, the residual blur
#: operator, and the U-Net baseline.
VARIANTS: dict[str, dict] = {
    **MODEL_VARIANTS,
    "blur_residual": {"blur_residual": True},
    "unet_baseline": {"_unet": True},
}


def build(name: str) -> torch.nn.Module:
    settings = dict(VARIANTS[name])
    torch.manual_seed(0)
    model = UNetBaseline(width=4) if settings.pop("_unet", False) else NRKNet(width=8, **settings)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    sharp = torch.rand(1, 3, *SIZE, generator=generator)
    blurry = torch.nn.functional.avg_pool2d(sharp, 5, 1, 2, count_include_pad=False)
    return blurry, sharp


@torch.no_grad()
def outputs(name: str) -> dict[str, torch.Tensor]:
    model = build(name)
    blurry, sharp = inputs()
    result = {"output": model(blurry)}
    if isinstance(model, NRKNet):
        result["reblurred"] = model(blurry, sharp).reblurred[-1]
    return result


@pytest.fixture(scope="module")
def golden() -> dict:
    return torch.load(GOLDEN, map_location="cpu", weights_only=True)


def test_the_goldens_cover_every_variant(golden):
    assert sorted(golden) == sorted(VARIANTS)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_computes_its_golden_output(golden, name, one_thread):
    got = outputs(name)
    assert got.keys() == golden[name].keys()
    for key, value in got.items():
        torch.testing.assert_close(value, golden[name][key], rtol=0, atol=TOLERANCE)
    # a golden that the identity would also meet says nothing
    blurry, _ = inputs()
    assert (golden[name]["output"] - blurry).abs().max() > 1e-3


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(f"usage: python {sys.argv[0]} --write")
    torch.set_num_threads(1)
    GOLDEN.parent.mkdir(exist_ok=True)
    torch.save({name: outputs(name) for name in VARIANTS}, GOLDEN)
    print(f"wrote {GOLDEN}: {len(VARIANTS)} variants")
