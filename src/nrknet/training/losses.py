"""Training losses of NRKNet: the paper's eq. (12)-(14) and the reference code's variant.

Paper (Quan, Wu, Ji, CVPR 2023)::

    L = sum_t lambda_t L_predict(Z_t, X_t) + alpha sum_t lambda_t L_reblur(D_t(X_t), Y_t)   (12)
    L_predict(Z, X) = MSE(Z, X) + beta FDR(Z, X)                                         (13)
    L_reblur(D_t(X_t), Y_t) = MSE(D_t(X_t), Y_t)                                         (14)

with FDR the L1 distance between 2-D Fourier transforms, lambda = 1, 0.75, 0.5,
0.25 for the final output and the full-, half- and quarter-scale running sums,
and alpha = beta = 0.1.

The reference code instead downsamples the targets bilinearly, uses the
unnormalised FFT, never adds the reblur term (alpha = 0) and, late in training,
switches the whole loss to ``sum_t lambda_t (1 - SSIM(Z_t, X_t))`` in every
other block of epochs (``ssim_phases``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import kornia
import torch
import torch.nn.functional as F
from torch import nn

from nrknet.errors import ConfigError
from nrknet.models.nrknet import NRKNetOutput, downsample_nearest
from nrknet.utils.checks import choice, number

FDR_NORMS = ("ortho", "backward", "forward")
TARGET_DOWNSAMPLE_MODES = ("nearest", "bilinear")
DEFAULT_SCALE_WEIGHTS = (1.0, 0.75, 0.5, 0.25)
SSIM_LOSS_WINDOW = 11


def _float32(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all elements."""
    return F.mse_loss(_float32(pred), _float32(target))


def fdr_loss(pred: torch.Tensor, target: torch.Tensor, norm: str = "ortho") -> torch.Tensor:
    """Frequency-domain reconstruction term of eq. (13): L1 distance of the 2-D FFTs.

    ``mean|Re(F(pred) - F(target))| + mean|Im(F(pred) - F(target))|`` with
    ``F = torch.fft.fft2(., norm=norm)`` over the last two dimensions, means over
    all elements. ``norm="ortho"`` (unitary FFT) is the paper's setting;
    ``"backward"`` (unnormalised, the reference code's) is ``sqrt(H W)`` times
    larger.
    """
    # The FFT is linear: F(a) - F(b) = F(a - b), one transform instead of two.
    diff = torch.fft.fft2(_float32(pred) - _float32(target), norm=norm)
    return diff.real.abs().mean() + diff.imag.abs().mean()


def prediction_loss(
    pred: torch.Tensor, target: torch.Tensor, beta: float = 0.1, fdr_norm: str = "ortho"
) -> torch.Tensor:
    """Eq. (13): ``L_predict(Z, X) = MSE(Z, X) + beta * FDR(Z, X)``."""
    return mse_loss(pred, target) + beta * fdr_loss(pred, target, fdr_norm)


def reblur_loss(reblurred: torch.Tensor, blurry: torch.Tensor) -> torch.Tensor:
    """Eq. (14): ``L_reblur = MSE(D_t(X_t), Y_t)``, the sharp image blurred by the
    predicted operator of scale ``t`` against the blurry input at that scale."""
    return mse_loss(reblurred, blurry)


