"""The event envelope: defaults, validation at the boundary, configurable limits, round-trips.

Raw JSON bodies (parse_json), to_json and fresh_copy are in test_event_json.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import RFC_4122, UUID, uuid1, uuid3, uuid4, uuid5

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from eventcenter.domain.errors import EventCenterError, InvalidEvent
from eventcenter.domain.event import EnvelopeLimits, Event
from eventcenter.domain.priority import Priority

#: Generous bounds for tests that exercise one limit at a time.
ROOMY = 10**6
DEFAULTS = EnvelopeLimits()

# --- helpers written for the tests, independent of the module under test ----------------------


def nested(depth: int, leaf: Any = 1) -> dict[str, Any]:
    """A payload whose containers nest ``depth`` levels deep (the payload itself is level 1)."""
    value: Any = leaf
    for _ in range(depth - 1):
        value = {"n": value}
    return {"n": value}


def nesting(value: Any) -> int:
    """Containers on the longest path from ``value`` down to a leaf (a scalar is 0)."""
    if isinstance(value, dict):
        return 1 + max((nesting(child) for child in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((nesting(child) for child in value), default=0)
    return 0


def json_bytes(value: Any) -> int:
    """An upper bound on the payload's size as JSON (spaced separators, so never too small)."""
    return len(json.dumps(value).encode())


def outcome(build: Callable[[], Event]) -> Event | InvalidEvent:
    """The event ``build`` returns, or the InvalidEvent it raises."""
    try:
        return build()
    except InvalidEvent as error:
        return error


def refusal(data: dict[str, Any], limits: EnvelopeLimits = DEFAULTS) -> InvalidEvent:
    """The InvalidEvent raised for ``data`` (fails the test if the envelope is accepted)."""
    with pytest.raises(InvalidEvent) as caught:
        Event.parse(data, limits)
    return caught.value


# --- defaults ----------------------------------------------------------------------------------


def test_a_new_event_gets_a_time_ordered_uuid7_id() -> None:
    event = Event.create("order.placed")
    assert event.id.version == 7
    assert event.id.variant == RFC_4122


