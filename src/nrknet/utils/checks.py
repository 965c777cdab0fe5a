"""The two checks a setting meets where it enters: one of a few choices, or a number in range.

Both raise :class:`~nrknet.errors.ConfigError` with one line that names the
setting, the value given and what it may be; both return the value, so a
constructor reads ``self.mode = choice("mode", mode, MODES)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TypeVar

from nrknet.errors import ConfigError

T = TypeVar("T")


def choice(setting: str, value: T, options: Iterable[T]) -> T:
    """``value`` if it is one of ``options``; otherwise a one-line error listing them."""
    options = tuple(options)
    if value not in options:
        listed = ", ".join(str(option) for option in options)
        raise ConfigError(f"{setting}={value!r} is not known; expected one of {listed}")
    return value


def number(
    setting: str,
    value: float,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    integer: bool = False,
) -> float:
    """``value`` if it is a finite number (an integer where asked) within ``[minimum, maximum]``."""
    wanted = "an integer" if integer else "a number"
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if not is_number or (integer and not isinstance(value, int)):
        raise ConfigError(f"{setting} must be {wanted}, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{setting} must be a finite number, got {value!r}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = " and ".join(
            text
            for text in (
                f">= {minimum}" if minimum is not None else "",
                f"<= {maximum}" if maximum is not None else "",
            )
            if text
        )
        raise ConfigError(f"{setting} must be {wanted} {bounds}, got {value!r}")
    return value
