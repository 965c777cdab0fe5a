"""``nrknet-demo``: a local web page that deblurs photos with NRKNet (Gradio; the ``demo`` extra).

* :mod:`~nrknet.demo.command`: the command line (``nrknet-demo``, ``make demo``);
* :mod:`~nrknet.demo.engine`: what is done with one upload, without any web framework;
* :mod:`~nrknet.demo.app`: the page itself, the only module of nrknet that imports Gradio;
* :mod:`~nrknet.demo.examples`: the example photos shipped in ``example_images/``.

Importing this package imports neither Gradio nor torch.
"""

from nrknet.demo.command import main

__all__ = ["main"]