def test_ids_made_one_after_another_increase() -> None:
    ids = [Event.create("order.placed").id for _ in range(2_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_two_new_events_get_different_ids() -> None:
    assert Event.create("order.placed").id != Event.create("order.placed").id


def test_a_new_event_is_stamped_now_in_utc() -> None:
    before = datetime.now(UTC)
    event = Event.create("order.placed")
    after = datetime.now(UTC)
    assert event.timestamp.utcoffset() == timedelta(0)
    assert before <= event.timestamp <= after


def test_a_new_event_has_normal_priority_version_1_and_the_default_source_and_tenant() -> None:
    event = Event.create("order.placed")
    assert event.priority is Priority.NORMAL
    assert event.version == "1"
    assert (event.source, event.tenant) == ("app", "default")
    assert event.payload == {}
    assert event.metadata == {}


def test_correlation_id_defaults_to_the_event_id() -> None:
    event = Event.create("order.placed")
    assert event.correlation_id == str(event.id)


def test_a_given_correlation_id_is_kept() -> None:
    assert Event.create("order.placed", correlation_id="req-42").correlation_id == "req-42"


def test_fields_passed_as_none_get_their_defaults() -> None:
    event = Event.create("order.placed", None, tenant=None, priority=None)
    assert (event.tenant, event.priority, event.payload) == ("default", Priority.NORMAL, {})


# --- type: dot notation ------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", ["a", "a.b", "a-b.c_d", "Deployment.Changed9"])
def test_dot_notation_types_are_accepted(event_type: str) -> None:
    assert Event.create(event_type).type == event_type


@pytest.mark.parametrize(
    "event_type",
    [
        pytest.param("", id="empty"),
        pytest.param(".a", id="leading-dot"),
        pytest.param("a.", id="trailing-dot"),
        pytest.param("a..b", id="empty-segment"),
        pytest.param("a b", id="space"),
        pytest.param("a.*", id="star-wildcard"),
        pytest.param("a.#", id="hash-wildcard"),
    ],
)
def test_types_that_are_not_dot_notation_are_rejected_naming_the_type_field(
    event_type: str,
) -> None:
    error = refusal({"type": event_type})
    assert error.field == "type"
    assert "dot notation" in error.reason


def test_a_missing_type_is_rejected_naming_the_type_field() -> None:
    assert refusal({}).field == "type"


# --- each invalid field is named ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        pytest.param({"tenant": "acme corp"}, "tenant", id="tenant-with-space"),
        pytest.param({"tenant": ""}, "tenant", id="tenant-empty"),
        pytest.param({"tenant": "t" * 129}, "tenant", id="tenant-too-long"),
        pytest.param({"source": "orders?"}, "source", id="source-bad-character"),
        pytest.param({"source": ""}, "source", id="source-empty"),
        pytest.param({"timestamp": datetime(2024, 5, 1, 12, 0)}, "timestamp", id="naive-time"),
        pytest.param({"timestamp": "yesterday"}, "timestamp", id="time-not-a-time"),
        pytest.param({"priority": "urgent"}, "priority", id="priority-unknown-name"),
        pytest.param({"priority": 7}, "priority", id="priority-unknown-rank"),
        pytest.param({"payload": {"at": object()}}, "payload", id="payload-not-json"),
        pytest.param({"payload": {"x": math.nan}}, "payload", id="payload-nan"),
        pytest.param({"payload": {"x": math.inf}}, "payload", id="payload-infinity"),
        pytest.param({"payload": {"x": "y" * 70_000}}, "payload", id="payload-too-many-bytes"),
        pytest.param({"payload": nested(17)}, "payload", id="payload-too-deep"),
        pytest.param({"payload": [1, 2]}, "payload", id="payload-not-an-object"),
        pytest.param({"metadata": {"at": object()}}, "metadata", id="metadata-not-json"),
        pytest.param({"metadata": {"x": "y" * 9_000}}, "metadata", id="metadata-too-many-bytes"),
        pytest.param({"metadata": nested(17)}, "metadata", id="metadata-too-deep"),
        pytest.param({"id": "not-a-uuid"}, "id", id="id-not-a-uuid"),
        pytest.param({"colour": "red"}, "colour", id="unknown-extra-field"),
    ],
)
def test_an_invalid_field_raises_invalid_event_naming_that_field(
    fields: dict[str, Any], field: str
) -> None:
    error = refusal({"type": "order.placed", **fields})
    assert error.field == field
    assert f"field '{field}'" in str(error)


def test_invalid_event_is_an_event_center_error_and_a_value_error() -> None:
    error = refusal({"type": "a b"})
    assert isinstance(error, EventCenterError)
    assert isinstance(error, ValueError)


def test_create_raises_invalid_event_too() -> None:
    with pytest.raises(InvalidEvent) as caught:
        Event.create("order.placed", {"x": math.nan})
    assert caught.value.field == "payload"


def test_an_aware_non_utc_timestamp_is_converted_to_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    event = Event.create("order.placed", timestamp=datetime(2024, 5, 1, 14, 0, tzinfo=plus_two))
    assert event.timestamp == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert event.timestamp.tzinfo == UTC


def test_an_iso_timestamp_with_an_offset_is_parsed_and_converted_to_utc() -> None:
    event = Event.parse({"type": "order.placed", "timestamp": "2024-05-01T14:00:00+02:00"})
    assert event.timestamp == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert event.timestamp.utcoffset() == timedelta(0)


def test_a_reason_says_what_is_wrong() -> None:
    error = refusal({"type": "order.placed", "priority": "urgent"})
    assert "urgent" in error.reason
    assert "HIGH" in error.reason


def test_a_payload_nested_far_deeper_than_the_limit_is_rejected_as_invalid_event() -> None:
    deep: Any = []
    for _ in range(2_000):  # about 4 KB as JSON: well inside the byte limit
        deep = [deep]
    error = refusal({"type": "order.placed", "payload": {"deep": deep}})
    assert error.field == "payload"


