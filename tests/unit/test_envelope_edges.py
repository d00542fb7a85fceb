"""Envelope values an HTTP fuzzer found slipping through: refused with the field named."""

from __future__ import annotations

import pytest

from eventcenter.domain.errors import InvalidEvent
from eventcenter.domain.event import parse_json
from eventcenter.domain.priority import Priority


@pytest.mark.parametrize("value", [b"false", b"true"])
def test_a_boolean_priority_is_refused_not_read_as_a_rank(value: bytes) -> None:
    with pytest.raises(InvalidEvent) as refused:
        parse_json(b'{"type": "order.paid", "priority": ' + value + b"}")

    assert refused.value.field == "priority"


def test_a_rank_and_a_name_in_any_case_are_priorities() -> None:
    assert parse_json(b'{"type": "a.b", "priority": 1}').priority is Priority.HIGH
    assert parse_json(b'{"type": "a.b", "priority": "LOW"}').priority is Priority.LOW


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_a_timestamp_beyond_the_calendar_in_utc_is_refused(stamp: str) -> None:
    with pytest.raises(InvalidEvent) as refused:
        parse_json(f'{{"type": "a.b", "timestamp": "{stamp}"}}'.encode())

    assert refused.value.field == "timestamp"
    assert "years 1 to 9999" in refused.value.reason
