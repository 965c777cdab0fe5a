"""Border handling shared by every atom variant."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def reflect_pad(x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
    """Reflect-pad ``x`` by ``(left, right, top, bottom)`` pixels, for any pad width.

    ``F.pad(mode="reflect")`` needs every pad to be smaller than the padded
    dimension. Padding repeatedly extends the image by its mirror images (a
    periodic, mirror-symmetric extension), which is exactly what applying many
    small reflect-padded kernels in a row sees, so large atoms on small images
    stay consistent with the recursive operator.
    """
    left, right, top, bottom = pad
    while left > 0 or right > 0 or top > 0 or bottom > 0:
        height, width = x.shape[-2:]
        if (left or right) and width < 2 or (top or bottom) and height < 2:
            raise ValueError(
                f"cannot reflect-pad an image of size {height}x{width} by {pad}: "
                "it needs at least 2 pixels along each padded dimension"
            )
        step = (
            min(left, width - 1),
            min(right, width - 1),
            min(top, height - 1),
            min(bottom, height - 1),
        )
        x = F.pad(x, step, mode="reflect")
        left, right, top, bottom = (
            a - b for a, b in zip((left, right, top, bottom), step, strict=True)
        )
    return x


def pad_to_multiple(
    x: torch.Tensor, multiple: int, minimum: int = 0
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad height and width up to a multiple (and at least ``minimum``).

    Returns the padded tensor and the original size.
    """
    height, width = x.shape[-2:]
    target_h = max(-(-height // multiple) * multiple, minimum)
    target_w = max(-(-width // multiple) * multiple, minimum)
    if target_h != height or target_w != width:
        x = reflect_pad(x, (0, target_w - width, 0, target_h - height))
    return x, (height, width)