# --- limits are configurable -------------------------------------------------------------------


def test_a_payload_passes_a_bigger_byte_limit_and_fails_a_smaller_one() -> None:
    data = {"type": "a", "payload": {"note": "x" * 100}}
    assert Event.parse(data, EnvelopeLimits(max_payload_bytes=200)).payload == data["payload"]
    error = refusal(data, EnvelopeLimits(max_payload_bytes=50))
    assert error.field == "payload"
    assert "50" in error.reason


def test_the_metadata_byte_limit_is_configurable() -> None:
    data = {"type": "a", "metadata": {"trace": "t" * 100}}
    assert Event.parse(data, EnvelopeLimits(max_metadata_bytes=200)).metadata == data["metadata"]
    assert refusal(data, EnvelopeLimits(max_metadata_bytes=50)).field == "metadata"


def test_the_depth_limit_counts_the_payload_itself_as_level_one() -> None:
    limits = EnvelopeLimits(max_depth=2)
    assert Event.parse({"type": "a", "payload": nested(2)}, limits).payload == nested(2)
    error = refusal({"type": "a", "payload": nested(3)}, limits)
    assert error.field == "payload"
    assert "2 levels" in error.reason


def test_the_type_length_limit_is_configurable() -> None:
    limits = EnvelopeLimits(max_type_length=5)
    assert Event.parse({"type": "a.b.c"}, limits).type == "a.b.c"
    error = refusal({"type": "a.b.cd"}, limits)
    assert error.field == "type"
    assert "limit is 5" in error.reason


def test_the_default_type_length_limit_is_128_characters() -> None:
    assert Event.create("t" * 128).type == "t" * 128
    assert refusal({"type": "t" * 129}).field == "type"


def test_the_name_length_limit_applies_to_tenant_and_source() -> None:
    limits = EnvelopeLimits(max_name_length=4)
    assert Event.parse({"type": "a", "tenant": "acme", "source": "shop"}, limits).tenant == "acme"
    assert refusal({"type": "a", "tenant": "acme2"}, limits).field == "tenant"
    assert refusal({"type": "a", "source": "shop2"}, limits).field == "source"


def test_create_takes_limits_too() -> None:
    with pytest.raises(InvalidEvent):
        Event.create("a", {"note": "x" * 100}, limits=EnvelopeLimits(max_payload_bytes=50))


@pytest.mark.parametrize(
    "bad",
    [
        {"max_type_length": 0},
        {"max_name_length": 0},
        {"max_payload_bytes": 1},
        {"max_depth": 0},
        {"max_depht": 3},
    ],
)
def test_limits_below_their_minimum_or_unknown_are_rejected(bad: dict[str, int]) -> None:
    with pytest.raises(ValidationError):
        EnvelopeLimits.model_validate(bad)


# --- priority ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_priority", "expected"),
    [
        (Priority.HIGH, Priority.HIGH),
        (0, Priority.CRITICAL),
        (3, Priority.LOW),
        ("high", Priority.HIGH),
        ("HIGH", Priority.HIGH),
        ("Critical", Priority.CRITICAL),
        (" low ", Priority.LOW),
    ],
)
def test_priority_is_accepted_as_enum_rank_or_case_insensitive_name(
    given_priority: Priority | int | str, expected: Priority
) -> None:
    assert Event.create("a", priority=given_priority).priority is expected
    assert Priority.parse(given_priority) is expected


def test_a_lower_priority_value_is_served_first() -> None:
    ranks = [Priority.CRITICAL, Priority.HIGH, Priority.NORMAL, Priority.LOW]
    assert sorted(reversed(ranks)) == ranks
    assert [p.value for p in ranks] == [0, 1, 2, 3]


def test_an_unknown_priority_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="CRITICAL, HIGH, NORMAL, LOW"):
        Priority.parse("urgent")


# --- round-trip and immutability ---------------------------------------------------------------


