"""Handler timeouts, handlers that ignore cancellation, and what handlers can change.

Time is a fake clock: a hung handler times out when the test moves the clock and asks the
processor to check, not after a real wait.
"""

from __future__ import annotations

import asyncio
import copy
import random
from typing import Any

from eventcenter.domain.errors import HandlerTimeout
from eventcenter.domain.event import Event
from eventcenter.handlers.config import ProcessorSettings
from eventcenter.handlers.context import Context
from eventcenter.handlers.memory import MemoryDeadLetters, MemoryDecisionLog
from eventcenter.handlers.processor import EventProcessor
from tests.unit.looping import GUARD_S, joined, until


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def build(clock: FakeClock, **settings: Any) -> tuple[EventProcessor, MemoryDeadLetters]:
    letters = MemoryDeadLetters()
    base: dict[str, Any] = {
        "backoff_base": 0.001,
        "backoff_max": 0.002,
        "timeout_tick": 5.0,  # the watchdog stays out of the way: the test checks by hand
    }
    processor = EventProcessor(
        ProcessorSettings(**{**base, **settings}),
        decisions=MemoryDecisionLog(),
        dead_letters=letters,
        clock=clock,
        rng=random.Random(3),
    )
    return processor, letters


async def test_a_hung_handler_times_out_is_retried_then_dead_lettered_with_the_reason() -> None:
    clock = FakeClock()
    processor, letters = build(clock, handler_timeout=30.0, max_attempts=2)
    entered: list[int] = []
    other: list[str] = []

    @processor.on("jobs.hang", name="hang")
    async def hang(event: Event, ctx: Context) -> None:
        entered.append(1)
        await asyncio.Event().wait()

    @processor.on("jobs.other", name="other")
    async def fine(event: Event, ctx: Context) -> None:
        other.append(str(event.id))

    await processor.start()
    event_id = await processor.publish("jobs.hang")
    await until(lambda: len(entered) == 1)
    clock.now += 29.9
    assert processor.check_timeouts() == 0, "not yet past the deadline"
    await processor.publish("jobs.other")
    await until(lambda: len(other) == 1)  # a hung handler does not hold up the others
    clock.now += 0.2
    assert processor.check_timeouts() == 1
    await until(lambda: len(entered) == 2)  # retried
    clock.now += 31
    assert processor.check_timeouts() == 1
    await joined(processor)
    [letter] = letters.letters
    assert str(letter.event.id) == event_id
    assert isinstance(letter.error, HandlerTimeout)
    assert "ran longer than 30s" in str(letter.error)
    assert letter.attempts == 2
    await processor.stop(timeout=0)


async def test_stop_returns_within_its_bound_when_a_handler_ignores_cancellation() -> None:
    clock = FakeClock()
    processor, _ = build(clock, handler_timeout=None, shutdown_grace=0.05)
    entered = asyncio.Event()
    release = asyncio.Event()

    @processor.on("jobs.stubborn", name="stubborn")
    async def stubborn(event: Event, ctx: Context) -> None:
        entered.set()
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # ignores cancellation

    await processor.start()
    event_id = await processor.publish("jobs.stubborn")
    await asyncio.wait_for(entered.wait(), GUARD_S)
    report = await asyncio.wait_for(processor.stop(timeout=0), GUARD_S)
    assert report.abandoned == ["stubborn"]
    assert report.interrupted == [event_id]
    assert report.dead_lettered == [], "a delivery that ran is never dead-lettered as unrun"
    assert processor.status == "stopped"
    release.set()  # let the abandoned task end so the loop closes cleanly
    await asyncio.sleep(0)


async def test_a_handler_mutating_the_payload_changes_nothing_for_others() -> None:
    clock = FakeClock()
    processor, letters = build(clock, max_attempts=2)
    seen: list[dict[str, Any]] = []

    @processor.on("orders.created", name="vandal")
    async def vandal(event: Event, ctx: Context) -> None:
        seen.append({"vandal": copy.deepcopy(event.payload)})
        event.payload["items"].append("stolen")
        event.payload["total"] = 0
        event.metadata["tag"] = "changed"
        raise RuntimeError("and fail, to be retried")

    @processor.on("orders.created", name="reader")
    async def reader(event: Event, ctx: Context) -> None:
        seen.append({"reader": copy.deepcopy(event.payload), "metadata": dict(event.metadata)})

    original = {"items": ["book"], "total": 12}
    await processor.publish("orders.created", original, metadata={"tag": "original"})
    await joined(processor)
    assert original == {"items": ["book"], "total": 12}, "the caller's dict is untouched"
    vandal_views = [s["vandal"] for s in seen if "vandal" in s]
    assert vandal_views == [{"items": ["book"], "total": 12}] * 2, "each retry sees the original"
    [reader_view] = [s for s in seen if "reader" in s]
    assert reader_view["reader"] == {"items": ["book"], "total": 12}
    assert reader_view["metadata"] == {"tag": "original"}
    [letter] = letters.letters
    assert letter.event.payload == {"items": ["book"], "total": 12}, "the letter keeps the original"
    await processor.stop(timeout=0)
