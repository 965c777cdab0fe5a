"""Three-way switches of the configs (``accel``, ``compile``): ``auto``, ``on`` or ``off``."""

from __future__ import annotations

from nrknet.utils.checks import choice

SWITCH_VALUES = ("auto", "on", "off")


def resolve_switch(setting: str, value: str | bool) -> str:
    """``auto``, ``on`` or ``off`` (``True``/``False`` accepted); anything else is refused naming ``setting``."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, str) and value.strip().lower() in SWITCH_VALUES:
        return value.strip().lower()
    return choice(setting, value, SWITCH_VALUES)  # refuses it: no value left is among them
