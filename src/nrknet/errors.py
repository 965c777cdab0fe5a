"""The errors a user of nrknet meets, at the bottom of the package (it imports nothing of it).

One root, :class:`NRKNetError`, and the few kinds a user meets; every
command-line tool reports any of them the same way, as one line naming the
file or the setting, with exit status 2 (:mod:`nrknet.cli`). The kinds also
derive from the built-in error they refine (``ValueError`` for what a value
says, ``FloatingPointError`` for a loss that is not finite), so callers that
catch those keep working.
"""

from __future__ import annotations


class NRKNetError(Exception):
    """Root of the errors nrknet raises for input it cannot use."""


class ConfigError(NRKNetError, ValueError):
    """A setting (config value, keyword argument) that cannot be used as given."""


class UsageError(ConfigError):
    """A command line that cannot run: options, input and output paths."""


class DataError(NRKNetError, ValueError):
    """Images or a dataset that cannot be read, paired or written."""


class CheckpointError(NRKNetError, ValueError):
    """A file that is not a usable checkpoint or weights file, or a name that is no known weights."""


class UntrustedCodeError(CheckpointError):
    """A checkpoint that asks to import or call code nrknet does not trust without being told to."""


class NonFiniteLossError(NRKNetError, FloatingPointError):
    """The training loss became NaN or infinite."""


def root_cause(exc: BaseException) -> str:
    """The first line of the innermost cause: an import error inside a component's own module, say."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