def test_to_dict_round_trips_through_parse_to_an_equal_event() -> None:
    event = Event.create(
        "deployment.changed",
        {"service": "orders", "replicas": [1, 2, {"zone": None}], "ok": True},
        source="ci",
        tenant="acme",
        priority="high",
        correlation_id="deploy-7",
        metadata={"trace": "abc"},
        timestamp=datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC),
    )
    assert Event.parse(event.to_dict()) == event


def test_to_dict_is_plain_json() -> None:
    event = Event.create("order.placed", {"n": 1})
    data = event.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["id"] == str(event.id)
    assert data["priority"] == Priority.NORMAL.value


def test_an_event_is_immutable() -> None:
    event = Event.create("order.placed")
    with pytest.raises(ValidationError, match="frozen"):
        event.type = "order.cancelled"  # type: ignore[misc]
    assert event.type == "order.placed"


# --- properties --------------------------------------------------------------------------------

#: Integers as JSON carries them between systems: at most 64 bits (orjson's range).
json_integers = st.integers(min_value=-(2**63), max_value=2**64 - 1)
json_floats = st.floats(allow_nan=False, allow_infinity=False)
json_scalars = st.none() | st.booleans() | json_integers | json_floats | st.text(max_size=12)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=25,
)
json_payloads = st.dictionaries(st.text(max_size=8), json_values, max_size=5)


@settings(deadline=None)
@given(payload=json_payloads)
def test_any_json_payload_within_the_limits_is_accepted_and_round_trips(
    payload: dict[str, Any],
) -> None:
    limits = EnvelopeLimits(
        max_payload_bytes=max(2, json_bytes(payload)), max_depth=nesting(payload)
    )
    event = Event.create("prop.checked", payload, limits=limits)
    assert event.payload == payload
    assert Event.parse(event.to_dict(), limits) == event


@settings(deadline=None)
@given(data=st.data(), inner=json_values, wrappers=st.lists(st.booleans(), min_size=1, max_size=12))
def test_any_payload_nested_deeper_than_max_depth_is_rejected_naming_the_payload(
    data: st.DataObject, inner: Any, wrappers: list[bool]
) -> None:
    value = inner
    for as_list in wrappers:
        value = [value] if as_list else {"k": value}
    payload = {"p": value}
    depth = nesting(payload)  # at least 2: the payload wraps at least one container
    max_depth = data.draw(st.integers(min_value=1, max_value=depth - 1), label="max_depth")
    limits = EnvelopeLimits(max_payload_bytes=ROOMY, max_depth=max_depth)
    error = refusal({"type": "prop.checked", "payload": payload}, limits)
    assert error.field == "payload"


# --- ids: any RFC 9562 UUID --------------------------------------------------------------------


def uuid_of(version: int, variant_bits: int = 0b10) -> UUID:
    """A UUID with the given version nibble and variant bits and arbitrary other bits."""
    value = 0x0123_4567_89AB_0DEF_0123_4567_89AB_CDEF
    value = (value & ~(0xF << 76)) | (version << 76)
    value = (value & ~(0b11 << 62)) | (variant_bits << 62)
    return UUID(int=value)


def uuid6_like() -> UUID:
    return uuid_of(6)


@pytest.mark.parametrize(
    "event_id",
    [
        pytest.param(uuid1(), id="uuid1"),
        pytest.param(uuid3(UUID(int=1), "x"), id="uuid3"),
        pytest.param(uuid4(), id="uuid4"),
        pytest.param(uuid5(UUID(int=1), "x"), id="uuid5"),
        pytest.param(uuid6_like(), id="uuid6"),
        pytest.param(Event.create("a").id, id="uuid7"),
        pytest.param(uuid_of(8), id="uuid8"),
    ],
)
def test_any_rfc_9562_uuid_is_accepted_as_id(event_id: UUID) -> None:
    assert Event.create("order.placed", id=event_id).id == event_id
    assert Event.parse({"type": "order.placed", "id": str(event_id)}).id == event_id


def test_a_uuid7_id_from_another_system_is_kept_with_its_correlation() -> None:
    incoming = "01890a5d-ac96-774b-bcce-b302099a8057"
    event = Event.parse({"type": "order.placed", "id": incoming})
    assert str(event.id) == incoming
    assert event.correlation_id == incoming


