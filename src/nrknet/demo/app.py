"""The web page of ``nrknet-demo``, built with Gradio (the only module of nrknet that imports it).

One event does the work, ``/deblur`` (also callable with ``gradio_client``)::

    Client(url).predict(handle_file("photo.jpg"), "nrknet-synthetic", 512, False, True,
                        api_name="/deblur")

Inputs: the photo (any file; nrknet's reader decides whether it is an image),
the model name, the tile size, the self-ensemble switch and the defocus-map
switch. Outputs: the before/after pair (8-bit previews), the colour-mapped
defocus map, the deblurred PNG at full resolution and bit depth, the defocus
map files, and a one-line summary. A file nrknet cannot read, or a setting
out of range, is answered with the project's one-line message in a
``gr.Error``, never a traceback.
"""

from __future__ import annotations

import html
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

from nrknet.cli import message_of, user_errors
from nrknet.demo.engine import DemoEngine, preview_of, read_upload
from nrknet.demo.examples import EXAMPLES_DIR, example_paths
from nrknet.inference.tiling import DEFAULT_TILE

__all__ = ["TITLE", "build_app", "launch"]

TITLE = "NRKNet defocus deblurring"
#: No fonts from the web: the page works offline.
SYSTEM_FONTS = [
    "ui-sans-serif",
    "system-ui",
    "Segoe UI",
    "Roboto",
    "Helvetica",
    "Arial",
    "sans-serif",
]
MONO_FONTS = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]
CSS = """
#summary {min-height: 1.5em}
"""

INTRO = """\
# NRKNet defocus deblurring
Drop a defocused photo (PNG, JPEG, TIFF or BMP; 8- or 16-bit; any size) or pick an example (scenes
rendered with depth that the bundled models never saw), then **Deblur**; drag the handle to compare.
Everything runs on this machine.
"""


def _gradio():
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry, no version check
    # raised by Gradio's own queue with the installed pandas at every request; nothing to act on
    for message in (
        r"'future\.no_silent_downcasting' is deprecated",
        r"The copy keyword is deprecated",
    ):
        warnings.filterwarnings("ignore", message=message, module=r"gradio\.")
    import gradio as gr

    return gr


def _user_error(exc: BaseException):
    """The project's one-line message for the page (HTML-escaped: Gradio renders it as HTML)."""
    gr = _gradio()
    message = " ".join(message_of(exc).split())
    return gr.Error(html.escape(message, quote=False), print_exception=False)


def build_app(engine: DemoEngine, examples: Sequence[Path] | None = None):
    """The page, as a ``gradio.Blocks`` (not launched; see :func:`launch`)."""
    gr = _gradio()
    examples = example_paths() if examples is None else list(examples)

    def show_input(photo: str | None):
        if photo is None:
            return None
        try:
            return preview_of(read_upload(photo))
        except user_errors() as exc:
            raise _user_error(exc) from None

    def deblur(
        photo: str | None,
        model: str,
        tile: float,
        self_ensemble: bool,
        defocus: bool,
        progress=gr.Progress(),  # noqa: B008 - Gradio's way of asking for a progress bar
    ):
        if photo is None:
            raise gr.Error("Upload a photo or pick an example first.", print_exception=False)

        def report(fraction: float, message: str) -> None:
            progress(fraction, desc=message)

        try:
            result = engine.deblur(
                photo,
                model,
                tile=int(tile),
                self_ensemble=bool(self_ensemble),
                defocus=bool(defocus),
                progress=report,
            )
        except user_errors() as exc:
            raise _user_error(exc) from None
        return (
            (result.before, result.after),
            result.defocus_view,
            str(result.download),
            [str(p) for p in result.defocus_files] or None,
            result.summary,
        )

    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown(INTRO)
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=320):
                photo = gr.File(
                    label="Photo",
                    file_count="single",
                    type="filepath",
                    height=90,
                    elem_id="photo",
                )
                preview = gr.Image(
                    label="Input",
                    interactive=False,
                    format="png",
                    height=150,
                    buttons=["fullscreen"],
                    elem_id="input-preview",
                )
                if examples:
                    gr.Examples(
                        examples=[[str(p), str(p)] for p in examples],
                        inputs=[photo, preview],
                        visible_columns=[1],
                        label="Examples",
                    )
                model = gr.Dropdown(
                    choices=engine.names, value=engine.default, label="Model", elem_id="model"
                )
                tile = gr.Slider(
                    minimum=64,
                    maximum=2048,
                    step=64,
                    value=DEFAULT_TILE,
                    label="Tile size (px)",
                    info="larger photos are deblurred tile by tile; memory follows the tile",
                    elem_id="tile",
                )
                with gr.Row():
                    self_ensemble = gr.Checkbox(
                        value=False,
                        label="Self-ensemble (x8, slower)",
                        info="average over flips and rotations",
                    )
                    defocus = gr.Checkbox(
                        value=True, label="Defocus map", info="NRKNet models only"
                    )
                run = gr.Button("Deblur", variant="primary", elem_id="deblur")
            with gr.Column(scale=3, min_width=420):
                slider = gr.ImageSlider(
                    label="Before / after",
                    type="numpy",
                    format="png",
                    interactive=False,
                    max_height=440,
                    elem_id="result",
                )
                summary = gr.Markdown(label="Summary", elem_id="summary")
                with gr.Row(equal_height=False):
                    defocus_view = gr.Image(
                        label="Defocus map: blur radius (px)",
                        interactive=False,
                        format="png",
                        height=220,
                        buttons=["download", "fullscreen"],
                        elem_id="defocus",
                    )
                    with gr.Column():
                        download = gr.File(
                            label="Deblurred photo (PNG, full size and bit depth)",
                            interactive=False,
                            elem_id="download",
                        )
                        defocus_files = gr.File(
                            label="Defocus map files (16-bit, colour)",
                            file_count="multiple",
                            interactive=False,
                            elem_id="defocus-files",
                        )
        photo.change(show_input, photo, preview, api_name="preview", show_progress="hidden")
        run.click(
            deblur,
            [photo, model, tile, self_ensemble, defocus],
            [slider, defocus_view, download, defocus_files, summary],
            api_name="deblur",
        )
    return app


def launch(
    app,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    block: bool = True,
    quiet: bool = True,
    on_start=None,
) -> tuple[str, str | None]:
    """Serve ``app`` on ``host:port``: the local URL and the public share URL (``share`` only).

    ``on_start(local_url, share_url)`` is called once the server answers; ``block=False``
    returns at once, leaving the server running in its own thread (``app.close()`` stops it).
    """
    gr = _gradio()
    theme = gr.themes.Soft(primary_hue="orange", font=SYSTEM_FONTS, font_mono=MONO_FONTS)
    _, local_url, share_url = app.launch(
        server_name=host,
        server_port=port,
        share=share,
        prevent_thread_lock=True,
        show_error=False,
        quiet=quiet,
        allowed_paths=[str(EXAMPLES_DIR)],
        theme=theme,
        css=CSS,
    )
    if on_start is not None:
        on_start(local_url, share_url)
    if block:
        app.block_thread()
    return local_url, share_url
