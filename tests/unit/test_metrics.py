"""Processor metrics: exact counts by name within the caps, '(other)' beyond, bounded memory."""

from __future__ import annotations

import gc
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventcenter.domain.priority import Priority
from eventcenter.handlers.config import ProcessorSettings
from eventcenter.handlers.memory import MemoryDeadLetters, MemoryDecisionLog
from eventcenter.handlers.metrics import COUNTERS, OTHER, ProcessorMetrics
from eventcenter.handlers.processor import EventProcessor
from tests.unit.looping import joined

CRITICAL, HIGH, NORMAL, LOW = Priority.CRITICAL, Priority.HIGH, Priority.NORMAL, Priority.LOW


def publish(metrics: ProcessorMetrics, type_: str, tenant: str, priority: Priority) -> None:
    metrics.counts(type_, tenant, priority).published += 1


def test_the_same_key_gets_the_same_counters() -> None:
    metrics = ProcessorMetrics()
    counts = metrics.counts("orders.created", "acme", HIGH)
    assert metrics.counts("orders.created", "acme", HIGH) is counts
    assert metrics.counts("orders.created", "acme", LOW) is not counts


def test_within_the_caps_everything_is_counted_by_name() -> None:
    metrics = ProcessorMetrics()
    publish(metrics, "orders.created", "acme", HIGH)
    publish(metrics, "orders.created", "globex", LOW)
    metrics.counts("orders.paid", "acme", HIGH).handled += 2
    snapshot = metrics.snapshot({})
    assert snapshot.totals == {**dict.fromkeys(COUNTERS, 0), "published": 2, "handled": 2}
    assert list(snapshot.by_type) == ["orders.created", "orders.paid"]
    assert snapshot.by_type["orders.created"]["published"] == 2
    assert list(snapshot.by_tenant) == ["acme", "globex"]
    assert snapshot.by_tenant["acme"]["handled"] == 2
    assert list(snapshot.by_priority) == ["HIGH", "LOW"]


def test_nothing_counted_gives_empty_breakdowns() -> None:
    snapshot = ProcessorMetrics().snapshot({"queued": 0})
    assert (snapshot.totals, snapshot.by_type, snapshot.by_tenant, snapshot.by_priority) == (
        {},
        {},
        {},
        {},
    )
    assert snapshot.queue == {"queued": 0}


def test_types_and_tenants_beyond_the_caps_are_counted_as_other() -> None:
    metrics = ProcessorMetrics(max_types=2, max_tenants=2)
    for tenant in ("a", "b", "c", "d"):
        for type_ in ("t1", "t2", "t3"):
            publish(metrics, type_, tenant, NORMAL)
    snapshot = metrics.snapshot({})
    assert snapshot.totals["published"] == 12  # totals stay exact
    assert {k: v["published"] for k, v in snapshot.by_tenant.items()} == {
        OTHER: 6,
        "a": 3,
        "b": 3,
    }
    # a known type is counted exactly, whichever tenant published it
    assert {k: v["published"] for k, v in snapshot.by_type.items()} == {
        OTHER: 4,
        "t1": 4,
        "t2": 4,
    }


def test_past_the_series_budget_a_known_type_stays_exact_and_the_tenant_becomes_other() -> None:
    metrics = ProcessorMetrics(max_types=10, max_tenants=10, max_series=3)
    for tenant in ("a", "b", "c", "d"):
        publish(metrics, "t1", tenant, NORMAL)
    publish(metrics, "t2", "a", NORMAL)
    publish(metrics, "t2", "a", NORMAL)
    snapshot = metrics.snapshot({})
    assert metrics.series_count() == 5  # 3 by name, then (t1, other) and (t2, other)
    assert {k: v["published"] for k, v in snapshot.by_type.items()} == {"t1": 4, "t2": 2}
    assert {k: v["published"] for k, v in snapshot.by_tenant.items()} == {
        OTHER: 3,
        "a": 1,
        "b": 1,
        "c": 1,
    }


@pytest.mark.parametrize("cap", ["max_types", "max_tenants", "max_series"])
def test_a_cap_below_one_is_refused(cap: str) -> None:
    with pytest.raises(ValueError, match=f"{cap} must be at least 1"):
        ProcessorMetrics(**{cap: 0})