def test_the_nil_uuid_is_refused_with_a_clear_reason() -> None:
    error = refusal({"type": "order.placed", "id": "00000000-0000-0000-0000-000000000000"})
    assert error.field == "id"
    assert "nil UUID" in error.reason


@pytest.mark.parametrize(
    "event_id",
    [
        pytest.param(UUID(int=2**128 - 1), id="max-uuid"),
        pytest.param(uuid_of(4, variant_bits=0b00), id="ncs-variant"),
        pytest.param(uuid_of(4, variant_bits=0b11), id="microsoft-or-future-variant"),
        pytest.param(uuid_of(0), id="version-0"),
        pytest.param(uuid_of(9), id="version-9"),
        pytest.param(uuid_of(15), id="version-15"),
    ],
)
def test_uuids_outside_rfc_9562_versions_1_to_8_are_refused(event_id: UUID) -> None:
    error = refusal({"type": "order.placed", "id": str(event_id)})
    assert error.field == "id"
    assert "RFC 9562" in error.reason


@given(bits=st.integers(min_value=1, max_value=2**128 - 1))
def test_an_id_is_accepted_exactly_when_it_has_the_rfc_variant_and_a_version_1_to_8(
    bits: int,
) -> None:
    candidate = UUID(int=bits)
    expected = (bits >> 62) & 0b11 == 0b10 and 1 <= (bits >> 76) & 0xF <= 8
    result = outcome(lambda: Event.parse({"type": "a", "id": str(candidate)}))
    if expected:
        assert isinstance(result, Event)
        assert result.id == candidate
    else:
        assert isinstance(result, InvalidEvent)
        assert result.field == "id"


# --- names: safe in URLs and file names ------------------------------------------------------


@pytest.mark.parametrize("name", ["acme", "a.b", "svc@host", "urn:acme:eu", "A_b-9", "x"])
def test_names_of_letters_digits_and_safe_punctuation_are_accepted(name: str) -> None:
    event = Event.create("a", tenant=name, source=name)
    assert (event.tenant, event.source) == (name, name)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("acme/eu", id="slash"),
        pytest.param("acme\\eu", id="backslash"),
        pytest.param("..", id="dot-dot"),
        pytest.param("a..b", id="dot-dot-inside"),
        pytest.param(".hidden", id="leading-dot"),
        pytest.param(".", id="dot"),
        pytest.param("acme\n", id="trailing-newline"),
        pytest.param("acmé", id="non-ascii"),
        pytest.param("a b", id="space"),
        pytest.param("a?b", id="question-mark"),
    ],
)
@pytest.mark.parametrize("field", ["tenant", "source"])
def test_names_that_could_escape_a_path_or_url_segment_are_refused(field: str, name: str) -> None:
    error = refusal({"type": "a", field: name})
    assert error.field == field
    assert "letters, digits and _ . : @ -" in error.reason
    assert "'..'" in error.reason


def test_a_type_with_a_trailing_newline_is_refused() -> None:
    assert refusal({"type": "order.placed\n"}).field == "type"


# --- every string is bounded --------------------------------------------------------------------


def test_correlation_id_length_is_bounded_and_configurable() -> None:
    assert Event.create("a", correlation_id="c" * 128).correlation_id == "c" * 128
    error = refusal({"type": "a", "correlation_id": "c" * 129})
    assert error.field == "correlation_id"
    assert "128" in error.reason
    limits = EnvelopeLimits(max_correlation_id_length=40)
    assert refusal({"type": "a", "correlation_id": "c" * 41}, limits).field == "correlation_id"


def test_the_default_correlation_id_always_fits_the_smallest_limit() -> None:
    limits = EnvelopeLimits(max_correlation_id_length=36)
    event = Event.create("a", limits=limits)
    assert Event.parse(event.to_dict(), limits) == event
    with pytest.raises(ValidationError):
        EnvelopeLimits(max_correlation_id_length=35)


