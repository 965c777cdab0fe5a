"""GPU: inference time and memory at 1280x720, training throughput, agreement with the CPU.

Skipped (with a note in the JSON) where no CUDA device is present. On a CUDA device:

* agreement: the CPU and GPU outputs of the same randomly initialised
  full-width model (inference path and training path, TF32 off), and the
  mixed-precision outputs against float32 (relative L2 error);
* inference of one 1280x720 image at full width, in float32 (TF32 off and
  on), and in bfloat16 / float16 autocast: median time over repeated
  synchronised runs after warm-up, peak allocated GPU memory; float32 through
  both the banded inference path and the plain path (the one autograd uses);
* training throughput through Lightning (``NRKNetModule``, the paper's loss,
  Adam) at 256x256 crops with ``precision`` 32-true, 16-mixed and bf16-mixed:
  median step time after warm-up, images per second, peak allocated memory.
"""

from __future__ import annotations

import contextlib
import statistics
import time

import torch

INFERENCE_MODES = ("fp32", "tf32", "bf16", "fp16")
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed")


def _set_tf32(enabled: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    return float((a - b).norm() / b.norm())


@contextlib.contextmanager
def _plain_path(model):
    """Run ``model`` without the acceleration layer (its banded inference path) inside the block."""
    from nrknet.accel import accelerate

    accelerate(model, "off")
    try:
        yield
    finally:
        accelerate(model, "on")


def _autocast(mode: str):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=dtype)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _time_cuda(fn, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def agreement(width: int = 64) -> dict:
    """CPU against GPU (float32, TF32 off), and mixed precision against float32, on the GPU."""
    from nrknet.accel import accelerate
    from nrknet.models.nrknet import NRKNet

    _set_tf32(False)
    torch.manual_seed(0)
    model = accelerate(NRKNet(width=width).eval(), "on")  # the banded path, as measured before
    x = torch.rand(1, 3, 256, 384)
    sharp = torch.rand(1, 3, 256, 384)
    with torch.inference_mode():
        cpu_out = model(x)
    gpu = model.cuda()
    with torch.inference_mode():
        gpu_out = gpu(x.cuda())
        with _plain_path(gpu):
            gpu_plain = gpu(x.cuda())
        mixed = {}
        for mode in ("bf16", "fp16"):
            with _autocast(mode):
                mixed[mode] = _relative_error(gpu(x.cuda()).float(), gpu_out)
    # the training path: forward with gradients, CPU against GPU
    model_cpu = NRKNet(width=width).train()
    model_cpu.load_state_dict(gpu.state_dict())
    train_cpu = model_cpu(x, sharp).output
    train_gpu = gpu.train()(x.cuda(), sharp.cuda()).output
    gpu.eval()
    return {
        "inference_cpu_vs_gpu_max_abs": float((gpu_out.cpu() - cpu_out).abs().max()),
        "plain_vs_banded_gpu_max_abs": float((gpu_plain - gpu_out).abs().max()),
        "training_cpu_vs_gpu_max_abs": float(
            (train_gpu.detach().cpu() - train_cpu.detach()).abs().max()
        ),
        "bf16_relative_l2_vs_fp32": mixed["bf16"],
        "fp16_relative_l2_vs_fp32": mixed["fp16"],
    }


def inference(height: int, width_px: int, warmup: int, repeats: int, width: int = 64) -> dict:
    from nrknet.accel import accelerate
    from nrknet.models.nrknet import NRKNet

    torch.manual_seed(0)
    model = accelerate(NRKNet(width=width).eval().cuda(), "on")  # "banded" cases below
    x = torch.rand(1, 3, height, width_px, device="cuda")
    results = {}
    cases = [(mode, "banded") for mode in INFERENCE_MODES] + [("fp32", "plain"), ("tf32", "plain")]
    for mode, path in cases:
        _set_tf32(mode != "fp32")

        def run(mode=mode):
            with torch.inference_mode(), _autocast(mode):
                return model(x)

        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        with _plain_path(model) if path == "plain" else contextlib.nullcontext():
            times = _time_cuda(run, warmup, repeats)
        results[f"{mode}_{path}"] = {
            "median_s": statistics.median(times),
            "min_s": min(times),
            "peak_allocated_gb": torch.cuda.max_memory_allocated() / 1e9,
            "repeats": repeats,
        }
    _set_tf32(False)
    results["size"] = f"{width_px}x{height}"
    return results


def training(
    batch: int, size: int, warmup: int, steps: int, width: int = 64, accelerator: str = "gpu"
) -> dict:
    import lightning as L
    from torch.utils.data import DataLoader, Dataset

    from nrknet.losses import NRKNetLoss
    from nrknet.models.nrknet import NRKNet
    from nrknet.module import NRKNetModule

    class RandomPairs(Dataset):
        def __len__(self) -> int:
            return batch * (warmup + steps)

        def __getitem__(self, i: int) -> dict:
            g = torch.Generator().manual_seed(i)
            sharp = torch.rand(3, size, size, generator=g)
            return {"blurry": sharp.flip(-1).clone(), "sharp": sharp}

    class StepTimer(L.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            _sync()
            self._start = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            _sync()
            self.times.append(time.perf_counter() - self._start)

    results = {}
    for precision in PRECISIONS:
        _set_tf32(False)
        torch.manual_seed(0)
        module = NRKNetModule(
            NRKNet(width=width),
            loss=NRKNetLoss(),
            optimizer=lambda params: torch.optim.Adam(params, lr=1e-4),
            lpips="off",
        )
        timer = StepTimer()
        trainer = L.Trainer(
            accelerator=accelerator,
            devices=1,
            precision=precision,
            max_steps=warmup + steps,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            callbacks=[timer],
        )
        loader = DataLoader(RandomPairs(), batch_size=batch, num_workers=2, pin_memory=True)
        if accelerator == "gpu":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        trainer.fit(module, train_dataloaders=loader)
        step = statistics.median(timer.times[warmup:])
        results[precision] = {
            "median_step_s": step,
            "images_per_s": batch / step,
            "peak_allocated_gb": torch.cuda.max_memory_allocated() / 1e9
            if accelerator == "gpu"
            else float("nan"),
            "steps": len(timer.times) - warmup,
            "final_loss": float(trainer.callback_metrics.get("train/loss_step", float("nan"))),
        }
    results["shape"] = f"{batch}x3x{size}x{size}"
    return results


def run(quick: bool = False) -> dict:
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device"}
    result = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "agreement": agreement(width=16 if quick else 64),
    }
    if quick:
        result["inference"] = inference(352, 640, warmup=1, repeats=3)
        result["training"] = training(batch=2, size=128, warmup=2, steps=3)
    else:
        result["inference"] = inference(720, 1280, warmup=3, repeats=10)
        result["training"] = training(batch=8, size=256, warmup=5, steps=20)
    return result


def rows(result: dict) -> list[tuple[str, str]]:
    if "skipped" in result:
        return [("GPU", f"skipped: {result['skipped']}")]
    agree, inf, train = result["agreement"], result["inference"], result["training"]
    out = [("device", f"{result['device']} (torch {result['torch']})")]
    out += [(f"agreement: {k}", f"{v:.2e}") for k, v in agree.items()]
    for key, r in inf.items():
        if isinstance(r, dict):
            out.append(
                (
                    f"inference {inf['size']} {key}",
                    f"{r['median_s'] * 1000:.0f} ms, peak {r['peak_allocated_gb']:.2f} GB",
                )
            )
    for key, r in train.items():
        if isinstance(r, dict):
            out.append(
                (
                    f"training {train['shape']} {key}",
                    f"{r['images_per_s']:.1f} img/s ({r['median_step_s'] * 1000:.0f} ms/step), "
                    f"peak {r['peak_allocated_gb']:.2f} GB",
                )
            )
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
