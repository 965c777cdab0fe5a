"""DPDD's indoor/outdoor scene groups: label files, list files, their errors, and the reports."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from nrknet.analysis.reporting import markdown_table, result_entries, self_ensemble_name
from nrknet.data.datamodules import DPDDDataModule
from nrknet.data.layouts import scan_dpdd
from nrknet.data.scene_groups import SceneGroupError, dpdd_scene_groups
from nrknet.eval import evaluate
from nrknet.models.nrknet import NRKNet
from nrknet.weights.checkpoint import save_model

pytestmark = pytest.mark.usefixtures("one_thread")

# Natural order 1, 2, 3, 10; a plain string sort would put 10 second.
NAMES = ("1", "2", "3", "10")
INDOOR, OUTDOOR = ("1", "10"), ("2", "3")  # what indices [1, 4] and [2, 3] select


def make_tiny_dpdd(root: Path, labels: bool = True, size: int = 32) -> Path:
    """A DPDD-layout tree with four test pairs (and Restormer's label files when ``labels``)."""
    base = root / "dd_dp_dataset_png"
    rng = np.random.default_rng(0)
    for k, name in enumerate(NAMES):
        sharp = rng.integers(0, 256, (size, size, 3)).astype(np.float64)
        sharp = cv2.GaussianBlur(sharp, (5, 5), 1.0)
        # a different amount of blur and noise per image, so that per-image scores differ
        blurry = cv2.GaussianBlur(sharp, (7, 7), 0.5 + k) + rng.normal(0, 2 + 3 * k, sharp.shape)
        for folder, img in (("source", blurry), ("target", sharp)):
            path = base / "test_c" / folder / f"{name}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(path), np.clip(np.round(img), 0, 255).astype(np.uint8))
    if labels:
        np.save(base / "indoor_labels.npy", np.array([1, 4]))
        np.save(base / "outdoor_labels.npy", np.array([2, 3]))
    return base


def _groups(base: Path, lists=None, look: bool = True):
    return dpdd_scene_groups(base, scan_dpdd(base, "test"), lists, look)


# ---------------------------------------------------------------- reading the groups


def test_label_files_index_the_natural_sorted_test_images(tmp_path):
    base = make_tiny_dpdd(tmp_path)
    assert [name for _, _, name in scan_dpdd(base, "test")] == list(NAMES)
    assert _groups(base) == {"indoor": frozenset(INDOOR), "outdoor": frozenset(OUTDOOR)}
    # the data root may also be the folder above, as in conf/data/dpdd.yaml
    assert _groups(tmp_path) == _groups(base)


def test_named_list_files_npy_and_text(tmp_path):
    base = make_tiny_dpdd(tmp_path, labels=False)
    np.save(tmp_path / "near.npy", np.array([[4], [1]]))  # any shape, any order
    (tmp_path / "far.txt").write_text("# outdoor scenes\n2.png, 3\n\n")
    (base / "rest.txt").write_text("2\n")  # a relative name resolves against the DPDD root too
    groups = _groups(base, {"near": tmp_path / "near.npy", "far": str(tmp_path / "far.txt")})
    assert groups == {"near": frozenset(INDOOR), "far": frozenset(OUTDOOR)}
    assert _groups(base, {"rest": "rest.txt"}) == {"rest": frozenset({"2"})}


def test_absent_label_files_leave_the_split_out_and_say_why(tmp_path, caplog):
    base = make_tiny_dpdd(tmp_path, labels=False)
    with caplog.at_level(logging.INFO, logger="nrknet.data.scene_groups"):
        assert _groups(base) is None
    (line,) = [r.getMessage() for r in caplog.records]
    assert str(base / "indoor_labels.npy") in line and str(base / "outdoor_labels.npy") in line
    caplog.clear()
    assert _groups(base, look=False) is None  # sets that never have labels stay quiet
    assert not caplog.records


def _bad_lists(tmp_path: Path, base: Path) -> list[tuple[dict, str, str]]:
    """(lists, the file the error must name, what it must say)."""
    files = {
        "zero.npy": np.array([0, 1]),
        "five.npy": np.array([5]),
        "float.npy": np.array([1.5]),
        "in.npy": np.array([1, 2]),
        "out.npy": np.array([2, 3]),
    }
    for name, values in files.items():
        np.save(tmp_path / name, values)
    (tmp_path / "empty.txt").write_text("# nothing\n")
    (tmp_path / "unknown.txt").write_text("1\n99.png\n")
    (tmp_path / "broken.npy").write_bytes(b"not numpy")
    p = {name: tmp_path / name for name in (*files, "empty.txt", "unknown.txt", "broken.npy")}
    return [
        (
            {"a": p["zero.npy"]},
            "zero.npy",
            "index 0 is out of range; expected 1-based indices 1..4",
        ),
        ({"a": p["five.npy"]}, "five.npy", "index 5 is out of range"),
        ({"a": p["float.npy"]}, "float.npy", "expected an array of 1-based integer indices"),
        ({"a": p["in.npy"], "b": p["out.npy"]}, "out.npy", "share 1 image(s), e.g. 2"),
        ({"a": p["empty.txt"]}, "empty.txt", "lists no images"),
        ({"a": p["unknown.txt"]}, "unknown.txt", "'99.png' is not one of the 4 images"),
        ({"a": p["broken.npy"]}, "broken.npy", "cannot read scene group list"),
        ({"a": tmp_path / "missing.txt"}, "missing.txt", "cannot read scene group list"),
        (["in.npy"], "data.scene_groups", "must map a group name"),
    ]


def test_bad_lists_are_one_line_errors_naming_the_file(tmp_path):
    base = make_tiny_dpdd(tmp_path, labels=False)
    for lists, file, message in _bad_lists(tmp_path, base):
        with pytest.raises(SceneGroupError) as info:
            _groups(base, lists)
        text = str(info.value)
        assert "\n" not in text and file in text and message in text, text


def test_one_label_file_without_the_other_is_an_error(tmp_path):
    base = make_tiny_dpdd(tmp_path)
    (base / "outdoor_labels.npy").unlink()
    with pytest.raises(SceneGroupError, match="found .*indoor_labels.npy but not .*outdoor"):
        _groups(base)


def test_datamodule_attaches_groups_and_stops_on_bad_labels(tmp_path):
    base = make_tiny_dpdd(tmp_path)
    module = DPDDDataModule(tmp_path, num_workers=0, extra_test_sets=None)
    module.setup("test")
    assert module.test_datasets[0].scene_groups["indoor"] == frozenset(INDOOR)
    np.save(base / "outdoor_labels.npy", np.array([1, 2]))
    with pytest.raises(SceneGroupError, match="indoor_labels.npy.*outdoor_labels.npy.*share"):
        DPDDDataModule(tmp_path, num_workers=0).setup("test")


# ---------------------------------------------------------------- results and tables


def _summary(psnr: float) -> dict:
    return {"psnr": psnr, "ssim": 0.9, "mae": 0.05, "lpips": None, "input_psnr": 20.0, "count": 4}


def test_result_entries_and_the_scene_table_with_self_ensemble():
    rows = [{"name": n, "psnr": 20.0 + i, "mae": 0.01 * i} for i, n in enumerate(NAMES)]
    groups = {"indoor": frozenset(INDOOR), "outdoor": frozenset(OUTDOOR)}
    results = {}
    for name in ("dpdd", self_ensemble_name("dpdd")):
        results.update(result_entries(name, _summary(25.0), rows, groups))
    assert list(results) == [
        "dpdd",
        "dpdd/indoor",
        "dpdd/outdoor",
        "dpdd (x8)",
        "dpdd/indoor (x8)",
        "dpdd/outdoor (x8)",
    ]
    assert [r["scene_group"] for r in results["dpdd"]["per_image"]] == [
        "indoor",
        "outdoor",
        "outdoor",
        "indoor",
    ]
    indoor = results["dpdd/indoor"]["summary"]
    assert indoor["count"] == 2 and results["dpdd/indoor"]["per_image"] == []
    assert indoor["psnr"] == pytest.approx((20.0 + 23.0) / 2)
    assert indoor["mae"] == pytest.approx((0.0 + 0.03) / 2)
    lines = markdown_table(results).splitlines()
    assert lines[0] == "| | dpdd PSNR | dpdd SSIM | dpdd MAE | dpdd LPIPS |"
    assert lines[4].startswith("| NRKNet (x8) | 25.000 | 0.900 | 0.050 | n/a |")
    assert lines[6] == "| dpdd scenes | | images | PSNR | SSIM | MAE | LPIPS |"
    assert lines[8].startswith("| indoor | input | 2 | n/a | n/a | n/a | n/a")
    assert lines[9].startswith("| indoor | NRKNet | 2 | 21.500 |")
    assert lines[10].startswith("| indoor | NRKNet (x8) | 2 | 21.500 |")
    assert lines[-1].startswith("| all | NRKNet (x8) | 4 | 25.000 |")
    assert "PSNR-16" not in markdown_table(results)  # not computed, not shown


def test_no_groups_no_scene_table():
    results = result_entries("dpdd", _summary(25.0), [{"name": "1", "psnr": 25.0}], None)
    assert list(results) == ["dpdd"] and results["dpdd"]["per_image"][0]["scene_group"] is None
    assert "scenes" not in markdown_table(results)


# ---------------------------------------------------------------- nrknet-eval end to end


def _expected_scores(ckpt_model: NRKNet, base: Path) -> dict[str, dict[str, float]]:
    """Per-image scores computed here with numpy / scikit-image, not with nrknet.metrics."""
    scores = {}
    for name in NAMES:
        rgb = {
            folder: cv2.imread(str(base / "test_c" / folder / f"{name}.png"))[..., ::-1] / 255.0
            for folder in ("source", "target")
        }
        blurry = torch.from_numpy(rgb["source"].copy()).permute(2, 0, 1)[None].float()
        with torch.no_grad():
            pred = ckpt_model(blurry)[0].permute(1, 2, 0).double().numpy()
        target = rgb["target"]
        pred8, blurry8, target8 = (
            np.round(np.clip(x, 0, 1) * 255) for x in (pred, rgb["source"], target)
        )
        full_mse = np.mean((np.clip(pred, 0, 1) - target) ** 2)
        scores[name] = {
            "psnr": 10 * np.log10(255**2 / np.mean((pred8 - target8) ** 2)),
            "ssim": structural_similarity(
                pred8,
                target8,
                channel_axis=2,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                data_range=255,
            ),
            "mae": np.mean(np.abs(pred8 - target8)) / 255,
            "psnr16": -10 * np.log10(full_mse),
            "input_mae": np.mean(np.abs(blurry8 - target8)) / 255,
        }
    return scores


def test_eval_reports_mae_psnr16_and_scene_groups(compose_train, tmp_path):
    data = tmp_path / "data"
    base = make_tiny_dpdd(data)
    torch.manual_seed(0)
    model = NRKNet(width=4).eval()
    ckpt = tmp_path / "m.ckpt"
    save_model(model, ckpt)
    out = tmp_path / "eval"
    cfg = compose_train(
        [
            f"paths.root_dir={out}",
            f"paths.data_dir={data}",
            f"paths.log_dir={out}/logs",
            f"paths.output_dir={out}",
            "data=dpdd",
            "data.extra_test_sets=null",
            "data.num_workers=0",
            "data.cache=none",
            "data.pin_memory=false",
            "trainer=cpu",
            "trainer.enable_progress_bar=false",
            "logger=csv",
            "metrics.lpips=off",
            "metrics.psnr16=true",
            "accel=off",
            f"ckpt_path={ckpt}",
        ],
        config_name="eval",
    )
    evaluate(cfg)
    expected = _expected_scores(model, base)
    datasets = json.loads((out / "summary.json").read_text())["datasets"]
    assert list(datasets) == ["dpdd", "dpdd/indoor", "dpdd/outdoor"]
    for entry, names in (("dpdd", NAMES), ("dpdd/indoor", INDOOR), ("dpdd/outdoor", OUTDOOR)):
        assert datasets[entry]["count"] == len(names)
        for key in ("psnr", "ssim", "mae", "psnr16", "input_mae"):
            mean = np.mean([expected[n][key] for n in names])
            assert datasets[entry][key] == pytest.approx(mean, rel=1e-6), (entry, key)
    # the two groups really are different images
    assert datasets["dpdd/indoor"]["input_mae"] != pytest.approx(
        datasets["dpdd/outdoor"]["input_mae"]
    )

    with (out / "per_image.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["dataset"], r["name"]) for r in rows] == [("dpdd", n) for n in NAMES]
    assert {r["name"]: r["scene_group"] for r in rows} == {
        **dict.fromkeys(INDOOR, "indoor"),
        **dict.fromkeys(OUTDOOR, "outdoor"),
    }
    for r in rows:
        for key in ("mae", "psnr16", "input_mae"):
            assert float(r[key]) == pytest.approx(expected[r["name"]][key], rel=1e-6)

    table = (out / "table.md").read_text()
    assert "| | dpdd PSNR | dpdd SSIM | dpdd MAE | dpdd LPIPS | dpdd PSNR-16 |" in table
    indoor_psnr = datasets["dpdd/indoor"]["psnr"]
    assert f"| indoor | NRKNet | 2 | {indoor_psnr:.3f} |" in table
    assert "| outdoor | input | 2 |" in table and "| all | NRKNet | 4 |" in table

    with (out / "csv" / "metrics.csv").open() as f:
        logged = {k: float(v) for row in csv.DictReader(f) for k, v in row.items() if v}
    for entry in datasets:
        for key in ("psnr", "mae", "psnr16", "input_mae"):
            assert logged[f"test/{entry}/{key}"] == pytest.approx(datasets[entry][key], rel=1e-5)
