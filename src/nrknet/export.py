"""nrknet-export: write a checkpoint's network as ONNX, for any height and width.

The plain PyTorch model is exported (never the accelerated one). The network
needs sizes that are multiples of its ``size_multiple`` (16 at three scales);
the exported graph pads the input by reflection and crops the output itself,
with pad sizes computed from the input's shape inside the graph, so one file
serves every size of at least ``2 * size_multiple`` pixels a side.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from nrknet.checkpoint import CheckpointError, load_model
from nrknet.models.nrknet import NRKNet
from nrknet.utils.atomic import atomic_path

INPUT_NAME, OUTPUT_NAME = "blurry", "sharp"
DEFAULT_OPSET = 17


class ExportError(RuntimeError):
    """The exporter could not express the model in ONNX."""


class PaddedForExport(nn.Module):
    """Pads to the network's size multiple and crops back, using only shape arithmetic ONNX records."""

    def __init__(self, model: NRKNet) -> None:
        super().__init__()
        self.model = model
        self.multiple = model.size_multiple

    def forward(self, blurry: torch.Tensor) -> torch.Tensor:
        height, width = blurry.shape[-2], blurry.shape[-1]
        # always pad (by 0 when the size fits): a Python `if` on the size would freeze it in the graph
        pad_h = (self.multiple - height % self.multiple) % self.multiple
        pad_w = (self.multiple - width % self.multiple) % self.multiple
        padded = F.pad(blurry, (0, pad_w, 0, pad_h), mode="reflect")
        return self.model(padded)[..., :height, :width]


def export_onnx(
    model: NRKNet,
    path: str | os.PathLike,
    sample_size: tuple[int, int] = (64, 64),
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Write ``model`` (eval mode, CPU, float32) to ``path`` with dynamic batch, height and width."""
    path = Path(path)
    model = model.eval().cpu().float()
    wrapper = PaddedForExport(model).eval()
    sample = torch.rand(1, model.config["in_channels"], *sample_size)
    dynamic = {0: "batch", 2: "height", 3: "width"}
    with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about every size it reads; the wrapper above keeps those that matter
        # symbolic, and the test compares sizes the sample did not have.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message="Constant folding")
        try:
            torch.onnx.export(
                wrapper,
                (sample,),
                str(tmp),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: dynamic, OUTPUT_NAME: dynamic},
                opset_version=opset,
                dynamo=False,
            )
        except Exception as exc:  # noqa: BLE001 - the exporter names the operator it cannot convert
            raise ExportError(f"ONNX export failed: {exc}".splitlines()[0]) from exc
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nrknet-export",
        description="Export an nrknet checkpoint (or a registry name) to ONNX with dynamic height and width.",
    )
    parser.add_argument("checkpoint", help="nrknet checkpoint (.ckpt) or a registry name")
    parser.add_argument("output", help="ONNX file to write (.onnx)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset version")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    args = parser.parse_args(argv)
    try:
        import onnx  # noqa: F401 - torch.onnx needs it; fail early with the install hint
    except ImportError:
        print(
            "nrknet-export: error: the onnx package is missing; install it with pip install 'nrknet[export]'",
            file=sys.stderr,
        )
        return 2
    from nrknet.weights import resolve_checkpoint

    try:
        if Path(args.output).exists() and not args.overwrite:
            raise CheckpointError(f"output exists: {args.output} (pass --overwrite to replace it)")
        model = load_model(resolve_checkpoint(args.checkpoint))
        export_onnx(model, args.output, opset=args.opset)
    except (CheckpointError, ExportError, OSError) as exc:
        if args.debug:
            raise
        print(f"nrknet-export: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {args.output}: NRKNet width {model.config['width']}, input '{INPUT_NAME}' "
        f"(N, 3, H, W) RGB in [0, 1], H and W >= {2 * model.size_multiple}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