def test_version_is_one_to_max_version_length_characters() -> None:
    assert Event.create("a", version="2024-05.1").version == "2024-05.1"
    assert refusal({"type": "a", "version": ""}).field == "version"
    assert refusal({"type": "a", "version": "v" * 65}).field == "version"
    limits = EnvelopeLimits(max_version_length=3)
    assert Event.parse({"type": "a", "version": "1.2"}, limits).version == "1.2"
    assert refusal({"type": "a", "version": "1.2.3"}, limits).field == "version"


@pytest.mark.parametrize("text", ["a\nb", "a\x00b", "\x7f", "a\ud800"])
@pytest.mark.parametrize("field", ["correlation_id", "version"])
def test_control_characters_and_lone_surrogates_are_refused(field: str, text: str) -> None:
    error = refusal({"type": "a", field: text})
    assert error.field == field
    assert "control characters" in error.reason


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param({"max_depth": 129}, id="deeper-than-orjson-writes-with-the-envelope"),
        pytest.param({"max_version_length": 0}, id="version-of-no-character"),
        pytest.param({"max_batch_events": 0}, id="batch-of-no-event"),
        pytest.param({"max_body_bytes": 1}, id="body-shorter-than-any-json-object"),
    ],
)
def test_limits_outside_their_range_are_rejected(bad: dict[str, int]) -> None:
    with pytest.raises(ValidationError):
        EnvelopeLimits.model_validate(bad)


def test_the_deepest_allowed_limit_works_end_to_end() -> None:
    limits = EnvelopeLimits(max_depth=128, max_payload_bytes=ROOMY)
    event = Event.create("a", nested(128), limits=limits)
    assert Event.parse(json.loads(event.to_json()), limits) == event
    assert refusal({"type": "a", "payload": nested(129)}, limits).field == "payload"


# --- what "payload is JSON" means -----------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"n": {1: "one"}}, id="non-string-key-nested"),
        pytest.param({"n": 2**64}, id="integer-beyond-64-bits"),
        pytest.param({"n": -(2**63) - 1}, id="integer-below-64-bits"),
        pytest.param({"at": datetime(2024, 5, 1, tzinfo=UTC)}, id="datetime"),
        pytest.param({"n": [1.0, [math.nan]]}, id="nan-nested"),
        pytest.param({"n": {"m": -math.inf}}, id="minus-infinity-nested"),
        pytest.param({"n": (math.inf,)}, id="infinity-in-tuple"),
        pytest.param({"s": "\ud800"}, id="lone-surrogate"),
    ],
)
def test_values_that_are_not_json_are_refused(payload: dict[str, Any]) -> None:
    error = refusal({"type": "a", "payload": payload})
    assert error.field == "payload"
    assert "JSON" in error.reason


def test_a_cycle_is_refused_as_too_deep_not_a_crash() -> None:
    payload: dict[str, Any] = {}
    payload["self"] = payload
    assert refusal({"type": "a", "payload": payload}).field == "payload"


def test_nulls_without_nan_are_accepted() -> None:
    payload = {"a": None, "b": [None, 1.5, {"c": None}], "d": -0.0, "e": 1e308}
    assert Event.create("a", payload).payload == payload


def test_the_words_nan_and_infinity_in_strings_are_not_floats() -> None:
    payload = {"a": None, "b": "NaN", "c": ["-Infinity", {"Infinity": 2.5}]}
    assert Event.create("a", payload).payload == payload
    error = refusal({"type": "a", "payload": {**payload, "d": [math.nan]}})
    assert error.field == "payload"
    assert "NaN" in error.reason


def test_a_nan_among_values_orjson_writes_natively_is_found() -> None:
    payload = {"id": uuid4(), "p": Priority.HIGH, "n": None, "x": {"y": math.inf}}
    assert refusal({"type": "a", "payload": payload}).field == "payload"
    del payload["x"]
    assert Event.create("a", payload).payload == payload


