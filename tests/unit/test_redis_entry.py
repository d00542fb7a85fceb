"""The two forms of a Redis stream entry, and what a bad one says."""

from __future__ import annotations

import pytest

from eventcenter.sources.connectors.redis_entry import received_entry


def test_the_item_field_holds_the_whole_item_and_other_fields_are_ignored() -> None:
    received = received_entry(
        "1-0", {b"item": b'{"key": "a", "version": 2, "data": {"x": 1}}', b"trace": b"t"}
    )

    assert received.item is not None
    assert (received.item.key, received.item.version, received.item.data) == ("a", "2", {"x": 1})
    assert (received.position, received.token) == ("1-0", "1-0")


def test_a_lone_data_field_is_read_as_the_whole_item() -> None:
    received = received_entry("1-0", {b"data": b'{"key": "a", "version": 1}'})

    assert received.item is not None
    assert received.item.key == "a"


def test_flat_fields_make_an_item() -> None:
    received = received_entry(
        "1-0",
        {
            b"key": b"a",
            b"version": b"3",
            b"data": b'{"x": 1}',
            b"deleted": b"1",
            b"occurred_at": b"1717000000.5",
        },
    )

    assert received.item is not None
    assert received.item.deleted is True
    assert received.item.occurred_at == 1717000000.5
    assert received.item.data == {"x": 1}


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({b"item": b"[1, 2]"}, "an item must be a JSON object, got list"),
        ({b"key": b"a", b"version": b"1", b"data": b"{"}, "field 'data' is not JSON"),
        ({b"key": b"a", b"version": b"1", b"data": b"[1]"}, "'data' must be a JSON object"),
        ({b"key": b"a", b"version": b"1", b"occurred_at": b"noon"}, "'occurred_at' must be"),
        ({b"key": b"a"}, "no version"),
        ({b"other": b"x", b"more": b"y"}, "no key"),
    ],
)
def test_a_bad_entry_says_why_and_keeps_its_fields(
    fields: dict[bytes, bytes], problem: str
) -> None:
    received = received_entry("1-0", fields)

    assert received.item is None
    assert received.problem is not None
    assert problem in received.problem
    assert received.raw
    assert received.token == "1-0"
