"""EventProcessor scheduling end to end: priority order, tenant round-robin, and ageing.

One worker and a first handler held on an ``asyncio.Event`` let the queue fill up before
anything else is handled, so the order in which the rest comes out is the scheduler's alone.
Ageing runs on a fake clock that the handlers advance: no test reads or waits on real time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from eventcenter.domain.event import Event
from eventcenter.handlers.config import ProcessorSettings
from eventcenter.handlers.context import Context
from eventcenter.handlers.memory import MemoryDeadLetters, MemoryDecisionLog
from eventcenter.handlers.processor import EventProcessor
from tests.unit.looping import GUARD_S

Build = Callable[..., Awaitable[EventProcessor]]


class FakeClock:
    """Monotonic seconds that move only when the test (or a handler) says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Gate:
    """A handler that signals it started, then holds its worker until released."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.released = asyncio.Event()

    async def __call__(self, event: Event, ctx: Context) -> None:
        self.started.set()
        await self.released.wait()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def build(clock: FakeClock) -> AsyncIterator[Build]:
    """Builds started one-worker processors on the fake clock; stops each at teardown."""
    made: list[EventProcessor] = []

    async def make(**settings: Any) -> EventProcessor:
        processor = EventProcessor(
            ProcessorSettings(workers=1, **settings),
            decisions=MemoryDecisionLog(),
            dead_letters=MemoryDeadLetters(),
            clock=clock,
        )
        await processor.start()
        made.append(processor)
        return processor

    yield make
    for processor in made:
        await processor.stop(timeout=0)


async def hold_the_worker(processor: EventProcessor) -> Gate:
    """Occupy the only worker, so that what is published next waits in the scheduler."""
    gate = Gate()
    processor.subscribe("hold.worker", gate, name="gate")
    await processor.publish("hold.worker", priority="critical")
    await asyncio.wait_for(gate.started.wait(), GUARD_S)
    return gate


async def test_queued_events_are_handled_by_priority_then_tenant_round_robin(
    build: Build,
) -> None:
    processor = await build(max_wait_high=None, max_wait_normal=None, max_wait_low=None)
    handled: list[str] = []

    @processor.on("work.*")
    async def work(event: Event, ctx: Context) -> None:
        handled.append(str(event.payload["label"]))

    gate = await hold_the_worker(processor)
    arrivals = [
        ("LOW", "acme", 1),
        ("NORMAL", "acme", 1),
        ("HIGH", "acme", 1),
        ("CRITICAL", "acme", 1),
        ("LOW", "globex", 1),
        ("NORMAL", "acme", 2),
        ("NORMAL", "globex", 1),
        ("HIGH", "globex", 1),
        ("CRITICAL", "initech", 1),
        ("NORMAL", "acme", 3),
        ("CRITICAL", "acme", 2),
        ("NORMAL", "initech", 1),
        ("HIGH", "acme", 2),
    ]
    for priority, tenant, n in arrivals:
        label = f"{priority}/{tenant}/{n}"
        await processor.publish("work.item", {"label": label}, tenant=tenant, priority=priority)
    assert handled == []

    gate.released.set()
    await asyncio.wait_for(processor.join(), GUARD_S)

    assert handled == [
        "CRITICAL/acme/1",
        "CRITICAL/initech/1",
        "CRITICAL/acme/2",
        "HIGH/acme/1",
        "HIGH/globex/1",
        "HIGH/acme/2",
        "NORMAL/acme/1",
        "NORMAL/globex/1",
        "NORMAL/initech/1",
        "NORMAL/acme/2",
        "NORMAL/acme/3",
        "LOW/acme/1",
        "LOW/globex/1",
    ]


STEP_S = 0.25  # each HIGH event "takes" this long on the fake clock (exact in binary)
FLOOD = 12


@pytest.mark.parametrize(
    ("max_wait_low", "low_handled_at"),
    [
        pytest.param(1.0, 4, id="aged-after-max_wait_low"),
        pytest.param(None, FLOOD, id="never-aged-waits-for-the-whole-flood"),
    ],
)
async def test_a_low_event_published_before_a_high_flood_is_handled_once_it_is_overdue(
    build: Build, clock: FakeClock, max_wait_low: float | None, low_handled_at: int
) -> None:
    processor = await build(max_wait_high=None, max_wait_normal=None, max_wait_low=max_wait_low)
    handled: list[str] = []

    @processor.on("job.*")
    async def job(event: Event, ctx: Context) -> None:
        handled.append(event.type)
        clock.advance(STEP_S)

    gate = await hold_the_worker(processor)
    await processor.publish("job.low", priority="low")
    for _ in range(FLOOD):
        await processor.publish("job.high", priority="high")
    gate.released.set()
    await asyncio.wait_for(processor.join(), GUARD_S)

    # After four HIGH events the clock reads 1.0 = the LOW event's deadline: it goes next.
    assert handled.index("job.low") == low_handled_at
    assert handled.count("job.high") == FLOOD
