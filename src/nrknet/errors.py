"""The errors a user of nrknet meets, at the bottom of the package (it imports nothing of it).

Every command-line tool reports these as one line naming the file or the
setting, with exit status 2.
"""

from __future__ import annotations


class NRKNetError(Exception):
    """Root of the errors nrknet raises for input it cannot use."""


class CheckpointError(NRKNetError, ValueError):
    """A file that is not a usable checkpoint or weights file, or a name that is no known weights."""


class UntrustedCodeError(CheckpointError):
    """A checkpoint that asks to import or call code nrknet does not trust without being told to."""
