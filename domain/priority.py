"""Event priorities: lower value is served first."""

from __future__ import annotations

from enum import IntEnum


class Priority(IntEnum):
    """CRITICAL > HIGH > NORMAL > LOW. The value is the scheduling rank (0 is served first)."""

    CRITICAL = 0
    HIGH = 1
    NORMAL = 2
    LOW = 3

    @classmethod
    def parse(cls, value: Priority | int | str) -> Priority:
        """Accept a Priority, its rank, or its name in any case ("high")."""
        if isinstance(value, Priority):
            return value
        if isinstance(value, bool):  # an int to Python, never a rank to a sender
            raise ValueError(f"must be a priority name or rank, got {value!r}")
        if isinstance(value, str):
            try:
                return cls[value.strip().upper()]
            except KeyError:
                names = ", ".join(p.name for p in cls)
                raise ValueError(f"unknown priority {value!r}; expected one of {names}") from None
        return cls(value)
