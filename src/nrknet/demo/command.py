"""``nrknet-demo``: the command line of the web demo (options, model loading, errors, serving).

Usage::

    nrknet-demo [--ckpt NAME_OR_PATH]... [--host 127.0.0.1] [--port 7860] [--share]

Every model is loaded before the page is served, so a missing or invalid
checkpoint stops the command with one line (exit status 2), as in
``nrknet-predict``; so does a port already in use. Gradio is imported only
here and in :mod:`nrknet.demo.app`, when the page is to be served: ``--help``
and the other commands never import it.
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from nrknet.cli import add_model_options, reported
from nrknet.errors import UsageError

PROG = "nrknet-demo"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="A local web page that deblurs photos with NRKNet: upload or pick an example, "
        "compare before and after, see the defocus map, download the result at full resolution "
        "and bit depth. Needs the demo extra: pip install -e '.[demo]'.",
    )
    parser.add_argument(
        "--ckpt",
        "-c",
        action="append",
        default=None,
        metavar="NAME_OR_PATH",
        help="a model to offer: a registry name (e.g. nrknet-synthetic) or a checkpoint path; "
        "repeat for several; the first is selected; the bundled models are always offered too",
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to listen on (default {DEFAULT_HOST}: this machine only; 0.0.0.0 opens the "
        "page to the network)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port (default {DEFAULT_PORT}; 0: any free port)",
    )
    parser.add_argument(
        "--share",
        action="store_true",
        help="also publish the page through a public Gradio share link (off by default; needs "
        "internet access and lets anyone with the link use this machine)",
    )
    add_model_options(parser)
    return parser


def free_port(host: str) -> int:
    """A port the operating system reports free on ``host`` now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _check(args: argparse.Namespace) -> None:
    if not 0 <= args.port <= 65535:
        raise UsageError("--port must lie in 0..65535")
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be a positive integer")


def sources_of(ckpts: Sequence[str] | None) -> list[str]:
    """The models the page offers: those given with ``--ckpt`` first, then the bundled ones."""
    from nrknet.demo.engine import bundled_models

    return list(dict.fromkeys([*(ckpts or []), *bundled_models()]))


def main(argv: Sequence[str] | None = None) -> int:
    return _main(build_parser().parse_args(argv))


@reported(PROG, debug=lambda args: args.debug)
def _main(args: argparse.Namespace) -> int:
    import torch

    from nrknet.demo.engine import DemoEngine
    from nrknet.inference import resolve_device

    _check(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
    except ValueError:
        raise UsageError(f"--device {args.device} requested but CUDA is not available") from None
    try:
        import gradio  # noqa: F401 - only to say what is missing before the models load
    except ImportError:
        raise UsageError(
            "the web demo needs Gradio: pip install -e '.[demo]' (or pip install 'nrknet[demo]')"
        ) from None
    from nrknet.demo.app import build_app, launch

    with tempfile.TemporaryDirectory(prefix="nrknet-demo-") as results:
        engine = DemoEngine(
            sources_of(args.ckpt),
            device=device,
            out_dir=Path(results),
            trust_code=args.trust_code,
            say=lambda line: print(f"{PROG}: {line}", file=sys.stderr),
        )
        port = free_port(args.host) if args.port == 0 else args.port
        app = build_app(engine)

        def started(local_url: str, share_url: str | None) -> None:
            print(f"{PROG}: serving on {local_url.rstrip('/')} (Ctrl+C stops)", file=sys.stderr)
            if share_url:
                print(f"{PROG}: public link {share_url}", file=sys.stderr)

        try:
            launch(app, host=args.host, port=port, share=args.share, on_start=started)
        except KeyboardInterrupt:
            pass
        finally:
            app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
