"""Synthetic defocus pairs: sharp scenes with depth, blurred by thin-lens optics.

* :mod:`~nrknet.data.synthetic.optics`: sRGB/linear light, circle of
  confusion, disk PSFs, layered defocus rendering, sensor noise;
* :mod:`~nrknet.data.synthetic.scenes`: photographs, dead-leaves and stereo
  scenes with depth, disjoint sources per split;
* :mod:`~nrknet.data.synthetic.render`: the settings of a set and one
  rendered pair, deterministic per ``(seed, split, index)``;
* :mod:`~nrknet.data.synthetic.writer`: a whole set on disk (DPDD layout,
  ``meta.json``), written atomically and reused when complete
  (the ``nrknet-synth`` command is :mod:`nrknet.synth`).
"""

from nrknet.data.synthetic.optics import (
    DEPTH_RANGE,
    add_sensor_noise,
    coc_radius,
    convolve,
    default_max_coc,
    disk_psf,
    linear_to_srgb,
    render_defocus,
    srgb_to_linear,
)
from nrknet.data.synthetic.render import (
    DEPTH_PNG_SCALE,
    RENDERER_VERSION,
    RenderedPair,
    SynthSettings,
    ensure_visible_blur,
    minimum_blur,
    render_pair,
)
from nrknet.data.synthetic.scenes import (
    PHOTO_SPLITS,
    SCENE_KINDS,
    TEXTURE_SPLITS,
    Scene,
    dead_leaves_scene,
    load_photo,
    make_scene,
    photo_scene,
    stereo_scene,
)
from nrknet.data.synthetic.writer import (
    GENERATOR_NAME,
    META_FILE,
    SPLIT_DIRS,
    generate_dataset,
    is_complete_dataset,
    read_meta,
)

__all__ = [
    "DEPTH_PNG_SCALE",
    "DEPTH_RANGE",
    "GENERATOR_NAME",
    "META_FILE",
    "PHOTO_SPLITS",
    "RENDERER_VERSION",
    "SCENE_KINDS",
    "SPLIT_DIRS",
    "TEXTURE_SPLITS",
    "RenderedPair",
    "Scene",
    "SynthSettings",
    "add_sensor_noise",
    "coc_radius",
    "convolve",
    "dead_leaves_scene",
    "default_max_coc",
    "disk_psf",
    "ensure_visible_blur",
    "generate_dataset",
    "is_complete_dataset",
    "linear_to_srgb",
    "load_photo",
    "make_scene",
    "minimum_blur",
    "photo_scene",
    "read_meta",
    "render_defocus",
    "render_pair",
    "srgb_to_linear",
    "stereo_scene",
]
