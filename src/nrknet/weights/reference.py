"""Build an NRKNet from a checkpoint of the reference implementation.

The reference reads images with OpenCV and never converts them, so its weights
expect BGR input. Every part of the network is either per-channel or linear
over channels, so an exact RGB model is obtained by permuting weights: the
input channels of the first convolution, the per-channel atom kernels, and
the input (within each level) and output channels of the 1x1 mixing conv.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from nrknet.models.nrknet import NRKNet
from nrknet.weights.checkpoint import CheckpointError, read_checkpoint, save_model

# Reference name -> our name, for everything but the U-Net's residual stages.
_DIRECT = {
    "SummationLayer.conv.weight": "blur.mixer.weight",
    "SummationLayer.conv.bias": "blur.mixer.bias",
    "GCM.kernels": "blur.atoms.logits",
    "APU.conv.main.0.weight": "coefficients.local_conv.weight",
    "APU.conv.main.1.weight": "coefficients.local_bn.weight",
    "APU.conv.main.1.bias": "coefficients.local_bn.bias",
    "APU.conv.main.1.running_mean": "coefficients.local_bn.running_mean",
    "APU.conv.main.1.running_var": "coefficients.local_bn.running_var",
    "APU.conv.main.1.num_batches_tracked": "coefficients.local_bn.num_batches_tracked",
    "APU.conv_atten.conv.weight": "coefficients.lstm_conv.weight",
    "APU.conv_atten.conv.bias": "coefficients.lstm_conv.bias",
    "feat_extract.0.main.0.weight": "unet.head.weight",
    "feat_extract.1.main.0.weight": "unet.down1.weight",
    "feat_extract.2.main.0.weight": "unet.down2.weight",
    "feat_extract.3.main.0.weight": "unet.up1.weight",
    "feat_extract.4.main.0.weight": "unet.up2.weight",
    "bottleneck.0.main.0.weight": "unet.bottleneck_conv.weight",
}
_STAGES = {
    "Encoder.0": "unet.enc1",
    "Encoder.1": "unet.enc2",
    "Encoder.2": "unet.enc3",
    "bottleneck.1": "unet.bottleneck",
    "Decoder.0": "unet.dec1",
    "Decoder.1": "unet.dec2",
    "Decoder.2": "unet.dec3",
}
for _ref, _ours in _STAGES.items():
    _DIRECT[f"{_ref}.layers.0.main.0.main.0.weight"] = f"{_ours}.0.conv1.weight"
    _DIRECT[f"{_ref}.layers.0.main.1.main.0.weight"] = f"{_ours}.0.conv2.weight"

REFERENCE_TO_OURS: dict[str, str] = dict(_DIRECT)
BGR_TO_RGB = [2, 1, 0]


def normalise_reference_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip a ``module.`` (DataParallel) prefix and map ``RKR.`` to ``GCM.``."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith("module."):
            key = key[len("module.") :]
        if key.startswith("RKR."):
            key = "GCM." + key[len("RKR.") :]
        out[key] = value
    return out


def _unwrap(checkpoint: Mapping) -> Mapping[str, torch.Tensor]:
    """Accept a bare state dict or the usual wrappers ({'params': ...}, {'state_dict': ...}, {'model': ...})."""
    for key in ("params", "state_dict", "model", "net"):
        inner = checkpoint.get(key) if isinstance(checkpoint, Mapping) else None
        if isinstance(inner, Mapping) and any(torch.is_tensor(v) for v in inner.values()):
            return inner
    return checkpoint


def from_official(state_dict: Mapping[str, torch.Tensor], rgb: bool = True) -> NRKNet:
    """An :class:`NRKNet` carrying the reference weights; RGB input unless ``rgb=False``.

    The width and the number of atom levels are read from the tensor shapes.
    Raises :class:`CheckpointError` naming missing, unexpected or mismatched keys.
    """
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(
            f"expected a state dict (a mapping of names to tensors), got {type(state_dict).__name__}"
        )
    ref = normalise_reference_keys(_unwrap(state_dict))
    missing = sorted(k for k in REFERENCE_TO_OURS if k not in ref)
    unexpected = sorted(k for k in ref if k not in REFERENCE_TO_OURS)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {', '.join(unexpected)}")
        raise CheckpointError("not a reference NRKNet state dict; " + "; ".join(parts))
    width = ref["feat_extract.0.main.0.weight"].shape[0]
    kernels = ref["GCM.kernels"]
    if kernels.dim() != 4 or kernels.shape[0] % 3 or kernels.shape[-1] != 2:
        raise CheckpointError(
            f"GCM.kernels has shape {tuple(kernels.shape)}; expected (3 * levels, 1, 1, 2)"
        )
    num_levels = kernels.shape[0] // 3
    model = NRKNet(width=width, num_levels=num_levels)
    ours = model.state_dict()
    converted = {}
    mismatched = []
    for ref_key, our_key in REFERENCE_TO_OURS.items():
        value = ref[ref_key]
        if tuple(value.shape) != tuple(ours[our_key].shape):
            mismatched.append(
                f"{ref_key}: {tuple(value.shape)}, expected {tuple(ours[our_key].shape)}"
            )
            continue
        converted[our_key] = value.detach().clone().to(ours[our_key].dtype)
    if mismatched:
        raise CheckpointError(
            "shape mismatch (a checkpoint of another width or layout?): " + "; ".join(mismatched)
        )
    if rgb:
        converted = bgr_to_rgb(converted, num_levels)
    model.load_state_dict(converted)
    return model


def bgr_to_rgb(state: dict[str, torch.Tensor], num_levels: int) -> dict[str, torch.Tensor]:
    """Permute a BGR-trained state dict (our names) into the equivalent RGB one."""
    state = dict(state)
    state["unet.head.weight"] = state["unet.head.weight"][:, BGR_TO_RGB]
    logits = state["blur.atoms.logits"]
    state["blur.atoms.logits"] = logits.view(num_levels, 3, *logits.shape[1:])[
        :, BGR_TO_RGB
    ].reshape(logits.shape)
    weight = state["blur.mixer.weight"]
    out_c, in_c = weight.shape[:2]
    weight = weight.view(out_c, in_c // 3, 3, 1, 1)[:, :, BGR_TO_RGB].reshape(out_c, in_c, 1, 1)
    state["blur.mixer.weight"] = weight[BGR_TO_RGB]
    state["blur.mixer.bias"] = state["blur.mixer.bias"][BGR_TO_RGB]
    return state


def convert_file(src: str | Path, dst: str | Path, overwrite: bool = False) -> NRKNet:
    """Convert a reference ``.pth`` into an NRKNet checkpoint (RGB) at ``dst``."""
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise CheckpointError(f"input checkpoint not found: {src}")
    if dst.exists() and not overwrite:
        raise CheckpointError(f"output exists: {dst} (pass --overwrite to replace it)")
    if dst.resolve() == src.resolve():
        raise CheckpointError(f"output {dst} would overwrite the input")
    state = read_checkpoint(src)
    if isinstance(state, Mapping) and "nrknet" in state:
        raise CheckpointError(f"{src} is already an nrknet checkpoint: use it as it is")
    model = from_official(state)
    save_model(model, dst, source=str(src.name), converted_from="reference")
    return model
