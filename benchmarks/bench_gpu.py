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
  median step time after warm-up, images per second, peak allocated memory (eager);
* compiled regions (:mod:`nrknet.accel.compile`, last, within a time budget
  ``NRKNET_BENCH_COMPILE_BUDGET_S``, default 300 s; ``NRKNET_BENCH_COMPILE=0`` skips
  it; ``NRKNET_BENCH_PARTIAL=<file>`` saves all results so far after each part):
  training images per second with bf16-mixed at batch 8 and 4 (256x256), eager
  against compiled, the first step (the compile) timed apart; one 1280x720 image
  in bfloat16, eager against compiled (aim: 10 ms); the losses of 200 steps at
  batch 4, compiled bf16-mixed against eager float32 (largest and mean relative
  difference); last, inference with CUDA graphs (``reduce-overhead``). A part
  that a timeout interrupts is noted as ``unfinished`` in the saved file.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

INFERENCE_MODES = ("fp32", "tf32", "bf16", "fp16")
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed")
#: the compiled 1280x720 bfloat16 inference aims at this median time
INFERENCE_TARGET_S = 0.010
#: seconds within which a part of the compile comparison must start (each compiles for minutes)
COMPILE_BUDGET_S = float(os.environ.get("NRKNET_BENCH_COMPILE_BUDGET_S", "300"))


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
    batch: int,
    size: int,
    warmup: int,
    steps: int,
    width: int = 64,
    accelerator: str = "gpu",
    precisions: tuple[str, ...] = PRECISIONS,
    compile: str = "off",
    record_losses: bool = False,
    build: Callable[[], tuple[torch.nn.Module, torch.nn.Module]] | None = None,
) -> dict:
    """Lightning training steps per ``precision``; ``compile``: the module's switch
    (:mod:`nrknet.accel.compile`; the first steps, warm-up, include compiling);
    ``build``: makes the network and its loss (default: NRKNet of ``width``, the paper's loss)."""
    import lightning as L
    from torch.utils.data import DataLoader, Dataset

    from nrknet.accel.compile import region_status
    from nrknet.models.nrknet import NRKNet
    from nrknet.training.losses import NRKNetLoss
    from nrknet.training.module import NRKNetModule

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
            self.losses: list[float] = []

        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            _sync()
            self._start = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            _sync()
            self.times.append(time.perf_counter() - self._start)
            if record_losses:
                loss = outputs["loss"] if isinstance(outputs, dict) else outputs
                self.losses.append(float(loss))

    results = {}
    for precision in precisions:
        _set_tf32(False)
        torch.manual_seed(0)
        net, loss = build() if build is not None else (NRKNet(width=width), NRKNetLoss())
        module = NRKNetModule(
            net,
            loss=loss,
            optimizer=lambda params: torch.optim.Adam(params, lr=1e-4),
            lpips="off",
            compile=compile,
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
            "first_step_s": timer.times[0],
            "peak_allocated_gb": torch.cuda.max_memory_allocated() / 1e9
            if accelerator == "gpu"
            else float("nan"),
            "steps": len(timer.times) - warmup,
            "final_loss": float(trainer.callback_metrics.get("train/loss_step", float("nan"))),
        }
        if compile != "off":
            results[precision]["regions"] = region_status(module.model)
        if record_losses:
            results[precision]["losses"] = timer.losses
    results["shape"] = f"{batch}x3x{size}x{size}"
    return results


def compiled_inference(
    height: int, width_px: int, warmup: int, repeats: int, width: int = 64, mode: str = "default"
) -> dict:
    """One image in bfloat16 autocast (TF32 on), plain model eager against compiled regions."""
    from nrknet.accel.compile import compile_regions, region_status
    from nrknet.models.nrknet import NRKNet

    _set_tf32(True)
    torch.manual_seed(0)
    model = NRKNet(width=width).eval().cuda()
    x = torch.rand(1, 3, height, width_px, device="cuda")

    def run():
        with torch.inference_mode(), _autocast("bf16"):
            return model(x)

    eager_times = _time_cuda(run, warmup, repeats)
    reference = run().float()
    compile_regions(model, {"mode": mode}, device="cuda")
    start = time.perf_counter()
    out = run().float()
    _sync()
    first_call_s = time.perf_counter() - start
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    times = _time_cuda(run, warmup, repeats)
    _set_tf32(False)
    median = statistics.median(times)
    return {
        "size": f"{width_px}x{height}",
        "mode": mode,
        "eager_median_s": statistics.median(eager_times),
        "compiled_median_s": median,
        "compiled_min_s": min(times),
        "first_call_s": first_call_s,
        "peak_allocated_gb": torch.cuda.max_memory_allocated() / 1e9,
        "relative_l2_vs_eager": _relative_error(out, reference),
        "target_s": INFERENCE_TARGET_S,
        "meets_target": median <= INFERENCE_TARGET_S,
        "regions": region_status(model),
    }


