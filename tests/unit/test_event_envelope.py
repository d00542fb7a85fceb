"""The event envelope: defaults, validation at the boundary, configurable limits, round-trips."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID, uuid1, uuid5

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


def refusal(data: dict[str, Any], limits: EnvelopeLimits = DEFAULTS) -> InvalidEvent:
    """The InvalidEvent raised for ``data`` (fails the test if the envelope is accepted)."""
    with pytest.raises(InvalidEvent) as caught:
        Event.parse(data, limits)
    return caught.value


# --- defaults ----------------------------------------------------------------------------------


def test_a_new_event_gets_a_uuid4_id() -> None:
    assert Event.create("order.placed").id.version == 4


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
        pytest.param({"id": str(uuid1())}, "id", id="id-uuid1"),
        pytest.param({"id": str(uuid5(UUID(int=0), "x"))}, "id", id="id-uuid5"),
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

json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=12)
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
