"""The coefficient heads, accelerated: BatchNorm folded into the local convolution, banded inference.

Without autograd the local branch's BatchNorm (eval mode) becomes part of its
convolution, and the local maps, their modulation and the ConvLSTM update are
computed in bands of rows straight into the outputs, so neither the local
maps nor the upsampled ``G`` nor the gate maps ever exist at full size. With
autograd, the local convolution is the copy-free reflect convolution and the
small recurrent convolutions run on NCHW tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nrknet.accel.bands import DEFAULT_BAND_BYTES, band_rows, conv3x3_band, use_inference_path
from nrknet.accel.reflect_conv import reflect_conv
from nrknet.accel.threads import limit_threads
from nrknet.models.coefficients import (
    ConvLSTMCoefficientHead,
    LSTMState,
    PlainCoefficientHead,
    convlstm_update,
    modulate,
)


def fold_batch_norm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``bn(conv(x))`` as one convolution (``bn`` in eval mode)."""
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    weight = conv.weight * scale.view(-1, 1, 1, 1)
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    return weight, bias


def modulated_local_maps(
    features: torch.Tensor,
    conv: nn.Conv2d,
    bn: nn.BatchNorm2d,
    global_half: torch.Tensor,
    band_bytes: int = DEFAULT_BAND_BYTES,
) -> torch.Tensor:
    """``modulate(global_half, relu(bn(conv(features))))`` in bands of rows (no autograd).

    The result is a contiguous (N, M, H, W) tensor, the layout the RKR operator reads.
    """
    n, _, height, width = features.shape
    weight, bias = fold_batch_norm(conv, bn)
    maps = features.new_empty((n, weight.shape[0], height, width))
    rows = max(2, band_rows(features, band_bytes) // 2 * 2)
    for r0 in range(0, height, rows):
        r1 = min(r0 + rows, height)
        a, b = max(r0 - 1, 0), min(r1 + 1, height)
        local = conv3x3_band(features[:, :, a:b], weight, bias, r0 == 0, r1 == height, relu=True)
        with limit_threads():
            maps[:, :, r0:r1] = modulate(global_half[:, :, r0 // 2 : (r1 + 1) // 2], local)
    return maps


def convlstm_step_in_bands(
    features: torch.Tensor, state: LSTMState, conv: nn.Conv2d, band_bytes: int
) -> LSTMState:
    """One ConvLSTM step in bands of rows of the half-resolution state (no autograd).

    Each band of gate maps is computed from the pooled features and the hidden
    state with the halo of the gate convolution (zero padding) and updated at once.
    """
    h_old, c_old = state
    n, _, height, width = h_old.shape
    h = h_old.new_empty(h_old.shape)
    c = c_old.new_empty(c_old.shape)
    weight, bias = conv.weight, conv.bias
    reach = weight.shape[-2] // 2
    # bands of about band_bytes of gate maps
    rows = max(1, band_bytes // max(1, weight.shape[0] * n * width * h.element_size()))
    for r0 in range(0, height, rows):
        r1 = min(r0 + rows, height)
        a, b = max(r0 - reach, 0), min(r1 + reach, height)
        with limit_threads():
            pooled = F.avg_pool2d(features[:, :, 2 * a : 2 * b], 2)
            inputs = torch.cat((pooled, h_old[:, :, a:b].to(pooled.dtype)), dim=1)
            del pooled
            inputs = F.pad(inputs, (0, 0, a - (r0 - reach), (r1 + reach) - b))
        gates = F.conv2d(inputs, weight, bias, padding=(0, reach))
        del inputs
        with limit_threads():
            h[:, :, r0:r1], c[:, :, r0:r1] = convlstm_update(gates, c_old[:, :, r0:r1])
    return h, c


class _AcceleratedLocalBranch:
    """The local branch with the copy-free reflect convolution and an in-place ReLU."""

    band_bytes = DEFAULT_BAND_BYTES

    def local_maps(self, features: torch.Tensor) -> torch.Tensor:
        return F.relu(self.local_bn(reflect_conv(self.local_conv, features)), inplace=True)


class AcceleratedConvLSTMHead(_AcceleratedLocalBranch, ConvLSTMCoefficientHead):
    """:class:`ConvLSTMCoefficientHead` with the accelerated paths (same parameters and results)."""

    def forward(
        self, features: torch.Tensor, state: LSTMState | None
    ) -> tuple[torch.Tensor, LSTMState]:
        if not use_inference_path(features, self.training):
            return super().forward(features, state)
        if state is None:
            state = self.initial_state(features.shape, features)
        with torch.no_grad():
            h, c = convlstm_step_in_bands(features, state, self.lstm_conv, self.band_bytes)
            gamma = modulated_local_maps(
                features, self.local_conv, self.local_bn, h, self.band_bytes
            )
        return gamma, (h, c)

    def lstm_input(self, features: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        # NCHW: oneDNN's weight gradient is several times slower on channels-last tensors
        return super().lstm_input(features, hidden).contiguous()


class AcceleratedPlainHead(_AcceleratedLocalBranch, PlainCoefficientHead):
    """:class:`PlainCoefficientHead` with the accelerated paths (same parameters and results)."""

    def forward(self, features: torch.Tensor, state: None = None) -> tuple[torch.Tensor, None]:
        if not use_inference_path(features, self.training):
            return super().forward(features, state)
        with torch.no_grad():
            maps = modulated_local_maps(
                features,
                self.local_conv,
                self.local_bn,
                self.global_half(features),
                self.band_bytes,
            )
        return maps, None

    def pooled_features(self, features: torch.Tensor) -> torch.Tensor:
        # NCHW: oneDNN's weight gradient is several times slower on channels-last tensors
        return super().pooled_features(features).contiguous()
