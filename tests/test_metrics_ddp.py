"""Under DDP the test metrics equal the single-device ones: every image once, all processes'."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from nrknet.metrics import ImageQualityMetrics
from nrknet.utils.distributed import drop_sampler_repeats, gather_shards, is_distributed

NUM_IMAGES, WORLD = 5, 2


def images() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    sharp = torch.rand(NUM_IMAGES, 3, 24, 24, generator=g)
    noise = torch.linspace(0.01, 0.1, NUM_IMAGES).view(-1, 1, 1, 1)
    pred = (sharp + noise * torch.randn(sharp.shape, generator=g)).clamp(0, 1)
    blurry = (sharp + 2 * noise * torch.randn(sharp.shape, generator=g)).clamp(0, 1)
    return pred, sharp, blurry


def single_device() -> tuple[dict, list[dict]]:
    metrics = ImageQualityMetrics(lpips="off")
    pred, sharp, blurry = images()
    metrics.update(pred, sharp, [f"img{i}" for i in range(NUM_IMAGES)], blurry=blurry)
    return metrics.summary(), metrics.per_image()


def _worker(rank: int, port: int, out: str) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD
    )
    # DistributedSampler(shuffle=False): indices padded by repeating the first ones,
    # then every WORLD-th index per process; one image per step, as the test loop runs.
    total = -(-NUM_IMAGES // WORLD) * WORLD
    indices = (list(range(NUM_IMAGES)) * 2)[:total][rank::WORLD]
    pred, sharp, blurry = images()
    metrics = ImageQualityMetrics(lpips="off")
    for i in indices:
        sl = slice(i, i + 1)
        metrics.update(pred[sl], sharp[sl], [f"img{i}"], blurry=blurry[sl])
    result = {
        "summary": metrics.summary(),
        "per_image": metrics.per_image(),
        "gathered_indices": gather_shards(indices),
    }
    Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    torch.distributed.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_give_the_single_device_result(tmp_path):
    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    summary, per_image = single_device()
    for rank in range(WORLD):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        # the shards interleave back into the sampler's order, padding repeats included
        assert got["gathered_indices"] == [0, 1, 2, 3, 4, 0]
        assert got["summary"]["count"] == NUM_IMAGES
        assert [r["name"] for r in got["per_image"]] == [r["name"] for r in per_image]
        for key in ("psnr", "ssim", "input_psnr", "input_ssim"):
            assert got["summary"][key] == pytest.approx(summary[key], rel=1e-12)
        assert got["summary"]["lpips"] is None


def test_outside_ddp_the_helpers_keep_everything() -> None:
    assert not is_distributed()
    rows = [{"name": "a", "psnr": 30.0}, {"name": "b", "psnr": 31.0}]
    assert gather_shards(rows) is rows
    same_name_other_image = {"name": "a", "psnr": 29.0}
    rows += [dict(rows[0]), same_name_other_image]
    assert drop_sampler_repeats(rows) == [rows[0], rows[1], same_name_other_image]


def run_ddp_on_cpu(tmp_path: Path, data_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    """nrknet-train with trainer=ddp on two CPU processes (gloo), tiny data."""
    from conftest import tiny_overrides

    overrides = [
        o for o in tiny_overrides(data_dir, tmp_path / "run") if not o.startswith("trainer=")
    ]
    command = [
        str(Path(sys.executable).parent / "nrknet-train"),
        "experiment=quickstart",
        *overrides,
        "data.num_test=3",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.sync_batchnorm=false",  # SyncBatchNorm needs GPUs
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={tmp_path / 'run'}",
        *extra,
    ]
    helpers = str(Path(__file__).parent / "helpers")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "offline",
        "PYTHONPATH": os.pathsep.join(filter(None, [helpers, os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600
    )


@pytest.mark.slow
def test_ddp_training_on_cpu_scores_every_test_image_once(
    tmp_path, synthetic_data_dir, compose_train
):
    """The two processes' test scores are those of one process scoring the same checkpoint.

    Mutations this catches: a shard dropped or counted twice in the gather, scores of one
    process only, a mean taken over the processes' means.
    """
    from nrknet.eval import evaluate
    from test_train import eval_overrides

    proc = run_ddp_on_cpu(tmp_path, synthetic_data_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "run"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["synthetic"]["count"] == 3
    rows = (run_dir / "per_image.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 3

    single = tmp_path / "single"
    overrides = eval_overrides(synthetic_data_dir, single, Path(metrics["best_checkpoint"]), "test")
    evaluate(compose_train([*overrides, "data.num_test=3"], config_name="eval"))
    assert sorted((single / "per_image.csv").read_text().strip().splitlines()) == sorted(rows)
    alone = json.loads((single / "summary.json").read_text())["datasets"]["synthetic"]
    for key in ("psnr", "ssim", "count"):
        assert alone[key] == metrics["test"]["synthetic"][key], key


POISON = "+callbacks.poison._target_=poison.PoisonBatch"


@pytest.mark.slow
def test_ddp_skips_a_batch_that_is_non_finite_on_one_process(tmp_path, synthetic_data_dir):
    """Every process skips it together (no process left waiting); the run finishes."""
    proc = run_ddp_on_cpu(tmp_path, synthetic_data_dir, POISON, "skip_nonfinite=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["skipped_nonfinite"] == 1
    assert "on another process" in proc.stderr + proc.stdout


@pytest.mark.slow
def test_ddp_stops_every_process_on_a_non_finite_loss(tmp_path, synthetic_data_dir):
    proc = run_ddp_on_cpu(tmp_path, synthetic_data_dir, POISON)
    assert proc.returncode != 0
    assert "non-finite training loss" in proc.stderr
    assert "Traceback" not in proc.stderr
