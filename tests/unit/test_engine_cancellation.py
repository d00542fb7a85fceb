"""Stopping an engine works even when its path turns the cancellation into its own error, or
swallows it and returns as if nothing happened.

Some client libraries (redis-py is one) catch a cancellation in the middle of a read and
raise their own timeout instead. An engine that took that for a path failure would back off
and retry for ever, and ``stop`` would never return. redis-py 8 also lets a command cancelled
while it hands its connection back return its answer normally: an engine that went on to its
next call would wait out a whole receive timeout (or a polling interval) before stopping.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import pytest

from eventcenter.domain.sources import Received, SourceError, SourceErrorKind, SourceItem
from eventcenter.sources.clock import FakeClock
from eventcenter.sources.event_engine import EventEngine
from eventcenter.sources.polling_engine import PollingEngine
from eventcenter.sources.reconciler import Reconciler
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


class QuietlySwallowingPath:
    """A push path that answers a cancellation by returning as if nothing happened (redis-py 8
    does this when the cancellation hits while it hands its connection back): in ``receive``
    (``where="receive"``) or in ``ack`` (``where="ack"``)."""

    describe = "quietly swallowing path"

    def __init__(self, where: str) -> None:
        self.where = where
        self.waiting = asyncio.Event()
        self.handed_out = False
        self.swallowed = False

    async def open(self, position: str | None) -> None:
        return None

    async def receive(self, max_items: int, timeout: float) -> Sequence[Received]:
        if self.where == "ack" and not self.handed_out:
            self.handed_out = True
            return [Received(position="1", item=SourceItem("k", "1"))]
        await self._swallow()
        return []

    async def ack(self, received: Sequence[Received]) -> None:
        if self.where == "ack":
            await self._swallow()

    async def _swallow(self) -> None:
        """Wait for ever; the first cancellation is swallowed (later ones go through, so a
        broken engine fails the test instead of hanging it)."""
        self.waiting.set()
        if self.swallowed:
            await asyncio.Event().wait()
        self.swallowed = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()

    async def aclose(self) -> None:
        return None


@pytest.mark.parametrize("where", ["receive", "ack"])
async def test_event_engine_stops_although_the_path_returns_as_if_not_cancelled(
    where: str,
) -> None:
    path = QuietlySwallowingPath(where)
    engine = EventEngine(
        TENANT, SOURCE, path, MemorySink(), FakeClock(), Outcomes(), rng=FixedJitter()
    )
    engine.start()
    await asyncio.wait_for(path.waiting.wait(), GUARD_S)
    await asyncio.wait_for(engine.stop(), GUARD_S)
    assert not engine.running


async def test_polling_engine_stops_although_the_poll_returns_as_if_not_cancelled() -> None:
    polling = asyncio.Event()

    async def poll(cursor: str | None) -> tuple[Sequence[Received], str | None]:
        if polling.is_set():  # swallow the first cancellation only (no hang if broken)
            await asyncio.Event().wait()
        polling.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
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


async def test_reconciler_stops_although_the_listing_returns_as_if_not_cancelled() -> None:
    listing = asyncio.Event()

    async def listed() -> Sequence[SourceItem]:
        if listing.is_set():  # swallow the first cancellation only (no hang if broken)
            await asyncio.Event().wait()
        listing.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
        return []

    reconciler = Reconciler(TENANT, SOURCE, listed, MemorySink(), FakeClock(), lambda report: None)
    reconciler.start(3600)
    await asyncio.wait_for(listing.wait(), GUARD_S)
    await asyncio.wait_for(reconciler.stop(), GUARD_S)
    assert not reconciler.running
