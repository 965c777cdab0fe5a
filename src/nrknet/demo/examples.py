"""The example photos of the web demo: defocused scenes rendered by the synthetic renderer.

Three scenes of the renderer's *test* split (seed 0, 384 px), which no
bundled model saw in training: the Middlebury motorcycle with its real depth,
a photograph with a segment-wise depth map, and a dead-leaves scene. They ship
in ``example_images/`` as JPEG files at quality 95 (about 100 KB together)
and are rendered again, bit for bit on the same platform, with::

    python -m nrknet.demo.examples src/nrknet/demo/example_images
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["EXAMPLES", "EXAMPLES_DIR", "Example", "example_paths", "render_examples"]

EXAMPLES_DIR = Path(__file__).resolve().parent / "example_images"

#: Settings of the set the examples come from (``nrknet-synth --size 384 --seed 0``).
SIZE = 384
SEED = 0
JPEG_QUALITY = 95


@dataclass(frozen=True)
class Example:
    filename: str
    #: index of the pair in the renderer's test split
    index: int
    caption: str


EXAMPLES: tuple[Example, ...] = (
    Example("stereo_motorcycle.jpg", 4, "motorcycle with its real depth (Middlebury stereo)"),
    Example("photo_motorcycle.jpg", 11, "photograph with a segment-wise depth map"),
    Example("dead_leaves.jpg", 9, "dead leaves: shapes at many depths"),
)


def example_paths(folder: Path = EXAMPLES_DIR) -> list[Path]:
    """The example files that exist in ``folder``, in the order of :data:`EXAMPLES`."""
    return [folder / e.filename for e in EXAMPLES if (folder / e.filename).is_file()]


def render_examples(folder: Path) -> list[Path]:
    """Render the blurry image of every example into ``folder`` (written atomically)."""
    from nrknet.data.io import write_image
    from nrknet.data.synthetic import SynthSettings, render_pair

    settings = SynthSettings(size=SIZE, seed=SEED, num_train=0, num_val=0, num_test=16)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for example in EXAMPLES:
        pair = render_pair(settings, "test", example.index)
        rgb = pair.blurry.astype("float32") / 255
        written.append(write_image(folder / example.filename, rgb, jpeg_quality=JPEG_QUALITY))
    return written


if __name__ == "__main__":
    for path in render_examples(Path(sys.argv[1]) if len(sys.argv) > 1 else EXAMPLES_DIR):
        print(path, path.stat().st_size, "bytes")
