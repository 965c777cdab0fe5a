"""nrknet-predict on a 24 MP photo on the GPU: float32 against --half, wall time and agreement.

Run by benchmarks/device_check.sh on a CUDA machine; writes JSON to argv[1].
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from benchmarks.common import machine
from nrknet.models.nrknet import NRKNet
from nrknet.weights.checkpoint import save_model


def main(
    out_json: str, work: str = "/tmp/nrk_predict", size: tuple[int, int] = (6000, 4000)
) -> None:
    root = Path(work)
    (root / "in").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    save_model(NRKNet(width=64), root / "model.ckpt")
    rng = np.random.default_rng(0)
    small = (rng.random((400, 600, 3)) * 65535).astype(np.uint16)
    photo = cv2.resize(small, size, interpolation=cv2.INTER_CUBIC)  # 16-bit (24 MP by default)
    cv2.imwrite(str(root / "in" / "photo.png"), photo)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    result = {
        "machine": machine(),
        "size": f"{size[0]}x{size[1]}",
        "bit_depth": 16,
        "device": device,
    }
    for name, extra in (("fp32", []), ("half", ["--half"]), ("fp32_batch4", ["--batch", "4"])):
        command = [
            sys.executable, "-m", "nrknet.predict", str(root / "in" / "photo.png"),
            "-o", str(root / name), "-c", str(root / "model.ckpt"), "--quiet", *extra,
        ]  # fmt: skip
        start = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        result[name] = {"wall_s": time.perf_counter() - start, "returncode": proc.returncode}
        if proc.returncode:
            result[name]["stderr"] = proc.stderr[-2000:]
    outputs = {}
    for name in ("fp32", "half", "fp32_batch4"):
        path = root / name / "photo.png"
        if path.is_file():
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            result[name]["dtype"] = str(image.dtype)
            outputs[name] = image.astype(np.float64) / 65535
    if "fp32" in outputs:
        for name in ("half", "fp32_batch4"):
            if name in outputs:
                diff = outputs[name] - outputs["fp32"]
                result[name]["max_abs_diff_vs_fp32"] = float(np.abs(diff).max())
                result[name]["psnr_vs_fp32_db"] = float(-10 * np.log10(np.mean(diff**2) + 1e-20))
    Path(out_json).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(
        sys.argv[1],
        size=tuple(int(v) for v in sys.argv[2].split("x")) if len(sys.argv) > 2 else (6000, 4000),
    )
