"""Memory is a cache: the processor's durable paths on the in-memory delivery store.

The in-memory store passes the same contract suite as the real one
(tests/integration/test_port_contracts.py), so these tests exercise spilling, reading back
and recovery without a database.
"""

from __future__ import annotations

import asyncio
import random
from functools import partial
from typing import Any

import pytest

from eventcenter.domain.errors import Backpressure
from eventcenter.domain.event import Event
from eventcenter.domain.priority import Priority
from eventcenter.handlers.config import ProcessorSettings
from eventcenter.handlers.context import Context
from eventcenter.handlers.memory import MemoryDeadLetters, MemoryDecisionLog, MemoryDeliveryStore
from eventcenter.handlers.processor import EventProcessor
from tests.unit.looping import GUARD_S, until


def durable(store: MemoryDeliveryStore, **settings: Any) -> EventProcessor:
    return EventProcessor(
        ProcessorSettings(**{"backoff_base": 0.001, "backoff_max": 0.002, **settings}),
        decisions=MemoryDecisionLog(),
        dead_letters=MemoryDeadLetters(),  # unused: with a store, letters go to the store
        store=store,
        rng=random.Random(5),
    )


async def test_a_lagging_backlog_waits_in_the_store_and_comes_back_priority_first() -> None:
    store = MemoryDeliveryStore()
    processor = durable(store, memory_window=2)
    gate = asyncio.Event()
    order: list[str] = []

    @processor.on("jobs.#", name="slow", max_in_flight=1)
    async def slow(event: Event, ctx: Context) -> None:
        await gate.wait()
        order.append(event.payload["name"])

    await processor.start()
    for n in range(6):
        await processor.publish("jobs.run", {"name": f"low-{n}"}, priority=Priority.LOW)
    for n in range(2):
        await processor.publish("jobs.run", {"name": f"crit-{n}"}, priority=Priority.CRITICAL)
    [info] = processor.subscriptions()
    assert info["buffered"] == 2, "memory holds the window, no more"
    assert info["backlog"] == 8
    assert len(store.rows) == 8, "every accepted delivery is in the store"
    gate.set()
    await asyncio.wait_for(processor.join(), GUARD_S)
    assert sorted(order) == sorted([f"low-{n}" for n in range(6)] + ["crit-0", "crit-1"])
    assert order.index("crit-0") < order.index("low-2"), "the stored backlog: priority first"
    assert order.index("crit-1") < order.index("low-2")
    assert [name for name in order if name.startswith("low")] == [f"low-{n}" for n in range(6)]
    assert store.rows == {}, "every delivery ended in the store"
    await processor.stop(timeout=0)


async def test_backpressure_names_the_lagging_subscription_and_spares_the_others() -> None:
    store = MemoryDeliveryStore()
    processor = durable(store, memory_window=2, max_backlog=3, publish_timeout=0)
    gate = asyncio.Event()
    handled: list[str] = []

    @processor.on("slow.#", name="slow")
    async def slow(event: Event, ctx: Context) -> None:
        await gate.wait()

    @processor.on("fast.#", name="fast")
    async def fast(event: Event, ctx: Context) -> None:
        handled.append(str(event.id))

    await processor.start()
    for _ in range(3):
        await processor.publish("slow.job")
    with pytest.raises(Backpressure, match="'slow' is lagging: 3 deliveries"):
        await processor.publish("slow.job")
    for n in range(1, 11):  # another subscription is not held up by the lagging one
        await processor.publish("fast.job")
        await until(partial(_has, handled, n))
    gate.set()
    await asyncio.wait_for(processor.join(), GUARD_S)
    await processor.stop(timeout=0)


def _has(items: list[str], n: int) -> bool:
    return len(items) == n


async def test_work_found_in_the_store_at_start_runs_and_orphans_become_dead_letters() -> None:
    store = MemoryDeliveryStore()
    first = durable(store)
    gate = asyncio.Event()

    @first.on("jobs.#", name="jobs")
    async def stuck(event: Event, ctx: Context) -> None:
        await gate.wait()

    @first.on("jobs.#", name="retired")
    async def retired(event: Event, ctx: Context) -> None:
        await gate.wait()

    await first.start()
    ids = [await first.publish("jobs.run", {"n": n}) for n in range(3)]
    report = await first.stop(timeout=0)
    assert report.left_in_store >= 0
    assert len(store.rows) == 6, "nothing ended: every delivery is still stored"

    second = durable(store)
    handled: list[str] = []

    @second.on("jobs.#", name="jobs")
    async def fine(event: Event, ctx: Context) -> None:
        handled.append(str(event.id))

    await second.start()
    await asyncio.wait_for(second.join(), GUARD_S)
    assert sorted(handled) == sorted(ids)
    assert second.queue_depths()["redelivered_at_start"] == 3
    assert sorted(str(x.event.id) for x in store.letters) == sorted(ids)
    assert {x.subscription for x in store.letters} == {"retired"}
    assert store.rows == {}
    await second.stop(timeout=0)


async def test_an_event_nobody_listens_to_keeps_its_key_but_stores_no_delivery() -> None:
    store = MemoryDeliveryStore()
    processor = durable(store)
    await processor.start()
    first = await processor.publish("nobody.listens", key="k-1")
    again = await processor.publish("nobody.listens", key="k-1")
    other = await processor.publish("nobody.listens")
    assert again == first
    assert other != first
    assert store.rows == {}
    assert list(store.idents.values()) == [first]
    assert processor.snapshot().totals["unrouted"] == 2
    assert processor.snapshot().totals["duplicates"] == 1
    await processor.stop(timeout=0)
