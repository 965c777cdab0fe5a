"""Coefficient heads: the per-pixel weights Gamma of the RKR atoms, one map per level.

A head takes the U-Net features (N, width, H, W) and the state carried from
the coarser scale and returns ``(Gamma, state)``, Gamma of shape
(N, num_maps, H, W); ``next_scale_state(state)`` carries the state to the
next, twice finer scale.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LSTMState = tuple[torch.Tensor, torch.Tensor]


def convlstm_update(gates: torch.Tensor, cell: torch.Tensor) -> LSTMState:
    """The ConvLSTM update from the stacked gate maps (input, forget, output, candidate).

    ``c' = sigmoid(f) c + sigmoid(i) tanh(g)`` and ``h' = sigmoid(o) tanh(c')``;
    returns ``(h', c')``.
    """
    i, f, o, g = gates.chunk(4, dim=1)
    cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(cell), cell


def modulate(global_half: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
    """The modulation ``Gamma = G * L + G``, ``G`` the nearest 2x upsampling of ``global_half``."""
    global_map = F.interpolate(global_half, scale_factor=2, mode="nearest")
    return global_map * local + global_map


def upsample_state(state: LSTMState) -> LSTMState:
    """Carry a ConvLSTM state to the next (twice finer) scale: bilinear 2x upsampling."""
    h, c = (F.interpolate(s, scale_factor=2, mode="bilinear", align_corners=False) for s in state)
    return h, c


class _LocalBranch(nn.Module):
    """The local branch ``L = relu(BN(conv3x3(F)))`` shared by both heads (bias-free, reflect padding)."""

    def __init__(self, width: int, num_maps: int) -> None:
        super().__init__()
        self.num_maps = num_maps
        self.local_conv = nn.Conv2d(
            width, num_maps, 3, padding=1, bias=False, padding_mode="reflect"
        )
        self.local_bn = nn.BatchNorm2d(num_maps)

    def local_maps(self, features: torch.Tensor) -> torch.Tensor:
        return F.relu(self.local_bn(self.local_conv(features)))


class ConvLSTMCoefficientHead(_LocalBranch):
    """Local conv branch modulated by a ConvLSTM carried across scales (the reference's head).

    A ConvLSTM cell on the 2x2-average-pooled features (one 5x5 gate conv over
    ``[input, h]``, zero padding, with bias) gives ``h``; ``G = up2(h)`` and
    ``Gamma = G * L + G``. The state starts at zero, at half the feature size,
    and is bilinearly upsampled between scales.
    """

    recurrent = True

    def __init__(self, width: int, num_maps: int) -> None:
        super().__init__(width, num_maps)
        self.lstm_conv = nn.Conv2d(width + num_maps, 4 * num_maps, 5, padding=2, bias=True)

    def initial_state(self, features_shape: torch.Size, like: torch.Tensor) -> LSTMState:
        n, _, height, width = features_shape
        zeros = like.new_zeros(n, self.num_maps, height // 2, width // 2)
        return zeros, zeros.clone()

    def forward(
        self, features: torch.Tensor, state: LSTMState | None
    ) -> tuple[torch.Tensor, LSTMState]:
        if state is None:
            state = self.initial_state(features.shape, features)
        h, c = state
        h, c = convlstm_update(self.lstm_conv(self.lstm_input(features, h)), c)
        return modulate(h, self.local_maps(features)), (h, c)

    def lstm_input(self, features: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """The ConvLSTM's input: the 2x2-average-pooled features next to the hidden state."""
        return torch.cat((F.avg_pool2d(features, 2), hidden), dim=1)

    @staticmethod
    def next_scale_state(state: LSTMState) -> LSTMState:
        return upsample_state(state)


class PlainCoefficientHead(_LocalBranch):
    """The head without the ConvLSTM (paper Table 4): ``G = up2(tanh(conv5x5(avgpool(F))))``.

    Same local branch and modulation, no state carried between scales.
    """

    recurrent = False

    def __init__(self, width: int, num_maps: int) -> None:
        super().__init__(width, num_maps)
        self.global_conv = nn.Conv2d(width, num_maps, 5, padding=2, bias=True)

    def global_half(self, features: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.global_conv(self.pooled_features(features)))

    def pooled_features(self, features: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(features, 2)

    def forward(self, features: torch.Tensor, state: None = None) -> tuple[torch.Tensor, None]:
        return modulate(self.global_half(features), self.local_maps(features)), None

    @staticmethod
    def next_scale_state(state: None) -> None:
        return None
