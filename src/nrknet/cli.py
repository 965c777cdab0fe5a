"""The one error reporter of every command-line tool (``nrknet-train``, ``-eval``, ``-predict``,
``-export``, ``-convert``, ``-synth``, ``-demo``).

An error the user can act on (any :class:`~nrknet.errors.NRKNetError`, a bad
value, a missing or unwritable file, a config Hydra cannot compose) becomes one
line on stderr, ``PROGRAM: error: MESSAGE``, and exit status 2. The full
traceback is shown with ``--debug`` (the argparse tools), ``NRKNET_DEBUG=1`` or
``HYDRA_FULL_ERROR=1``. Anything else is a bug, and keeps its traceback.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any

from nrknet.errors import NRKNetError, root_cause

__all__ = [
    "USAGE_ERROR_STATUS",
    "add_model_options",
    "debug_requested",
    "finish_wandb",
    "reported",
    "tidy_console",
    "user_errors",
]

#: The exit status of every error :func:`reported` turns into one line.
USAGE_ERROR_STATUS = 2


def add_model_options(parser: argparse.ArgumentParser, *, device: bool = True) -> None:
    """The options every tool that loads a model shares: ``--trust-code``, ``--device`` and
    ``--threads`` (where it runs the model), ``--debug``."""
    parser.add_argument(
        "--trust-code",
        action="store_true",
        help="build components outside nrknet that a checkpoint names (your own atom bank or "
        "head): their modules are imported, which runs their code; only for checkpoints you trust",
    )
    if device:
        parser.add_argument(
            "--device",
            default="auto",
            choices=("auto", "cpu", "cuda"),
            help="default: cuda if available",
        )
        parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")


def user_errors() -> tuple[type[BaseException], ...]:
    """What counts as the user's to fix: nrknet's own errors, bad values, files, config errors."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return (NRKNetError, ValueError, OSError, HydraException, OmegaConfBaseException)


def debug_requested() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1" or os.environ.get("NRKNET_DEBUG") == "1"


def message_of(exc: BaseException) -> str:
    message = str(exc).strip().replace("\n", "\n  ") or type(exc).__name__
    if exc.__cause__ is not None and "HYDRA_FULL_ERROR" in message:
        # Hydra hides the reason (often an import error in the user's own module)
        message += f"\n  cause: {root_cause(exc)}"
    return message


def reported(
    program: str, *, exits: bool = False, debug: Callable[..., bool] | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate an entry point: user errors become one line on stderr and exit status 2.

    ``exits``: raise ``SystemExit(2)`` (Hydra mains, whose return value is not the
    status) instead of returning 2. ``debug(*args, **kwargs)`` says from the
    entry point's arguments whether to show the traceback instead.
    """

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except user_errors() as exc:
                if debug_requested() or (debug is not None and debug(*args, **kwargs)):
                    raise
                print(f"{program}: error: {message_of(exc)}", file=sys.stderr)
                if exits:
                    sys.exit(USAGE_ERROR_STATUS)
                return USAGE_ERROR_STATUS
            finally:
                finish_wandb()

        return wrapper

    return decorate


def finish_wandb() -> None:
    """Close the wandb run so that every multirun job is a run of its own."""
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()


class _WithoutAdvertising(logging.Filter):
    """Drops Lightning's tips about its cloud products (litlogger, litmodels)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("\N{ELECTRIC LIGHT BULB} Tip:")


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"{category.__name__}: {str(message).strip()}\n"


def tidy_console() -> None:
    """What a training or evaluation run prints, said once and in few lines.

    Lightning's advertising tips and a deprecation warning raised inside
    Lightning itself are dropped; every other warning is printed as one line,
    without the source line that raised it. ``NRKNET_DEBUG=1`` keeps Python's
    usual warnings.
    """
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _WithoutAdvertising) for f in logger.filters):
            logger.addFilter(_WithoutAdvertising())
    # raised by Lightning's own code with the installed PyTorch; nothing a user can change
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    if not debug_requested():
        warnings.formatwarning = _one_line_warning
