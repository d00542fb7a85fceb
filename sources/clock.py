"""Clocks for the source engines: the system's, and a fake one that tests move by hand.

Engines never call ``time`` or ``asyncio.sleep`` themselves; they take a
:class:`~eventcenter.domain.sources.Clock`. With :class:`FakeClock` a test of a 30-second
back-off or a 5-minute polling interval runs in milliseconds, and runs the same way every time.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from dataclasses import dataclass, field

from eventcenter.domain.errors import EventCenterError

SETTLE_TURNS_MAX = 10_000  # loop turns FakeClock.advance waits for woken tasks to settle
FALLBACK_TURNS = 50  # turns to settle on an event loop whose ready queue cannot be seen


class SystemClock:
    """Monotonic time (``time.monotonic``) and ``asyncio.sleep``: the clock of a running center."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


@dataclass(order=True)
class _Sleeper:
    deadline: float
    seq: int
    future: asyncio.Future[None] = field(compare=False)


class ClockStalled(EventCenterError, RuntimeError):
    """Raised by :meth:`FakeClock.advance` when tasks keep running without ever waiting:
    something spins (a loop that never sleeps on the clock), and a test would hang."""


class FakeClock:
    """A clock that moves only when told to.

    ``now()`` is a float the test advances; ``sleep(s)`` returns once the fake time reached
    ``now() + s``. :meth:`advance` moves the time to each sleeper's deadline in turn (earliest
    first, ties in the order they went to sleep), wakes it and lets every task that became ready
    run until they all wait again, before it moves on: a sleeper that goes back to sleep for a
    time still inside the advanced span is woken within the same call. Nothing sleeps for real.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._sleepers: list[_Sleeper] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0.0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, _Sleeper(self._now + seconds, next(self._seq), future))
        try:
            await future
        finally:
            if not future.done():  # cancelled while asleep: advance() skips it
                future.cancel()

    @property
    def sleepers(self) -> int:
        """How many tasks are asleep on this clock now."""
        return sum(1 for sleeper in self._sleepers if not sleeper.future.done())

    @property
    def next_wake(self) -> float | None:
        """The earliest deadline of a sleeper (None: nobody sleeps)."""
        self._drop_cancelled()
        return self._sleepers[0].deadline if self._sleepers else None

    async def advance(self, seconds: float) -> None:
        """Move the time forward by ``seconds``, waking each sleeper whose deadline is reached."""
        if seconds < 0.0:
            raise ValueError(f"time only moves forward, got {seconds}")
        target = self._now + seconds
        await settle()
        while True:
            self._drop_cancelled()
            if not self._sleepers or self._sleepers[0].deadline > target:
                break
            sleeper = heapq.heappop(self._sleepers)
            self._now = max(self._now, sleeper.deadline)
            sleeper.future.set_result(None)
            await settle()
        self._now = target
        await settle()

    def _drop_cancelled(self) -> None:
        while self._sleepers and self._sleepers[0].future.done():
            heapq.heappop(self._sleepers)


async def settle() -> None:
    """Let every task that is ready run until all of them wait on something.

    CPython's event loop keeps its ready callbacks in ``_ready``; when another loop hides it,
    a fixed number of turns is given instead. Raises :class:`ClockStalled` when tasks are still
    ready after :data:`SETTLE_TURNS_MAX` turns.
    """
    loop = asyncio.get_running_loop()
    ready = getattr(loop, "_ready", None)
    if ready is None:
        for _ in range(FALLBACK_TURNS):
            await asyncio.sleep(0)
        return
    for _ in range(SETTLE_TURNS_MAX):
        await asyncio.sleep(0)
        if not ready:
            return
    raise ClockStalled(
        f"tasks were still ready after {SETTLE_TURNS_MAX} loop turns: a loop spins without "
        "waiting on the clock"
    )