@settings(max_examples=50)
@given(
    st.integers(1, 4),
    st.integers(1, 4),
    st.integers(1, 12),
    st.lists(
        st.tuples(
            st.sampled_from(["t1", "t2", "t3", "t4", "t5", "t6"]),
            st.sampled_from(["a", "b", "c", "d", "e", "f"]),
            st.sampled_from(list(Priority)),
        ),
        max_size=60,
    ),
)
def test_every_count_lands_in_exactly_one_label_of_each_breakdown(
    max_types: int,
    max_tenants: int,
    max_series: int,
    events: list[tuple[str, str, Priority]],
) -> None:
    metrics = ProcessorMetrics(max_types=max_types, max_tenants=max_tenants, max_series=max_series)
    for type_, tenant, priority in events:
        publish(metrics, type_, tenant, priority)
    snapshot = metrics.snapshot({})
    total = len(events)
    assert snapshot.totals.get("published", 0) == total
    for breakdown in (snapshot.by_type, snapshot.by_tenant, snapshot.by_priority):
        assert sum(counts["published"] for counts in breakdown.values()) == total
    assert len(snapshot.by_type) <= max_types + 1
    assert len(snapshot.by_tenant) <= max_tenants + 1
    assert metrics.series_count() <= max_series + 4 * (max_types + 1)
    known_types = {type_ for type_ in snapshot.by_type if type_ != OTHER}
    for type_ in known_types:  # a type counted by name is counted exactly
        assert snapshot.by_type[type_]["published"] == [e[0] for e in events].count(type_)
    for priority in Priority:
        expected = [e[2] for e in events].count(priority)
        assert snapshot.by_priority.get(priority.name, {}).get("published", 0) == expected


def stream(metrics: ProcessorMetrics, start: int, stop: int) -> None:
    """Event ``i`` comes from its own tenant, with one of 50,000 types, at one of 4 priorities."""
    priorities = list(Priority)
    for index in range(start, stop):
        counts = metrics.counts(f"type-{index % 50_000}", f"tenant-{index}", priorities[index % 4])
        counts.published += 1
        counts.handled += 1


def test_200000_tenants_and_50000_types_keep_memory_at_what_the_caps_allow() -> None:
    gc.collect()
    tracemalloc.start()
    try:
        metrics = ProcessorMetrics()  # 1,000 types, 1,000 tenants, 10,000 series
        stream(metrics, 0, 5_000)  # both caps reached
        gc.collect()
        at_cap = tracemalloc.get_traced_memory()[0]
        series_at_cap = metrics.series_count()
        stream(metrics, 5_000, 200_000)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()

    snapshot = metrics.snapshot({})
    assert snapshot.totals["published"] == 200_000
    assert len(snapshot.by_tenant) == 1_001  # 1,000 by name and OTHER
    assert len(snapshot.by_type) == 1_001
    assert snapshot.by_tenant[OTHER]["published"] == 199_000
    # The series that can still appear after the caps are reached: a known type from an
    # unknown tenant, one per (known type, priority); here each known type comes at one priority.
    assert series_at_cap == 1_000 + 4  # (type-i, tenant-i) and (OTHER, OTHER) at 4 priorities
    assert metrics.series_count() == series_at_cap + 1_000
    # 195,000 more tenants cost about the 1,000 series above (a few hundred bytes each), not the
    # ~600 bytes per tenant that one counter object per (type, tenant, priority) cost.
    assert after - at_cap < 1_000 * 600
    assert (after - at_cap) / 195_000 < 4


async def test_the_processor_counts_tenants_beyond_its_setting_as_other() -> None:
    processor = EventProcessor(
        ProcessorSettings(metrics_max_tenants=2, metrics_max_types=1),
        decisions=MemoryDecisionLog(),
        dead_letters=MemoryDeadLetters(),
    )
    async with processor:
        for tenant in ("acme", "globex", "initech", "umbrella"):
            await processor.publish("orders.created", tenant=tenant)
            await processor.publish("orders.paid", tenant=tenant)
        await joined(processor)
    snapshot = processor.snapshot()
    assert {k: v["published"] for k, v in snapshot.by_tenant.items()} == {
        OTHER: 4,
        "acme": 2,
        "globex": 2,
    }
    assert {k: v["unrouted"] for k, v in snapshot.by_type.items()} == {
        OTHER: 4,
        "orders.created": 4,
    }
