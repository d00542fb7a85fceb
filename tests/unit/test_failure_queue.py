"""The failure queue: severity first, round-robin between tenants and sources, merging, and
what is dropped when full (counted, from the biggest contributor)."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventcenter.domain.rca import Component, Failure, Severity
from eventcenter.healing.failure_queue import FailureQueue

AT = 1_700_000_000.0


def failure(
    tenant: str = "acme",
    source: str | None = "orders",
    kind: str = "timeout",
    severity: Severity = Severity.MEDIUM,
    at: float = AT,
) -> Failure:
    return Failure(
        tenant, source, Component.SOURCE_PUSH, kind, f"{kind} at {at}", at, severity=severity
    )


def drain(queue: FailureQueue) -> list[Failure]:
    taken = []
    while (entry := queue.get_nowait()) is not None:
        taken.append(entry.failure)
    return taken


def test_higher_severity_first_then_oldest() -> None:
    queue = FailureQueue()
    queue.put(failure(kind="a", severity=Severity.LOW))
    queue.put(failure(kind="b", severity=Severity.CRITICAL))
    queue.put(failure(kind="c", severity=Severity.MEDIUM))
    queue.put(failure(kind="d", severity=Severity.CRITICAL))
    assert [f.kind for f in drain(queue)] == ["b", "d", "c", "a"]


def test_round_robin_between_tenants_then_between_their_sources() -> None:
    queue = FailureQueue()
    for n in range(3):
        queue.put(failure("acme", "orders", kind=f"o{n}"))
        queue.put(failure("acme", "stock", kind=f"s{n}"))
    queue.put(failure("beta", "feed", kind="b0"))
    queue.put(failure("beta", "feed", kind="b1"))
    taken = [(f.tenant, f.kind) for f in drain(queue)]
    assert taken == [
        ("acme", "o0"),
        ("beta", "b0"),
        ("acme", "s0"),
        ("beta", "b1"),
        ("acme", "o1"),
        ("acme", "s1"),
        ("acme", "o2"),
        ("acme", "s2"),
    ]


def test_a_like_failure_merges_into_the_queued_one() -> None:
    queue = FailureQueue()
    assert queue.put(failure(at=AT)) == "queued"
    assert queue.put(failure(at=AT + 1)) == "merged"
    assert queue.put(failure(at=AT + 2)) == "merged"
    assert queue.put(failure(kind="connection")) == "queued"
    assert len(queue) == 2
    entry = queue.get_nowait()
    assert entry is not None
    assert (entry.count, entry.first_at, entry.failure.at) == (3, AT, AT + 2)
    assert queue.stats.merged == 2


def test_when_full_the_biggest_contributor_loses_its_lowest_oldest_entry() -> None:
    queue = FailureQueue(capacity=4)
    queue.put(failure("acme", "flood", kind="a", severity=Severity.HIGH))
    queue.put(failure("acme", "flood", kind="b", severity=Severity.LOW))
    queue.put(failure("acme", "flood", kind="c", severity=Severity.LOW))
    queue.put(failure("beta", "quiet", kind="q", severity=Severity.LOW))
    assert queue.put(failure("gamma", "new", kind="n", severity=Severity.LOW)) == "evicted"
    assert queue.stats.dropped_by_key == Counter({("acme", "flood"): 1})
    assert sorted(f.kind for f in drain(queue)) == ["a", "c", "n", "q"]


def test_a_newcomer_of_the_biggest_contributor_below_all_its_entries_is_dropped() -> None:
    queue = FailureQueue(capacity=2)
    queue.put(failure(kind="a", severity=Severity.HIGH))
    queue.put(failure(kind="b", severity=Severity.HIGH))
    assert queue.put(failure(kind="c", severity=Severity.LOW)) == "dropped"
    assert queue.put(failure(kind="d", severity=Severity.HIGH)) == "evicted"
    assert [f.kind for f in drain(queue)] == ["b", "d"]
    assert (queue.stats.dropped, queue.stats.queued) == (2, 3)


def test_an_evicted_entry_counts_every_failure_merged_into_it() -> None:
    queue = FailureQueue(capacity=1)
    queue.put(failure(at=AT))
    queue.put(failure(at=AT + 1))
    queue.put(failure(kind="other", at=AT + 2))
    assert queue.stats.dropped == 2


async def test_get_waits_for_a_failure() -> None:
    queue = FailureQueue()
    waiting = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    assert not waiting.done()
    queue.put(failure())
    entry = await asyncio.wait_for(waiting, 1.0)
    assert entry.failure.kind == "timeout"


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        FailureQueue(capacity=0)


# invariants under any sequence -------------------------------------------------------------------

SOURCES = [("acme", "orders"), ("acme", "stock"), ("beta", "feed"), ("gamma", None)]

puts = st.tuples(
    st.sampled_from(SOURCES), st.sampled_from(["timeout", "connection", "auth"]), st.integers(1, 4)
)
operations = st.lists(st.one_of(puts, st.just("take")), max_size=120)


@settings(max_examples=150, deadline=None)
@given(operations, st.integers(1, 8))
def test_no_failure_is_lost_uncounted_and_the_bound_holds(ops: list[object], capacity: int) -> None:
    queue = FailureQueue(capacity=capacity)
    put = taken = 0
    for n, op in enumerate(ops):
        if op == "take":
            entry = queue.get_nowait()
            taken += entry.count if entry is not None else 0
        else:
            assert isinstance(op, tuple)
            (tenant, source), kind, severity = op
            queue.put(failure(tenant, source, kind, Severity(severity), AT + n))
            put += 1
        assert len(queue) <= capacity
        assert sum(queue.sizes().values()) == len(queue)
    left = 0
    while (entry := queue.get_nowait()) is not None:
        left += entry.count
    assert put == taken + left + queue.stats.dropped
    assert queue.stats.dropped == sum(queue.stats.dropped_by_key.values())


@settings(max_examples=100, deadline=None)
@given(
    st.integers(20, 300),
    st.integers(4, 40),
    st.sampled_from([Severity.LOW, Severity.MEDIUM]),
)
def test_a_flood_from_one_source_neither_evicts_nor_starves_another(
    flood: int, capacity: int, severity: Severity
) -> None:
    queue = FailureQueue(capacity=capacity)
    for n in range(flood // 2):
        queue.put(failure("acme", "flood", kind=f"k{n}", severity=severity, at=AT + n))
    queue.put(failure("beta", "quiet", kind="timeout", severity=severity, at=AT))
    for n in range(flood // 2, flood):
        queue.put(failure("acme", "flood", kind=f"k{n}", severity=severity, at=AT + n))

    assert ("beta", "quiet") not in queue.stats.dropped_by_key
    assert queue.stats.dropped == max(0, flood + 1 - capacity)
    first_two = [queue.get_nowait(), queue.get_nowait()]
    assert any(e is not None and e.failure.tenant == "beta" for e in first_two), (
        "the quiet tenant's failure is taken within one turn per tenant"
    )
