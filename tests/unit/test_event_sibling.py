"""Event.sibling: a batch's events after the first, checked like Event.create checks them."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventcenter.domain.errors import InvalidEvent
from eventcenter.domain.event import EnvelopeLimits, Event
from eventcenter.domain.priority import Priority

SMALL = EnvelopeLimits(max_payload_bytes=120, max_metadata_bytes=80, max_depth=4)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
objects = st.dictionaries(st.text(max_size=8), json_values, max_size=4)


def outcome(build: Any) -> tuple[str, Any]:
    try:
        event = build()
    except InvalidEvent as error:
        return "refused", error.field
    return "accepted", (event.payload, event.metadata)


def prototype(**fields: Any) -> Event:
    return Event.create("source.item.changed", {"k": 1}, tenant="acme", source="orders", **fields)


@settings(max_examples=300, deadline=None)
@given(payload=objects, metadata=objects)
def test_sibling_accepts_and_refuses_exactly_what_create_does(
    payload: dict[str, Any], metadata: dict[str, Any]
) -> None:
    like = prototype()

    def created() -> Event:
        return Event.create(
            like.type,
            dict(payload),
            tenant="acme",
            source="orders",
            metadata=dict(metadata),
            limits=SMALL,
        )

    assert outcome(lambda: like.sibling(dict(payload), dict(metadata), SMALL)) == outcome(created)


def test_a_sibling_shares_type_tenant_source_priority_and_version_and_gets_its_own_id() -> None:
    like = prototype(priority=Priority.HIGH)
    event = like.sibling({"k": 2}, {"path": "push"})
    assert (event.type, event.tenant, event.source, event.priority, event.version) == (
        like.type,
        like.tenant,
        like.source,
        like.priority,
        like.version,
    )
    assert event.id != like.id
    assert event.id.version == 7
    assert event.id > like.id
    assert event.timestamp >= like.timestamp
    assert event.correlation_id == event.id_text == str(event.id)


def test_an_explicit_correlation_id_is_shared_with_the_siblings() -> None:
    assert prototype(correlation_id="deploy-7").sibling({}, {}).correlation_id == "deploy-7"


def test_a_sibling_is_the_event_parse_would_build_from_its_own_json() -> None:
    event = prototype().sibling({"k": 2, "data": {"x": [1, 2.5, "é"]}}, {"position": "1-0"})
    assert Event.parse(event.to_dict()) == event
    assert dict(event).keys() == dict(prototype()).keys()


@pytest.mark.parametrize(
    ("payload", "metadata", "field"),
    [
        ({"v": math.nan}, {}, "payload"),
        ({"v": "x" * 200}, {}, "payload"),
        ({}, {"v": {"a": {"b": {"c": {"d": {}}}}}}, "metadata"),
        ({"v": object()}, {}, "payload"),
        ([1], {}, "payload"),
    ],
)
def test_content_create_would_refuse_is_refused_naming_the_field(
    payload: Any, metadata: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidEvent) as refused:
        prototype().sibling(payload, metadata, SMALL)
    assert refused.value.field == field
