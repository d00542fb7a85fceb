"""The built-in healing strategies: what the RCA runner can do to a data source by itself.

Each acts on one source through the :class:`~eventcenter.domain.source_control.SourceControl`
port (the source records what it does: a forced move is a switch in its log) and re-checks with
the source's own evidence, never with the action's success:

=====================  ======================================  =====================================
strategy               action                                  re-check (``verify``)
=====================  ======================================  =====================================
``restart_stream``     close the push path, open it again      push delivered since the action
                       (a timeout: with a longer one)
``reconnect``          wait a back-off, then restart push      push (or poll, for a poll failure)
                       (or poll at once, for a poll failure)   worked since the action
``force_polling``      move the source down to ``hybrid``      a poll answered since the action
                       (push stays subscribed; its own
                       successes bring the source back)
``rerun_reconciliation``  list, compare, correct now           a second run finds nothing to correct
``reduce_frequency``   halve the tuned service's frequency     a poll answered since the action
                       through the tuning port, poll; for a
                       source no tuned service drives, double
                       its polling interval (load factor, at
                       most ``max_factor``), poll; that
                       steps back after each ``relax_after``
                       (5 min) without a rate-limited answer
=====================  ======================================  =====================================

``verify`` waits for its evidence (checking every ``check_every`` seconds on the clock) and the
runner bounds it by its verify timeout: a quiet stream that has not delivered by then fails the
re-check, and the next strategy is tried.

A strategy applies to a case that names a source; one without (a handler's failure) is refused
with a clear error, which the runner records as a failed attempt. :class:`RecoverService` heals a
health check's case: the recovery manager runs the service's own recovery actions, and the
re-check is the check itself, green again. ``clear_cache`` and
``reload_config`` act on what only the user knows: :func:`clear_cache` and
:func:`reload_config` build them from the user's own functions, under the names the rules
recommend.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

from eventcenter.domain.backoff import ReconnectBackoff
from eventcenter.domain.errors import EventCenterError
from eventcenter.domain.health import HealthStatus
from eventcenter.domain.ports import FrequencyPort
from eventcenter.domain.rca import (
    CLEAR_CACHE,
    FORCE_POLLING,
    RECONNECT,
    RECOVER_SERVICE,
    REDUCE_FREQUENCY,
    RELOAD_CONFIG,
    RERUN_RECONCILIATION,
    RESTART_STREAM,
    CaseSummary,
    Category,
    HealingStrategy,
)
from eventcenter.domain.source_control import SourceControl, SourceControls
from eventcenter.domain.source_modes import HYBRID
from eventcenter.domain.sources import Clock
from eventcenter.healing.health import HealthMonitor
from eventcenter.healing.rca import CallableStrategy
from eventcenter.healing.recovery import RecoveryManager

__all__ = [
    "ForcePolling",
    "Reconnect",
    "RecoverService",
    "ReduceFrequency",
    "RerunReconciliation",
    "RestartStream",
    "SourceStrategyBase",
    "builtin_limits",
    "builtin_strategies",
    "clear_cache",
    "reload_config",
    "with_limits",
]

#: Seconds between looks at the evidence while a re-check waits for it.
CHECK_EVERY = 0.5
#: The components of a data source's failures (what source strategies act on).
SOURCE_PATHS = frozenset({"source_push", "source_poll", "reconcile"})


class NoSourceToHeal(EventCenterError):
    """Raised when a source strategy is applied to a case that names no source."""


@dataclass
class SourceStrategyBase:
    """What the source strategies share: the controls, the clocks, the time each case's last
    action was applied (the re-check looks for evidence after it)."""

    controls: SourceControls
    clock: Clock
    wall: Callable[[], float] = time.time
    max_attempts: int = 2
    cooldown: float = 60.0
    check_every: float = CHECK_EVERY
    _applied: dict[str, float] = field(default_factory=dict, repr=False)

    def applies_to(self, case: CaseSummary) -> bool:
        """Cases of a data source's paths (not a handler's, a health check's, the store's)."""
        return case.source is not None and case.last_failure.get("component") in SOURCE_PATHS

    def _control(self, case: CaseSummary) -> SourceControl:
        if case.source is None:
            raise NoSourceToHeal(f"case {case.case_id} names no source to act on")
        return self.controls.control(case.tenant, case.source)

    def _mark(self, case: CaseSummary) -> float:
        at = self.wall()
        self._applied[case.case_id] = at
        return at

    def _since(self, case: CaseSummary) -> float:
        """When this strategy last acted on the case; after a restart, the last attempt's
        recorded time (the runner re-checks an attempt a restart interrupted)."""
        known = self._applied.get(case.case_id)
        if known is not None:
            return known
        for attempt in reversed(case.attempts):
            at = attempt.get("at")
            if isinstance(at, int | float):
                return float(at)
        return case.opened_at

    async def _until(self, evidence: Callable[[], bool]) -> bool:
        while not evidence():
            await self.clock.sleep(self.check_every)
        return True


def _reason(case: CaseSummary, what: str) -> str:
    return f"rca case {case.case_id} ({case.category}): {what}"


def _failed_path(case: CaseSummary) -> str:
    component = case.last_failure.get("component")
    return "poll" if component == "source_poll" else "push"


@dataclass
class RestartStream(SourceStrategyBase):
    """Close the push path and open it again from the stored position; for an
    ``event_timeout`` case, with a longer event timeout (1.5 times the one in effect, at most
    4 times the configured one, for the source's ``decay_period``): a stream that is slow
    rather than dead gets the time it needs."""

    name: str = RESTART_STREAM
    categories: frozenset[str] = frozenset({Category.EVENT_TIMEOUT, Category.CONNECTION_FAILURE})

    async def apply(self, case: CaseSummary) -> str:
        control = self._control(case)
        self._mark(case)
        longer = case.category == Category.EVENT_TIMEOUT
        why = "restart the stream with a longer timeout" if longer else "restart the stream"
        timeout = await control.restart_push(_reason(case, why), longer_timeout=longer)
        done = "restarted the push path from its stored position"
        return f"{done}, event_timeout now {timeout:g}s" if longer else done

    async def verify(self, case: CaseSummary) -> bool:
        control, since = self._control(case), self._since(case)
        return await self._until(lambda: control.push_delivered_since(since))


@dataclass
class Reconnect(SourceStrategyBase):
    """Wait a reconnect back-off (0.8 s doubling per attempt in the case, with jitter taken
    off by ``jitter``), then reopen the push path; for a failing poll path, poll at once."""

    name: str = RECONNECT
    categories: frozenset[str] = frozenset(
        {Category.CONNECTION_FAILURE, Category.EVENT_TIMEOUT, Category.POLLING_FAILURE}
    )
    backoff: ReconnectBackoff = field(default_factory=ReconnectBackoff)
    jitter: Callable[[], float] = lambda: 0.5

    async def apply(self, case: CaseSummary) -> str:
        control = self._control(case)
        tried = sum(1 for attempt in case.attempts if attempt.get("strategy") == self.name)
        delay = self.backoff.delay(tried + 1, self.jitter())
        await self.clock.sleep(delay)
        self._mark(case)
        if _failed_path(case) == "poll":
            control.poll_now()
            return f"waited {delay:.1f}s, then polled again"
        await control.restart_push(_reason(case, f"reconnect after {delay:.1f}s"))
        return f"waited {delay:.1f}s, then reopened the push path"

    async def verify(self, case: CaseSummary) -> bool:
        control, since, path = self._control(case), self._since(case), _failed_path(case)
        return await self._until(lambda: control.path_succeeded_since(path, since))


@dataclass
class ForcePolling(SourceStrategyBase):
    """Move the source down to ``hybrid``: polling carries the data while push stays subscribed,
    and only push's own successes bring the source back (its hysteresis decides)."""

    name: str = FORCE_POLLING
    categories: frozenset[str] = frozenset({Category.EVENT_TIMEOUT, Category.CONNECTION_FAILURE})
    max_attempts: int = 1

    async def apply(self, case: CaseSummary) -> str:
        control = self._control(case)
        self._mark(case)
        mode = await control.force_mode(HYBRID, _reason(case, "force polling"))
        return f"forced polling: the source is in {mode}"

    async def verify(self, case: CaseSummary) -> bool:
        control, since = self._control(case), self._since(case)
        return await self._until(lambda: control.path_succeeded_since("poll", since))


@dataclass
class RerunReconciliation(SourceStrategyBase):
    """Reconcile now against the source's listing; the re-check is a second run that finds
    nothing left to correct."""

    name: str = RERUN_RECONCILIATION
    categories: frozenset[str] = frozenset({Category.DATA_INCONSISTENCY})

    def applies_to(self, case: CaseSummary) -> bool:
        """Only a source with a listing can be reconciled: offered to any other, the strategy
        would fail each attempt (and hold its case open through its cool-down) for nothing."""
        if not super().applies_to(case):
            return False
        try:
            return "reconcile" in self._control(case).paths
        except LookupError:  # the source is not registered (any more)
            return False

    async def apply(self, case: CaseSummary) -> str:
        control = self._control(case)
        self._mark(case)
        report = await control.reconcile_now()
        return (
            f"reconciled: {report.missing} missing, {report.changed} changed,"
            f" {report.deleted} deleted corrected"
        )

    async def verify(self, case: CaseSummary) -> bool:
        report = await self._control(case).reconcile_now()
        return report.missing == report.changed == report.deleted == 0


@dataclass
class ReduceFrequency(SourceStrategyBase):
    """Send fewer requests, then poll once now; the re-check is a poll that answered after
    the change.

    A source whose polling follows a tuned service's frequency (``[tuning] sources``) is slowed
    through the ``frequency`` port: the service's rate is divided by ``factor`` and held there
    (recorded and dispatched to its agents; the source's load factor follows), so tuning's
    next adjustment does not undo it. Any other source polls half as often (its load factor
    doubles, up to ``max_factor``) until that wears off: one step back after each
    ``relax_after`` seconds without a rate-limited answer (see
    :class:`~eventcenter.domain.slowdown.SlowDown`). The port is set once the tuning side is
    built."""

    name: str = REDUCE_FREQUENCY
    categories: frozenset[str] = frozenset({Category.RATE_LIMITED, Category.POLLING_FAILURE})
    max_factor: float = 8.0
    factor: float = 2.0
    relax_after: float = 300.0
    frequency: FrequencyPort | None = None

    async def apply(self, case: CaseSummary) -> str:
        control = self._control(case)
        if self.frequency is not None and case.source is not None:
            done = await self.frequency.reduce(
                case.tenant,
                case.source,
                factor=self.factor,
                reason=_reason(case, "reduce frequency"),
                correlation_id=case.correlation_id or f"rca/{case.case_id}",
            )
            if done is not None:
                self._mark(case)
                control.poll_now()
                return done
        factor = control.slow_down(self.factor, self.max_factor, self.relax_after)
        self._mark(case)
        control.poll_now()
        return f"polling load factor set to {factor:g}"

    async def verify(self, case: CaseSummary) -> bool:
        control, since = self._control(case), self._since(case)
        return await self._until(lambda: control.path_succeeded_since("poll", since))


@dataclass
class RecoverService:
    """A health check's case: the service's recovery actions (the recovery manager runs them
    with its own back-off and cool-down; nothing runs twice) and a re-check by the monitor.

    ``apply`` checks the service now and says whether the manager is recovering it; ``verify``
    re-checks every ``check_every`` seconds until the service is healthy again.
    """

    monitor: HealthMonitor
    recovery: RecoveryManager | None
    clock: Clock
    name: str = RECOVER_SERVICE
    categories: frozenset[str] = frozenset({Category.CONNECTION_FAILURE})
    max_attempts: int = 3
    cooldown: float = 30.0
    check_every: float = 5.0

    def applies_to(self, case: CaseSummary) -> bool:
        return case.last_failure.get("component") == "health_check" and case.source is not None

    def _service(self, case: CaseSummary) -> str:
        if case.source is None:
            raise NoSourceToHeal(f"case {case.case_id} names no service to recover")
        return case.source

    async def apply(self, case: CaseSummary) -> str:
        service = self._service(case)
        record = await self.monitor.check_now(service)
        recovery = self.recovery
        if recovery is not None and service in recovery.services() and recovery.recovering(service):
            return f"{service} is {record.status}; its recovery actions are running"
        return f"{service} is {record.status} on a fresh check"

    async def verify(self, case: CaseSummary) -> bool:
        service = self._service(case)
        while (await self.monitor.check_now(service)).status is not HealthStatus.HEALTHY:
            await self.clock.sleep(self.check_every)
        return True


def builtin_strategies(
    controls: SourceControls,
    clock: Clock,
    wall: Callable[[], float] = time.time,
    *,
    limits: Mapping[str, Mapping[str, float]] | None = None,
) -> list[HealingStrategy]:
    """The source strategies above, sharing one set of controls and clocks; ``limits`` changes
    a strategy's ``max_attempts`` or ``cooldown`` by its name."""
    given = limits or {}
    return [
        with_limits(RestartStream(controls, clock, wall), given.get(RESTART_STREAM)),
        with_limits(Reconnect(controls, clock, wall), given.get(RECONNECT)),
        with_limits(ForcePolling(controls, clock, wall), given.get(FORCE_POLLING)),
        with_limits(RerunReconciliation(controls, clock, wall), given.get(RERUN_RECONCILIATION)),
        with_limits(ReduceFrequency(controls, clock, wall), given.get(REDUCE_FREQUENCY)),
    ]


Limited = TypeVar(
    "Limited",
    RestartStream,
    Reconnect,
    ForcePolling,
    RerunReconciliation,
    ReduceFrequency,
    RecoverService,
)


def with_limits(strategy: Limited, limits: Mapping[str, float] | None) -> Limited:
    """A copy of ``strategy`` with the ``max_attempts`` and ``cooldown`` given in ``limits``
    (the others kept)."""
    if not limits:
        return strategy
    return replace(
        strategy,
        max_attempts=int(limits.get("max_attempts", strategy.max_attempts)),
        cooldown=float(limits.get("cooldown", strategy.cooldown)),
    )


def builtin_limits() -> dict[str, tuple[int, float]]:
    """Each built-in strategy's default ``(max_attempts, cooldown)``, by name."""
    limits = {}
    kinds = (RestartStream, Reconnect, ForcePolling, RerunReconciliation, ReduceFrequency)
    for kind in (*kinds, RecoverService):
        default: dict[str, Any] = {f.name: f.default for f in fields(kind)}
        limits[str(default["name"])] = (int(default["max_attempts"]), float(default["cooldown"]))
    return limits


Action = Callable[[CaseSummary], Awaitable[str]]
Check = Callable[[CaseSummary], Awaitable[bool]]


def clear_cache(
    apply: Action,
    verify: Check,
    *,
    categories: frozenset[str] = frozenset({Category.HANDLER_BUG, Category.DATA_INCONSISTENCY}),
    max_attempts: int = 1,
    cooldown: float = 300.0,
) -> CallableStrategy:
    """The ``clear_cache`` strategy from the user's own functions: ``apply`` clears what the
    user caches and says what; ``verify`` re-checks that the problem is gone."""
    return CallableStrategy(CLEAR_CACHE, categories, apply, verify, max_attempts, cooldown)


def reload_config(
    apply: Action,
    verify: Check,
    *,
    categories: frozenset[str] = frozenset({Category.AUTH_FAILURE}),
    max_attempts: int = 1,
    cooldown: float = 300.0,
) -> CallableStrategy:
    """The ``reload_config`` strategy (e.g. rotated credentials) from the user's functions."""
    return CallableStrategy(RELOAD_CONFIG, categories, apply, verify, max_attempts, cooldown)
