"""Durations in configuration: what people write, and what is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventcenter.domain.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("5m", 300.0),
        ("15m", 900.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        ("2d", 172800.0),
        ("1.5s", 1.5),
        (" 10 ", 10.0),
        (12, 12.0),
        (0.5, 0.5),
        ("0", 0.0),
    ],
)
def test_parses_what_people_write(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "m5", "5m3", "-1", "-5s", "nan", "inf", "1h-5m", True])
def test_refuses_anything_else_naming_it(text: object) -> None:
    with pytest.raises(ValueError, match="duration") as caught:
        parse_duration(text)  # type: ignore[arg-type]
    assert repr(text) in str(caught.value) or str(text) in str(caught.value)


@given(st.integers(min_value=1, max_value=10**7))
def test_format_and_parse_round_trip_whole_seconds(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


def test_formats_for_tables() -> None:
    assert format_duration(300) == "5m"
    assert format_duration(5400) == "1h30m"
    assert format_duration(0.25) == "250ms"
    assert format_duration(2.5) == "2.5s"
