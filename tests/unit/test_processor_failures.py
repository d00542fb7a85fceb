"""EventProcessor under failure: retries, dead letters, slow handlers, backpressure, shutdown.

Retries run on tiny back-off settings with a seeded jitter source, so they finish in
milliseconds; handlers are held and released with ``asyncio.Event``; ``join`` waits for the end.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import pytest

from eventcenter.domain.errors import (
    Backpressure,
    EventCenterError,
    PermanentFailure,
    ProcessorClosed,
    ShutdownInterrupted,
)
from eventcenter.domain.event import Event
from eventcenter.domain.failures import HandlerFailure
from eventcenter.handlers.builtin import LatencySpikeHandler
from eventcenter.handlers.config import ProcessorSettings
from eventcenter.handlers.context import Context
from eventcenter.handlers.memory import MemoryDeadLetters, MemoryDecisionLog
from eventcenter.handlers.processor import EventProcessor
from tests.unit.looping import GUARD_S, joined, until

FAST_RETRIES: dict[str, Any] = {"backoff_base": 0.001, "backoff_max": 0.002}


@dataclass
class Rig:
    processor: EventProcessor
    dead_letters: MemoryDeadLetters


Build = Callable[..., Awaitable[Rig]]


class Held:
    """A handler that records each event on entry, then waits until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        self.entered: list[Event] = []
        self.done: list[Event] = []

    async def __call__(self, event: Event, ctx: Context) -> None:
        self.entered.append(event)
        self.started.set()
        await self.release.wait()
        self.done.append(event)


class Record:
    """A handler that records what it handled."""

    def __init__(self) -> None:
        self.handled: list[Event] = []
        self.called = asyncio.Event()

    async def __call__(self, event: Event, ctx: Context) -> None:
        self.handled.append(event)
        self.called.set()


@pytest.fixture
async def build() -> AsyncIterator[Build]:
    """Builds started processors (fast retries, seeded jitter); stops each at teardown."""
    made: list[EventProcessor] = []

    async def make(*, dead_letters: Any = None, **settings: Any) -> Rig:
        letters = MemoryDeadLetters()
        processor = EventProcessor(
            ProcessorSettings(**{**FAST_RETRIES, **settings}),
            decisions=MemoryDecisionLog(),
            dead_letters=letters if dead_letters is None else dead_letters,
            rng=random.Random(7),
        )
        await processor.start()
        made.append(processor)
        return Rig(processor, letters)

    yield make
    for processor in made:
        await processor.stop(timeout=0)


# --- retries and dead letters --------------------------------------------------------------------


async def test_a_handler_failing_twice_then_succeeding_is_retried_and_not_dead_lettered(
    build: Build,
) -> None:
    rig = await build(max_attempts=5)
    attempts: list[int] = []

    @rig.processor.on("flaky.call")
    async def flaky(event: Event, ctx: Context) -> None:
        attempts.append(len(attempts) + 1)
        if len(attempts) <= 2:
            raise ConnectionError(f"attempt {len(attempts)} failed")

    await rig.processor.publish("flaky.call")
    await joined(rig.processor)

    assert attempts == [1, 2, 3]
    totals = rig.processor.snapshot().totals
    assert (totals["failed"], totals["retried"], totals["handled"]) == (2, 2, 1)
    assert totals["dead_lettered"] == 0
    assert rig.dead_letters.letters == []


async def test_a_handler_that_always_fails_is_dead_lettered_after_max_attempts(
    build: Build,
) -> None:
    rig = await build(max_attempts=3)
    calls = 0

    @rig.processor.on("broken.call", name="broken")
    async def broken(event: Event, ctx: Context) -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError(f"attempt {calls} failed")

    event_id = await rig.processor.publish("broken.call")
    await joined(rig.processor)

    [letter] = rig.dead_letters.letters
    assert str(letter.event.id) == event_id
    assert letter.subscription == "broken"
    assert letter.attempts == calls == 3
    assert isinstance(letter.error, ConnectionError)
    assert str(letter.error) == "attempt 3 failed"
    totals = rig.processor.snapshot().totals
    assert (totals["failed"], totals["retried"], totals["dead_lettered"]) == (3, 2, 1)
    assert totals["handled"] == 0


async def test_each_failed_attempt_is_reported_to_the_watcher_the_last_as_final(
    build: Build,
) -> None:
    rig = await build(max_attempts=3)
    seen: list[HandlerFailure] = []
    rig.processor.on_failure = seen.append

    @rig.processor.on("broken.call", name="broken")
    async def broken(event: Event, ctx: Context) -> None:
        raise ConnectionError("refused")

    @rig.processor.on("orders.created", name="orders")
    async def permanent(event: Event, ctx: Context) -> None:
        raise PermanentFailure("unknown warehouse")

    broken_id = await rig.processor.publish("broken.call", tenant="acme", correlation_id="c-9")
    await rig.processor.publish("orders.created")
    await joined(rig.processor)

    calls = [f for f in seen if f.subscription == "broken"]
    assert [(f.attempt, f.final) for f in calls] == [(1, False), (2, False), (3, True)]
    assert {(f.tenant, f.event_id, f.correlation_id, f.error_type, f.error) for f in calls} == {
        ("acme", broken_id, "c-9", "ConnectionError", "refused")
    }
    [orders] = [f for f in seen if f.subscription == "orders"]
    assert (orders.attempt, orders.final, orders.permanent) == (1, True, True)


