"""Tiled inference: the plan, the blending weights and equality with whole-image inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from nrknet.inference.tiling import (
    DEFAULT_OVERLAP,
    blend_weights,
    default_overlap,
    plan_tiles,
    predict_tiled,
    tiled_apply,
)
from nrknet.models.nrknet import NRKNet
from nrknet.ops.padding import pad_to_multiple, reflect_pad

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def small_model() -> NRKNet:
    torch.manual_seed(0)
    return NRKNet(width=8).eval()


def _image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A smooth random scene plus texture, (1, 3, H, W) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, height // 16 + 2, width // 16 + 2, generator=g)
    smooth = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    return (0.8 * smooth + 0.2 * torch.rand(1, 3, height, width, generator=g)).clamp(0, 1)


@given(
    height=st.integers(1, 150),
    width=st.integers(1, 150),
    tile=st.integers(1, 80),
    overlap=st.integers(0, 40),
    blend=st.integers(0, 40),
)
@settings(max_examples=60, deadline=None)
def test_plan_is_aligned_and_weights_sum_to_one(height, width, tile, overlap, blend):
    plan = plan_tiles(height, width, tile, overlap, multiple=16, blend=blend, whole_if_fits=False)
    assert plan.padded_height % 16 == 0 and plan.padded_width % 16 == 0
    total = torch.zeros(plan.padded_height, plan.padded_width)
    cores = torch.zeros_like(total)
    for t in plan.tiles:
        for v in (t.y0, t.y1, t.x0, t.x1, t.core_y0, t.core_y1, t.core_x0, t.core_x1):
            assert v % 16 == 0
        assert 0 <= t.y0 <= t.core_y0 < t.core_y1 <= t.y1 <= plan.padded_height
        assert 0 <= t.x0 <= t.core_x0 < t.core_x1 <= t.x1 <= plan.padded_width
        assert min(t.shape) >= 32  # NRKNet would pad a smaller window on its own
        cores[t.core_y0 : t.core_y1, t.core_x0 : t.core_x1] += 1
        total[t.y0 : t.y1, t.x0 : t.x1] += blend_weights(plan, t)
    assert torch.equal(cores, torch.ones_like(cores))
    torch.testing.assert_close(total, torch.ones_like(total), atol=1e-6, rtol=0)


def test_whole_image_when_it_fits():
    assert plan_tiles(300, 400, tile=512, overlap=128).whole
    assert not plan_tiles(3000, 4000, tile=512, overlap=128).whole
    assert len(plan_tiles(300, 400, tile=96, overlap=0)) == 4 * 5


def toy_network(weight: torch.Tensor):
    """A 7x7 reflect-padded filter behind NRKNet's contract: pad to a multiple of 16 (>= 32), crop."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        padded, _ = pad_to_multiple(x, 16, minimum=32)
        return F.conv2d(reflect_pad(padded, (3, 3, 3, 3)), weight)[..., :height, :width]

    return fn


@given(
    height=st.integers(2, 120),
    width=st.integers(2, 120),
    tile=st.integers(16, 64),
    blend=st.integers(0, 16),
)
@settings(max_examples=25, deadline=None)
def test_tiling_a_local_filter_is_exact(height, width, tile, blend):
    """The filter needs 3 px of context: with 16 px margins the tiled result is exact."""
    torch.manual_seed(1)
    fn = toy_network(torch.rand(3, 3, 7, 7))
    image = torch.rand(3, height, width)
    expected = fn(image[None])[0]
    got = tiled_apply(fn, image, 3, tile=tile, overlap=16, blend=blend, whole_if_fits=False)
    torch.testing.assert_close(
        torch.from_numpy(got).permute(2, 0, 1), expected, atol=1e-5, rtol=1e-5
    )


def test_numpy_input_and_identity():
    image = np.random.default_rng(0).random((45, 70, 3), dtype=np.float32)
    got = tiled_apply(lambda x: x, image, 3, tile=16, overlap=16, blend=8, whole_if_fits=False)
    np.testing.assert_allclose(got, image, atol=1e-6)


def test_default_overlap():
    assert default_overlap() == DEFAULT_OVERLAP
    assert default_overlap(NRKNet(width=4)) == DEFAULT_OVERLAP
    assert default_overlap(NRKNet(width=4, num_scales=4)) > DEFAULT_OVERLAP
    assert default_overlap(NRKNet(width=4)) % 16 == 0


@pytest.mark.parametrize("size", [(200, 300), (203, 299)])
def test_tiled_equals_whole_image_inference(small_model, size):
    """4+ tiles with the default overlap, max difference <= 1e-4 (odd sizes too)."""
    x = _image(*size)
    plan = plan_tiles(*size, tile=96, overlap=default_overlap(small_model), whole_if_fits=False)
    assert len(plan) >= 4
    with torch.inference_mode():
        whole = small_model(x)
    tiled = predict_tiled(small_model, x, tile=96, whole_if_fits=False)
    assert tiled.shape == whole.shape
    assert (tiled - whole).abs().max().item() <= 1e-4


def test_interior_windows_with_a_smaller_overlap(small_model):
    """Windows strictly inside the image (all four edges artificial) still match to 1e-4."""
    x = _image(320, 320, seed=3)
    plan = plan_tiles(320, 320, tile=64, overlap=64, whole_if_fits=False)
    assert any(t.y0 > 0 and t.x0 > 0 and t.y1 < 320 and t.x1 < 320 for t in plan.tiles)
    with torch.inference_mode():
        whole = small_model(x)
    tiled = predict_tiled(small_model, x, tile=64, overlap=64, batch=4, whole_if_fits=False)
    assert (tiled - whole).abs().max().item() <= 1e-4


def test_whole_path_is_the_model(small_model):
    x = _image(37, 53)
    with torch.inference_mode():
        whole = small_model(x)
    torch.testing.assert_close(predict_tiled(small_model, x), whole, atol=1e-6, rtol=0)


def test_bad_arguments():
    with pytest.raises(ValueError):
        plan_tiles(0, 10)
    with pytest.raises(ValueError):
        plan_tiles(10, 10, tile=0)
    with pytest.raises(ValueError):
        plan_tiles(10, 10, overlap=-1)
    with pytest.raises(ValueError):
        tiled_apply(lambda x: x, np.zeros((4, 4)), 1)


def test_thin_image_tiles_like_the_whole(small_model):
    """Thinner than the network's minimum size: windows are cut from the same padded image."""
    x = _image(12, 200, seed=5)
    with torch.inference_mode():
        whole = small_model(x)
    tiled = predict_tiled(small_model, x, tile=32, overlap=96, whole_if_fits=False)
    assert (tiled - whole).abs().max().item() <= 1e-4
