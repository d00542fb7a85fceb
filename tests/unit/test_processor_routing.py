"""EventProcessor routing: patterns, filters, priority floors, pause, unsubscribe, dedupe, metrics.

Every test builds a fresh processor with in-memory ports; the ``build`` fixture stops it at
teardown. Waiting is done on the processor (``join``) or by letting the loop run a bounded
number of turns, never by sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from uuid import uuid4

import pytest

from eventcenter.domain.errors import InvalidBatch, SubscriptionError
from eventcenter.domain.event import Event
from eventcenter.domain.priority import Priority
from eventcenter.handlers.base import Handler
from eventcenter.handlers.config import ProcessorSettings
from eventcenter.handlers.context import Context
from eventcenter.handlers.memory import MemoryDeadLetters, MemoryDecisionLog
from eventcenter.handlers.processor import EventProcessor
from tests.unit.looping import joined, until

Build = Callable[..., Awaitable[EventProcessor]]


class Recorder:
    """An async handler that keeps the events it got; with a gate, it waits on it first."""

    def __init__(self, gate: asyncio.Event | None = None) -> None:
        self.gate = gate
        self.started = asyncio.Event()
        self.events: list[Event] = []

    async def __call__(self, event: Event, ctx: Context) -> None:
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        self.events.append(event)

    @property
    def types(self) -> list[str]:
        return [event.type for event in self.events]

    @property
    def numbers(self) -> list[int]:
        return [int(event.payload["n"]) for event in self.events]


@pytest.fixture
async def build() -> AsyncIterator[Build]:
    """Builds started processors with in-memory ports; stops every one at teardown."""
    made: list[EventProcessor] = []

    async def make(**settings: Any) -> EventProcessor:
        processor = EventProcessor(
            ProcessorSettings(**settings),
            decisions=MemoryDecisionLog(),
            dead_letters=MemoryDeadLetters(),
        )
        await processor.start()
        made.append(processor)
        return processor

    yield make
    for processor in made:
        await processor.stop(timeout=0)


@pytest.fixture
async def processor(build: Build) -> EventProcessor:
    return await build()


def parked(processor: EventProcessor) -> int:
    return int(processor.queue_depths()["parked"])


# --- patterns -----------------------------------------------------------------------------------


async def test_a_star_pattern_routes_exactly_one_segment_through_on(
    processor: EventProcessor,
) -> None:
    received: list[str] = []

    @processor.on("orders.*")
    async def orders(event: Event, ctx: Context) -> None:
        received.append(event.type)

    for type_ in ("orders.created", "orders", "orders.item.added", "billing.created"):
        await processor.publish(type_)
    await joined(processor)

    assert received == ["orders.created"]


async def test_a_hash_pattern_routes_any_number_of_segments_through_subscribe(
    processor: EventProcessor,
) -> None:
    recorder = Recorder()
    processor.subscribe("orders.#", recorder, name="orders")

    for type_ in ("orders", "orders.created", "orders.item.added", "billing.orders"):
        await processor.publish(type_)
    await joined(processor)

    assert sorted(recorder.types) == ["orders", "orders.created", "orders.item.added"]


async def test_register_subscribes_a_handler_class_by_its_patterns_and_accepts_hook(
    processor: EventProcessor,
) -> None:
    class AuditTrail(Handler):
        patterns = ("audit.#", "*.deleted")

        def __init__(self) -> None:
            self.types: list[str] = []

        def accepts(self, event: Event) -> bool:
            return event.tenant != "internal"

        async def handle(self, event: Event, ctx: Context) -> None:
            self.types.append(event.type)

    handler = AuditTrail()
    assert processor.register(handler) == "AuditTrail"

    await processor.publish("audit.login.failed")
    await processor.publish("orders.deleted")
    await processor.publish("orders.deleted", tenant="internal")
    await processor.publish("orders.created")
    await joined(processor)

    assert sorted(handler.types) == ["audit.login.failed", "orders.deleted"]


async def test_a_handler_whose_patterns_overlap_receives_a_matching_event_once(
    processor: EventProcessor,
) -> None:
    received: list[str] = []

    @processor.on("orders.*", "orders.created", "#", "*.created")
    async def everything(event: Event, ctx: Context) -> None:
        received.append(event.type)

    await processor.publish("orders.created")
    await joined(processor)

    assert received == ["orders.created"]
    assert processor.snapshot().totals["delivered"] == 1


# --- filters and priority floors ---------------------------------------------------------------


async def test_every_filter_must_accept_the_event(processor: EventProcessor) -> None:
    recorder = Recorder()
    processor.subscribe(
        "orders.*",
        recorder,
        name="acme-eu",
        filters=[lambda e: e.tenant == "acme", lambda e: e.payload.get("region") == "eu"],
    )

    await processor.publish("orders.created", {"n": 1, "region": "eu"}, tenant="acme")
    await processor.publish("orders.created", {"n": 2, "region": "us"}, tenant="acme")
    await processor.publish("orders.created", {"n": 3, "region": "eu"}, tenant="globex")
    await joined(processor)

    assert recorder.numbers == [1]
    assert processor.snapshot().totals["unrouted"] == 2


async def test_priority_min_high_receives_critical_and_high_only(
    processor: EventProcessor,
) -> None:
    recorder = Recorder()
    processor.subscribe("alerts.*", recorder, name="pager", priority_min="high")

    for priority in Priority:
        await processor.publish("alerts.raised", {"n": priority.value}, priority=priority)
    await joined(processor)

    assert sorted(event.priority for event in recorder.events) == [
        Priority.CRITICAL,
        Priority.HIGH,
    ]


async def test_an_event_no_subscription_wants_is_counted_as_unrouted_and_not_delivered(
    processor: EventProcessor,
) -> None:
    recorder = Recorder()
    processor.subscribe("orders.*", recorder, name="orders")

    await processor.publish("billing.paid")
    await joined(processor)

    assert recorder.events == []
    counts = processor.snapshot().by_type["billing.paid"]
    assert (counts["published"], counts["unrouted"], counts["delivered"]) == (1, 1, 0)


# --- pause, resume, unsubscribe ----------------------------------------------------------------


async def test_pause_holds_deliveries_and_resume_delivers_them_in_order(build: Build) -> None:
    processor = await build(workers=1)
    recorder = Recorder()
    processor.subscribe("jobs.run", recorder, name="jobs")

    processor.pause("jobs")
    for n in (1, 2, 3):
        await processor.publish("jobs.run", {"n": n})
    await until(lambda: parked(processor) == 3)

    assert recorder.events == []
    assert processor.queue_depths()["pending"] == 3

    processor.resume("jobs")
    await joined(processor)

    assert recorder.numbers == [1, 2, 3]


async def test_resume_keeps_publish_order_when_some_held_events_were_not_yet_parked(
    build: Build,
) -> None:
    processor = await build(workers=1)
    recorder = Recorder()
    processor.subscribe("jobs.run", recorder, name="jobs")

    processor.pause("jobs")
    await processor.publish("jobs.run", {"n": 1})
    await processor.publish("jobs.run", {"n": 2})
    await until(lambda: parked(processor) == 2)
    await processor.publish("jobs.run", {"n": 3})  # held too, but still in the scheduler
    processor.resume("jobs")
    await joined(processor)

    assert recorder.numbers == [1, 2, 3]


async def test_unsubscribe_discards_queued_deliveries_and_counts_them(build: Build) -> None:
    processor = await build(workers=1)
    gate = asyncio.Event()
    blocker = Recorder(gate)
    processor.subscribe("hold.worker", blocker, name="blocker")
    recorder = Recorder()
    processor.subscribe("jobs.run", recorder, name="jobs")

    await processor.publish("hold.worker")
    await blocker.started.wait()
    for n in (1, 2, 3):
        await processor.publish("jobs.run", {"n": n})  # queued behind the only worker
    processor.unsubscribe("jobs")
    gate.set()
    await joined(processor)

    assert recorder.events == []
    counts = processor.snapshot().by_type["jobs.run"]
    assert (counts["delivered"], counts["discarded"], counts["handled"]) == (3, 3, 0)

    await processor.publish("jobs.run", {"n": 4})
    await joined(processor)
    assert recorder.events == []
    assert processor.snapshot().by_type["jobs.run"]["unrouted"] == 1


async def test_unsubscribe_discards_parked_deliveries_at_once(build: Build) -> None:
    processor = await build()
    recorder = Recorder()
    processor.subscribe("jobs.run", recorder, name="jobs")
    processor.pause("jobs")
    for n in (1, 2):
        await processor.publish("jobs.run", {"n": n})
    await until(lambda: parked(processor) == 2)

    processor.unsubscribe("jobs")

    assert processor.queue_depths()["pending"] == 0
    assert processor.snapshot().totals["discarded"] == 2
    assert processor.subscriptions() == []
    with pytest.raises(SubscriptionError, match="no subscription 'jobs'"):
        processor.resume("jobs")


# --- subscribing mistakes ------------------------------------------------------------------------


async def test_a_non_async_handler_is_rejected_with_type_error(processor: EventProcessor) -> None:
    def blocking(event: Event, ctx: Context) -> None:
        return None

    with pytest.raises(TypeError, match="must be an async function"):
        processor.subscribe("orders.*", blocking)  # type: ignore[arg-type]
    assert processor.subscriptions() == []


async def test_a_duplicate_subscription_name_raises_subscription_error(
    processor: EventProcessor,
) -> None:
    processor.subscribe("orders.*", Recorder(), name="orders")

    with pytest.raises(SubscriptionError, match="'orders' already exists"):
        processor.subscribe("billing.*", Recorder(), name="orders")
    assert [info["name"] for info in processor.subscriptions()] == ["orders"]


# --- publishing ----------------------------------------------------------------------------------


async def test_publish_returns_the_id_of_the_delivered_event(processor: EventProcessor) -> None:
    recorder = Recorder()
    processor.subscribe("orders.*", recorder, name="orders")

    event_id = await processor.publish("orders.created")
    await joined(processor)

    assert [str(event.id) for event in recorder.events] == [event_id]


async def test_publish_batch_with_an_invalid_third_item_admits_nothing(
    processor: EventProcessor,
) -> None:
    recorder = Recorder()
    processor.subscribe("orders.*", recorder, name="orders")
    batch: list[dict[str, Any]] = [
        {"type": "orders.created", "payload": {"n": 1}},
        {"type": "orders.created", "payload": {"n": 2}},
        {"type": "orders created", "payload": {"n": 3}},
    ]

    with pytest.raises(InvalidBatch) as raised:
        await processor.publish_batch(batch)
    await joined(processor)

    assert raised.value.index == 2
    assert raised.value.field == "type"
    assert recorder.events == []
    assert processor.snapshot().totals == {}


async def test_a_valid_batch_is_delivered_and_returns_the_ids_in_order(
    processor: EventProcessor,
) -> None:
    recorder = Recorder()
    processor.subscribe("orders.*", recorder, name="orders")

    ids = await processor.publish_batch(
        [{"type": "orders.created", "payload": {"n": n}} for n in (1, 2, 3)]
    )
    await joined(processor)

    assert sorted(str(event.id) for event in recorder.events) == sorted(ids)
    assert len(set(ids)) == 3


async def test_publishing_the_same_id_twice_delivers_once_and_counts_a_duplicate(
    processor: EventProcessor,
) -> None:
    recorder = Recorder()
    processor.subscribe("orders.*", recorder, name="orders")
    event_id = uuid4()

    first = await processor.publish("orders.created", id=event_id)
    second = await processor.publish("orders.created", id=event_id)
    await joined(processor)

    assert first == second == str(event_id)
    assert len(recorder.events) == 1
    counts = processor.snapshot().by_type["orders.created"]
    assert (counts["published"], counts["duplicates"], counts["delivered"]) == (1, 1, 1)


async def test_with_dedupe_window_zero_the_same_id_is_delivered_twice(build: Build) -> None:
    processor = await build(dedupe_window=0)
    recorder = Recorder()
    processor.subscribe("orders.*", recorder, name="orders")
    event_id = uuid4()

    await processor.publish("orders.created", id=event_id)
    await processor.publish("orders.created", id=event_id)
    await joined(processor)

    assert [event.id for event in recorder.events] == [event_id, event_id]
    assert processor.snapshot().totals["duplicates"] == 0


# --- metrics -------------------------------------------------------------------------------------


async def test_metrics_snapshot_counts_add_up_per_type_tenant_and_priority(
    processor: EventProcessor,
) -> None:
    processor.subscribe("orders.*", Recorder(), name="orders")
    processor.subscribe("#", Recorder(), name="urgent", priority_min=Priority.HIGH)

    await processor.publish("orders.created", tenant="acme", priority="high")
    await processor.publish("orders.created", tenant="acme", priority="high")
    await processor.publish("orders.created", tenant="globex", priority="normal")
    await processor.publish("orders.cancelled", tenant="acme", priority="low")
    await processor.publish("billing.paid", tenant="acme", priority="normal")  # nobody wants it
    await joined(processor)
    snapshot = processor.snapshot()

    assert snapshot.totals["published"] == 5
    assert snapshot.totals["unrouted"] == 1
    assert snapshot.totals["delivered"] == snapshot.totals["handled"] == 6
    for breakdown in (snapshot.by_type, snapshot.by_tenant, snapshot.by_priority):
        for counter, total in snapshot.totals.items():
            assert sum(counts[counter] for counts in breakdown.values()) == total, counter

    assert snapshot.by_type["orders.created"]["delivered"] == 5
    assert snapshot.by_type["orders.cancelled"]["delivered"] == 1
    assert snapshot.by_type["billing.paid"]["unrouted"] == 1
    assert snapshot.by_tenant["acme"]["published"] == 4
    assert snapshot.by_tenant["globex"]["delivered"] == 1
    assert list(snapshot.by_priority) == ["HIGH", "NORMAL", "LOW"]
    assert snapshot.by_priority["HIGH"]["delivered"] == 4
    assert snapshot.by_priority["NORMAL"]["published"] == 2

    assert snapshot.queue["pending"] == snapshot.queue["queued"] == 0
    assert snapshot.dispatch_latency["count"] == 6
    assert {name: w["count"] for name, w in snapshot.handler_latency.items()} == {
        "orders": 4,
        "urgent": 2,
    }


async def test_a_raising_filter_dead_letters_the_delivery_and_keeps_the_batch(
    build: Build,
) -> None:
    processor = await build()
    recorder = Recorder()

    def broken(event: Event) -> bool:
        raise KeyError("region")

    processor.subscribe("jobs.run", recorder, name="picky", filters=[broken])
    processor.subscribe("jobs.run", Recorder(), name="plain")
    ids = await processor.publish_batch([{"type": "jobs.run"}, {"type": "jobs.run"}])
    await joined(processor)

    assert recorder.events == []
    snapshot = processor.snapshot()
    assert snapshot.totals["published"] == 2
    assert snapshot.totals["handled"] == 2, "the other subscription got both events"
    assert snapshot.totals["dead_lettered"] == 2
    assert snapshot.totals["retried"] == 0, "a filter error is permanent"
    assert len(ids) == 2
