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


def _is_option(value: object, option: object) -> bool:
    """``value`` is ``option``, a bool matching only a bool (Python has ``True == 1``)."""
    return isinstance(value, bool) == isinstance(option, bool) and (
        value is option or value == option
    )


def choice(setting: str, value: T, options: Iterable[T]) -> T:
    """``value`` if it is one of ``options``; otherwise a one-line error listing them.

    ``True`` and ``False`` are options of their own: ``1`` is not ``True`` here,
    nor ``True`` the option ``1``.
    """
    options = tuple(options)
    if not any(_is_option(value, option) for option in options):
        listed = ", ".join(str(option) for option in options)
        raise ConfigError(f"{setting}={value!r} is not known; expected one of {listed}")
    return value


def number(
    setting: str,
    value: float,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    integer: bool = False,
) -> float:
    """``value`` if it is a finite number (an integer where asked) within ``[minimum, maximum]``
    and greater than ``above``."""
    wanted = "an integer" if integer else "a number"
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if not is_number or (integer and not isinstance(value, int)):
        raise ConfigError(f"{setting} must be {wanted}, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{setting} must be a finite number, got {value!r}")
    below_minimum = minimum is not None and value < minimum
    if (
        below_minimum
        or (maximum is not None and value > maximum)
        or (above is not None and value <= above)
    ):
        bounds = " and ".join(
            text
            for text in (
                f"> {above}" if above is not None else "",
                f">= {minimum}" if minimum is not None else "",
                f"<= {maximum}" if maximum is not None else "",
            )
            if text
        )
        raise ConfigError(f"{setting} must be {wanted} {bounds}, got {value!r}")
    return value
