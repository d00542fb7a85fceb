"""Durations as people write them in configuration: ``"30s"``, ``"5m"``, ``"1h30m"``, ``"250ms"``.

A plain number is seconds. Parsing is strict: an unknown unit, a negative or empty value is an
error naming what was given, never a silent default.
"""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(value: str | float | int) -> float:
    """Seconds in ``value``: a number (seconds) or parts like ``"1h30m"``, ``"500ms"``."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        try:
            seconds = float(text)
        except ValueError:
            seconds = _parts(text, value)
    else:
        raise ValueError(f"not a duration: {value!r} (use seconds or text like '30s', '5m')")
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        raise ValueError(f"a duration must be a finite number of seconds >= 0, got {value!r}")
    return seconds


def _parts(text: str, given: str) -> float:
    position = 0
    total = 0.0
    for match in _PART.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if not text or position != len(text):
        raise ValueError(
            f"not a duration: {given!r} (use seconds or parts like '30s', '5m', '1h30m', '250ms')"
        )
    return total


def format_duration(seconds: float) -> str:
    """A short text for ``seconds`` (``"5m"``, ``"1h30m"``, ``"2.5s"``), for tables and logs."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    whole = int(seconds)
    if whole != seconds or whole < 60:
        return f"{seconds:g}s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if whole >= size:
            parts.append(f"{whole // size}{unit}")
            whole %= size
    return "".join(parts)
