"""Coefficient heads: per-pixel weights Gamma of the RKR atoms (facts section 1, item 3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LSTMState = tuple[torch.Tensor, torch.Tensor]


class ConvLSTMCoefficientHead(nn.Module):
    """Local conv branch modulated by a ConvLSTM carried across scales.

    ``L = relu(BN(conv3x3(F)))``; a ConvLSTM cell on the 2x2-average-pooled
    features (5x5 gate conv, zero padding, with bias; gates input, forget,
    output, candidate) gives ``h``; ``G = up2(h)`` and ``Gamma = G * L + G``.
    The state starts at zero and is bilinearly upsampled between scales.
    """

    recurrent = True

    def __init__(self, width: int, num_maps: int) -> None:
        super().__init__()
        self.num_maps = num_maps
        self.local_conv = nn.Conv2d(
            width, num_maps, 3, padding=1, bias=False, padding_mode="reflect"
        )
        self.local_bn = nn.BatchNorm2d(num_maps)
        self.lstm_conv = nn.Conv2d(width + num_maps, 4 * num_maps, 5, padding=2, bias=True)

    def initial_state(self, features_shape: torch.Size, like: torch.Tensor) -> LSTMState:
        n, _, height, width = features_shape
        zeros = like.new_zeros(n, self.num_maps, height // 2, width // 2)
        return zeros, zeros.clone()

    def forward(
        self, features: torch.Tensor, state: LSTMState | None
    ) -> tuple[torch.Tensor, LSTMState]:
        local = F.relu(self.local_bn(self.local_conv(features)))
        pooled = F.avg_pool2d(features, 2)
        if state is None:
            state = self.initial_state(features.shape, features)
        h, c = state
        gates = self.lstm_conv(torch.cat((pooled, h), dim=1))
        i, f, o, g = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        global_map = F.interpolate(h, scale_factor=2, mode="nearest")
        return global_map * local + global_map, (h, c)

    @staticmethod
    def next_scale_state(state: LSTMState) -> LSTMState:
        """Carry the state to the next (twice finer) scale."""
        return tuple(
            F.interpolate(s, scale_factor=2, mode="bilinear", align_corners=False) for s in state
        )


class PlainCoefficientHead(nn.Module):
    """The head without the ConvLSTM (paper Table 4): ``G = up2(tanh(conv5x5(avgpool(F))))``.

    Same local branch and modulation, no state carried between scales.
    """

    recurrent = False

    def __init__(self, width: int, num_maps: int) -> None:
        super().__init__()
        self.num_maps = num_maps
        self.local_conv = nn.Conv2d(
            width, num_maps, 3, padding=1, bias=False, padding_mode="reflect"
        )
        self.local_bn = nn.BatchNorm2d(num_maps)
        self.global_conv = nn.Conv2d(width, num_maps, 5, padding=2, bias=True)

    def forward(self, features: torch.Tensor, state: None = None) -> tuple[torch.Tensor, None]:
        local = F.relu(self.local_bn(self.local_conv(features)))
        g = torch.tanh(self.global_conv(F.avg_pool2d(features, 2)))
        global_map = F.interpolate(g, scale_factor=2, mode="nearest")
        return global_map * local + global_map, None

    @staticmethod
    def next_scale_state(state: None) -> None:
        return None
