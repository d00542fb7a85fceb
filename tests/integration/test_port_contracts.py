"""One suite per port, run against the in-memory fake and the real store (SQLite, PostgreSQL).

A fake that passes the same suite as the store is a fake tests can trust.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from eventcenter.domain.decisions import Decision, Transition
from eventcenter.domain.event import Event
from eventcenter.domain.ports import AdmissionRecord, DecisionLog, DeliveryStore, Target
from eventcenter.domain.priority import Priority
from eventcenter.domain.sources import Delivered, RejectedItem, SourceProgress
from eventcenter.handlers.memory import MemoryDecisionLog, MemoryDeliveryStore
from eventcenter.storage.application import CenterApplication
from eventcenter.storage.queue import DurableDeliveries
from eventcenter.storage.writer import StoreWriter


@dataclass
class Ports:
    deliveries: DeliveryStore
    decisions: DecisionLog
    recorded: Callable[[], list[str]]  # reasons of the decisions stored, in order
    letters: Callable[[], list[tuple[str, str, int]]]  # (event id, subscription, attempts)


pytestmark = pytest.mark.parametrize(
    "database_url",
    ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
    indirect=True,
)


@pytest.fixture
async def ports(database_url: str) -> AsyncIterator[Ports]:
    if database_url == "memory://":
        store = MemoryDeliveryStore()
        log = MemoryDecisionLog()
        yield Ports(
            store,
            log,
            lambda: [d.reason for d in log.decisions],
            lambda: [(str(x.event.id), x.subscription, x.attempts) for x in store.letters],
        )
        return
    app = CenterApplication(database_url)
    app.create_tables()
    writer = StoreWriter(app, "contract")
    await asyncio.to_thread(writer.open)

    def recorded() -> list[str]:
        events: list[Any] = [e for _, e in app.read_events()]
        return [e.reason for e in events if type(e).__name__ == "DecisionRecorded"]

    def letters() -> list[tuple[str, str, int]]:
        events: list[Any] = [e for _, e in app.read_events()]
        return [
            (e.envelope["id"], e.subscription, e.attempts)
            for e in events
            if type(e).__qualname__ == "DeadLetter.Recorded"
        ]

    yield Ports(DurableDeliveries(writer), writer, recorded, letters)
    await asyncio.to_thread(writer.close)
    app.close()


def record(
    n: int,
    subs: tuple[str, ...],
    *,
    seq: int,
    key: str | None = None,
    priority: Priority = Priority.NORMAL,
) -> AdmissionRecord:
    event = Event.create("orders.created", {"n": n}, priority=priority)
    targets = tuple(Target(seq + i, sub) for i, sub in enumerate(subs))
    return AdmissionRecord(event, event.model_dump_json(), targets, ident=key)


async def test_admitted_deliveries_are_summarised_and_read_back_in_order(ports: Ports) -> None:
    store = ports.deliveries
    assert await store.admit([record(1, ("a", "b"), seq=1), record(2, ("a",), seq=3)]) == [
        None,
        None,
    ]
    await store.admit([record(3, ("a",), seq=4, priority=Priority.HIGH)])
    await store.flush()
    counts, top = await store.summary()
    assert top == 4
    assert sorted((c.subscription, c.priority, c.count, c.first_seq) for c in counts) == [
        ("a", int(Priority.HIGH), 1, 4),
        ("a", int(Priority.NORMAL), 2, 1),
        ("b", int(Priority.NORMAL), 1, 2),
    ]
    rows = await store.load("a", int(Priority.NORMAL), 0, 10)
    assert [r.seq for r in rows] == [1, 3]
    assert [Event.model_validate_json(r.envelope).payload["n"] for r in rows] == [1, 2]
    assert [r.seq for r in await store.load("a", int(Priority.NORMAL), 1, 10)] == [3]
    assert [r.seq for r in await store.load("a", int(Priority.NORMAL), 0, 1)] == [1]


async def test_a_known_key_returns_the_first_event_and_stores_nothing(ports: Ports) -> None:
    store = ports.deliveries
    first = record(1, ("a",), seq=1, key="t\ns\nk")
    [none] = await store.admit([first])
    assert none is None
    again = record(2, ("a",), seq=2, key="t\ns\nk")
    twice = record(3, ("a",), seq=3, key="t\ns\nk2")
    same_batch = record(4, ("a",), seq=4, key="t\ns\nk2")
    assert await store.admit([again, twice, same_batch]) == [
        str(first.event.id),
        None,
        str(twice.event.id),
    ]
    await store.flush()
    counts, _ = await store.summary()
    assert [c.count for c in counts] == [2]


async def test_settled_and_dead_lettered_deliveries_leave_the_store(ports: Ports) -> None:
    store = ports.deliveries
    a, b, c = record(1, ("a",), seq=1), record(2, ("a",), seq=2), record(3, ("a",), seq=3)
    await store.admit([a, b, c])
    store.settle(1, None)
    store.record_attempts(3, 2)
    store.dead_letter(2, b.event.to_dict(), "a", RuntimeError("boom"), 4, None)
    await store.flush()
    rows = await store.load("a", int(Priority.NORMAL), 0, 10)
    assert [(r.seq, r.attempts) for r in rows] == [(3, 2)]
    assert ports.letters() == [(str(b.event.id), "a", 4)]


async def test_orphans_are_dead_lettered_in_batches(ports: Ports) -> None:
    store = ports.deliveries
    await store.admit([record(n, ("gone",), seq=n + 1) for n in range(5)])
    assert await store.dead_letter_orphans("gone", 3) == 3
    assert await store.dead_letter_orphans("gone", 3) == 2
    assert await store.dead_letter_orphans("gone", 3) == 0
    await store.flush()
    assert len(ports.letters()) == 5
    assert (await store.summary())[0] == []


async def test_a_decision_is_recorded_once_per_cause(ports: Ports) -> None:
    log = ports.decisions
    await log.record_transition(Transition("begin_adjustment", "stable", "adjusting", "r", "c"))
    await log.record_decision(Decision("k", "first", "c", cause="e/s/k/1"))
    await log.record_decision(Decision("k", "again", "c", cause="e/s/k/1"))
    await log.record_decision(Decision("k", "second", "c", cause="e/s/k/2"))
    await log.record_decision(Decision("k", "no cause", "c"))
    await log.record_decision(Decision("k", "no cause", "c"))
    await asyncio.gather(
        *(log.record_decision(Decision("k", "raced", "c", cause="e/s/k/3")) for _ in range(5))
    )
    assert ports.recorded() == ["first", "second", "no cause", "no cause", "raced"]


# a data source's progress, committed with its admission ----------------------------------------


def progress_for(
    records: list[AdmissionRecord], position: str | None, *, bad: int = 0
) -> SourceProgress:
    delivered = {
        str(r.event.id): (f"item-{i}", Delivered(f"v{i}", f"digest-{i}"))
        for i, r in enumerate(records)
    }
    rejected = tuple(
        RejectedItem(
            Event.create("source.item.rejected", {"raw": "{", "problem": "unparseable"}).to_dict(),
            "unparseable",
        )
        for _ in range(bad)
    )
    return SourceProgress("acme", "orders", "push", position, delivered, rejected)


async def test_source_progress_commits_position_items_and_rejects(ports: Ports) -> None:
    store = ports.deliveries
    assert await store.source_position("acme", "orders", "push") is None
    first = [record(1, ("s",), seq=1, key="item-0@v0"), record(2, ("s",), seq=2, key="item-1@v1")]
    assert await store.admit(first, progress_for(first, "10-0", bad=1)) == [None, None]
    assert await store.source_position("acme", "orders", "push") == "10-0"
    assert await store.source_position("acme", "orders", "poll") is None
    held = await store.source_delivered("acme", "orders")
    assert held == {"item-0": Delivered("v0", "digest-0"), "item-1": Delivered("v1", "digest-1")}
    await store.flush()
    assert [subscription for _, subscription, _ in ports.letters()] == ["source:acme/orders"]


async def test_a_repeated_item_moves_the_position_but_not_the_item_record(ports: Ports) -> None:
    store = ports.deliveries
    newer = [record(1, ("s",), seq=1, key="item-0@v2")]
    progress = SourceProgress(
        "acme", "orders", "push", "1", {str(newer[0].event.id): ("item-0", Delivered("v2", "d2"))}
    )
    await store.admit(newer, progress)
    late = [record(2, ("s",), seq=2, key="item-0@v2")]  # the same identity again, other content
    stale = SourceProgress(
        "acme", "orders", "poll", "c7", {str(late[0].event.id): ("item-0", Delivered("v2", "old"))}
    )
    earlier = await store.admit(late, stale)
    assert earlier == [str(newer[0].event.id)]
    assert await store.source_delivered("acme", "orders") == {"item-0": Delivered("v2", "d2")}
    assert await store.source_position("acme", "orders", "poll") == "c7"


async def test_progress_without_events_still_stores_the_position(ports: Ports) -> None:
    store = ports.deliveries
    await store.admit([], SourceProgress("acme", "orders", "poll", "cursor-9"))
    assert await store.source_position("acme", "orders", "poll") == "cursor-9"


async def test_many_items_of_one_admission_are_all_recorded(ports: Ports) -> None:
    """More items than one upsert statement carries (they are written in chunks)."""
    store = ports.deliveries
    records = [record(n, ("s",), seq=n + 1, key=f"item-{n}@v1") for n in range(1_200)]
    delivered = {
        str(r.event.id): (f"item-{n}", Delivered("v1", f"d{n}")) for n, r in enumerate(records)
    }
    await store.admit(records, SourceProgress("acme", "bulk", "poll", "c-1200", delivered))
    held = await store.source_delivered("acme", "bulk")
    assert len(held) == 1_200
    assert held["item-1199"] == Delivered("v1", "d1199")
