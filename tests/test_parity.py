"""Our converted model reproduces the reference implementation's outputs."""

from __future__ import annotations

import pytest
import torch

from nrknet.weights.reference import from_official, normalise_reference_keys

TOL = 1e-5


def bgr(t: torch.Tensor) -> torch.Tensor:
    return t.flip(1)


@pytest.fixture(scope="module")
def converted(parity_fixture):
    return from_official(parity_fixture["state_dict"]).eval()


def test_fixture_is_the_reference_layout(parity_fixture):
    keys = set(normalise_reference_keys(parity_fixture["state_dict"]))
    from pathlib import Path

    tsv = Path(__file__).parent / "fixtures" / "nrknet_reference_state_dict_keys.tsv"
    expected = {line.split("\t")[0] for line in tsv.read_text().splitlines() if line.strip()}
    assert keys == expected


def test_inference_matches_reference(converted, parity_fixture):
    with torch.no_grad():
        out = converted(bgr(parity_fixture["blurry_bgr"]))
    torch.testing.assert_close(out, bgr(parity_fixture["output_bgr"]), rtol=0, atol=TOL)


def test_training_outputs_match_reference(converted, parity_fixture):
    with torch.no_grad():
        out = converted(bgr(parity_fixture["blurry_bgr"]), bgr(parity_fixture["sharp_bgr"]))
    assert len(out.scales) == 4 and len(out.reblurred) == 3
    for ours, ref in zip(out.scales, parity_fixture["train_scale_outputs_bgr"], strict=True):
        torch.testing.assert_close(ours, bgr(ref), rtol=0, atol=TOL)
    for ours, ref in zip(out.reblurred, parity_fixture["train_reblurred_bgr"], strict=True):
        torch.testing.assert_close(ours, bgr(ref), rtol=0, atol=TOL)
    torch.testing.assert_close(out.output, bgr(parity_fixture["output_bgr"]), rtol=0, atol=TOL)


def test_bgr_model_matches_without_permutation(parity_fixture):
    model = from_official(parity_fixture["state_dict"], rgb=False).eval()
    with torch.no_grad():
        out = model(parity_fixture["blurry_bgr"])
    torch.testing.assert_close(out, parity_fixture["output_bgr"], rtol=0, atol=TOL)


def test_released_checkpoint_naming_is_accepted(parity_fixture, converted):
    renamed = {
        "module." + k.replace("GCM.", "RKR."): v for k, v in parity_fixture["state_dict"].items()
    }
    model = from_official({"params": renamed}).eval()
    for (name, a), (_, b) in zip(
        model.state_dict().items(), converted.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
