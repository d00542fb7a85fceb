"""The health monitor: runs each service's checker on its schedule and keeps its record.

Usage::

    monitor = HealthMonitor(SystemClock())
    monitor.add(RedisCheck("cache", "redis://127.0.0.1:6379/0"))
    monitor.add(HttpCheck("api", "http://127.0.0.1:8000/health"),
                CheckSettings(schedule=CheckSchedule(interval=10, timeout=2)))
    monitor.listen(on_change)              # status changes and alerts
    async with monitor:                    # start() ... stop()
        ...
        monitor.report().as_dict()         # the seed's report: per service, and a summary

How it runs:

- one task per service; its first check falls at a random point of the first interval and
  each later interval varies by the schedule's jitter (:class:`~eventcenter.domain.health.
  CheckSchedule`), so checks registered together are spread out and stay spread;
- a check is bounded by the schedule's timeout on the injected clock; a check that raises,
  or does not answer in time, is a failed check with the reason;
- checks of one service never overlap: :meth:`check_now` (a re-check after a recovery
  action, a manual check) waits for a running scheduled one, and the other way round;
- each finished check updates the record (:meth:`~eventcenter.domain.health.ServiceHealth.
  observe`) and the alert state, then tells the listeners, in order, before the next check of
  that service: a listener should be quick (hand long work to a task of its own).

Times in records and reports are the clock's (monotonic with the system clock):
``checked_ago`` in the report says how old a check is.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from dataclasses import dataclass, field

from eventcenter.domain.errors import ConfigurationError, UnknownService
from eventcenter.domain.health import (
    AlertTracker,
    CheckResult,
    CheckSettings,
    HealthChecker,
    HealthListener,
    HealthReport,
    HealthStatus,
    HealthUpdate,
    ServiceHealth,
    health_report,
)
from eventcenter.domain.sources import Clock
from eventcenter.healing.checkers import describe
from eventcenter.healing.timing import cancel_and_wait, within

__all__ = ["HealthMonitor"]

log = logging.getLogger("eventcenter.health")


@dataclass(eq=False)
class _Watched:
    """One monitored service: its checker, settings, record and alert state, and its task."""

    checker: HealthChecker
    settings: CheckSettings
    record: ServiceHealth
    alerts: AlertTracker
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    task: asyncio.Task[None] | None = None


@dataclass(frozen=True)
class _Listener:
    listener: HealthListener
    every_check: bool


class HealthMonitor:
    """Checks services on their schedules, keeps their records, tells listeners what changed.

    ``settings`` are the defaults for services added without their own; ``rng`` draws the
    start offsets and the jitter (pass a seeded ``random.Random`` for a repeatable run).
    """

    def __init__(
        self,
        clock: Clock,
        *,
        settings: CheckSettings | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._clock = clock
        self._defaults = settings or CheckSettings()
        self._rng = rng or random.Random()
        self._services: dict[str, _Watched] = {}
        self._listeners: list[_Listener] = []
        self._running = False

    # registration --------------------------------------------------------------------------------

    def add(self, checker: HealthChecker, settings: CheckSettings | None = None) -> None:
        """Monitor ``checker.name`` with ``settings`` (or the monitor's defaults). Its record
        is ``unknown`` until the first check; a running monitor schedules it at once."""
        name = checker.name
        if name in self._services:
            raise ConfigurationError(f"a health check named {name!r} is already registered")
        chosen = settings or self._defaults
        watched = _Watched(
            checker=checker,
            settings=chosen,
            record=ServiceHealth(name),
            alerts=AlertTracker(name, chosen.alerts),
        )
        self._services[name] = watched
        if self._running:
            self._schedule(watched)

    async def remove(self, name: str) -> None:
        """Stop monitoring ``name`` (its scheduled checks stop, its checker is closed)."""
        watched = self._get(name)
        del self._services[name]
        await self._halt(watched)
        await _close(watched.checker)

    def listen(self, listener: HealthListener, *, every_check: bool = False) -> None:
        """Call ``listener`` after checks: status changes and alerts only, or ``every_check``.

        A listener that raises is logged and the others still hear the update; it does not
        stop the checks. Listeners run before the service's next check may start: one that
        wants to re-check the same service must do so from a task of its own (awaiting
        :meth:`check_now` of that service inside the listener would wait for itself)."""
        self._listeners.append(_Listener(listener, every_check))

    @property
    def names(self) -> list[str]:
        return sorted(self._services)

    # lifecycle -----------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._running

    async def start(self) -> None:
        """Schedule every service's checks (idempotent)."""
        if self._running:
            return
        self._running = True
        for watched in self._services.values():
            self._schedule(watched)

    async def stop(self) -> None:
        """Stop the scheduled checks. The records stay readable; :meth:`start` schedules the
        checks again."""
        self._running = False
        for watched in list(self._services.values()):
            await self._halt(watched)

    async def aclose(self) -> None:
        """:meth:`stop`, then close the checkers that have an ``aclose`` of their own."""
        await self.stop()
        for watched in list(self._services.values()):
            await _close(watched.checker)

    async def __aenter__(self) -> HealthMonitor:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # reading -------------------------------------------------------------------------------------

    def health(self, name: str) -> ServiceHealth:
        """``name``'s record as of its last check."""
        return self._get(name).record

    def is_down(self, name: str) -> bool:
        """True if ``name`` is monitored and unhealthy (a degradation can skip calling it)."""
        watched = self._services.get(name)
        return watched is not None and watched.record.status is HealthStatus.UNHEALTHY

    def report(self) -> HealthReport:
        return health_report(
            (watched.record for watched in self._services.values()),
            self._clock.now(),
            self._running,
        )

    # checking ------------------------------------------------------------------------------------

    async def check_now(self, name: str) -> ServiceHealth:
        """Check ``name`` at once (after a scheduled check of it that is running) and return
        its record. Listeners hear this check like any other."""
        watched = self._get(name)
        async with watched.lock:
            return await self._check(watched)

    def _schedule(self, watched: _Watched) -> None:
        if watched.task is None or watched.task.done():
            watched.task = asyncio.create_task(
                self._run(watched), name=f"health check {watched.checker.name}"
            )

    async def _run(self, watched: _Watched) -> None:
        schedule = watched.settings.schedule
        await self._clock.sleep(schedule.first_delay(self._rng.random()))
        while True:
            async with watched.lock:
                await self._check(watched)
            await self._clock.sleep(schedule.next_delay(self._rng.random()))

    async def _check(self, watched: _Watched) -> ServiceHealth:
        settings = watched.settings
        started = self._clock.now()
        try:
            result = await within(self._clock, settings.schedule.timeout, watched.checker.check())
            if not isinstance(result, CheckResult):
                raise TypeError(f"check() returned {type(result).__name__}, not a CheckResult")
        except Exception as error:  # a failing check is what this records, not a crash
            result = CheckResult.failed(describe(error))
        now = self._clock.now()
        elapsed = max(0.0, now - started)
        previous = watched.record
        watched.record = previous.observe(result, elapsed, now, settings.thresholds)
        alerts = watched.alerts.observe(result.ok, elapsed, now)
        update = HealthUpdate(previous, watched.record, result, alerts)
        self._log(update)
        await self._tell(update)
        return watched.record

    async def _tell(self, update: HealthUpdate) -> None:
        for entry in list(self._listeners):
            if not (entry.every_check or update.changed or update.alerts):
                continue
            try:
                await entry.listener(update)
            except Exception:
                log.exception("health listener %r failed on %s", entry.listener, update.service)

    @staticmethod
    def _log(update: HealthUpdate) -> None:
        record = update.record
        if update.changed:
            level = logging.WARNING if record.status is HealthStatus.UNHEALTHY else logging.INFO
            log.log(
                level,
                "health %s: %s -> %s (%s)",
                record.service,
                update.previous.status.value,
                record.status.value,
                record.reason,
            )
        for alert in update.alerts:
            log.log(logging.WARNING if alert.firing else logging.INFO, "%s", alert.message)

    # helpers -------------------------------------------------------------------------------------

    def _get(self, name: str) -> _Watched:
        try:
            return self._services[name]
        except KeyError:
            raise UnknownService("health check", name, list(self._services)) from None

    async def _halt(self, watched: _Watched) -> None:
        task, watched.task = watched.task, None
        await cancel_and_wait(task)


async def _close(checker: HealthChecker) -> None:
    close = getattr(checker, "aclose", None)
    if close is not None:
        closing = close()
        if inspect.isawaitable(closing):
            await closing
