"""Stopping an engine works even when its path turns the cancellation into its own error.

Some client libraries (redis-py is one) catch a cancellation in the middle of a read and
raise their own timeout instead. An engine that took that for a path failure would back off
and retry for ever, and ``stop`` would never return.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from eventcenter.domain.sources import Received, SourceError, SourceErrorKind
from eventcenter.sources.clock import FakeClock
from eventcenter.sources.event_engine import EventEngine
from eventcenter.sources.polling_engine import PollingEngine
from tests.unit.source_fakes import SOURCE, TENANT, FixedJitter, MemorySink, Outcomes

GUARD_S = 2.0  # turns a hang into a failure; nothing waits on it otherwise


class SwallowingPath:
    """A push path whose read answers a cancellation with a timeout error."""

    describe = "swallowing path"

    def __init__(self) -> None:
        self.reading = asyncio.Event()

    async def open(self, position: str | None) -> None:
        return None

    async def receive(self, max_items: int, timeout: float) -> Sequence[Received]:
        self.reading.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise SourceError(SourceErrorKind.TIMEOUT, "Timeout reading (test)") from None
        return []

    async def ack(self, received: Sequence[Received]) -> None:
        return None

    async def aclose(self) -> None:
        return None


async def test_event_engine_stops_although_the_path_swallows_the_cancellation() -> None:
    path = SwallowingPath()
    engine = EventEngine(
        TENANT, SOURCE, path, MemorySink(), FakeClock(), Outcomes(), rng=FixedJitter()
    )
    engine.start()
    await asyncio.wait_for(path.reading.wait(), GUARD_S)
    await asyncio.wait_for(engine.stop(), GUARD_S)
    assert not engine.running


async def test_polling_engine_stops_although_the_poll_swallows_the_cancellation() -> None:
    polling = asyncio.Event()

    async def poll(cursor: str | None) -> tuple[Sequence[Received], str | None]:
        polling.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise SourceError(SourceErrorKind.CONNECTION, "reset (test)") from None
        return [], cursor

    engine = PollingEngine(
        TENANT,
        SOURCE,
        poll,
        MemorySink(),
        FakeClock(),
        Outcomes(),
        interval=60,
        min_interval=1,
        max_interval=600,
        rng=FixedJitter(),
    )
    engine.start()
    await asyncio.wait_for(polling.wait(), GUARD_S)
    await asyncio.wait_for(engine.stop(), GUARD_S)
    assert not engine.running
