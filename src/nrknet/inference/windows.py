"""What runs on every tile: the network, plus the defocus radius and coefficient maps on request."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from nrknet.analysis.defocus import blur_radius_function, capture_coefficients

__all__ = ["WindowFunction"]


class WindowFunction:
    """The deblurred image plus, on request, the defocus radius and chosen Gamma maps of a window.

    Output channels: RGB (3), then the radius (1) if ``defocus``, then one
    channel per level in ``levels``. With ``autocast_dtype`` the model runs under
    autocast in that dtype (outputs stay float32).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        defocus: bool = False,
        levels: Sequence[int] = (),
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        self.model = model
        self.autocast_dtype = autocast_dtype
        self.defocus = defocus
        self.levels = list(levels)
        if defocus:
            self.blur_radius = blur_radius_function(model.blur)

    @property
    def channels(self) -> int:
        return 3 + int(self.defocus) + len(self.levels)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.autocast_dtype is None:
            return self._run(x)
        with torch.autocast(x.device.type, dtype=self.autocast_dtype):
            return self._run(x).float()

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if not self.defocus and not self.levels:
            return self.model(x)
        with capture_coefficients(self.model) as captured:
            y = self.model(x)
        # Gamma covers the input as padded by the network (right and bottom only).
        gamma = captured.pop("gamma")[..., : y.shape[-2], : y.shape[-1]]
        parts = [y]
        if self.defocus:
            parts.append(self.blur_radius(gamma).to(y.dtype))
        if self.levels:
            parts.append(gamma[:, self.levels].to(y.dtype))
        del gamma
        return torch.cat(parts, dim=1)
