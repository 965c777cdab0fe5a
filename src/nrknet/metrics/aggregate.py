"""The accumulator of a test run: per-image scores of every image, and their means."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torchmetrics import Metric

from nrknet.metrics.image_quality import check_pair, mae, psnr, psnr_full_precision, ssim
from nrknet.metrics.lpips import check_lpips_mode, lpips_distance
from nrknet.utils.distributed import drop_sampler_repeats, gather_shards, is_distributed

METRIC_KEYS = (
    "psnr",
    "ssim",
    "mae",
    "lpips",
    "psnr16",
    "input_psnr",
    "input_ssim",
    "input_mae",
    "input_psnr16",
)

#: A per-image row: the image's ``name`` and its scores (``None`` where not computed).
Row = dict[str, float | str | None]


def _to_float(value: torch.Tensor) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def summarize_rows(rows: Sequence[Row]) -> dict[str, float | int | None]:
    """Means of per-image rows over the images that have each score (``None`` where none
    has it), and ``count``, the number of rows."""
    summary: dict[str, float | int | None] = {}
    for key in METRIC_KEYS:
        values = [row[key] for row in rows if row.get(key) is not None]
        summary[key] = math.fsum(values) / len(values) if values else None
    summary["count"] = len(rows)
    return summary


class ImageQualityMetrics(Metric):
    """Per-image PSNR / SSIM / MAE / LPIPS, and those of the blurry input, accumulated over a test set.

    ``update(pred, target, names, blurry=None)`` scores a batch; ``per_image()``
    lists one dict per image (``name`` and each of :data:`METRIC_KEYS`;
    ``None`` where not computed); ``summary()`` gives the means over images
    and ``count``. ``lpips`` is ``None`` when LPIPS is ``off`` or unavailable
    (see :func:`get_lpips_model`); the blurry input's LPIPS is not computed.
    ``psnr16`` (and ``input_psnr16``), the PSNR without 8-bit rounding, is
    computed only when asked for.

    A torchmetrics ``Metric``: it follows its module's device. Under DDP,
    ``summary()`` and ``per_image()`` gather the images of all processes and
    drop the repeats that a distributed sampler adds to even out the shards
    (same name, same scores), so every process gets the single-device result;
    ``compute()`` keeps torchmetrics' plain gathering (repeats included).
    """

    full_state_update = False
    higher_is_better = None

    def __init__(
        self,
        lpips: str = "auto",
        score_crop: Sequence[int] | None = None,
        download: bool = True,
        psnr16: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.lpips_mode = check_lpips_mode(lpips)
        # not ``self.psnr16``: that name is the state holding the scores
        self.with_psnr16 = bool(psnr16)
        self.score_crop = None if score_crop is None else tuple(int(c) for c in score_crop)
        self.download = download
        for key in METRIC_KEYS:
            self.add_state(key, default=[], dist_reduce_fx="cat")
        self.names: list[str] = []

    def update(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        names: Sequence[str] | None = None,
        blurry: torch.Tensor | None = None,
    ) -> None:
        """Score a batch ``(N, 3, H, W)`` in [0, 1]; ``names`` identify the images in ``per_image()``."""
        check_pair(pred, target)
        count = pred.shape[0]
        if names is None:
            names = [f"image_{len(self.names) + i:05d}" for i in range(count)]
        names = [str(n) for n in names]
        if len(names) != count:
            raise ValueError(f"{len(names)} names for a batch of {count} images")
        crop = self.score_crop
        nan = torch.full((count,), float("nan"), dtype=torch.float64, device=pred.device)
        values = dict.fromkeys(METRIC_KEYS, nan)
        values.update(self._scores(pred, target, ""))
        distance = lpips_distance(
            pred, target, crop=crop, mode=self.lpips_mode, download=self.download
        )
        if distance is not None:
            values["lpips"] = distance
        if blurry is not None:
            check_pair(blurry, target)
            values.update(self._scores(blurry, target, "input_"))
        for key, value in values.items():
            getattr(self, key).append(value.to(device=self.device, dtype=torch.float64))
        self.names.extend(names)

    def _scores(
        self, image: torch.Tensor, target: torch.Tensor, prefix: str
    ) -> dict[str, torch.Tensor]:
        """The scores every image gets (LPIPS aside), keyed ``prefix + metric``."""
        crop = self.score_crop
        scores = {
            "psnr": psnr(image, target, crop=crop),
            "ssim": ssim(image, target, crop=crop),
            "mae": mae(image, target, crop=crop),
        }
        if self.with_psnr16:
            scores["psnr16"] = psnr_full_precision(image, target, crop=crop)
        return {prefix + key: value for key, value in scores.items()}

    def _values(self, key: str) -> torch.Tensor:
        state = getattr(self, key)
        if isinstance(state, torch.Tensor):  # already concatenated by a distributed sync
            return state.flatten()
        if not state:
            return torch.zeros(0, dtype=torch.float64, device=self.device)
        return torch.cat(state)

    def compute(self) -> dict[str, torch.Tensor]:
        """Means over images (NaN where a metric was never computed), and ``count``."""
        result = {}
        for key in METRIC_KEYS:
            values = self._values(key)
            result[key] = values.nanmean() if values.numel() else values.new_tensor(float("nan"))
        result["count"] = torch.tensor(self._values("psnr").numel(), device=self.device)
        return result

    def summary(self) -> dict[str, float | int | None]:
        """Means over images as Python numbers (``None`` for metrics not available), and ``count``."""
        if not is_distributed():
            result = self.compute()
            summary: dict[str, float | int | None] = {
                key: _to_float(result[key]) for key in METRIC_KEYS
            }
            summary["count"] = int(result["count"])
            return summary
        return summarize_rows(self.per_image())

    def per_image(self) -> list[Row]:
        """One dict per image, in the order of ``update`` calls (under DDP: all processes'
        images, repeats dropped, in the order of the shards)."""
        rows = self._local_rows()
        if not is_distributed():
            return rows
        return drop_sampler_repeats(gather_shards(rows))

    def _local_rows(self) -> list[Row]:
        columns = {key: self._values(key).tolist() for key in METRIC_KEYS}
        rows = []
        for i, name in enumerate(self.names):
            row: Row = {"name": name}
            for key in METRIC_KEYS:
                value = columns[key][i]
                row[key] = None if math.isnan(value) else value
            rows.append(row)
        return rows

    def reset(self) -> None:
        super().reset()
        self.names = []