async def test_a_watcher_that_raises_changes_nothing_for_the_delivery(build: Build) -> None:
    rig = await build(max_attempts=1)

    def broken_watcher(failure: HandlerFailure) -> None:
        raise RuntimeError("watcher bug")

    rig.processor.on_failure = broken_watcher

    @rig.processor.on("broken.call", name="broken")
    async def broken(event: Event, ctx: Context) -> None:
        raise ConnectionError("refused")

    await rig.processor.publish("broken.call")
    await joined(rig.processor)
    assert len(rig.dead_letters.letters) == 1


async def test_a_permanent_failure_is_dead_lettered_at_once(build: Build) -> None:
    rig = await build(max_attempts=5)

    @rig.processor.on("orders.created", name="orders")
    async def unknown_target(event: Event, ctx: Context) -> None:
        raise PermanentFailure("order references an unknown warehouse")

    await rig.processor.publish("orders.created")
    await joined(rig.processor)

    [letter] = rig.dead_letters.letters
    assert letter.attempts == 1
    assert isinstance(letter.error, PermanentFailure)
    assert rig.processor.snapshot().totals["retried"] == 0


async def test_a_bad_payload_for_a_built_in_handler_is_dead_lettered_at_once(
    build: Build,
) -> None:
    rig = await build(max_attempts=5)
    rig.processor.register(LatencySpikeHandler())

    await rig.processor.publish("latency.spike", {"service": "api", "observed_ms": "fast"})
    await joined(rig.processor)

    [letter] = rig.dead_letters.letters
    assert letter.subscription == "LatencySpikeHandler"
    assert letter.attempts == 1
    assert isinstance(letter.error, PermanentFailure)
    assert "payload field 'observed_ms'" in str(letter.error)
    assert rig.processor.snapshot().totals["retried"] == 0


class RefusingStore:
    """A dead-letter store whose backend is down."""

    async def add(
        self, event: Event, subscription: str, error: BaseException, attempts: int
    ) -> UUID:
        raise OSError("dead-letter table is unreachable")


async def test_a_failing_dead_letter_store_keeps_the_delivery_and_the_processor_goes_on(
    build: Build,
) -> None:
    rig = await build(dead_letters=RefusingStore())
    good = Record()
    rig.processor.subscribe("good.thing", good, name="good")

    @rig.processor.on("bad.thing", name="bad")
    async def bad(event: Event, ctx: Context) -> None:
        raise PermanentFailure("cannot handle this")

    bad_id = await rig.processor.publish("bad.thing")
    await joined(rig.processor)

    [(event, subscription, error)] = rig.processor.unrecorded_dead_letters()
    assert (str(event.id), subscription) == (bad_id, "bad")
    assert isinstance(error, PermanentFailure)

    good_id = await rig.processor.publish("good.thing")
    await joined(rig.processor)
    assert [str(e.id) for e in good.handled] == [good_id]

    report = await rig.processor.stop(timeout=0)
    assert report.unrecorded == 1
    assert not report.clean


# --- slow handlers and backpressure --------------------------------------------------------------


async def test_a_slow_subscription_does_not_block_the_others(build: Build) -> None:
    rig = await build(workers=4)
    slow = Held()
    rig.processor.subscribe("slow.job", slow, name="slow", max_in_flight=1)
    fast = Record()
    rig.processor.subscribe("fast.job", fast, name="fast")

    slow_ids = [await rig.processor.publish("slow.job", {"n": n}) for n in range(6)]
    await rig.processor.publish("fast.job")
    await asyncio.wait_for(fast.called.wait(), GUARD_S)

    assert len(slow.entered) == 1
    assert slow.done == []
    [info] = [s for s in rig.processor.subscriptions() if s["name"] == "slow"]
    assert (info["in_flight"], info["parked"]) == (1, 5)

    slow.release.set()
    await joined(rig.processor)

    assert [str(e.id) for e in slow.done] == slow_ids
    assert rig.processor.snapshot().totals["handled"] == 7


async def test_a_full_queue_with_no_publish_timeout_refuses_the_event_for_good(
    build: Build,
) -> None:
    rig = await build(max_queued=2, publish_timeout=0)
    held = Held()
    rig.processor.subscribe("jobs.run", held, name="jobs")

    first = await rig.processor.publish("jobs.run")
    second = await rig.processor.publish("jobs.run")
    with pytest.raises(Backpressure, match="queue full"):
        await rig.processor.publish("jobs.run")

    held.release.set()
    await joined(rig.processor)

    assert [str(e.id) for e in held.done] == [first, second]
    assert rig.processor.snapshot().totals["published"] == 2


