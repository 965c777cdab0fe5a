"""Coefficient heads: per-pixel weights Gamma of the RKR atoms (facts section 1, item 3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nrknet.models.unet import (
    DEFAULT_BAND_BYTES,
    ReflectConv2d,
    band_rows,
    conv3x3_band,
    use_inference_path,
)
from nrknet.ops.threads import limit_threads

LSTMState = tuple[torch.Tensor, torch.Tensor]


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
    """Inference form of ``G * relu(bn(conv(F))) + G`` with ``G`` the nearest 2x upsampling of ``global_half``.

    BatchNorm is folded into the convolution and the maps are computed in
    bands of rows straight into a contiguous (N, M, H, W) tensor, the layout the
    RKR operator reads; neither the local maps nor ``G`` exist at full size.
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
            g = global_half[:, :, r0 // 2 : (r1 + 1) // 2]
            g = F.interpolate(g, scale_factor=2, mode="nearest")
            torch.addcmul(g, g, local, out=maps[:, :, r0:r1])
    return maps


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
        self.local_conv = ReflectConv2d(
            width, num_maps, 3, padding=1, bias=False, padding_mode="reflect"
        )
        self.local_bn = nn.BatchNorm2d(num_maps)
        self.lstm_conv = nn.Conv2d(width + num_maps, 4 * num_maps, 5, padding=2, bias=True)
        self.band_bytes = DEFAULT_BAND_BYTES

    def initial_state(self, features_shape: torch.Size, like: torch.Tensor) -> LSTMState:
        n, _, height, width = features_shape
        zeros = like.new_zeros(n, self.num_maps, height // 2, width // 2)
        return zeros, zeros.clone()

    def forward(
        self, features: torch.Tensor, state: LSTMState | None
    ) -> tuple[torch.Tensor, LSTMState]:
        if use_inference_path(features, self.training):
            return self._forward_inference(features, state)
        local = F.relu(self.local_bn(self.local_conv(features)), inplace=True)
        pooled = F.avg_pool2d(features, 2)
        if state is None:
            state = self.initial_state(features.shape, features)
        h, c = state
        # NCHW: oneDNN's weight gradient is several times slower on channels-last tensors
        gates = self.lstm_conv(torch.cat((pooled, h), dim=1).contiguous())
        i, f, o, g = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        global_map = F.interpolate(h, scale_factor=2, mode="nearest")
        return global_map * local + global_map, (h, c)

    @torch.no_grad()
    def _forward_inference(
        self, features: torch.Tensor, state: LSTMState | None
    ) -> tuple[torch.Tensor, LSTMState]:
        if state is None:
            state = self.initial_state(features.shape, features)
        h, c = self._lstm_step_inference(features, state)
        gamma = modulated_local_maps(features, self.local_conv, self.local_bn, h, self.band_bytes)
        return gamma, (h, c)

    def _lstm_step_inference(self, features: torch.Tensor, state: LSTMState) -> LSTMState:
        """The ConvLSTM update in bands of rows of the half-resolution state."""
        h_old, c_old = state
        n, _, height, width = h_old.shape
        h = h_old.new_empty(h_old.shape)
        c = c_old.new_empty(c_old.shape)
        weight, bias = self.lstm_conv.weight, self.lstm_conv.bias
        reach = weight.shape[-2] // 2  # zero padding 2 of the 5x5 gate convolution
        # bands of about band_bytes of gate maps
        rows = max(1, self.band_bytes // max(1, weight.shape[0] * n * width * h.element_size()))
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
                i, f, o, g = gates.chunk(4, dim=1)
                c_band = torch.sigmoid(f) * c_old[:, :, r0:r1] + torch.sigmoid(i) * torch.tanh(g)
                h[:, :, r0:r1] = torch.sigmoid(o) * torch.tanh(c_band)
                c[:, :, r0:r1] = c_band
        return h, c

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
        self.local_conv = ReflectConv2d(
            width, num_maps, 3, padding=1, bias=False, padding_mode="reflect"
        )
        self.local_bn = nn.BatchNorm2d(num_maps)
        self.global_conv = nn.Conv2d(width, num_maps, 5, padding=2, bias=True)
        self.band_bytes = DEFAULT_BAND_BYTES

    def forward(self, features: torch.Tensor, state: None = None) -> tuple[torch.Tensor, None]:
        g = torch.tanh(self.global_conv(F.avg_pool2d(features, 2).contiguous()))
        if use_inference_path(features, self.training):
            with torch.no_grad():
                maps = modulated_local_maps(
                    features, self.local_conv, self.local_bn, g, self.band_bytes
                )
            return maps, None
        local = F.relu(self.local_bn(self.local_conv(features)), inplace=True)
        global_map = F.interpolate(g, scale_factor=2, mode="nearest")
        return global_map * local + global_map, None

    @staticmethod
    def next_scale_state(state: None) -> None:
        return None