def test_size_is_compact_utf8_json_bytes_exactly() -> None:
    payload = {"note": "é€😀", "n": [1, 2]}
    size = len(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode())
    assert Event.create("a", payload, limits=EnvelopeLimits(max_payload_bytes=size)).payload
    error = refusal({"type": "a", "payload": payload}, EnvelopeLimits(max_payload_bytes=size - 1))
    assert error.field == "payload"
    assert f"is {size} bytes" in error.reason


@pytest.mark.parametrize(
    ("payload", "depth"),
    [
        ({}, 1),
        ({"a": []}, 2),
        ({"a": [{}]}, 3),
        ({"a": "[[[[[[{{{{{{"}, 1),
        ({"a": '"[[[[', "b": "\\", "c": '\\"[{'}, 1),
        ({"a": [1, [2, [3]]], "b": {"c": {}}}, 4),
        ({"k[{": {"k}]": ["]]]]"]}}, 3),
    ],
)
def test_depth_counts_containers_not_brackets_inside_strings(
    payload: dict[str, Any], depth: int
) -> None:
    exact = EnvelopeLimits(max_depth=depth)
    assert Event.create("a", payload, limits=exact).payload == payload
    if depth > 1:
        shallower = EnvelopeLimits(max_depth=depth - 1)
        assert refusal({"type": "a", "payload": payload}, shallower).field == "payload"


#: Strings made of the characters that could fool a count of brackets in JSON text.
tricky_text = st.text(alphabet='[]{}":,\\/ \n\tab\u00e9\u2028\U0001f600', max_size=8)
tricky_values = st.recursive(
    st.none() | st.booleans() | json_integers | tricky_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(tricky_text, children, max_size=4)
    ),
    max_leaves=30,
)


@settings(deadline=None, max_examples=200)
@given(payload=st.dictionaries(tricky_text, tricky_values, max_size=4), data=st.data())
def test_depth_and_size_limits_are_exact_for_any_payload(
    payload: dict[str, Any], data: st.DataObject
) -> None:
    depth = nesting(payload)
    size = len(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode())
    max_depth = data.draw(st.integers(min_value=1, max_value=depth + 1), label="max_depth")
    max_bytes = data.draw(st.integers(min_value=max(2, size - 2), max_value=size + 2))
    limits = EnvelopeLimits(max_depth=max_depth, max_payload_bytes=max_bytes)
    result = outcome(lambda: Event.create("a", payload, limits=limits))
    if depth <= max_depth and size <= max_bytes:
        assert isinstance(result, Event)
        assert result.payload == payload
    else:
        assert isinstance(result, InvalidEvent)
        assert result.field == "payload"


#: Floats of every kind, and strings whose UTF-8 looks like a pickled infinity ("G", 0x7f, 0xf0).
float_values = st.recursive(
    st.none() | st.floats() | st.sampled_from(["G\x7f\U0001f600", "NaN", "null"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children),
    max_leaves=12,
)


def holds_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(holds_non_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(holds_non_finite(v) for v in value)
    return False


@settings(deadline=None)
@given(payload=st.dictionaries(st.text(max_size=4), float_values, max_size=4))
def test_a_payload_is_refused_exactly_when_it_holds_nan_or_infinity(
    payload: dict[str, Any],
) -> None:
    limits = EnvelopeLimits(max_payload_bytes=ROOMY, max_depth=64)
    result = outcome(lambda: Event.create("a", payload, limits=limits))
    if holds_non_finite(payload):
        assert isinstance(result, InvalidEvent)
        assert (result.field, result.reason) == (
            "payload",
            "must be JSON-serialisable: NaN and infinite floats are not JSON numbers",
        )
    else:
        assert isinstance(result, Event)


def test_the_id_as_text_is_not_a_field_of_the_envelope() -> None:
    """``id_text`` is cached beside the fields: dict(), to_json and copies see fields only."""
    event = Event.create("orders.created", {"n": 1})
    assert event.id_text == str(event.id)
    assert "id_text" not in dict(event)
    assert "_id_text" not in json.loads(event.to_json())
    assert Event.parse(dict(event)) == event
    assert event.fresh_copy().id_text == event.id_text