async def test_a_publish_waits_for_space_when_publish_timeout_allows(build: Build) -> None:
    rig = await build(max_queued=1, publish_timeout=GUARD_S)
    held = Held()
    rig.processor.subscribe("jobs.run", held, name="jobs")

    first = await rig.processor.publish("jobs.run")
    waiting = asyncio.create_task(rig.processor.publish("jobs.run"))
    await until(lambda: len(held.entered) == 1)
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiting.done()

    held.release.set()
    second = await asyncio.wait_for(waiting, GUARD_S)
    await joined(rig.processor)

    assert [str(e.id) for e in held.done] == [first, second]


# --- shutdown ------------------------------------------------------------------------------------


async def test_stop_dead_letters_what_never_ran_and_reports_what_was_running(
    build: Build,
) -> None:
    rig = await build(workers=2)
    serial = Held()
    rig.processor.subscribe("serial.job", serial, name="serial", max_in_flight=1)
    other = Held()
    rig.processor.subscribe("other.job", other, name="other")
    queued = Record()
    rig.processor.subscribe("queued.job", queued, name="queued")

    running_1 = await rig.processor.publish("serial.job")
    parked = await rig.processor.publish("serial.job")  # the second worker parks it ...
    running_2 = await rig.processor.publish("other.job")  # ... then takes this one
    await asyncio.wait_for(other.started.wait(), GUARD_S)
    waiting = await rig.processor.publish("queued.job")  # no worker left for it
    assert rig.processor.queue_depths()["parked"] == 1

    report = await rig.processor.stop(timeout=0)

    # What never started is dead-lettered; what was running is cancelled and reported, never
    # dead-lettered as if it had not run.
    expected = {parked, waiting}
    assert set(report.dead_lettered) == expected
    assert set(report.interrupted) == {running_1, running_2}
    assert report.abandoned == []
    assert report.handled_while_stopping == 0
    assert not report.clean
    assert rig.processor.status == "stopped"
    assert {str(letter.event.id) for letter in rig.dead_letters.letters} == expected
    for letter in rig.dead_letters.letters:
        assert isinstance(letter.error, ShutdownInterrupted)
        assert letter.attempts == 1
    assert queued.handled == []


async def test_stop_with_nothing_pending_is_clean(build: Build) -> None:
    rig = await build()
    done = Record()
    rig.processor.subscribe("jobs.run", done, name="jobs")
    await rig.processor.publish("jobs.run")
    await joined(rig.processor)

    report = await rig.processor.stop(timeout=0)

    assert report.clean
    assert rig.dead_letters.letters == []


async def test_publish_after_stop_raises_processor_closed(build: Build) -> None:
    rig = await build()
    await rig.processor.stop()

    with pytest.raises(ProcessorClosed):
        await rig.processor.publish("jobs.run")
    with pytest.raises(ProcessorClosed):
        await rig.processor.start()


class StallingStore(MemoryDeadLetters):
    """Records dead letters, but the first write stalls (a slow database) until released."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.stalled = asyncio.Event()
        self.writes = 0

    async def add(
        self, event: Event, subscription: str, error: BaseException, attempts: int
    ) -> UUID:
        self.writes += 1
        if self.writes == 1:
            self.stalled.set()
            await self.release.wait()
        return await super().add(event, subscription, error, attempts)


async def test_stop_does_not_lose_a_delivery_whose_dead_letter_is_being_written(
    build: Build,
) -> None:
    store = StallingStore()
    rig = await build(dead_letters=store)

    @rig.processor.on("bad.thing", name="bad")
    async def bad(event: Event, ctx: Context) -> None:
        raise PermanentFailure("cannot handle this")

    event_id = await rig.processor.publish("bad.thing")
    await asyncio.wait_for(store.stalled.wait(), GUARD_S)

    report = await rig.processor.stop(timeout=0)

    kept = {str(letter.event.id) for letter in store.letters}
    kept |= {str(event.id) for event, _, _ in rig.processor.unrecorded_dead_letters()}
    kept |= set(report.dead_lettered)
    assert event_id in kept
    assert not report.clean


# --- publishing from other threads ---------------------------------------------------------------


async def test_publish_sync_from_another_thread_delivers_the_event(build: Build) -> None:
    rig = await build()
    done = Record()
    rig.processor.subscribe("jobs.run", done, name="jobs")
    event_id = uuid4()

    returned = await asyncio.to_thread(
        rig.processor.publish_sync, "jobs.run", {"n": 1}, tenant="acme", id=event_id
    )
    await joined(rig.processor)

    assert returned == str(event_id)
    [event] = done.handled
    assert (event.id, event.tenant, event.payload) == (event_id, "acme", {"n": 1})


async def test_publish_sync_from_the_loop_thread_raises_instead_of_deadlocking(
    build: Build,
) -> None:
    rig = await build()

    with pytest.raises(EventCenterError, match="own loop") as raised:
        rig.processor.publish_sync("jobs.run")

    assert not isinstance(raised.value, ProcessorClosed)
    assert rig.processor.snapshot().totals == {}