def ssim_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - SSIM(pred, target)`` for images in [0, 1] (the reference code's late-training loss).

    Gaussian window 11 (sigma 1.5), K1 = 0.01, K2 = 0.03, data range 1, valid
    region only, mean over positions, channels and the batch. Images smaller than
    11 pixels use the largest odd window that fits.
    """
    pred, target = _float32(pred), _float32(target)
    window = min(SSIM_LOSS_WINDOW, min(pred.shape[-2:]))
    window -= 1 - window % 2
    ssim_map = kornia.metrics.ssim(pred, target, window, max_val=1.0, eps=0.0, padding="valid")
    return 1.0 - ssim_map.mean()


def nrknet_loss(
    predictions: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor],
    weights: Sequence[float],
    reblurred: Sequence[torch.Tensor] = (),
    blurry: Sequence[torch.Tensor] = (),
    reblur_weights: Sequence[float] = (),
    alpha: float = 0.1,
    beta: float = 0.1,
    fdr_norm: str = "ortho",
) -> torch.Tensor:
    """Eq. (12): ``sum_t lambda_t L_predict(Z_t, X_t) + alpha sum_t lambda_t L_reblur(D_t(X_t), Y_t)``.

    The sequences are paired element by element: ``predictions[i]`` against
    ``targets[i]`` with weight ``weights[i]``, ``reblurred[i]`` against
    ``blurry[i]`` with weight ``reblur_weights[i]``. :class:`NRKNetLoss` builds
    these lists from a model's output and computes the same value.
    """
    total = sum(
        w * prediction_loss(z, x, beta, fdr_norm)
        for w, z, x in zip(weights, predictions, targets, strict=True)
    )
    if alpha:
        total = total + alpha * sum(
            w * reblur_loss(r, y) for w, r, y in zip(reblur_weights, reblurred, blurry, strict=True)
        )
    return total


def downsample_like(x: torch.Tensor, factor: int, mode: str, size: Sequence[int]) -> torch.Tensor:
    """Downsample ``x`` by ``factor`` to ``size``: ``nearest`` subsampling (the model's input
    pyramid) or ``bilinear`` interpolation (the reference code's targets, no antialiasing)."""
    if factor == 1:
        out = x
    elif mode == "nearest":
        out = downsample_nearest(x, factor)
    else:
        out = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
    if tuple(out.shape[-2:]) != tuple(size):
        raise ValueError(
            f"target of size {tuple(x.shape[-2:])} downsampled by {factor} gives "
            f"{tuple(out.shape[-2:])}, but the prediction is {tuple(size)}"
        )
    return out


def in_ssim_phase(epoch: int, ssim_phases: Mapping[str, int] | None) -> bool:
    """Whether the reference code's SSIM loss replaces the usual loss in ``epoch`` (0-based).

    True from ``start_epoch`` on, in epochs with ``epoch % period > period / 2``
    (DPDD: start 1000, period 200, i.e. epochs 1101-1199, 1301-1399, ...).
    """
    if ssim_phases is None:
        return False
    start, period = int(ssim_phases["start_epoch"]), int(ssim_phases["period"])
    return epoch >= start and epoch % period > period / 2


class NRKNetLoss(nn.Module):
    """The multi-scale NRKNet loss (eq. 12-14), with the switches of the paper's Table 5
    and of the reference code.

    Args:
        scale_weights: lambda, from the final output X towards the coarsest scale
            (default 1, 0.75, 0.5, 0.25 for X, full, half, quarter). The first
            ``num_scales + 1`` are used; fewer raise ``ValueError``.
        alpha: weight of the reblur term (0 disables it: it is then logged only,
            computed without gradient).
        beta: weight of the FDR term inside eq. (13) (0: logged only).
        fdr_norm: ``ortho`` (normalised FFT, paper) or ``backward`` (reference code).
        target_downsample: how the sharp targets X_t and the blurry reblur targets
            Y_t are downsampled: ``nearest`` (the model's own input pyramid, so
            Y_t is exactly the model's input at scale t; paper) or ``bilinear``
            (reference code).
        single_scale: supervise only the final output X (Table 5's "single scale
            loss"); the reblur term keeps all scales.
        ssim_phases: ``None`` or ``{start_epoch, period}``: in the epochs picked by
            :func:`in_ssim_phase` the whole loss becomes
            ``sum_t lambda_t (1 - SSIM(Z_t, X_t))`` (reference code; DPDD 1000/200,
            LFDOF 100/20).
        reblur_weights: weights of the reblur terms, finest scale first. ``None``
            (default) gives each scale's reblur term the lambda of that scale's
            running sum Z_t (0.75 full, 0.5 half, 0.25 quarter), the pairing of
            eq. (12) and of the reference code.

    ``forward`` returns a dict: ``loss`` (the total, to backpropagate) and, for
    logging and detached, ``mse`` = sum_t lambda_t MSE(Z_t, X_t), ``fdr`` =
    sum_t lambda_t FDR(Z_t, X_t), ``reblur`` = sum_t lambda_t MSE(D_t(X_t), Y_t)
    (lambda-weighted, before alpha and beta: ``loss = mse + beta fdr + alpha
    reblur`` outside SSIM phases), ``mse_output`` = MSE(X, sharp) unweighted,
    and in SSIM phases ``ssim`` = sum_t lambda_t (1 - SSIM(Z_t, X_t)) = ``loss``.
    """

    def __init__(
        self,
        scale_weights: Sequence[float] = DEFAULT_SCALE_WEIGHTS,
        alpha: float = 0.1,
        beta: float = 0.1,
        fdr_norm: str = "ortho",
        target_downsample: str = "nearest",
        single_scale: bool = False,
        ssim_phases: Mapping[str, int] | None = None,
        reblur_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.scale_weights = [float(number("scale_weights", w, minimum=0)) for w in scale_weights]
        if not self.scale_weights:
            raise ConfigError("scale_weights must hold one weight per output, got none")
        self.alpha = float(number("alpha", alpha, minimum=0))
        self.beta = float(number("beta", beta, minimum=0))
        self.fdr_norm = choice("fdr_norm", fdr_norm, FDR_NORMS)
        self.target_downsample = choice(
            "target_downsample", target_downsample, TARGET_DOWNSAMPLE_MODES
        )
        self.single_scale = bool(single_scale)
        self.ssim_phases = None
        if ssim_phases is not None:
            self.ssim_phases = {
                "start_epoch": number(
                    "ssim_phases.start_epoch", ssim_phases["start_epoch"], minimum=0, integer=True
                ),
                "period": number(
                    "ssim_phases.period", ssim_phases["period"], minimum=2, integer=True
                ),
            }
        self.reblur_weights = (
            None
            if reblur_weights is None
            else [float(number("reblur_weights", w, minimum=0)) for w in reblur_weights]
        )

    def extra_repr(self) -> str:
        return (
            f"scale_weights={self.scale_weights}, alpha={self.alpha}, beta={self.beta}, "
            f"fdr_norm={self.fdr_norm!r}, target_downsample={self.target_downsample!r}, "
            f"single_scale={self.single_scale}, ssim_phases={self.ssim_phases}, "
            f"reblur_weights={self.reblur_weights}"
        )

    def output_weights(self, num_outputs: int) -> list[float]:
        """lambda for each of ``num_outputs`` outputs listed coarsest first (then X), as in
        :class:`NRKNetOutput`: ``[0.25, 0.5, 0.75, 1]`` for the default three scales."""
        if num_outputs > len(self.scale_weights):
            raise ValueError(
                f"{num_outputs} outputs to supervise but only {len(self.scale_weights)} "
                f"scale_weights ({self.scale_weights}); give one weight per output"
            )
        return self.scale_weights[:num_outputs][::-1]

    def reblur_weights_for(self, num_scales: int) -> list[float]:
        """Weight of each reblur term, coarsest first like ``NRKNetOutput.reblurred``."""
        if self.reblur_weights is None:
            return self.output_weights(num_scales + 1)[:num_scales]
        if num_scales > len(self.reblur_weights):
            raise ValueError(
                f"{num_scales} reblurred outputs but only {len(self.reblur_weights)} reblur_weights"
            )
        return self.reblur_weights[:num_scales][::-1]

    def targets(
        self, image: torch.Tensor, outputs: Sequence[torch.Tensor], mode: str
    ) -> list[torch.Tensor]:
        """``image`` downsampled to each of ``outputs`` (coarsest first, ``2^(S-1)`` down to 1)."""
        num_scales = len(outputs)
        return [
            downsample_like(image, 2 ** (num_scales - 1 - i), mode, out.shape[-2:])
            for i, out in enumerate(outputs)
        ]

    def forward(
        self,
        out: NRKNetOutput,
        blurry: torch.Tensor,
        sharp: torch.Tensor,
        epoch: int = 0,
    ) -> dict[str, torch.Tensor]:
        """The loss of one batch: ``out = model(blurry, sharp)``; ``epoch`` (0-based) picks SSIM phases."""
        num_scales = len(out.reblurred)
        if len(out.scales) != num_scales + 1:
            raise ValueError(
                f"expected {num_scales + 1} scale outputs for {num_scales} reblurred ones, "
                f"got {len(out.scales)}"
            )
        weights = self.output_weights(len(out.scales))
        targets = self.targets(sharp, out.scales[:-1], self.target_downsample) + [sharp]
        if out.scales[-1].shape != sharp.shape:
            raise ValueError(
                f"output {tuple(out.scales[-1].shape)} and sharp {tuple(sharp.shape)} differ in shape"
            )
        supervised = [len(out.scales) - 1] if self.single_scale else range(len(out.scales))
        ssim_phase = in_ssim_phase(epoch, self.ssim_phases)

        def weighted(fn, indices, preds, tgts, wts, track: bool) -> torch.Tensor:
            with torch.set_grad_enabled(track and torch.is_grad_enabled()):
                return sum(wts[i] * fn(preds[i], tgts[i]) for i in indices)

        def fdr(z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            return fdr_loss(z, x, self.fdr_norm)

        mse = weighted(mse_loss, supervised, out.scales, targets, weights, not ssim_phase)
        fdr_term = weighted(
            fdr, supervised, out.scales, targets, weights, not ssim_phase and self.beta > 0
        )
        reblur_targets = self.targets(blurry, out.reblurred, self.target_downsample)
        reblur = weighted(
            reblur_loss,
            range(num_scales),
            out.reblurred,
            reblur_targets,
            self.reblur_weights_for(num_scales),
            not ssim_phase and self.alpha > 0,
        )
        result: dict[str, torch.Tensor] = {}
        if ssim_phase:
            ssim_term = weighted(ssim_loss, supervised, out.scales, targets, weights, True)
            result["loss"] = ssim_term
            result["ssim"] = ssim_term.detach()
        else:
            loss = mse
            if self.beta > 0:
                loss = loss + self.beta * fdr_term
            if self.alpha > 0 and num_scales:
                loss = loss + self.alpha * reblur
            result["loss"] = loss
        result["mse"] = torch.as_tensor(mse).detach()
        result["fdr"] = torch.as_tensor(fdr_term).detach()
        # a model with no blur operator (the U-Net baseline) has no reblur terms: a float zero
        result["reblur"] = torch.as_tensor(reblur, dtype=torch.float32).detach()
        with torch.no_grad():
            result["mse_output"] = mse_loss(out.scales[-1], sharp)
        return result
