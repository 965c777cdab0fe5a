"""The compute of a network, counted without running it."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def forward_macs(
    build: Callable[[], nn.Module], height: int, width: int, channels: int = 3
) -> float:
    """Multiply-accumulates of one forward pass on a ``channels x height x width`` image.

    ``build`` makes the network; it is built and run on the meta device, so no
    weights are allocated and nothing is computed, and ``torch.utils.flop_counter``
    counts the operations (its FLOPs are two per multiply-accumulate).
    """
    with torch.device("meta"):
        model = build().eval()
        x = torch.empty(1, channels, height, width)
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / 2
