"""nrknet-export: write a checkpoint's network as ONNX, for any height and width.

The plain PyTorch model is exported (never the accelerated one). The network
needs sizes that are multiples of its ``size_multiple`` (16 at three scales);
the exported graph pads the input by reflection and crops the output itself,
with pad sizes computed from the input's shape inside the graph, so one file
serves every size of at least :func:`minimum_size` pixels a side
(``size_multiple + 1``, 17 at three scales, for the recursive atoms).

Every atom bank exports. The independent banks (``non_recursive``,
``non_separable``, ``gaussian``) reflect-pad each level by its radius in one
step only where the coarsest scale is wider than the largest radius (several
mirror steps otherwise, a count the graph cannot vary), so their graphs are
traced at, and valid from, a larger size: 33 px for ``gaussian``, 81 px for
the 20-level ``non_recursive`` and ``non_separable`` at three scales.

The U-Net baseline (:mod:`nrknet.models.unet_baseline`) exports the same way;
its graph serves every size of at least its size multiple.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from nrknet.cli import add_model_options, reported
from nrknet.errors import NRKNetError, UsageError
from nrknet.models.nrknet import NRKNet
from nrknet.ops.atoms import IndependentAtoms, RecursiveAtoms
from nrknet.ops.padding import reflect_pad
from nrknet.utils.atomic import atomic_path
from nrknet.weights.checkpoint import load_model

INPUT_NAME, OUTPUT_NAME = "blurry", "sharp"
DEFAULT_OPSET = 17


class ExportError(NRKNetError):
    """The exporter could not express the model in ONNX."""


class PaddedForExport(nn.Module):
    """Pads to the network's size multiple and crops back, using only shape arithmetic ONNX records."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.multiple = getattr(model, "size_multiple", 1)

    def forward(self, blurry: torch.Tensor) -> torch.Tensor:
        height, width = blurry.shape[-2], blurry.shape[-1]
        # always pad (by 0 when the size fits): a Python `if` on the size would freeze it in the graph
        pad_h = (self.multiple - height % self.multiple) % self.multiple
        pad_w = (self.multiple - width % self.multiple) % self.multiple
        padded = F.pad(blurry, (0, pad_w, 0, pad_h), mode="reflect")
        return self.model(padded)[..., :height, :width]


def minimum_size(model: nn.Module) -> int:
    """Smallest height and width the exported graph of ``model`` serves.

    For a network other than NRKNet (the U-Net baseline), the size multiple
    ``m``: the graph reflect-pads by less than ``m``, which needs more pixels
    than the pad, and the network itself takes any multiple of ``m``.

    The graph pads an input of ``n`` pixels to the next multiple of
    ``size_multiple`` (m); the coarsest U-Net level needs that to be at least
    ``2 m``, so ``n > m`` (17 px at three scales). An independent atom of
    radius r (and, not knowing better, any atom bank of one's own) reflect-pads
    by r in one step, which needs more than r pixels at the coarsest scale: a
    padded size of ``2 ** (num_scales - 1) * (r + 1)`` or more, rounded up to a
    multiple of m.
    """
    multiple = getattr(model, "size_multiple", 1)
    if not isinstance(model, NRKNet):
        return multiple
    padded = 2 * multiple
    # the stock independent banks, and banks of one's own
    if not isinstance(model.atoms, RecursiveAtoms):
        needed = 2 ** (model.num_scales - 1) * (model.atoms.max_radius + 1)
        padded = max(padded, -(-needed // multiple) * multiple)
    # every input above ``padded - multiple`` pixels is padded up to ``padded`` or more
    return padded - multiple + 1


@contextmanager
def _static_channel_atoms(model: nn.Module, channels: int) -> Iterator[None]:
    """Independent atom levels with the channel count fixed while tracing.

    The bank expands each shared atom to the image's channel count read from the
    image (``x.shape[1]``); traced, that count becomes a graph value and ONNX
    loses the convolution kernel's shape. The same levels, with ``channels`` a
    constant, export; the test compares them with the untouched model.
    """
    atoms = getattr(model, "atoms", None)
    if not isinstance(atoms, IndependentAtoms):
        yield
        return

    def levels(x: torch.Tensor) -> Iterator[torch.Tensor]:
        yield x
        for j, radius in enumerate(atoms.radii):
            size = 2 * radius + 1
            weight = atoms.atom(j).to(x.dtype).view(1, 1, size, size)
            weight = weight.expand(channels, 1, size, size)
            yield F.conv2d(reflect_pad(x, (radius,) * 4), weight, groups=channels)

    atoms.levels = levels
    try:
        yield
    finally:
        del atoms.levels


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    sample_size: tuple[int, int] = (64, 64),
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Write ``model`` (eval mode, CPU, float32) to ``path`` with dynamic batch, height and width.

    The graph serves heights and widths of at least :func:`minimum_size`; the
    traced sample is enlarged to that size where ``sample_size`` is smaller.
    """
    path = Path(path)
    model = model.eval().cpu().float()
    wrapper = PaddedForExport(model).eval()
    channels = model.config.get("in_channels", 3)
    smallest = minimum_size(model)
    sample = torch.rand(1, channels, *(max(side, smallest) for side in sample_size))
    dynamic = {0: "batch", 2: "height", 3: "width"}
    with (
        atomic_path(path) as tmp,
        torch.no_grad(),
        warnings.catch_warnings(),
        _static_channel_atoms(model, channels),
    ):
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
    add_model_options(parser, device=False)
    return run(parser.parse_args(argv))


@reported("nrknet-export", debug=lambda args: args.debug)
def run(args: argparse.Namespace) -> int:
    try:
        import onnx  # noqa: F401 - torch.onnx needs it; fail early with the install hint
    except ImportError:
        raise UsageError(
            "the onnx package is missing; install it with pip install 'nrknet[export]'"
        ) from None
    from nrknet.weights import resolve_checkpoint

    source = resolve_checkpoint(args.checkpoint)
    output = Path(args.output)
    if output.resolve() == source.resolve() or (output.exists() and output.samefile(source)):
        raise UsageError(f"output {output} would overwrite the input {source}")
    if output.exists() and not args.overwrite:
        raise UsageError(f"output exists: {output} (pass --overwrite to replace it)")
    model = load_model(source, trust_code=args.trust_code, option="--trust-code")
    export_onnx(model, args.output, opset=args.opset)
    print(
        f"wrote {args.output}: {type(model).__name__} width {model.config['width']}, input '{INPUT_NAME}' "
        f"(N, 3, H, W) RGB in [0, 1], H and W >= {minimum_size(model)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
