"""NRKNet's weights evaluated the way the reference implementation computes them: the speed baseline.

Every reflect padding is a copy (``F.pad`` before each convolution, and before
each 1-D pass of the atoms), the atom stack is materialised as ``3 (J + 1)``
channels with ``torch.cat``, the coefficient maps are repeated for the three
colour channels and mixed by the 1x1 convolution, all in NCHW with autograd
keeping whatever it needs. It shares the parameters of an :class:`NRKNet`;
``bench_speed`` measures the accelerated model against it, and
``tests/test_benchmarks.py`` checks that both compute the same function and
gradients.

Supported: recursive atoms (any tap parameterisation), both coefficient heads,
``conv1x1`` and ``sum`` mixing, cross-scale fusion, any number of scales, the
residual gate. Input sides must be multiples of ``model.size_multiple``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nrknet.models.nrknet import NRKNet, NRKNetOutput
from nrknet.ops.atoms import RecursiveAtoms


def _conv(module: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    pad = module.padding[0]
    return F.conv2d(
        F.pad(x, (pad, pad, pad, pad), mode="reflect"), module.weight, module.bias, module.stride
    )


def _stage(stage: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    for block in stage:
        x = x + _conv(block.conv2, F.relu(_conv(block.conv1, x)))
    return x


def reference_unet(unet: nn.Module, x: torch.Tensor) -> torch.Tensor:
    e1 = _stage(unet.enc1, F.relu(_conv(unet.head, x)))
    e2 = _stage(unet.enc2, F.relu(_conv(unet.down1, e1)))
    e3 = _stage(unet.enc3, F.relu(_conv(unet.down2, e2)))
    b = _stage(unet.bottleneck, F.relu(_conv(unet.bottleneck_conv, e3)))
    d = F.relu(unet.up1(_stage(unet.dec1, e3 + b)))
    d = F.relu(unet.up2(_stage(unet.dec2, d + e2)))
    return _stage(unet.dec3, d + e1)


def reference_coefficients(head: nn.Module, features: torch.Tensor, state):
    local = F.relu(head.local_bn(_conv(head.local_conv, features)))
    pooled = F.avg_pool2d(features, 2)
    if getattr(head, "recurrent", False):
        if state is None:
            zeros = features.new_zeros(features.shape[0], head.num_maps, *pooled.shape[-2:])
            state = (zeros, zeros.clone())
        h, c = state
        gates = head.lstm_conv(torch.cat((pooled, h), dim=1))
        i, f, o, g = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        state, half = (h, c), h
    else:
        half = torch.tanh(head.global_conv(pooled))
    global_map = F.interpolate(half, scale_factor=2, mode="nearest")
    return global_map * local + global_map, state


def reference_blur(operator: nn.Module, x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """The RKR operator with the full stack: 21 levels of two padded 1-D passes, ``cat``, 1x1 conv."""
    atoms = operator.atoms
    if not isinstance(atoms, RecursiveAtoms):
        raise NotImplementedError("the reference path covers recursive atoms only")
    n, c, height, width = x.shape
    taps = atoms.tap_kernels().to(x.dtype)
    stack = [x]
    current = x
    for j in range(atoms.num_levels):
        t = taps[j].expand(c, 3)
        current = F.conv2d(
            F.pad(current, (1, 1, 0, 0), mode="reflect"), t.reshape(c, 1, 1, 3), groups=c
        )
        current = F.conv2d(
            F.pad(current, (0, 0, 1, 1), mode="reflect"), t.reshape(c, 1, 3, 1), groups=c
        )
        stack.append(current)
    weighted = torch.cat(stack, dim=1) * gamma.repeat_interleave(c, dim=1)
    if operator.mixer is None:
        return weighted.view(n, -1, c, height, width).sum(dim=1)
    return operator.mixer(weighted)


def reference_forward(model: NRKNet, blurry: torch.Tensor, sharp: torch.Tensor | None = None):
    """``model(blurry)`` / ``model(blurry, sharp)`` evaluated by the direct reference-style path."""
    if model.fusion != "cross_scale":
        raise NotImplementedError("the reference path covers cross-scale fusion only")
    if model.blur.residual:
        raise NotImplementedError("the reference path has no residual blur operator (D = I + R)")
    multiple = model.size_multiple
    if blurry.shape[-2] % multiple or blurry.shape[-1] % multiple:
        raise ValueError(f"input sides must be multiples of {multiple}")
    state = None
    last_terms, running_sums, reblurred = [], [], []
    for scale in reversed(range(model.num_scales)):
        factor = 2**scale
        y = blurry[..., ::factor, ::factor]
        features = reference_unet(model.unet, y)
        gamma, state = reference_coefficients(model.coefficients, features, state)
        t, total = y, y
        for _ in range(scale + 1):
            t = t - reference_blur(model.blur, t, gamma)
            total = total + t
        last_terms.insert(0, t)
        if sharp is not None:
            running_sums.append(total)
            reblurred.append(reference_blur(model.blur, sharp[..., ::factor, ::factor], gamma))
        if scale > 0 and state is not None:
            state = tuple(
                F.interpolate(s, scale_factor=2, mode="bilinear", align_corners=False)
                for s in state
            )
    output = blurry
    for s, t in enumerate(last_terms):
        if s:
            t = F.interpolate(t, scale_factor=2**s, mode="bilinear", align_corners=False)
        output = output + t

    def gated(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x if model.gate is None else y + model.gate * (x - y)

    if sharp is None:
        return gated(blurry, output)
    scales = [
        gated(
            blurry[..., :: 2 ** (model.num_scales - 1 - i), :: 2 ** (model.num_scales - 1 - i)], s
        )
        for i, s in enumerate(running_sums)
    ]
    return NRKNetOutput(scales=[*scales, gated(blurry, output)], reblurred=reblurred)
