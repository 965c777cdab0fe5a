"""The README's picture: a real photograph defocused by the renderer, deblurred by a bundled model.

    python -m experiments.release.demo [--model NAME] [--defocus-model NAME] [--out PNG]

The photograph is matplotlib's sample portrait of Grace Hopper (public domain;
in no split of the rendered data). The renderer defocuses it with a depth
that ramps from the focal plane at the face to the far background at the top
and a near foreground at the bottom (blur radii up to 8 px). ``nrknet-predict``
deblurs it with ``--model`` (default: the one it uses without ``--ckpt``), and
draws the defocus map of ``--defocus-model`` (an NRKNet; default
``nrknet-synthetic``). The figure shows a crop of the blurry input, the
output and the sharp photograph, and the defocus map of the whole image; the
PSNR of the crops is printed and drawn. Since the rendered blur is known, the
defocus map is scored against it too (:func:`map_agreement`), beside a cue
that needs no network (:func:`sharpness_deficit`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[2]


def sharp_photo() -> np.ndarray:
    import matplotlib.cbook

    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0


FOCUS = 3.0  # the depth of the face, in focus


def inverse_depth(height: int) -> np.ndarray:
    """Inverse depth per row (height, 1): 1/3 at the face, 1/10 at the top, 1/1.5 at the bottom."""
    rows = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    face = 0.42  # the row of the face, as a fraction of the height
    return np.where(
        rows < face,
        1 / 3 - (1 / 3 - 1 / 10) * (face - rows) / face,
        1 / 3 + (1 / 1.5 - 1 / 3) * (rows - face) / (1 - face),
    )


def defocused(sharp: np.ndarray, max_coc: float = 8.0) -> np.ndarray:
    """The photograph seen by a lens focused on the face: depth ramps away above and below it."""
    from nrknet.data.synthetic import render_defocus

    depth = np.broadcast_to(1.0 / inverse_depth(sharp.shape[0]), sharp.shape[:2])
    return render_defocus(
        sharp, depth.astype(np.float32), focus=FOCUS, max_coc=max_coc, num_layers=24
    )


def map_agreement(radius: np.ndarray) -> tuple[float, float]:
    """How a defocus map (height, width) follows the rendered blur, which varies by row only.

    Returns the Spearman correlation of its row means with the circle of confusion
    (proportional to ``|1/depth - 1/focus|``), and the share of its variance that lies
    between rows (the rest varies where the true blur does not: edges and texture).
    """
    from scipy.stats import spearmanr

    blur = np.abs(inverse_depth(radius.shape[0])[:, 0] - 1 / FOCUS)
    row_means = radius.mean(axis=1)
    return float(spearmanr(row_means, blur).statistic), float(row_means.var() / radius.var())


def sharpness_deficit(image: np.ndarray) -> np.ndarray:
    """A blur cue that needs no network: minus the local mean of |Laplacian| of the grey image."""
    from scipy import ndimage

    grey = image.astype(np.float64).mean(axis=2)
    return -ndimage.uniform_filter(np.abs(ndimage.laplace(grey)), size=9)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / mse)


def figure(
    blurry, deblurred, sharp, defocus_color, crop, out: Path, names: tuple[str, str]
) -> tuple[float, float]:
    y0, y1, x0, x1 = crop
    tiles = [img[y0:y1, x0:x1] for img in (blurry, deblurred, sharp)]
    scores = (psnr(tiles[0], tiles[2]), psnr(tiles[1], tiles[2]))
    scale = 2
    tiles = [np.asarray(Image.fromarray(t).resize((t.shape[1] * scale, t.shape[0] * scale), Image.NEAREST)) for t in tiles]  # fmt: skip
    height = tiles[0].shape[0]
    dmap = Image.fromarray(defocus_color)
    dmap = np.asarray(dmap.resize((round(dmap.width * height / dmap.height), height)))
    gap = np.full((height, 6, 3), 255, np.uint8)
    strip = np.concatenate([tiles[0], gap, tiles[1], gap, tiles[2], gap, dmap], axis=1)
    canvas = Image.new("RGB", (strip.shape[1], height + 22), "white")
    canvas.paste(Image.fromarray(strip), (0, 22))
    draw = ImageDraw.Draw(canvas)
    labels = (
        f"blurry input ({scores[0]:.2f} dB)",
        f"{names[0]} ({scores[1]:.2f} dB)",
        "sharp photograph",
        f"defocus map of {names[1]} (blur radius)",
    )
    x = 0
    for label, width in zip(labels, (tiles[0].shape[1],) * 3 + (dmap.shape[1],), strict=True):
        draw.text((x + 4, 5), label, fill="black")
        x += width + 6
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return scores


def main(argv: list[str] | None = None) -> int:
    from nrknet.predict import DEFAULT_MODEL
    from nrknet.predict import main as predict

    parser = argparse.ArgumentParser(prog="demo", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--defocus-model", default="nrknet-synthetic")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "release_demo.png")
    args = parser.parse_args(argv)
    sharp = sharp_photo()
    blurry = defocused(sharp)
    to8 = lambda x: np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "in" / "hopper.png"
        source.parent.mkdir()
        Image.fromarray(to8(blurry)).save(source)
        for model, out, extra in ((args.model, "out", []), (args.defocus_model, "map", ["--defocus-map"])):  # fmt: skip
            code = predict([str(source), "--out", str(Path(tmp) / out), "--ckpt", model, "--quiet", *extra])  # fmt: skip
            if code:
                return code
        deblurred = np.asarray(Image.open(Path(tmp) / "out" / "hopper.png").convert("RGB"))
        defocus_color = np.asarray(
            Image.open(Path(tmp) / "map" / "hopper.defocus_color.png").convert("RGB")
        )
        radius = np.asarray(Image.open(Path(tmp) / "map" / "hopper.defocus.png"), np.float64) / 1000
    whole = (psnr(to8(blurry), to8(sharp)), psnr(deblurred, to8(sharp)))
    crop = (410, 580, 150, 390)  # the uniform and medals, well below the focal plane
    names = (args.model, args.defocus_model)
    scores = figure(to8(blurry), deblurred, to8(sharp), defocus_color, crop, args.out, names)
    gain = whole[1] - whole[0]
    print(f"whole image: blurry {whole[0]:.2f} dB, {args.model} {whole[1]:.2f} dB ({gain:+.2f})")
    print(f"crop: blurry {scores[0]:.2f} dB, {args.model} {scores[1]:.2f} dB; wrote {args.out}")
    correlation, between = map_agreement(radius)
    print(
        f"defocus map of {args.defocus_model}: row means vs the rendered blur, Spearman "
        f"{correlation:.3f}; {between:.0%} of its variance between rows"
    )
    reference, _ = map_agreement(sharpness_deficit(to8(blurry)))
    print(f"for comparison, the input's missing local contrast alone: Spearman {reference:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
