"""Inference with a trained NRKNet: load a checkpoint, deblur images of any size, write the results.

``nrknet-predict`` (:mod:`nrknet.predict`) is a thin command line over this
package; every function here takes explicit settings::

    device = resolve_device("auto")
    model = load_inference_model("best.ckpt", device, accel="auto")
    deblurrer = Deblurrer(model, device=device, tile=512, defocus=True)
    suffixes = side_suffixes(defocus_map=True)  # planned up front, so no file is written twice
    for job in collect_jobs(["photos/"], Path("out"), side_suffixes=suffixes):
        deblur_file(job.source, job.target, deblurrer)
"""

from nrknet.inference.deblur import (
    Deblurred,
    Deblurrer,
    SettingError,
    check_levels,
    check_tiling,
)
from nrknet.inference.jobs import (
    Job,
    JobsError,
    MissingInputError,
    NoImagesError,
    OutputClashError,
    UnsafeOutputError,
    collect_jobs,
    existing_outputs,
)
from nrknet.inference.model import autocast_dtype_for, load_inference_model, resolve_device
from nrknet.inference.outputs import (
    ATOMS_FIGURE,
    deblur_file,
    output_paths,
    side_suffixes,
    write_atoms_figure,
)
from nrknet.inference.windows import WindowFunction

__all__ = [
    "ATOMS_FIGURE",
    "Deblurred",
    "Deblurrer",
    "Job",
    "JobsError",
    "MissingInputError",
    "NoImagesError",
    "OutputClashError",
    "SettingError",
    "UnsafeOutputError",
    "WindowFunction",
    "autocast_dtype_for",
    "check_levels",
    "check_tiling",
    "collect_jobs",
    "deblur_file",
    "existing_outputs",
    "load_inference_model",
    "output_paths",
    "resolve_device",
    "side_suffixes",
    "write_atoms_figure",
]
