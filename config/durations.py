"""Durations written the way operators write them: ``30s``, ``15m``, ``1h``, ``30d``, or seconds."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")


def parse_duration(text: str | float | int) -> float:
    """Seconds in ``text`` (``"90"``, ``"30s"``, ``"15m"``, ``"1h"``, ``"30d"``, ``"2w"``).

    Raises ``ValueError`` with the accepted forms when ``text`` is not a duration.
    """
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError("a duration cannot be negative")
        return float(text)
    match = _PATTERN.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration (examples: 90, 30s, 15m, 1h, 30d)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]
