"""The GPU tier: what runs only on CUDA. Skipped, with the reason, where no CUDA device is present.

    pytest -m gpu            # this tier alone (benchmarks/device_check.sh runs it first)

Covered: CUDA inference with ``--half`` and ``--batch`` against float32 on the CPU,
``trainer=gpu`` end to end, the inductor backend that ``compile=auto`` picks for CUDA training
against eager, SyncBatchNorm and NCCL DDP (two GPUs), and the placement of a multirun's
concurrent jobs on the visible GPUs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_overrides

GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(GPUS == 0, reason="no CUDA device: the GPU tier runs on a machine with one"),
]
two_gpus = pytest.mark.skipif(GPUS < 2, reason=f"needs two CUDA devices, {GPUS} present")
BIN = Path(sys.executable).parent


def gpu_overrides(data_dir: Path, out_dir: Path) -> list[str]:
    return [
        *(o for o in tiny_overrides(data_dir, out_dir) if not o.startswith("trainer=")),
        "trainer=gpu",
        "metrics.lpips=off",
    ]


def run_train(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline"}
    return subprocess.run(
        [str(BIN / "nrknet-train"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_cuda_inference_with_half_and_batch_matches_float32_on_the_cpu(tmp_path):
    import cv2

    from nrknet.models.nrknet import NRKNet
    from nrknet.predict import main as predict
    from nrknet.weights.checkpoint import save_model

    torch.manual_seed(0)
    model = NRKNet(width=8)
    with torch.no_grad():  # keep the output inside [0, 1], where the comparison means something
        model.unet.head.weight.mul_(0.01)
    save_model(model, tmp_path / "m.ckpt")
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 65536, (150, 170, 3), dtype=np.uint16), (0, 0), 3)
    assert cv2.imwrite(str(photos / "a.png"), image)
    common = [str(photos), "-q", "-c", str(tmp_path / "m.ckpt"), "--tile", "32", "--overlap", "48"]
    assert predict([*common, "-o", str(tmp_path / "cpu"), "--device", "cpu"]) == 0
    cuda = ["-o", str(tmp_path / "cuda"), "--device", "cuda", "--half", "--batch", "4"]
    assert predict([*common, *cuda]) == 0
    cpu = cv2.imread(str(tmp_path / "cpu" / "a.png"), cv2.IMREAD_UNCHANGED).astype(np.float64)
    gpu = cv2.imread(str(tmp_path / "cuda" / "a.png"), cv2.IMREAD_UNCHANGED).astype(np.float64)
    assert gpu.shape == cpu.shape == image.shape
    assert np.abs(gpu - cpu).max() / 65535 < 5e-3  # float16 autocast against float32


def test_trainer_gpu_trains_and_tests(tmp_path, synthetic_data_dir):
    run = tmp_path / "run"
    args = [*gpu_overrides(synthetic_data_dir, run), f"hydra.run.dir={run}", "trainer.max_epochs=1"]
    proc = run_train(["experiment=quickstart", *args], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_step"] > 0 and metrics["test"]


def test_inductor_regions_train_like_eager_on_cuda():
    """What ``compile=auto`` picks for CUDA training: inductor, against eager, outputs and grads."""
    from nrknet.accel.compile import CompileOptions, compile_regions
    from nrknet.models.nrknet import NRKNet

    torch.manual_seed(0)
    eager = NRKNet(width=8).cuda()
    compiled = NRKNet(width=8).cuda()
    compiled.load_state_dict(eager.state_dict())
    compile_regions(compiled, CompileOptions(backend="inductor"), device=torch.device("cuda"))
    blurry = torch.rand(2, 3, 64, 64, device="cuda")
    sharp = torch.rand(2, 3, 64, 64, device="cuda")
    results = []
    for model in (eager, compiled):
        out = model(blurry, sharp)
        loss = sum(t.square().mean() for t in out.scales + out.reblurred)
        loss.backward()
        results.append((out.output.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-4, atol=1e-4)
    for got, expected in zip(results[1][1], results[0][1], strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-4)


@two_gpus
def test_nccl_ddp_with_sync_batchnorm(tmp_path, synthetic_data_dir):
    run = tmp_path / "run"
    args = [
        *gpu_overrides(synthetic_data_dir, run), f"hydra.run.dir={run}", "trainer=ddp",
        "trainer.devices=2", "trainer.sync_batchnorm=true", "trainer.max_epochs=1",
        "data.num_test=3",
    ]  # fmt: skip
    proc = run_train(["experiment=quickstart", *args], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "nccl" in (proc.stderr + proc.stdout).lower()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["synthetic"]["count"] == 3


def test_concurrent_sweep_jobs_are_placed_on_the_visible_gpus(tmp_path, synthetic_data_dir):
    sweep = tmp_path / "sweep"
    args = [
        "-m", "experiment=quickstart", *gpu_overrides(synthetic_data_dir, tmp_path / "unused"),
        "seed=0,1,2", "trainer.max_epochs=1", "test=false", "hydra/launcher=parallel",
        "hydra.launcher.n_jobs=3", f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    args = [a for a in args if not a.startswith(("paths.output_dir", "paths.root_dir"))]
    proc = run_train(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stderr + proc.stdout + "".join(p.read_text() for p in sweep.rglob("*.log"))
    for job in range(3):
        assert f"concurrent job {job}: devices [{job % GPUS}]" in log, log[-3000:]
        assert (sweep / str(job) / "metrics.json").is_file()
