"""What the web demo does with one upload, without any web framework: read, deblur, write, preview.

:class:`DemoEngine` holds the models the page offers, loaded once when the
demo starts (through :func:`nrknet.inference.load_inference_model`, so every
checkpoint is read as data and rebuilt by nrknet's trusted loader), and turns
an uploaded file into a :class:`DemoResult`:

* the file is decoded by nrknet's own reader (:func:`nrknet.data.io.decode_image`),
  which checks it is a complete 8- or 16-bit image and names the upload in a
  one-line :class:`~nrknet.data.io.ImageReadError` otherwise; EXIF
  orientation is applied, as ``nrknet-predict`` does;
* it is deblurred by :class:`nrknet.inference.Deblurrer` (tiled above the
  tile size, optionally with the self-ensemble), reporting progress per tile;
* the result is written as a PNG at full resolution with the input's bit
  depth, greyscale or alpha (``NAME.deblurred.png``), and for an NRKNet the
  defocus map as ``nrknet-predict --defocus-map`` writes it
  (``NAME.defocus.png``, 16-bit, and ``NAME.defocus_color.png``);
* 8-bit previews for the page, at most :data:`PREVIEW_SIDE` pixels a side.

Errors a user can act on are raised as nrknet errors (or ``ValueError`` and
``OSError``), each with a one-line message; the page shows that message.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nrknet.analysis.figures import colorize_defocus, resize_for_figure, save_defocus_map
from nrknet.data.io import LoadedImage, decode_image, write_image
from nrknet.errors import UsageError
from nrknet.inference import Deblurrer, load_inference_model
from nrknet.inference.tiling import DEFAULT_TILE
from nrknet.models.nrknet import has_blur_operator
from nrknet.weights import default_registry

__all__ = [
    "DEFAULT_MODEL",
    "PREVIEW_SIDE",
    "DemoEngine",
    "DemoResult",
    "Progress",
    "bundled_models",
    "preview_of",
    "read_upload",
]

#: The model selected when no ``--ckpt`` is given: the default of ``nrknet-predict``.
DEFAULT_MODEL = "nrknet-synthetic"
#: Longest side of the images shown on the page; the download is always full size.
PREVIEW_SIDE = 2048
#: Result folders older than this are removed when a new result is written.
KEEP_RESULTS_S = 3600

#: ``progress(fraction, message)``: fraction of the work done, in [0, 1], and what is being done.
Progress = Callable[[float, str], None]


def bundled_models() -> list[str]:
    """The names of the models that ship in the package, the default first."""
    registry = default_registry()
    names = [name for name in registry if registry.get(name).kind == "bundled"]
    return sorted(names, key=lambda name: name != DEFAULT_MODEL)


def read_upload(path: str | os.PathLike) -> LoadedImage:
    """Decode an uploaded file, named by its own file name in any error (not the server's path)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the upload {path.name}: {exc.strerror or exc}") from None
    return decode_image(data, path.name, upright=True)


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


def _luma(rgb: np.ndarray) -> np.ndarray:
    """Rec. 601 luma repeated in three channels: what a greyscale result shows."""
    grey = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.repeat(grey[..., None], 3, axis=2)


def preview_of(image: LoadedImage | np.ndarray, side: int = PREVIEW_SIDE) -> np.ndarray:
    """An 8-bit RGB view of an image (H x W x 3 float in [0, 1]), at most ``side`` px a side."""
    rgb = image.rgb if isinstance(image, LoadedImage) else image
    return _to_uint8(resize_for_figure(rgb, side))


@dataclass
class DemoResult:
    """What the page shows for one photo, and the files it offers."""

    before: np.ndarray  #: uint8 H x W x 3 preview of the input
    after: np.ndarray  #: uint8 preview of the result, same size as ``before``
    download: Path  #: the result, PNG at full resolution and the input's bit depth
    defocus_view: np.ndarray | None  #: uint8 colour-mapped defocus map with a scale bar (NRKNet)
    defocus_files: list[Path]  #: NAME.defocus.png (16-bit) and NAME.defocus_color.png (NRKNet)
    summary: str  #: one line: model, size, bit depth, tiles, seconds


class DemoEngine:
    """The models of the demo, loaded once, and the work done for each upload.

    ``sources`` are registry names or checkpoint paths, shown on the page as
    given; the first is selected by default. ``out_dir`` receives one folder
    per result (removed after :data:`KEEP_RESULTS_S` seconds).
    """

    def __init__(
        self,
        sources: Sequence[str],
        *,
        device: torch.device,
        out_dir: Path,
        accel: str = "auto",
        trust_code: bool = False,
        say: Callable[[str], None] | None = None,
    ) -> None:
        if not sources:
            raise UsageError("no model to serve: give --ckpt or install the bundled models")
        self.device = device
        self.out_dir = Path(out_dir)
        self.models: dict[str, torch.nn.Module] = {}
        for source in dict.fromkeys(str(s) for s in sources):
            self.models[source] = load_inference_model(
                source, device, accel=accel, trust_code=trust_code, option="--trust-code"
            )
            if say is not None:
                say(f"model {source}: {type(self.models[source]).__name__}")

    @property
    def names(self) -> list[str]:
        return list(self.models)

    @property
    def default(self) -> str:
        return self.names[0]

    def has_defocus(self, name: str) -> bool:
        return has_blur_operator(self.model(name))

    def model(self, name: str) -> torch.nn.Module:
        try:
            return self.models[name]
        except KeyError:
            raise UsageError(
                f"unknown model {name!r}; choose one of {', '.join(self.names)}"
            ) from None

    def _result_folder(self) -> Path:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        now = time.time()
        for old in self.out_dir.iterdir():
            try:
                if old.is_dir() and now - old.stat().st_mtime > KEEP_RESULTS_S:
                    shutil.rmtree(old, ignore_errors=True)
            except OSError:
                pass  # removed by another request meanwhile
        return Path(tempfile.mkdtemp(prefix="result-", dir=self.out_dir))

    def deblur(
        self,
        upload: str | os.PathLike,
        model_name: str | None = None,
        *,
        tile: int = DEFAULT_TILE,
        self_ensemble: bool = False,
        defocus: bool = True,
        progress: Progress | None = None,
    ) -> DemoResult:
        """Deblur the uploaded file ``upload`` with ``model_name`` (default: :attr:`default`).

        ``defocus`` adds the defocus map when the model is an NRKNet (other
        networks have no blur kernels to read it from; then it is skipped).
        """

        def report(fraction: float, message: str) -> None:
            if progress is not None:
                progress(min(max(fraction, 0.0), 1.0), message)

        name = self.default if model_name is None else model_name
        model = self.model(name)
        tile = int(tile)
        defocus = bool(defocus) and has_blur_operator(model)
        deblurrer = Deblurrer(
            model, device=self.device, tile=tile, defocus=defocus, self_ensemble=self_ensemble
        )  # checks the tile size
        report(0.0, "reading the photo")
        image = read_upload(upload)
        steps = {"total": 1}

        def on_tiles(done: int, total: int) -> None:
            steps["total"] = total
            report(0.05 + 0.85 * done / total, f"deblurring: {done} of {total} tiles")

        start = time.perf_counter()
        report(0.05, "deblurring" + (" (x8 self-ensemble)" if self_ensemble else ""))
        result = deblurrer(image.rgb, on_tiles)
        seconds = time.perf_counter() - start

        report(0.9, "writing the PNG")
        folder = self._result_folder()
        stem = Path(upload).stem or "photo"
        download = write_image(
            folder / f"{stem}.deblurred.png",
            result.rgb,
            bit_depth=image.bit_depth,
            alpha=image.alpha,
            greyscale=image.channels_in_file == 1,
        )
        after = _luma(result.rgb) if image.channels_in_file == 1 else result.rgb
        defocus_view, defocus_files = None, []
        radius_note = ""
        if result.defocus is not None:
            path16, color = save_defocus_map(
                result.defocus,
                folder / f"{stem}.defocus.png",
                folder / f"{stem}.defocus_color.png",
            )
            defocus_files = [path16, color]
            defocus_view = colorize_defocus(resize_for_figure(result.defocus, PREVIEW_SIDE))
            radius_note = f", blur radius up to {float(np.percentile(result.defocus, 99)):.1f} px"
        tiles = steps["total"] // (8 if self_ensemble else 1)
        channels = {1: "greyscale", 3: "RGB", 4: "RGBA"}[image.channels_in_file]
        summary = (
            f"{name}: {image.width} x {image.height} px, {image.bit_depth}-bit {channels}, "
            + ("whole image" if tiles <= 1 else f"{tiles} tiles")
            + (", x8 self-ensemble" if self_ensemble else "")
            + f", {seconds:.1f} s{radius_note}"
        )
        report(1.0, "done")
        return DemoResult(
            before=preview_of(image),
            after=preview_of(after),
            download=download,
            defocus_view=defocus_view,
            defocus_files=defocus_files,
            summary=summary,
        )
