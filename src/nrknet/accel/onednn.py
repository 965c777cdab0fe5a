"""oneDNN convolutions with a fused ReLU or addition (the ops PyTorch's compiler uses on CPU).

They save a pass over the output for every fused operation. The ops are
private to PyTorch, so they are probed once and every caller falls back to
the plain operations where they are missing or do not apply.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nrknet.accel.threads import limit_threads

_FUSED: bool | None = None  # whether the fused ops work here; probed on first use


def fused_available() -> bool:
    """Whether oneDNN's fused convolution ops exist here and compute what they should."""
    global _FUSED
    if _FUSED is None:
        try:
            x = torch.ones(1, 2, 3, 3).contiguous(memory_format=torch.channels_last)
            w = torch.ones(2, 2, 3, 3)
            y = torch.ops.mkldnn._convolution_pointwise.binary(
                x,
                torch.ones(1, 2, 1, 1),
                w,
                None,
                [0, 0],
                [1, 1],
                [1, 1],
                1,
                "add",
                None,
                "relu",
                [],
                "",
            )
            t = torch.ops.mkldnn._convolution_transpose_pointwise(
                x, w, None, [1, 1], [0, 0], [2, 2], [1, 1], 1, "relu", [], ""
            )
            _FUSED = bool(y.flatten()[0] == 19.0 and t.shape == (1, 2, 5, 5))
        except (AttributeError, RuntimeError):
            _FUSED = False
    return _FUSED


def use_fused(x: torch.Tensor, other: torch.Tensor | None = None) -> bool:
    """Whether the fused ops apply to ``x`` (and ``other``): float32 channels-last on CPU."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
        and x.is_contiguous(memory_format=torch.channels_last)
        and (other is None or other.is_contiguous(memory_format=torch.channels_last))
        and fused_available()
    )


def conv_relu_add(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    relu: bool = False,
    add: torch.Tensor | None = None,
) -> torch.Tensor:
    """``conv2d(x, weight, bias) (+ add)``, then ReLU'd if ``relu``; ``x`` already padded."""
    if use_fused(x, add):
        unary = "relu" if relu else None
        if add is None:
            return torch.ops.mkldnn._convolution_pointwise(
                x, weight, bias, [0, 0], [1, 1], [1, 1], 1, unary or "none", [], ""
            )
        return torch.ops.mkldnn._convolution_pointwise.binary(
            x, add, weight, bias, [0, 0], [1, 1], [1, 1], 1, "add", None, unary, [], ""
        )
    y = F.conv2d(x, weight, bias)
    with limit_threads():
        if add is not None:
            y.add_(add)
        return F.relu_(y) if relu else y


def up_conv_relu(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``relu(conv_transpose2d(x, weight, stride=2, padding=1))``."""
    if use_fused(x):
        return torch.ops.mkldnn._convolution_transpose_pointwise(
            x, weight, None, [1, 1], [0, 0], [2, 2], [1, 1], 1, "relu", [], ""
        )
    return F.relu(F.conv_transpose2d(x, weight, stride=2, padding=1))
