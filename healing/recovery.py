"""The recovery manager: runs a service's recovery actions when its checks keep failing, and
counts an action as a success only when the re-checks after it are green.

Usage::

    recovery = RecoveryManager(monitor, clock, rule=RecoveryRule(failure_threshold=3))
    recovery.register("cache", restart_redis, RecoveryAction("flush", flush_cache))
    recovery.listen(on_incident_end)        # e.g. escalate what gave up
    ...
    recovery.stats().as_dict()              # attempts, success rate, mean recovery time, by action

With a ``recorder`` (:class:`~eventcenter.domain.ports.RecoveryRecorder`; the center's records
each service's :class:`~eventcenter.domain.recovery_log.ServiceRecovery` in its store), every
incident's opening, attempts and end are recorded with wall-clock times, and
:meth:`RecoveryManager.restore` (before the checks start) gives a restarted center back each
service's open incident, cool-down and statistics.

How an incident runs (the rules are :class:`~eventcenter.domain.health.RecoveryPolicy`'s):

1. a check leaves the service at ``failure_threshold`` consecutive failures, no incident is
   open and no cool-down runs: an incident opens;
2. attempt ``n`` waits its back-off (none for the first), then runs the ``n``-th action (the
   last one again once the list is used up), bounded by ``action_timeout``;
3. the monitor re-checks the service ``verify_checks`` times, ``verify_interval`` apart; the
   attempt counts only if every re-check passed (Keptn's rule: each action is followed by an
   evaluation before the next). An action that raised or timed out is not re-checked;
4. before an attempt after the first, if the service's last check passed, it is re-checked
   first: a service that came back during the back-off ends the incident as
   ``recovered_alone``, with no further action;
5. after ``max_attempts`` attempts without a green re-check the incident ends as ``gave_up``:
   listeners hear it (the center escalates it). Any end starts the cool-down.

Across a restart (:meth:`RecoveryManager.restore`): a cool-down holds for what was left of it
on the wall clock. An open incident goes on from the attempts it recorded, so it never makes
more than ``max_attempts`` in all; each attempt is handed to the recorder before its action
runs, so one that a stop cut short (the action or its re-checks) is recorded after the restart
as an attempt that did not work, and is not run again. It resumes at the service's first
check after the restart, as after a back-off (step 4 then applies to any attempt): a service
that came back meanwhile ends it as ``recovered_alone`` once re-checked, one still failing gets
the next attempt after its back-off. Its recovery time counts from when it opened, the downtime
included.

The manager listens to every check of the monitor; the incidents run in tasks of their own,
so the monitor's checks of other services never wait for a recovery.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from eventcenter.domain.errors import ConfigurationError, UnknownService
from eventcenter.domain.health import (
    AttemptStart,
    HealthUpdate,
    IncidentEnd,
    IncidentOutcome,
    IncidentStart,
    RecoveryAttempt,
    RecoveryPolicy,
    RecoveryRule,
    RecoveryState,
    RecoveryStats,
    RecoveryStep,
    SavedRecovery,
    ServiceHealth,
)
from eventcenter.domain.ports import RecoveryRecorder
from eventcenter.domain.sources import Clock
from eventcenter.healing.checkers import describe
from eventcenter.healing.health import HealthMonitor
from eventcenter.healing.timing import cancel_and_wait, within

__all__ = ["IncidentEnded", "IncidentListener", "RecoveryAction", "RecoveryManager"]

log = logging.getLogger("eventcenter.health")

ActionFunction = Callable[[ServiceHealth], Any]
"""Sync or async; receives the service's record when the attempt starts. Its result is
ignored: only the re-check says whether it worked."""


@dataclass(frozen=True, slots=True)
class RecoveryAction:
    """A recovery action with the name statistics count it under."""

    name: str
    run: ActionFunction


@dataclass(frozen=True, slots=True)
class IncidentEnded:
    """A recovery incident is over: how, after how many attempts, and the last error seen."""

    service: str
    outcome: IncidentOutcome
    attempts: int
    started_at: float
    ended_at: float
    last_action: str | None
    last_error: str | None

    @property
    def duration(self) -> float:
        return self.ended_at - self.started_at


IncidentListener = Callable[[IncidentEnded], Awaitable[None]]


@dataclass(eq=False)
class _Recoverable:
    """One service's actions, policy and running incident.

    ``since_wall`` is the open incident's opening in wall-clock time: its identity in the
    recorded log (None when no incident is open)."""

    service: str
    actions: tuple[RecoveryAction, ...]
    policy: RecoveryPolicy
    task: asyncio.Task[None] | None = None
    last_action: str | None = field(default=None)
    since_wall: float | None = None


class RecoveryManager:
    """Recovery actions per service, run on the monitor's failures (see the module docstring).

    ``rule`` is the default for services registered without their own; ``rng`` draws the
    back-off jitter (a seeded ``random.Random`` makes a run repeatable); ``recorder`` makes
    the incidents durable, stamped with ``wall`` (epoch seconds; ``clock`` is monotonic).
    """

    def __init__(
        self,
        monitor: HealthMonitor,
        clock: Clock,
        *,
        rule: RecoveryRule | None = None,
        rng: random.Random | None = None,
        recorder: RecoveryRecorder | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._monitor = monitor
        self._clock = clock
        self._rule = rule or RecoveryRule()
        self._rng = rng or random.Random()
        self._recorder = recorder
        self._wall = wall
        self._services: dict[str, _Recoverable] = {}
        self._listeners: list[IncidentListener] = []
        self._stats = RecoveryStats()
        self._closed = False
        monitor.listen(self._on_health, every_check=True)

    def register(
        self,
        service: str,
        *actions: RecoveryAction | ActionFunction,
        rule: RecoveryRule | None = None,
    ) -> None:
        """Recover ``service`` with ``actions``, tried in this order (the last repeats).

        A plain callable is counted under its ``__name__``."""
        if service in self._services:
            raise ConfigurationError(f"recovery for {service!r} is already registered")
        if not actions:
            raise ConfigurationError(f"recovery for {service!r} needs at least one action")
        named = tuple(_named(action) for action in actions)
        policy = RecoveryPolicy(rule or self._rule)
        self._services[service] = _Recoverable(service, named, policy)

    def restore(self, saved: Iterable[SavedRecovery]) -> None:
        """Take back what a previous run recorded (call it after ``register``, before the
        checks start): each registered service's open incident and its attempts, the rest of
        its cool-down measured on the wall clock, and its statistics. Services no longer
        registered are skipped; nothing is recorded (the log holds it already), except an attempt
        a stop cut short: it is recorded as one that did not work (it is not run again)."""
        offset = self._clock.now() - self._wall()  # wall-clock time + offset = clock time
        for record in saved:
            entry = self._services.get(record.service)
            if entry is None:
                continue
            if entry.task is not None and not entry.task.done():
                raise ConfigurationError(
                    f"recovery of {record.service!r} is running: restore before the checks start"
                )
            state = entry.policy.state
            state.incident_since = None
            state.attempts = record.attempts
            entry.since_wall = record.incident_since
            self._stats.merge(record.stats, offset=offset)
            if record.interrupted is not None and record.incident_since is not None:
                self._cut_short(entry, record.interrupted, offset)
            if record.incident_since is not None:
                state.incident_since = record.incident_since + offset
                log.warning(
                    "recovery %s: incident open since a previous run, %d of %d attempt(s) made;"
                    " it resumes at the next check",
                    record.service,
                    state.attempts,
                    entry.policy.rule.max_attempts,
                )
            until = record.cool_down_until
            state.cool_down_until = None
            if until is not None and until + offset > self._clock.now():
                state.cool_down_until = until + offset

    def _cut_short(self, entry: _Recoverable, attempt: RecoveryAttempt, offset: float) -> None:
        """Record the attempt a stop cut short as one that did not work: it is not run again,
        and counts towards ``max_attempts``."""
        ended = self._wall()
        self._record(replace(attempt, finished_at=ended))
        self._stats.add(
            replace(
                attempt,
                incident_since=attempt.incident_since + offset,
                started_at=attempt.started_at + offset,
                finished_at=ended + offset,
            )
        )
        entry.policy.state.attempts = attempt.attempt
        log.warning(
            "recovery %s: attempt %d (%s) was cut short by a stop of the center;"
            " it counts as one that did not work and is not run again",
            entry.service,
            attempt.attempt,
            attempt.action,
        )

    def listen(self, listener: IncidentListener) -> None:
        """Call ``listener`` when an incident ends (a raising listener is logged and skipped)."""
        self._listeners.append(listener)

    def stats(self) -> RecoveryStats:
        return self._stats

    def state(self, service: str) -> RecoveryState:
        """``service``'s open incident (if any), its attempts and its cool-down."""
        return self._get(service).policy.state

    def services(self) -> list[str]:
        """The services that have recovery actions registered."""
        return sorted(self._services)

    def recovering(self, service: str) -> bool:
        task = self._get(service).task
        return task is not None and not task.done()

    async def aclose(self) -> None:
        """Stop listening and cancel the incidents that are running (an attempt cut short is
        recorded as one that did not work when a restarted center restores it)."""
        self._closed = True
        for entry in self._services.values():
            task, entry.task = entry.task, None
            await cancel_and_wait(task)

    # running incidents ---------------------------------------------------------------------------

    async def _on_health(self, update: HealthUpdate) -> None:
        entry = self._services.get(update.service)
        if entry is None or self._closed:
            return
        if entry.task is not None and not entry.task.done():
            return  # an incident is running; its own re-checks land here too
        record = update.record
        since = entry.policy.state.incident_since
        if since is not None:  # restored from a previous run: this check resumes it
            entry.task = asyncio.create_task(
                self._incident(entry, record, since, resumed=True),
                name=f"recovery {entry.service}",
            )
            return
        now = self._clock.now()
        if not entry.policy.should_start(record.consecutive_failures, now):
            return
        entry.policy.start(now)
        entry.since_wall = self._wall()
        log.warning(
            "recovery %s: incident opened after %d failed checks (%s)",
            entry.service,
            record.consecutive_failures,
            record.last_error,
        )
        self._record(
            IncidentStart(
                entry.service, entry.since_wall, record.consecutive_failures, record.last_error
            )
        )
        entry.task = asyncio.create_task(
            self._incident(entry, record, now), name=f"recovery {entry.service}"
        )

    async def _incident(
        self, entry: _Recoverable, record: ServiceHealth, started: float, *, resumed: bool = False
    ) -> None:
        """Run an incident to its end. ``resumed``: it was restored after a restart, so even
        its first attempt re-checks a service whose last check passed before acting."""
        policy = entry.policy
        last_error = record.last_error
        try:
            outcome: IncidentOutcome | None = None
            while outcome is None:
                attempt = policy.next_attempt()
                if attempt is None:  # defensive: attempted() ends the incident at the last one
                    outcome = policy.end(IncidentOutcome.GAVE_UP, self._clock.now())
                    break
                await self._clock.sleep(policy.rule.delay_before(attempt, self._rng.random()))
                first_check = attempt > 1 or resumed
                resumed = False
                if first_check and self._monitor.health(entry.service).consecutive_failures == 0:
                    verified, error = await self._verify(entry)
                    if verified:
                        outcome = policy.end(IncidentOutcome.RECOVERED_ALONE, self._clock.now())
                        break
                    last_error = error or last_error
                outcome, error = await self._attempt(entry, attempt, started)
                last_error = error or last_error
        except asyncio.CancelledError:
            policy.state.incident_since = None  # abandoned: counted neither way (a restart
            entry.since_wall = None  # resumes it from the attempts recorded)
            raise
        except Exception as error:  # e.g. the check was removed: end instead of dying silently
            log.exception("recovery %s: the incident failed", entry.service)
            last_error = describe(error)
            outcome = policy.end(IncidentOutcome.GAVE_UP, self._clock.now())
        self._stats.incident_ended(outcome)
        if entry.since_wall is not None:
            until = policy.state.cool_down_until
            self._record(
                IncidentEnd(
                    entry.service,
                    entry.since_wall,
                    outcome,
                    policy.state.attempts,
                    self._wall(),
                    self._wall() if until is None else self._to_wall(until),
                )
            )
            entry.since_wall = None
        ended = IncidentEnded(
            entry.service,
            outcome,
            policy.state.attempts,
            started,
            self._clock.now(),
            entry.last_action,
            None if outcome is not IncidentOutcome.GAVE_UP else last_error,
        )
        level = logging.ERROR if outcome is IncidentOutcome.GAVE_UP else logging.INFO
        log.log(
            level,
            "recovery %s: %s after %d attempt(s) in %.3gs",
            entry.service,
            outcome.value,
            ended.attempts,
            ended.duration,
        )
        await self._tell(ended)

    async def _attempt(
        self, entry: _Recoverable, attempt: int, incident_since: float
    ) -> tuple[IncidentOutcome | None, str | None]:
        """Run attempt number ``attempt`` and its re-checks; record it; the incident's outcome
        if it ended with it, and why the attempt did not count (None if it did)."""
        rule = entry.policy.rule
        action = entry.actions[min(attempt, len(entry.actions)) - 1]
        entry.last_action = action.name
        started = self._clock.now()
        if entry.since_wall is not None:  # known before it runs: a stop cannot make it run twice
            self._record(
                AttemptStart(
                    entry.service, action.name, attempt, entry.since_wall, self._to_wall(started)
                )
            )
        error: str | None = None
        verified = False
        try:
            await within(
                self._clock, rule.action_timeout, _call(action, self._monitor.health(entry.service))
            )
        except Exception as failure:
            error = f"action {action.name!r} failed: {describe(failure)}"
        if error is None:
            verified, error = await self._verify(entry)
        finished = self._clock.now()
        made = RecoveryAttempt(
            entry.service, action.name, attempt, incident_since, started, finished, verified, error
        )
        self._stats.add(made)
        if entry.since_wall is not None:
            self._record(
                replace(
                    made,
                    incident_since=entry.since_wall,
                    started_at=self._to_wall(started),
                    finished_at=self._to_wall(finished),
                )
            )
        log.log(
            logging.INFO if verified else logging.WARNING,
            "recovery %s: attempt %d (%s) %s",
            entry.service,
            attempt,
            action.name,
            "verified" if verified else f"did not work: {error}",
        )
        return entry.policy.attempted(verified, finished), error

    async def _verify(self, entry: _Recoverable) -> tuple[bool, str | None]:
        """``verify_checks`` re-checks, ``verify_interval`` apart; green if all passed."""
        rule = entry.policy.rule
        for number in range(1, rule.verify_checks + 1):
            await self._clock.sleep(rule.verify_interval)
            record = await self._monitor.check_now(entry.service)
            if record.consecutive_failures:
                return False, f"re-check {number} failed: {record.last_error}"
        return True, None

    def _to_wall(self, at: float) -> float:
        """Clock time ``at`` (now or earlier) as wall-clock time."""
        return self._wall() - (self._clock.now() - at)

    def _record(self, step: RecoveryStep) -> None:
        if self._recorder is None:
            return
        try:
            self._recorder.record(step)
        except Exception as error:  # recovery goes on; the step is in the log lines
            log.error("recovery %s: %s was not recorded: %r", step.service, step, error)

    async def _tell(self, ended: IncidentEnded) -> None:
        for listener in list(self._listeners):
            try:
                await listener(ended)
            except Exception:
                log.exception("recovery listener %r failed on %s", listener, ended.service)

    def _get(self, service: str) -> _Recoverable:
        try:
            return self._services[service]
        except KeyError:
            raise UnknownService("recovery", service, list(self._services)) from None


def _named(action: RecoveryAction | ActionFunction) -> RecoveryAction:
    if isinstance(action, RecoveryAction):
        return action
    if not callable(action):
        raise ConfigurationError(f"a recovery action must be callable, got {action!r}")
    return RecoveryAction(getattr(action, "__name__", repr(action)), action)


async def _call(action: RecoveryAction, record: ServiceHealth) -> None:
    result = action.run(record)
    if inspect.isawaitable(result):
        await result
