"""One synthetic pair from its settings: scene, random camera, defocus rendering, quantisation.

Each image draws its focus distance (usually the depth of a random visible
point, so something is in focus), an aperture in [0.4, 1] (a draw whose
largest blur radius stays under ``min(1, max_coc / 4)`` px is refocused on
the scene's far end, or behind a very shallow scene, see
:func:`ensure_visible_blur`) and a point-spread function shape: a disk,
mildly elliptical and with a slightly soft rim.

Every image is rendered from its own random generator seeded by
``(seed, split, index)``, so the files do not depend on the order of
generation or on the number of worker processes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from nrknet.data.synthetic.optics import (
    DEPTH_RANGE,
    add_sensor_noise,
    coc_radius,
    default_max_coc,
    linear_to_srgb,
    render_defocus,
    srgb_to_linear,
)
from nrknet.data.synthetic.scenes import make_scene
from nrknet.errors import ConfigError
from nrknet.utils.checks import choice, number

#: Bump when a change alters the rendered files; stored sets are then regenerated.
RENDERER_VERSION = 2  # 2: every pair reaches a minimum blur (ensure_visible_blur)
#: Depth maps are written as 16-bit PNG in thousandths of a depth unit.
DEPTH_PNG_SCALE = 1000.0

_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
VAL_SCENES = ("held_out", "train")


@dataclass(frozen=True)
class SynthSettings:
    """Everything that determines a generated set (stored in ``meta.json``).

    Each setting is checked once, when the object is built (a one-line
    :class:`~nrknet.errors.ConfigError` naming it), and stored as a plain
    ``int``, ``float`` or ``bool``; ``max_coc=None`` is then filled from the
    image size (so ``dataclasses.replace(s, size=...)`` keeps the old radius
    unless it passes ``max_coc=None`` too). The command line and the
    DataModule each build one; the writer and the renderer take it as it is.
    """

    num_train: int = 64
    num_val: int = 8
    num_test: int = 16
    size: int = 256
    seed: int = 0
    max_coc: float | None = None
    bit_depth: int = 8
    noise: float = 0.0
    read_noise: float = 0.0
    num_layers: int = 16
    #: each pair draws its noise levels uniformly in [0, noise] and [0, read_noise] (clean to noisy)
    noise_per_pair: bool = False
    #: where validation scenes come from: "held_out" (the val split's own photographs) or
    #: "train" (new scenes from the training photographs: in-distribution validation)
    val_scenes: str = "held_out"

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        def whole(name: str, **bounds: int) -> None:
            put(name, int(number(name, _plain(getattr(self, name)), integer=True, **bounds)))

        def fraction(name: str) -> None:
            put(name, float(number(name, _plain(getattr(self, name)), minimum=0, maximum=0.5)))

        for name in ("num_train", "num_val", "num_test"):
            whole(name, minimum=0)
        if self.num_train + self.num_val + self.num_test == 0:
            raise ConfigError("nothing to generate: num_train, num_val and num_test are all 0")
        whole("size", minimum=32)
        whole("seed", minimum=0)
        put("bit_depth", int(choice("bit_depth", _plain(self.bit_depth), (8, 16))))
        if self.max_coc is None:
            put("max_coc", default_max_coc(self.size))
        else:
            put("max_coc", float(number("max_coc", _plain(self.max_coc), minimum=0)))
            if self.max_coc > self.size / 2:
                raise ConfigError(
                    f"max_coc={self.max_coc:g} is too large for {self.size} px images "
                    f"(at most {self.size / 2:g})"
                )
        fraction("noise")
        fraction("read_noise")
        whole("num_layers", minimum=1, maximum=256)
        put("noise_per_pair", bool(choice("noise_per_pair", self.noise_per_pair, (False, True))))
        choice("val_scenes", self.val_scenes, VAL_SCENES)

    def counts(self) -> dict[str, int]:
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}

    def as_meta(self) -> dict[str, Any]:
        settings = asdict(self)
        # sets written before these options existed still match
        if not self.noise_per_pair:
            del settings["noise_per_pair"]
        if self.val_scenes == "held_out":
            del settings["val_scenes"]
        return {
            **settings,
            "renderer_version": RENDERER_VERSION,
            "depth_range": list(DEPTH_RANGE),
        }


@dataclass
class RenderedPair:
    """One generated pair: images quantised as written, depth in 16-bit units, metadata."""

    blurry: np.ndarray
    sharp: np.ndarray
    depth: np.ndarray
    info: dict[str, Any]


def _plain(value: Any) -> Any:
    """A NumPy scalar as the Python number it holds; anything else as it is."""
    return value.item() if isinstance(value, np.generic) else value


def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), _SPLIT_IDS[split], int(index)]))


def _quantise(x: np.ndarray, bit_depth: int) -> np.ndarray:
    maxv = 255 if bit_depth == 8 else 65535
    q = np.floor(np.clip(x, 0.0, 1.0) * maxv + 0.5)
    return q.astype(np.uint8 if bit_depth == 8 else np.uint16)


def minimum_blur(max_coc: float) -> float:
    """Largest blur radius (px) every rendered pair must reach: 1 px, or ``max_coc / 4`` if smaller."""
    return min(1.0, max_coc / 4.0)


def ensure_visible_blur(
    inverse_depth: np.ndarray, focus: float, aperture: float, max_coc: float
) -> tuple[float, float]:
    """Adjust a draw whose largest blur radius stays under :func:`minimum_blur`.

    A scene of narrow depth with the focus inside it can come out with no
    visible blur, and an identical pair scores an infinite PSNR. Such a draw
    is refocused on the scene's farthest point (its near end is then the most
    blurred; the background stays sharp) with the aperture opened as far as
    needed; a scene too shallow even at full aperture is focused behind it
    (towards the far end of ``DEPTH_RANGE``), so that all of it is blurred.
    """
    near_inv, far_inv = float(inverse_depth.max()), float(inverse_depth.min())
    target = minimum_blur(max_coc)
    largest = max(
        coc_radius(1.0 / near_inv, focus, max_coc, aperture=aperture),
        coc_radius(1.0 / far_inv, focus, max_coc, aperture=aperture),
    )
    if largest >= target:
        return focus, aperture
    near, far = DEPTH_RANGE
    per_inverse_depth = max_coc / (1.0 / near - 1.0 / far)  # radius at full aperture
    spread = per_inverse_depth * (near_inv - far_inv)
    if spread >= target:
        return 1.0 / far_inv, min(1.0, max(aperture, target / spread))
    focus_inv = max(1.0 / far, near_inv - target / per_inverse_depth)
    return 1.0 / focus_inv, 1.0


def render_pair(settings: SynthSettings, split: str, index: int) -> RenderedPair:
    """Render pair ``index`` of ``split``; depends only on (settings, split, index)."""
    s = settings
    rng = _image_rng(s.seed, split, index)
    sources = "train" if split == "val" and s.val_scenes == "train" else split
    scene = make_scene(sources, s.size, rng)
    sharp_q = _quantise(scene.sharp, s.bit_depth)
    sharp = sharp_q.astype(np.float32) / (255.0 if s.bit_depth == 8 else 65535.0)
    inv = 1.0 / scene.depth.astype(np.float64)
    if rng.random() < 0.75:  # focus on a random visible point
        focus = 1.0 / float(inv.flat[int(rng.integers(inv.size))])
    else:
        focus = 1.0 / float(rng.uniform(inv.min(), inv.max()))
    aperture = float(rng.uniform(0.4, 1.0))
    focus, aperture = ensure_visible_blur(inv, focus, aperture, s.max_coc)
    psf = {
        "aspect": float(rng.uniform(0.8, 1.0)),
        "angle": float(rng.uniform(0.0, np.pi)),
        "softness": float(rng.uniform(0.0, 1.0) * s.size / 256.0),
    }
    blurred_lin, info = render_defocus(
        srgb_to_linear(sharp),
        scene.depth,
        focus,
        max_coc=s.max_coc,
        aperture=aperture,
        num_layers=s.num_layers,
        psf_aspect=psf["aspect"],
        psf_angle=psf["angle"],
        psf_softness=psf["softness"],
        linear=True,
        return_info=True,
    )
    shot, read = s.noise, s.read_noise
    if s.noise_per_pair and (shot > 0 or read > 0):
        shot, read = shot * float(rng.uniform()), read * float(rng.uniform())
    if shot > 0 or read > 0:
        blurred_lin = add_sensor_noise(blurred_lin, shot, read, rng)
    blurry_q = _quantise(linear_to_srgb(blurred_lin), s.bit_depth)
    depth_q = np.clip(np.rint(scene.depth * DEPTH_PNG_SCALE), 0, 65535).astype(np.uint16)
    meta = {
        "kind": scene.kind,
        "sources": scene.sources,
        "focus": round(focus, 6),
        "aperture": round(aperture, 6),
        "psf": {k: round(v, 6) for k, v in psf.items()},
        "coc_min": round(info["coc_min"], 4),
        "coc_max": round(info["coc_max"], 4),
        "layers": len(info["layer_radii"]),
    }
    if s.noise_per_pair:
        meta["noise"] = {"shot": round(shot, 6), "read": round(read, 6)}
    return RenderedPair(blurry=blurry_q, sharp=sharp_q, depth=depth_q, info=meta)
