"""Prediction figures: peak memory and time of ``nrknet-predict`` on a large photo, tiled, on the CPU.

The full run deblurs a 6000x4000 (24-megapixel) JPEG with the reference-width
model (width 64, random weights: the cost does not depend on the values) at
the default tile (512) and overlap, through the command-line entry point, in a
fresh process whose peak resident memory is reported (the bound it checks
is 4 GiB). ``quick`` deblurs 1536x1536 instead (nine tiles, the middle one
as large as the full run's interior tiles, so the per-tile memory is the
same; the whole-image buffers are smaller) and extrapolates the time to 24
megapixels.

It also measures the largest difference between tiled and whole-image
inference as a function of the overlap (tile 64, so most tile edges are
artificial), which is how the default overlap was chosen.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

try:
    from benchmarks.common import run_child
except ImportError:  # run as a script from the benchmarks folder
    from common import run_child

PREDICT_CHILD = """
import json, resource, sys, time
from nrknet.predict import main
argv = {argv!r}
start = time.perf_counter()
status = main(argv)
elapsed = time.perf_counter() - start
print(json.dumps({{"status": status, "predict_s": elapsed,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""

BUFFERS_CHILD = """
import json, resource, time
from nrknet.data.io import read_image_full, write_image
from nrknet.inference.tiling import tiled_apply
start = time.perf_counter()
image = read_image_full({source!r})
out = tiled_apply(lambda x: x, image.rgb, 3, tile=512, overlap=128)
del image
write_image({target!r}, out, bit_depth=8, jpeg_quality=95)
print(json.dumps({{"io_s": time.perf_counter() - start,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""

OVERLAP_CHILD = """
import json, torch
from nrknet.models.nrknet import NRKNet
from nrknet.inference.tiling import predict_tiled
torch.manual_seed(0)
model = NRKNet(width={width}).eval()
g = torch.Generator().manual_seed(1)
coarse = torch.rand(1, 3, {height} // 16 + 2, {img_width} // 16 + 2, generator=g)
x = torch.nn.functional.interpolate(coarse, size=({height}, {img_width}), mode="bicubic")
x = (0.8 * x + 0.2 * torch.rand(1, 3, {height}, {img_width}, generator=g)).clamp(0, 1)
with torch.inference_mode():
    whole = model(x)
out = {{}}
for overlap in {overlaps!r}:
    tiled = predict_tiled(model, x, tile=64, overlap=overlap, whole_if_fits=False)
    out[f"overlap_{{overlap}}"] = (tiled - whole).abs().max().item()
print(json.dumps(out))
"""


def _photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random 8-bit BGR scene with some texture, built without large float buffers."""
    import cv2

    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 64 + 2, width // 64 + 2, 3), dtype=np.uint8)
    img = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    noise = rng.integers(0, 32, (height, width, 3), dtype=np.uint8)
    return cv2.add(img, noise)


def predict_large(height: int, width: int, model_width: int = 64, tile: int = 512) -> dict:
    import cv2
    import torch

    from nrknet.inference.tiling import default_overlap, plan_tiles
    from nrknet.models.nrknet import NRKNet
    from nrknet.weights.checkpoint import save_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        photos = tmp / "photos"
        photos.mkdir()
        cv2.imwrite(
            str(photos / "photo.jpg"), _photo(height, width), [cv2.IMWRITE_JPEG_QUALITY, 95]
        )
        torch.manual_seed(0)
        model = NRKNet(width=model_width)
        save_model(model, tmp / "model.ckpt")
        overlap = default_overlap(model)
        argv = [
            str(photos),
            "--out",
            str(tmp / "out"),
            "--ckpt",
            str(tmp / "model.ckpt"),
            "--tile",
            str(tile),
            "--device",
            "cpu",
            "--quiet",
        ]
        result = run_child(PREDICT_CHILD.format(argv=argv))
        written = (tmp / "out" / "photo.jpg").is_file()
    plan = plan_tiles(height, width, tile, overlap, model.size_multiple)
    megapixels = height * width / 1e6
    return {
        "height": height,
        "width": width,
        "model_width": model_width,
        "tile": tile,
        "overlap": overlap,
        "tiles": len(plan),
        "written": written,
        "seconds_per_megapixel": result["predict_s"] / megapixels,
        **result,
    }


def image_buffers(height: int, width: int) -> dict:
    """Peak memory of the same read / tile / write path with an identity network (no activations)."""
    import cv2

    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "photo.jpg", Path(tmp) / "out.jpg"
        cv2.imwrite(str(source), _photo(height, width), [cv2.IMWRITE_JPEG_QUALITY, 95])
        result = run_child(BUFFERS_CHILD.format(source=str(source), target=str(target)))
    return {"height": height, "width": width, **result}


def overlap_sweep(model_width: int, height: int, width: int, overlaps: list[int]) -> dict:
    code = OVERLAP_CHILD.format(
        width=model_width, height=height, img_width=width, overlaps=overlaps
    )
    result = run_child(code)
    return {
        "model_width": model_width,
        "size": f"{width}x{height}",
        **{k: v for k, v in result.items() if k.startswith("overlap_")},
    }


def run(quick: bool = False) -> dict:
    if quick:
        large = predict_large(1536, 1536)
        sweep = overlap_sweep(8, 320, 384, [16, 32, 48, 64, 96, 128])
    else:
        large = predict_large(4000, 6000)
        sweep = overlap_sweep(64, 320, 384, [32, 48, 64, 128])
    large["extrapolated_24mp_s"] = large["seconds_per_megapixel"] * 24.0
    buffers = image_buffers(4000, 6000)
    return {"predict": large, "image_buffers_24mp": buffers, "overlap_sweep": sweep}


def rows(result: dict) -> list[tuple[str, str]]:
    p = result["predict"]
    sweep = result["overlap_sweep"]
    out = [
        (
            f"nrknet-predict {p['width']}x{p['height']} (width {p['model_width']}, CPU)",
            f"{p['predict_s']:.0f} s, {p['tiles']} tiles of {p['tile']} + {p['overlap']} overlap",
        ),
        ("peak memory, whole process", f"{p['peak_rss_mb'] / 1024:.2f} GiB (bound 4 GiB)"),
        ("time per megapixel", f"{p['seconds_per_megapixel']:.1f} s"),
        (
            "6000x4000 read + tile + write, identity network",
            f"{result['image_buffers_24mp']['peak_rss_mb'] / 1024:.2f} GiB peak, "
            f"{result['image_buffers_24mp']['io_s']:.0f} s",
        ),
        ("time for 24 MP (extrapolated)", f"{p['extrapolated_24mp_s'] / 60:.1f} min"),
    ]
    overlaps = sorted(int(k.split("_")[1]) for k in sweep if k.startswith("overlap_"))
    out.append(
        (
            f"max |tiled - whole| by overlap (width {sweep['model_width']}, {sweep['size']}, tile 64)",
            ", ".join(f"{o}: {sweep[f'overlap_{o}']:.1e}" for o in overlaps),
        )
    )
    return out


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
