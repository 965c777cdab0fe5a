"""Three-way switches of the configs (``accel``, ``compile``): ``auto``, ``on`` or ``off``."""

from __future__ import annotations

SWITCH_VALUES = ("auto", "on", "off")


def resolve_switch(setting: str, value: str | bool) -> str:
    """``auto``, ``on`` or ``off`` (``True``/``False`` accepted); anything else is refused naming ``setting``."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, str) and value.strip().lower() in SWITCH_VALUES:
        return value.strip().lower()
    raise ValueError(f"{setting} must be one of {', '.join(SWITCH_VALUES)}; got {value!r}")