def loss_curves(batch: int, size: int, steps: int, width: int = 64) -> dict:
    """The losses of ``steps`` training steps: compiled bf16-mixed against eager float32."""
    eager = training(batch, size, 0, steps, width, precisions=("32-true",), record_losses=True)
    compiled = training(
        batch, size, 0, steps, width, precisions=("bf16-mixed",), compile="on", record_losses=True
    )
    reference, losses = eager["32-true"]["losses"], compiled["bf16-mixed"]["losses"]
    relative = [abs(a - b) / abs(b) for a, b in zip(losses, reference, strict=True)]
    return {
        "shape": eager["shape"],
        "steps": len(relative),
        "max_relative_difference": max(relative),
        "mean_relative_difference": statistics.fmean(relative),
        "final_loss_eager_fp32": reference[-1],
        "final_loss_compiled_bf16": losses[-1],
        "regions": compiled["bf16-mixed"]["regions"],
    }


def compile_comparison(
    quick: bool, budget_s: float = COMPILE_BUDGET_S, on_part: Callable[[dict], None] | None = None
) -> dict:
    """Eager against compiled regions (:mod:`nrknet.accel.compile`), most telling first.

    A part not started within ``budget_s`` seconds is skipped (noted), since each
    compiles for minutes; ``on_part`` gets the results so far after every part (to save
    them: a timeout then keeps them).
    """
    deadline = time.monotonic() + budget_s
    result: dict = {"budget_s": budget_s}
    if quick:
        size, batches, steps, curve_steps, image = 128, (2,), 3, 10, (352, 640)
    else:
        size, batches, steps, curve_steps, image = 256, (8, 4), 20, 200, (720, 1280)

    def train_pair(batch: int) -> dict:
        kwargs = dict(warmup=5, steps=steps, precisions=("bf16-mixed",))
        eager = training(batch, size, **kwargs)["bf16-mixed"]
        compiled = training(batch, size, compile="on", **kwargs)["bf16-mixed"]
        return {
            "shape": f"{batch}x3x{size}x{size}",
            "eager": eager,
            "compiled": compiled,
            "speed_up": compiled["images_per_s"] / eager["images_per_s"],
        }

    parts = [(f"training_bf16_batch{batches[0]}", lambda: train_pair(batches[0]))]
    parts.append(("inference_bf16", lambda: compiled_inference(*image, warmup=3, repeats=10)))
    parts += [(f"training_bf16_batch{b}", functools.partial(train_pair, b)) for b in batches[1:]]
    # at the last batch size, whose compiled graphs the part before has just made
    parts.append(("loss_curves", lambda: loss_curves(batches[-1], size, curve_steps)))
    parts.append(
        (
            "inference_bf16_reduce_overhead",
            lambda: compiled_inference(*image, warmup=3, repeats=10, mode="reduce-overhead"),
        )
    )
    for key, part in parts:
        if time.monotonic() > deadline:
            result[key] = {"skipped": f"not started within the {budget_s:.0f} s budget"}
            continue
        start = time.monotonic()
        if on_part is not None:  # a timeout during this part leaves this note in the saved file
            started = start - (deadline - budget_s)
            result[key] = {"unfinished": f"started {started:.0f} s into the comparison"}
            on_part(result)
        try:
            result[key] = part()
        except Exception as exc:  # noqa: BLE001 - one failing part must not lose the others
            result[key] = {"error": f"{type(exc).__name__}: {str(exc).strip()[:300]}"}
        result[key]["wall_s"] = time.monotonic() - start
        if on_part is not None:
            on_part(result)
    return result


def run(quick: bool = False) -> dict:
    """All parts; the compile comparison last, unless ``NRKNET_BENCH_COMPILE=0``."""
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
    if os.environ.get("NRKNET_BENCH_COMPILE", "1") != "0":

        def save_partial(compiled: dict) -> None:
            partial = os.environ.get("NRKNET_BENCH_PARTIAL")
            if partial:
                from benchmarks.common import machine

                saved = {"machine": machine(), **result, "compile": compiled}
                Path(partial).write_text(json.dumps(saved, indent=2))

        result["compile"] = compile_comparison(quick, on_part=save_partial)
    return result


def _compile_rows(comparison: dict) -> list[tuple[str, str]]:
    out = []
    for key, r in comparison.items():
        if not isinstance(r, dict):
            continue
        label = f"compile: {key.replace('_', ' ')}"
        if {"skipped", "error", "unfinished"} & set(r):
            note = r.get("skipped") or r.get("unfinished")
            out.append((label, note or f"error: {r['error']}"))
        elif key.startswith("training"):
            eager, compiled = r["eager"], r["compiled"]
            out.append(
                (
                    f"{label} {r['shape']}",
                    f"eager {eager['images_per_s']:.1f} img/s, compiled "
                    f"{compiled['images_per_s']:.1f} img/s (x{r['speed_up']:.2f}), "
                    f"first step {compiled['first_step_s']:.0f} s",
                )
            )
        elif key.startswith("inference"):
            met = "met" if r["meets_target"] else "missed"
            out.append(
                (
                    f"{label} {r['size']} ({r['mode']})",
                    f"eager {r['eager_median_s'] * 1000:.1f} ms, compiled "
                    f"{r['compiled_median_s'] * 1000:.1f} ms (target "
                    f"{r['target_s'] * 1000:.0f} ms {met}), first call {r['first_call_s']:.0f} s",
                )
            )
        elif key == "loss_curves":
            out.append(
                (
                    f"{label} {r['shape']}, {r['steps']} steps, compiled bf16 vs eager fp32",
                    f"max relative difference {r['max_relative_difference']:.2e} "
                    f"(mean {r['mean_relative_difference']:.2e})",
                )
            )
    return out


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
    return out + _compile_rows(result.get("compile", {}))


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
