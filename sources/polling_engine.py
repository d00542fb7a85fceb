"""The polling engine: asks a source's poll path for what changed since the stored cursor.

Each poll admits the items it returned together with the new cursor (one transaction), so a
restart resumes at the cursor of the last admitted poll: nothing skipped, nothing re-admitted
beyond what idempotent admission drops. Between polls it waits the interval; after a failure it
backs off like the event engine (0.8 s doubling to 30 s, with jitter), at least as long as the
server's ``retry_after``.

The interval is a knob for whoever tunes the center: set :attr:`PollingEngine.interval` at
runtime, or scale it with :meth:`PollingEngine.set_load_factor`:

    effective interval = clamp(interval * load_factor, min_interval, max_interval)

A load factor of 1 polls at the configured interval, 2 half as often (the center is busy), 0.5
twice as often (it has room); the bounds keep any factor sane. Healing slows a source whose
server answers "too many requests" with :meth:`PollingEngine.slow_down`: a
:class:`~eventcenter.domain.slowdown.SlowDown` multiplies the load factor and wears off by
itself, one step after each quiet period without a rate-limited answer (checked at each poll
that answered). A change takes effect on the
wait in progress. The interval is the rhythm of a caught-up source: a poll that returned items
and moved the cursor is followed by the next one at once (``drain``), so a backlog, such as the
one a push outage leaves, is read in one go rather than one page per interval.

:meth:`PollingEngine.poll_now` ends the regular wait at once (right after a switch to polling,
so the gap is short); it does not cut short a back-off after a failure, least of all a server's
``retry_after``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random

from eventcenter.domain.backoff import ReconnectBackoff
from eventcenter.domain.errors import ConfigurationError, EventCenterError
from eventcenter.domain.slowdown import SlowDown
from eventcenter.domain.sources import Clock, ItemSink, PollPath, SourceError, SourceErrorKind
from eventcenter.sources.lifecycle import EngineTask, raise_if_cancelling
from eventcenter.sources.outcomes import AdmissionFailed, OnOutcome, PathName, PathOutcome

log = logging.getLogger("eventcenter.sources")

POLL: PathName = "poll"


def effective_interval(
    interval: float, load_factor: float, min_interval: float, max_interval: float
) -> float:
    """``clamp(interval * load_factor, min_interval, max_interval)``: the seconds between polls."""
    return min(max_interval, max(min_interval, interval * load_factor))


class PollingEngine:
    """Poll, admit with the new cursor, wait; back off on errors; until stopped."""

    def __init__(
        self,
        tenant: str,
        source: str,
        poll: PollPath,
        sink: ItemSink,
        clock: Clock,
        on_outcome: OnOutcome,
        *,
        interval: float,
        min_interval: float,
        max_interval: float,
        drain: bool = True,
        backoff: ReconnectBackoff | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not 0.0 < min_interval <= max_interval or math.isinf(max_interval):
            raise ConfigurationError(
                f"source {tenant}/{source}: polling needs 0 < min_interval <= max_interval, "
                f"got {min_interval} and {max_interval}"
            )
        self.tenant = tenant
        self.source = source
        self._poll = poll
        self._sink = sink
        self._clock = clock
        self._on_outcome = on_outcome
        self._min = min_interval
        self._max = max_interval
        self._interval = self._checked(interval)
        self._load_factor = 1.0
        self._slowdown = SlowDown()
        self._drain = drain
        self._backoff = backoff or ReconnectBackoff()
        self._rng = rng or random.Random()
        self._task = EngineTask(
            f"poll {tenant}/{source}", {"tenant": tenant, "source": source, "path": POLL}
        )
        self._wake = asyncio.Event()
        self._poll_now = False
        self._cursor: str | None = None
        self._failures = 0
        self._last_poll_at: float | None = None

    @property
    def interval(self) -> float:
        """The configured seconds between polls, before the load factor."""
        return self._interval

    @interval.setter
    def interval(self, seconds: float) -> None:
        self._interval = self._checked(seconds)
        self._wake.set()

    @property
    def load_factor(self) -> float:
        """The scale of the interval now: the load factor set, times a slow-down in effect."""
        return self._load_factor * self._slowdown.factor

    def slow_down(self, by: float, cap: float, relax_after: float) -> float:
        """Poll ``by`` times slower (the slow-down at most ``cap``), until it wears off: one
        step back after each ``relax_after`` seconds without a rate-limited answer. Returns
        the load factor now."""
        self._slowdown.slow(by, cap, relax_after, self._clock.now())
        self._wake.set()
        return self.load_factor

    def set_load_factor(self, factor: float) -> None:
        """Scale the interval by ``factor`` (> 0), within [min_interval, max_interval]."""
        if not (factor > 0.0 and math.isfinite(factor)):
            raise ConfigurationError(
                f"source {self.tenant}/{self.source}: a load factor must be a finite number "
                f"> 0, got {factor}"
            )
        self._load_factor = factor
        self._wake.set()

    @property
    def current_interval(self) -> float:
        """The seconds between polls now (see :func:`effective_interval`)."""
        return effective_interval(self._interval, self.load_factor, self._min, self._max)

    @property
    def cursor(self) -> str | None:
        """The cursor the next poll asks with (the one stored with the last admission)."""
        return self._cursor

    @property
    def last_poll_at(self) -> float | None:
        """Clock time of the last poll that answered (None: none yet)."""
        return self._last_poll_at

    def poll_now(self) -> None:
        """Poll at once instead of at the end of the current interval."""
        self._poll_now = True
        self._wake.set()

    @property
    def running(self) -> bool:
        return self._task.running

    def start(self) -> asyncio.Task[None]:
        """Run :meth:`run` as a task (the running one if already started)."""
        return self._task.start(self.run)

    async def stop(self) -> None:
        """Cancel the task and wait until it ended."""
        await self._task.stop()

    async def run(self) -> None:
        """Resume from the stored cursor and poll until cancelled."""
        self._cursor = await self._stored_cursor()
        while True:
            self._poll_now = False
            try:
                more = await self._poll_and_admit()
            except SourceError as error:
                raise_if_cancelling(error)
                await self._back_off(error, error.retry_after)
                continue
            except AdmissionFailed as failed:
                raise_if_cancelling(failed)
                await self._back_off(failed, None)
                continue
            if more and self._drain:
                await asyncio.sleep(0)  # a long backlog leaves the loop to other sources
                continue
            await self._wait_interval()

    async def _stored_cursor(self) -> str | None:
        while True:
            try:
                return await self._sink.position(self.tenant, self.source, POLL)
            except SourceError:
                raise
            except EventCenterError as error:
                await self._back_off(AdmissionFailed(error, 0, "reading the stored cursor"), None)

    async def _poll_and_admit(self) -> bool:
        """One poll, its items admitted with the new cursor; True if it returned items and
        moved the cursor (there may be more). A refused admission stores nothing: the next
        poll asks with the same cursor."""
        received, cursor = await self._poll(self._cursor)
        raise_if_cancelling()  # a poll may have swallowed a stop
        moved = cursor != self._cursor
        if received or moved:
            try:
                await self._sink.admit(self.tenant, self.source, POLL, received, cursor)
            except SourceError:
                raise
            except EventCenterError as error:
                raise AdmissionFailed(error, len(received)) from error
        self._cursor = cursor
        self._failures = 0
        now = self._clock.now()
        self._last_poll_at = now
        if self._slowdown.relax(now):
            log.info(
                "polling of %s/%s steps back to load factor %g: %gs without a rate-limited answer",
                self.tenant,
                self.source,
                self.load_factor,
                self._slowdown.relax_after,
                extra={"tenant": self.tenant, "source": self.source, "path": POLL},
            )
        bad = sum(1 for message in received if message.item is None)
        self._on_outcome(
            PathOutcome.success(
                now, POLL, items=len(received), dead_lettered=bad, detail=f"cursor {cursor}"
            )
        )
        return moved and bool(received)

    async def _back_off(self, error: SourceError | AdmissionFailed, after: float | None) -> None:
        self._failures += 1
        delay = self._backoff.delay(self._failures, self._rng.random())
        if after is not None:
            delay = max(delay, after)
        now = self._clock.now()
        if isinstance(error, SourceError):
            if error.kind is SourceErrorKind.RATE_LIMITED:
                self._slowdown.rate_limited(now)
            outcome = PathOutcome.failure(now, POLL, error, retry_in=delay)
        else:
            outcome = PathOutcome.admission_failure(now, POLL, error, retry_in=delay)
        log.warning(
            "poll of %s/%s failed (attempt %d), retrying in %.3fs: %s",
            self.tenant,
            self.source,
            self._failures,
            delay,
            outcome.detail,
            extra={"tenant": self.tenant, "source": self.source, "path": POLL},
        )
        self._on_outcome(outcome)
        await self._clock.sleep(delay)

    async def _wait_interval(self) -> None:
        """Wait the current interval; a change of it re-times the wait, poll_now ends it."""
        started = self._clock.now()
        while not self._poll_now:
            remaining = started + self.current_interval - self._clock.now()
            if remaining <= 0.0:
                return
            self._wake.clear()
            await self._sleep_or_wake(remaining)

    async def _sleep_or_wake(self, seconds: float) -> None:
        sleeping = asyncio.ensure_future(self._clock.sleep(seconds))
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait((sleeping, woken), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (sleeping, woken):
                waiter.cancel()
            await asyncio.gather(sleeping, woken, return_exceptions=True)

    def _checked(self, seconds: float) -> float:
        if not (seconds > 0.0 and math.isfinite(seconds)):
            raise ConfigurationError(
                f"source {self.tenant}/{self.source}: a polling interval must be a finite "
                f"number of seconds > 0, got {seconds}"
            )
        return seconds
