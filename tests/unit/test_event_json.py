"""Raw JSON bodies (parse_json, parse_json_batch), the envelope as JSON bytes, handler copies."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventcenter.domain import InvalidBatch, InvalidEvent, parse_json, parse_json_batch
from eventcenter.domain.event import EnvelopeLimits, Event
from eventcenter.domain.priority import Priority

DEFAULTS = EnvelopeLimits()


def body(**fields: Any) -> bytes:
    """A JSON envelope with the given fields (``type`` defaults to a valid one)."""
    return json.dumps({"type": "order.placed", **fields}).encode()


def refusal(data: bytes, limits: EnvelopeLimits = DEFAULTS) -> InvalidEvent:
    """The InvalidEvent parse_json raises for ``data`` (fails the test if it is accepted)."""
    with pytest.raises(InvalidEvent) as caught:
        parse_json(data, limits)
    return caught.value


def batch_refusal(data: bytes, limits: EnvelopeLimits = DEFAULTS) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as caught:
        parse_json_batch(data, limits)
    return caught.value


def nested_text(depth: int) -> str:
    """An object nested ``depth`` levels deep, as JSON text (the object itself is level 1)."""
    return '{"n":' * (depth - 1) + "{}" + "}" * (depth - 1)


# --- parse_json: what it accepts -----------------------------------------------------------------


def test_a_json_envelope_is_parsed_into_an_event() -> None:
    event = parse_json(
        b'{"type": "deployment.changed", "tenant": "acme", "priority": "high",'
        b' "payload": {"service": "api", "replicas": [1, 2]}, "metadata": {"trace": "t-1"}}'
    )
    assert (event.type, event.tenant) == ("deployment.changed", "acme")
    assert event.priority is Priority.HIGH
    assert event.payload == {"service": "api", "replicas": [1, 2]}
    assert event.metadata == {"trace": "t-1"}


def test_whitespace_escapes_and_unicode_are_plain_json() -> None:
    data = (
        '\n {\t"type" :\r\n "a.b" ,  "payload" : { "q" : "say \\"hi\\": [ok]", '
        '"path": "C:\\\\dir\\\\", "u": "\\u00e9\\ud83d\\ude00", "lit": "é😀" } }  \n'
    ).encode()
    assert parse_json(data).payload == {
        "q": 'say "hi": [ok]',
        "path": "C:\\dir\\",
        "u": "é😀",
        "lit": "é😀",
    }


def test_bytearray_and_memoryview_bodies_are_accepted() -> None:
    data = body(payload={"n": 1})
    assert parse_json(bytearray(data)).payload == {"n": 1}
    assert parse_json(memoryview(data)).payload == {"n": 1}


def test_an_event_round_trips_through_its_json() -> None:
    event = Event.create(
        "deployment.changed",
        {"service": "orders", "replicas": [1, 2, {"zone": None}], "ok": True, "ratio": 0.25},
        source="ci",
        tenant="acme",
        priority="high",
        correlation_id="deploy-7",
        metadata={"trace": "abc"},
        timestamp=datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC),
    )
    assert parse_json(event.to_json()) == event


def test_the_payload_may_nest_exactly_max_depth_levels() -> None:
    limits = EnvelopeLimits(max_depth=3)
    accepted = parse_json(f'{{"type":"a","payload":{nested_text(3)}}}'.encode(), limits)
    assert accepted.payload == {"n": {"n": {}}}
    error = refusal(f'{{"type":"a","payload":{nested_text(4)}}}'.encode(), limits)
    assert (error.field, error.reason) == ("payload", "nests deeper than 3 levels")


def test_the_payload_size_limit_applies_to_its_compact_json() -> None:
    spaced = b'{"type": "a", "payload": {"note" :   "xxxxxxxxxx"}}'
    size = len(b'{"note":"xxxxxxxxxx"}')
    assert parse_json(spaced, EnvelopeLimits(max_payload_bytes=size)).payload == {"note": "x" * 10}
    error = refusal(spaced, EnvelopeLimits(max_payload_bytes=size - 1))
    assert (error.field, error.reason) == ("payload", f"is {size} bytes as JSON; the limit is 20")


def test_field_errors_name_the_field_as_parse_does() -> None:
    assert refusal(body(tenant="acme/eu")).field == "tenant"
    assert refusal(body(id="00000000-0000-0000-0000-000000000000")).field == "id"
    assert refusal(body(colour="red")).field == "colour"
    assert refusal(b'{"payload": {}}').field == "type"
    assert refusal(body(metadata={"x": "y" * 9_000})).field == "metadata"


# --- parse_json: what it refuses, naming "body" --------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b'{"type": "a", "payload": {"x": "\xff"}}', id="invalid-byte"),
        pytest.param(b'{"type": "a\xc3"}', id="truncated-sequence"),
        pytest.param(b'{"type": "\xed\xa0\x80"}', id="encoded-surrogate"),
        pytest.param(b'{"type": "\xc0\xaf"}', id="overlong-encoding"),
        pytest.param(b'\xef\xbb\xbf{"type": "a"}', id="byte-order-mark"),
    ],
)
def test_invalid_utf8_is_refused(data: bytes) -> None:
    error = refusal(data)
    assert error.field == "body"
    assert "UTF-8" in error.reason or "not valid JSON" in error.reason


def test_an_invalid_byte_is_named_with_its_offset() -> None:
    error = refusal(b'{"type": "a\xff"}')
    assert error.reason == "is not valid UTF-8 (byte 0xff at offset 11)"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused(literal: str) -> None:
    error = refusal(f'{{"type": "a", "payload": {{"x": [1, {literal}]}}}}'.encode())
    assert error.field == "body"
    assert "NaN or Infinity" in error.reason


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"[]", "an array"),
        (b'"order.placed"', "a string"),
        (b"42", "a number"),
        (b"null", "null"),
        (b"true", "true or false"),
    ],
)
def test_a_body_that_is_not_an_object_is_refused(data: bytes, kind: str) -> None:
    error = refusal(data)
    assert error.field == "body"
    assert error.reason == f"must be a JSON object (one event envelope), got {kind}"


@pytest.mark.parametrize(
    "data",
    [b"", b"{", b'{"type": "a",}', b'{"type": "a"} {}', b"{'type': 'a'}", b'{"type": "a"'],
)
def test_text_that_is_not_json_is_refused(data: bytes) -> None:
    error = refusal(data)
    assert error.field == "body"
    assert error.reason.startswith("is not valid JSON")


def test_a_string_is_refused_it_is_not_bytes() -> None:
    error = refusal('{"type": "a"}')  # type: ignore[arg-type]
    assert (error.field, error.reason) == ("body", "must be the raw bytes of a JSON text, got str")


def test_a_body_larger_than_max_body_bytes_is_refused_before_parsing() -> None:
    data = body(payload={"note": "x" * 300})
    assert parse_json(data, EnvelopeLimits(max_body_bytes=len(data))).payload
    error = refusal(data, EnvelopeLimits(max_body_bytes=len(data) - 1))
    assert (error.field, error.reason) == (
        "body",
        f"is {len(data)} bytes; the limit is {len(data) - 1}",
    )
    too_big = b"{" * (DEFAULTS.max_body_bytes + 1)  # would fail any parser: refused on size
    assert refusal(too_big).reason.startswith(f"is {DEFAULTS.max_body_bytes + 1} bytes")


# --- parse_json: nesting, counted on the bytes -------------------------------------------------


@pytest.mark.parametrize(
    ("opener", "field", "reason"),
    [
        (b"[", "body", "nests deeper than 17 levels"),
        (b"{", "body", "nests deeper than 17 levels"),
        (b'[{"a":', "body", "nests deeper than 17 levels"),
        (b'{"a":', "a", "nests deeper than 16 levels"),  # the envelope's member "a" is too deep
    ],
)
def test_a_hundred_thousand_levels_are_refused_cleanly(
    opener: bytes, field: str, reason: str
) -> None:
    data = opener * (100_000 // len(opener) + 1)
    error = refusal(data, EnvelopeLimits(max_body_bytes=len(data)))
    assert (error.field, error.reason) == (field, reason)


def test_deep_nesting_is_refused_without_any_recursion() -> None:
    """Under a recursion limit far below the nesting, a recursive parser would fail."""
    depth = 50_000
    data = f'{{"type": "a", "payload": {{"x": {"[" * depth}{"]" * depth}}}}}'.encode()
    old_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)
    try:
        error = refusal(data)
    finally:
        sys.setrecursionlimit(old_limit)
    assert (error.field, error.reason) == ("payload", "nests deeper than 16 levels")


@pytest.mark.parametrize("member", ["payload", "metadata", "extra"])
def test_too_deep_names_the_envelope_member_that_nests(member: str) -> None:
    limits = EnvelopeLimits(max_depth=4)
    data = f'{{"type": "a", "{member}": {nested_text(5)}}}'.encode()
    assert refusal(data, limits).field == member


def test_brackets_inside_strings_are_not_nesting() -> None:
    text = "[" * 40 + '{"' + "\\" * 3 + '"' + "}" * 40
    event = parse_json(body(payload={"text": text, "k[[[[": ["{{{{"]}), EnvelopeLimits(max_depth=2))
    assert event.payload["text"] == text


def test_the_body_depth_check_matches_the_value_check_for_any_payload() -> None:
    for depth in range(1, 8):
        payload = json.loads(nested_text(depth))
        limits = EnvelopeLimits(max_depth=4)
        data = json.dumps({"type": "a", "payload": payload}).encode()
        if depth <= 4:
            assert parse_json(data, limits).payload == payload
        else:
            assert refusal(data, limits).field == "payload"


# --- parse_json: repeated keys ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "field", "key"),
    [
        pytest.param(b'{"type": "a", "type": "b"}', "type", None, id="top-level"),
        pytest.param(b'{"type": "a", "payload": {"k": 1, "k": 2}}', "payload", "k", id="payload"),
        pytest.param(
            b'{"type": "a", "payload": {"x": [1, {"y": {"k": 1, "k": 1}}]}}',
            "payload",
            "k",
            id="deep-in-an-array",
        ),
        pytest.param(
            b'{"type": "a", "metadata": {"trace": 1, "trace": 2}}', "metadata", "trace", id="meta"
        ),
        pytest.param(
            b'{"type": "a", "payload": {"a\\"b": 1, "a\\u0022b": 2}}', "payload", 'a"b', id="esc"
        ),
    ],
)
def test_a_repeated_key_is_refused_naming_where_it_is(
    data: bytes, field: str, key: str | None
) -> None:
    error = refusal(data)
    assert error.field == field
    if key is None:
        assert error.reason.startswith("appears more than once in the envelope")
    else:
        assert error.reason.startswith(f"repeats the key {key!r} in one object")


@dataclass(frozen=True)
class Obj:
    """A JSON object as written: its pairs in order, repeated keys included."""

    pairs: tuple[tuple[str, Any], ...]


def encode(value: Any, spaced: bool) -> str:
    comma, colon = (" , ", " : ") if spaced else (",", ":")
    if isinstance(value, Obj):
        members = (json.dumps(k) + colon + encode(v, spaced) for k, v in value.pairs)
        return "{" + comma.join(members) + "}"
    if isinstance(value, list):
        return "[" + comma.join(encode(v, spaced) for v in value) + "]"
    return json.dumps(value)


def repeats(value: Any) -> bool:
    if isinstance(value, Obj):
        keys = [key for key, _ in value.pairs]
        return len(set(keys)) < len(keys) or any(repeats(v) for _, v in value.pairs)
    if isinstance(value, list):
        return any(repeats(v) for v in value)
    return False


keys = st.sampled_from(["a", "b", 'q"', "\\", "k:", ":", ":k", "a{", "[", "}"])
written_values = st.recursive(
    st.none() | st.integers(-5, 5) | st.text(alphabet='ab"\\:[]{}', max_size=5),
    lambda children: (
        st.lists(children, max_size=3)
        | st.lists(st.tuples(keys, children), max_size=4).map(lambda p: Obj(tuple(p)))
    ),
    max_leaves=20,
)
written_objects = st.lists(st.tuples(keys, written_values), max_size=4).map(lambda p: Obj(tuple(p)))


@settings(deadline=None, max_examples=300)
@given(payload=written_objects, spaced=st.booleans())
def test_a_body_is_refused_exactly_when_some_object_repeats_a_key(
    payload: Obj, spaced: bool
) -> None:
    data = f'{{"type": "a", "payload": {encode(payload, spaced)}}}'.encode()
    limits = EnvelopeLimits(max_depth=64)
    try:
        result: Event | InvalidEvent = parse_json(data, limits)
    except InvalidEvent as error:
        result = error
    if repeats(payload):
        assert isinstance(result, InvalidEvent)
        assert (result.field, result.reason[:15]) == ("payload", "repeats the key")
    else:
        assert isinstance(result, Event)


# --- parse_json_batch ----------------------------------------------------------------------------


def test_a_batch_is_parsed_in_order() -> None:
    events = parse_json_batch(b'[{"type": "a.one"}, {"type": "a.two", "payload": {"n": 2}}]')
    assert [(e.type, e.payload) for e in events] == [("a.one", {}), ("a.two", {"n": 2})]


def test_an_empty_batch_is_an_empty_list() -> None:
    assert parse_json_batch(b" [ ] ") == []


@pytest.mark.parametrize(
    ("data", "index", "field"),
    [
        pytest.param(b'[{"type": "a"}, {"type": "a b"}]', 1, "type", id="invalid-field"),
        pytest.param(b'[{"type": "a"}, 7, {"type": "a"}]', 1, "event", id="not-an-object"),
        pytest.param(
            b'[{"type": "a"}, {"type": "a"}, {"type": "a", "payload": {"k": 1, "k": 2}}]',
            2,
            "payload",
            id="repeated-key",
        ),
        pytest.param(
            b'[{"type": "a", "payload": [[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]}]',
            0,
            "payload",
            id="too-deep",
        ),
        pytest.param(b'[{"type": "a"}, {"type": "a", "type": "b"}]', 1, "type", id="repeated"),
        pytest.param(
            b'[{"type": "a"}, [[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]', 1, "event", id="deep-item"
        ),
        pytest.param(b"[" * 100_000, 0, "event", id="hundred-thousand-levels"),
    ],
)
def test_an_invalid_envelope_in_a_batch_names_its_index_and_field(
    data: bytes, index: int, field: str
) -> None:
    error = batch_refusal(data)
    assert isinstance(error, InvalidBatch)
    assert (error.index, error.field) == (index, field)
    assert f"event #{index}: field '{field}'" in str(error)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"type": "a"}', "must be a JSON array of event envelopes, got an object"),
        (b'[{"type": "a"}', "is not valid JSON"),
        (b'[{"type": "\xff"}]', "is not valid UTF-8"),
        (b"{" * 1000, "nests deeper than 18 levels"),
    ],
)
def test_a_batch_body_that_is_unusable_as_a_whole_names_the_body(data: bytes, reason: str) -> None:
    error = batch_refusal(data)
    assert not isinstance(error, InvalidBatch)
    assert error.field == "body"
    assert error.reason.startswith(reason)


def test_batch_limits_on_bytes_and_events_are_configurable() -> None:
    data = json.dumps([{"type": "a"}] * 3).encode()
    assert len(parse_json_batch(data, EnvelopeLimits(max_batch_events=3))) == 3
    error = batch_refusal(data, EnvelopeLimits(max_batch_events=2))
    assert (error.field, error.reason) == ("body", "holds 3 events; the limit is 2")
    assert batch_refusal(data, EnvelopeLimits(max_batch_bytes=len(data) - 1)).field == "body"


# --- to_json ---------------------------------------------------------------------------------


def test_to_json_is_the_compact_json_of_to_dict() -> None:
    event = Event.create(
        "a.b",
        {"x": [1, 2.5, None, "é"], "y": {"z": True}},
        metadata={"trace": "t"},
        timestamp=datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC),
    )
    assert json.loads(event.to_json()) == event.to_dict()
    assert event.to_json() == json.dumps(
        event.to_dict(), separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def test_to_json_writes_a_whole_second_timestamp_like_to_dict() -> None:
    event = Event.create("a", timestamp=datetime(2024, 5, 1, 12, 0, tzinfo=UTC))
    assert json.loads(event.to_json())["timestamp"] == event.to_dict()["timestamp"]


# --- fresh_copy ------------------------------------------------------------------------------


@pytest.fixture
def original() -> Event:
    return Event.create(
        "order.placed",
        {"items": [{"sku": "a", "tags": ["x"]}], "total": {"amount": 10, "currency": "EUR"}},
        metadata={"trace": {"spans": [1, 2]}},
        tenant="acme",
        correlation_id="c-1",
    )


def test_a_fresh_copy_is_equal_but_owns_its_payload_and_metadata(original: Event) -> None:
    copy = original.fresh_copy()
    assert copy == original
    assert copy.payload is not original.payload
    assert copy.payload["items"][0] is not original.payload["items"][0]
    assert copy.metadata["trace"] is not original.metadata["trace"]
    assert (copy.id, copy.correlation_id, copy.timestamp) == (
        original.id,
        original.correlation_id,
        original.timestamp,
    )


def test_changing_a_copy_at_any_depth_leaves_the_original_alone(original: Event) -> None:
    before = original.to_json()
    copy = original.fresh_copy()
    copy.payload["total"]["amount"] = 0
    copy.payload["items"][0]["tags"].append("changed")
    copy.payload["items"].append({"sku": "b"})
    copy.payload["new"] = True
    copy.metadata["trace"]["spans"].clear()
    assert original.to_json() == before
    second = original.fresh_copy()
    assert second == original
    assert second.payload["items"] == [{"sku": "a", "tags": ["x"]}]


def test_a_copy_is_not_validated_again() -> None:
    roomy = EnvelopeLimits(max_payload_bytes=1_000_000)
    event = Event.create("a", {"blob": "x" * 100_000}, limits=roomy)  # over the default limit
    assert event.fresh_copy().payload == event.payload


def test_an_empty_payload_copy_is_a_new_dict() -> None:
    event = Event.create("a")
    copy = event.fresh_copy()
    copy.payload["x"] = 1
    copy.metadata["y"] = 2
    assert (event.payload, event.metadata) == ({}, {})


def test_a_copy_of_a_payload_changed_into_non_json_is_still_a_deep_copy() -> None:
    event = Event.create("a", {"when": None})
    event.payload["when"] = [datetime(2024, 5, 1, tzinfo=UTC), {1: "x"}]  # breaks the contract
    copy = event.fresh_copy()
    copy.payload["when"][1][1] = "y"
    assert event.payload["when"][1] == {1: "x"}


def test_ids_from_other_systems_survive_a_json_round_trip() -> None:
    event_id = uuid4()
    assert parse_json(body(id=str(event_id))).id == event_id
