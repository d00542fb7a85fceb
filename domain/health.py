"""Health of the services a center depends on, as pure rules of plain values (``now`` passed in).

What is here, and why it looks the way it does:

- **A check answers yes or no** (:class:`CheckResult`); the monitor measures how long it took.
  A service's :class:`ServiceHealth` is folded from its checks by :meth:`ServiceHealth.observe`:
  a frozen record, so every listener gets a snapshot nobody can change under it.
- **Status from thresholds** (:class:`HealthThresholds`, :func:`status_after`): ``unknown``
  until the first check answered; ``degraded_after`` consecutive failed checks make a service
  ``degraded``, ``unhealthy_after`` make it ``unhealthy``; a passed check slower than
  ``slow_after`` makes it ``degraded``. Coming back takes ``healthy_after`` consecutive passed
  checks (``degraded`` until then): one answer after an outage proves little. Fewer failures
  than ``degraded_after`` change nothing: the thresholds exist to absorb a blip.
- **Checks are spread** (:class:`CheckSchedule`): the first check of each service falls at a
  random point of its first interval and every later interval varies by ``jitter``, so a
  hundred checks registered at once do not hit their servers (or the loop) together.
- **Recovery** (:class:`RecoveryRule`, :class:`RecoveryPolicy`): an incident opens when a
  service reaches ``failure_threshold`` consecutive failed checks; its attempts are spaced by
  an exponential back-off with jitter (the first runs at once), at most ``max_attempts`` of
  them; an attempt counts only if the re-check after it is green; after an incident ends, a
  cool-down keeps the next one from starting at once (no thrashing). What a restart must not
  forget travels as :data:`RecoveryStep` values to a recorder and comes back as
  :class:`SavedRecovery`, in wall-clock times (the log is
  :class:`~eventcenter.domain.recovery_log.ServiceRecovery`).
- **Statistics** (:class:`RecoveryStats`): attempts, success rate, mean recovery time, by
  action, in the layout of the health report.
- **Alerts** (:class:`AlertThresholds`, :class:`AlertTracker`): the success rate and the mean
  response time over the last ``window`` checks, each with a firing and a (separate) clearing
  threshold: a value hovering at the line alerts once, not at every crossing.

Everything returns plain values; :class:`HealthReport.as_dict` and :meth:`RecoveryStats.as_dict`
are the JSON of the report (seed layout: per service status, response time, consecutive
failures/successes, totals; summary counts by status).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Annotated, Any, Protocol, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from eventcenter.domain.backoff import spread_delay
from eventcenter.domain.durations import parse_duration

Seconds = Annotated[float, BeforeValidator(parse_duration)]
"""A duration: a number of seconds or text like ``"30s"``, ``"5m"``, ``"250ms"``."""

ERROR_MAX = 500  # characters of a check's error kept in the record
RECENT_FAILURES = 10  # failed recovery attempts kept for the report


class HealthStatus(StrEnum):
    """What a service's checks say about it."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"


# configuration -----------------------------------------------------------------------------------


class HealthThresholds(BaseModel):
    """When a service's status changes (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    degraded_after: int = Field(1, ge=1, description="consecutive failed checks: degraded")
    unhealthy_after: int = Field(3, ge=1, description="consecutive failed checks: unhealthy")
    healthy_after: int = Field(
        2, ge=1, description="consecutive passed checks that bring a service back to healthy"
    )
    slow_after: Seconds | None = Field(
        1.0, gt=0, description="a passed check slower than this (s) is degraded; None: never"
    )

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.degraded_after > self.unhealthy_after:
            raise ValueError(
                f"degraded_after ({self.degraded_after}) must not exceed unhealthy_after "
                f"({self.unhealthy_after}): a service is degraded before it is unhealthy"
            )
        return self


class CheckSchedule(BaseModel):
    """How often a service is checked and how long one check may take."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    interval: Seconds = Field(30.0, gt=0, description="seconds between two checks")
    timeout: Seconds = Field(5.0, gt=0, description="seconds one check may take (then failed)")
    jitter: float = Field(
        0.1, ge=0, le=1, description="share by which each interval may vary either way"
    )

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> Self:
        if self.timeout > self.interval:
            raise ValueError(
                f"timeout ({self.timeout:g}s) must not exceed interval ({self.interval:g}s): "
                "checks of one service would pile up"
            )
        return self

    def first_delay(self, u: float) -> float:
        """Seconds before the first check: ``u * interval`` for ``u`` drawn uniformly in [0, 1).

        Spreading the starts over a whole interval is what keeps checks registered together
        from running together (and staying in step, since their intervals are equal)."""
        _check_unit(u)
        return u * self.interval

    def next_delay(self, u: float) -> float:
        """Seconds between two checks: ``interval * (1 + jitter * (2u - 1))``, in
        ``interval * [1 - jitter, 1 + jitter]``; the mean stays ``interval``."""
        _check_unit(u)
        return self.interval * (1.0 + self.jitter * (2.0 * u - 1.0))


class AlertThresholds(BaseModel):
    """When a service's alerts fire and clear, over its last ``window`` checks.

    The success rate fires below ``success_rate_below`` and clears at or above
    ``success_rate_clear``; the mean response time fires above ``response_time_above`` and
    clears at or below ``response_time_clear``. The gap between the two lines is the
    hysteresis: a value that crosses one line back and forth does not alert again. ``None``
    turns that alert off. Nothing fires before ``min_checks`` checks.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    window: int = Field(20, ge=1, description="the last checks the rates and means cover")
    min_checks: int = Field(5, ge=1, description="checks needed before anything fires")
    success_rate_below: float | None = Field(0.9, ge=0, le=1)
    success_rate_clear: float | None = Field(0.95, ge=0, le=1)
    response_time_above: Seconds | None = Field(2.0, gt=0)
    response_time_clear: Seconds | None = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _bands(self) -> Self:
        if self.min_checks > self.window:
            raise ValueError(
                f"min_checks ({self.min_checks}) must not exceed window ({self.window})"
            )
        if (self.success_rate_below is None) != (self.success_rate_clear is None):
            raise ValueError("set both success_rate_below and success_rate_clear, or neither")
        if (self.response_time_above is None) != (self.response_time_clear is None):
            raise ValueError("set both response_time_above and response_time_clear, or neither")
        below, clear = self.success_rate_below, self.success_rate_clear
        if below is not None and clear is not None and clear < below:
            raise ValueError(
                f"success_rate_clear ({clear:g}) must be at least success_rate_below "
                f"({below:g}): an alert clears only once the rate is back above its line"
            )
        above, back = self.response_time_above, self.response_time_clear
        if above is not None and back is not None and back > above:
            raise ValueError(
                f"response_time_clear ({back:g}s) must not exceed response_time_above "
                f"({above:g}s): an alert clears only once the time is back below its line"
            )
        return self


class CheckSettings(BaseModel):
    """Everything about how one service is checked: schedule, status thresholds, alerts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schedule: CheckSchedule = Field(default_factory=CheckSchedule)
    thresholds: HealthThresholds = Field(default_factory=HealthThresholds)
    alerts: AlertThresholds = Field(default_factory=AlertThresholds)


class RecoveryRule(BaseModel):
    """When and how often a service's recovery actions run (see :class:`RecoveryPolicy`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    failure_threshold: int = Field(3, ge=1, description="consecutive failed checks: recover")
    max_attempts: int = Field(3, ge=1, description="actions tried per incident, at most")
    backoff_base: Seconds = Field(1.0, gt=0, description="seconds before the second attempt")
    backoff_cap: Seconds = Field(60.0, gt=0, description="longest wait between two attempts")
    jitter: float = Field(0.5, ge=0, le=1, description="share of each wait the jitter may take off")
    cool_down: Seconds = Field(
        300.0, ge=0, description="seconds after an incident before another may start"
    )
    verify_checks: int = Field(
        1, ge=1, description="consecutive passed re-checks an attempt needs to count"
    )
    verify_interval: Seconds = Field(
        1.0, ge=0, description="seconds before each re-check (time for the action to work)"
    )
    action_timeout: Seconds = Field(30.0, gt=0, description="seconds an action may run")

    @model_validator(mode="after")
    def _cap(self) -> Self:
        if self.backoff_cap < self.backoff_base:
            raise ValueError(
                f"backoff_cap ({self.backoff_cap:g}s) must be at least backoff_base "
                f"({self.backoff_base:g}s)"
            )
        return self

    def delay_before(self, attempt: int, u: float) -> float:
        """Seconds to wait before attempt ``attempt`` of an incident (1 = the first, at once).

        Attempt ``n >= 2`` waits ``backoff_base * 2**(n-2)`` (at most ``backoff_cap``), less up
        to ``jitter`` of it drawn with ``u`` in [0, 1] (:func:`~eventcenter.domain.backoff.
        spread_delay`): services that failed together do not retry together."""
        if attempt < 1:
            raise ValueError(f"attempt must be >= 1, got {attempt}")
        if attempt == 1:
            return 0.0
        return spread_delay(attempt - 1, self.backoff_base, self.backoff_cap, u, self.jitter)


def _check_unit(u: float) -> None:
    if not 0.0 <= u <= 1.0:
        raise ValueError(f"a random draw must be in [0, 1], got {u}")


# checks and records ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What one check found. ``error`` says why it failed (None when it passed); ``details``
    are JSON values the checker adds for the report (a server version, an HTTP status)."""

    ok: bool
    error: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def passed(cls, **details: Any) -> CheckResult:
        return cls(True, None, details)

    @classmethod
    def failed(cls, error: str, **details: Any) -> CheckResult:
        return cls(False, error[:ERROR_MAX] or "failed", details)


class HealthChecker(Protocol):
    """A check of one service: ``name`` names the service, ``check`` asks it once.

    ``check`` returns a :class:`CheckResult`; raising counts as a failed check with the
    exception as its error, and the monitor bounds it with its own timeout, so a checker needs
    no error handling or timeout of its own beyond what keeps it from leaking resources.
    """

    @property
    def name(self) -> str: ...

    async def check(self) -> CheckResult: ...


def status_after(
    previous: HealthStatus,
    failures: int,
    successes: int,
    response_time: float,
    error: str | None,
    thresholds: HealthThresholds,
) -> tuple[HealthStatus, str]:
    """The status (and why) after a check, given the streaks that check left.

    Exactly one of ``failures`` and ``successes`` is positive: the check failed or passed.
    """
    t = thresholds
    if failures:
        last = f" (last: {error})" if error else ""
        if failures >= t.unhealthy_after:
            return HealthStatus.UNHEALTHY, f"{failures} consecutive failed checks{last}"
        if failures >= t.degraded_after:
            return HealthStatus.DEGRADED, f"{failures} consecutive failed checks{last}"
        return previous, f"{failures} failed check(s), degraded after {t.degraded_after}{last}"
    if t.slow_after is not None and response_time > t.slow_after:
        return HealthStatus.DEGRADED, f"slow: {response_time:.3g}s > {t.slow_after:g}s"
    if previous in (HealthStatus.UNKNOWN, HealthStatus.HEALTHY):
        return HealthStatus.HEALTHY, "passed"
    if successes >= t.healthy_after:
        return HealthStatus.HEALTHY, f"{successes} consecutive passed checks"
    return HealthStatus.DEGRADED, f"recovering: {successes} of {t.healthy_after} passed checks"


@dataclass(frozen=True, slots=True)
class ServiceHealth:
    """One service's health: its status and the counts behind it. Times are the clock's."""

    service: str
    status: HealthStatus = HealthStatus.UNKNOWN
    reason: str = "not checked yet"
    response_time: float | None = None
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    total_checks: int = 0
    total_failures: int = 0
    last_error: str | None = None
    last_checked: float | None = None
    last_success: float | None = None
    last_failure: float | None = None
    status_since: float | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def total_successes(self) -> int:
        return self.total_checks - self.total_failures

    @property
    def success_rate(self) -> float | None:
        """Passed checks over all checks (None before the first)."""
        return self.total_successes / self.total_checks if self.total_checks else None

    def observe(
        self, result: CheckResult, response_time: float, now: float, thresholds: HealthThresholds
    ) -> ServiceHealth:
        """The record after one more check that took ``response_time`` seconds and ended at
        ``now``. The status follows :func:`status_after`; ``status_since`` moves only when
        the status changes."""
        if result.ok:
            failures, successes = 0, self.consecutive_successes + 1
        else:
            failures, successes = self.consecutive_failures + 1, 0
        error = None if result.ok else (result.error or "failed")[:ERROR_MAX]
        status, reason = status_after(
            self.status, failures, successes, response_time, error, thresholds
        )
        return replace(
            self,
            status=status,
            reason=reason,
            response_time=response_time,
            consecutive_failures=failures,
            consecutive_successes=successes,
            total_checks=self.total_checks + 1,
            total_failures=self.total_failures + (0 if result.ok else 1),
            last_error=self.last_error if result.ok else error,
            last_checked=now,
            last_success=now if result.ok else self.last_success,
            last_failure=self.last_failure if result.ok else now,
            status_since=self.status_since if status is self.status else now,
            details=dict(result.details),
        )

    def as_dict(self, now: float) -> dict[str, Any]:
        """This service's entry in the report (``checked_ago``: seconds since its last check)."""
        return {
            "status": self.status.value,
            "reason": self.reason,
            "last_check": self.last_checked,
            "checked_ago": None if self.last_checked is None else now - self.last_checked,
            "response_time": self.response_time,
            "consecutive_failures": self.consecutive_failures,
            "consecutive_successes": self.consecutive_successes,
            "total_checks": self.total_checks,
            "total_failures": self.total_failures,
            "success_rate": self.success_rate,
            "last_error": self.last_error,
            "status_since": self.status_since,
            "details": dict(self.details),
        }


# alerts ------------------------------------------------------------------------------------------


AlertKind = str  # "success_rate" or "response_time"
SUCCESS_RATE: AlertKind = "success_rate"
RESPONSE_TIME: AlertKind = "response_time"


@dataclass(frozen=True, slots=True)
class Alert:
    """An alert that fired (``firing``) or cleared, with the value and the line it crossed."""

    service: str
    kind: AlertKind
    firing: bool
    value: float
    threshold: float
    at: float

    @property
    def message(self) -> str:
        if self.kind == SUCCESS_RATE:
            shown, line = f"{self.value:.0%}", f"{self.threshold:.0%}"
            word = "below" if self.firing else "back at or above"
            what = "success rate"
        else:
            shown, line = f"{self.value:.3g}s", f"{self.threshold:g}s"
            word = "above" if self.firing else "back at or below"
            what = "mean response time"
        state = "ALERT" if self.firing else "cleared"
        return f"{state}: {self.service} {what} {shown} {word} {line}"


class AlertTracker:
    """One service's alert state over its last ``window`` checks.

    :meth:`observe` returns the alerts that fired or cleared with this check (usually none):
    an alert that is firing does not fire again until it cleared, and it clears only past its
    clearing line (:class:`AlertThresholds`).
    """

    def __init__(self, service: str, thresholds: AlertThresholds) -> None:
        self.service = service
        self.thresholds = thresholds
        self._window: deque[tuple[bool, float]] = deque(maxlen=thresholds.window)
        self.firing: set[AlertKind] = set()

    def success_rate(self) -> float | None:
        if not self._window:
            return None
        return sum(1 for ok, _ in self._window if ok) / len(self._window)

    def mean_response_time(self) -> float | None:
        if not self._window:
            return None
        return math.fsum(seconds for _, seconds in self._window) / len(self._window)

    def observe(self, ok: bool, response_time: float, now: float) -> tuple[Alert, ...]:
        self._window.append((ok, response_time))
        t = self.thresholds
        if len(self._window) < t.min_checks:
            return ()
        alerts: list[Alert] = []
        rate = self.success_rate()
        below, clear = t.success_rate_below, t.success_rate_clear
        if rate is not None and below is not None and clear is not None:
            alerts.extend(self._cross(SUCCESS_RATE, rate, rate < below, rate >= clear, now))
        mean = self.mean_response_time()
        above, back = t.response_time_above, t.response_time_clear
        if mean is not None and above is not None and back is not None:
            alerts.extend(self._cross(RESPONSE_TIME, mean, mean > above, mean <= back, now))
        return tuple(alerts)

    def _cross(
        self, kind: AlertKind, value: float, fire: bool, clear: bool, now: float
    ) -> list[Alert]:
        """Fire if not firing and past the firing line; clear if firing and past the clearing
        line; otherwise nothing (between the lines the state stays as it is)."""
        t = self.thresholds
        if kind not in self.firing and fire:
            self.firing.add(kind)
            line = t.success_rate_below if kind == SUCCESS_RATE else t.response_time_above
            return [Alert(self.service, kind, True, value, float(line or 0.0), now)]
        if kind in self.firing and clear:
            self.firing.discard(kind)
            line = t.success_rate_clear if kind == SUCCESS_RATE else t.response_time_clear
            return [Alert(self.service, kind, False, value, float(line or 0.0), now)]
        return []


# what listeners are told -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HealthUpdate:
    """One finished check of one service: the record before and after it, and what it set off.

    ``changed`` says the status moved; ``alerts`` the alerts that fired or cleared with it.
    """

    previous: ServiceHealth
    record: ServiceHealth
    result: CheckResult
    alerts: tuple[Alert, ...] = ()

    @property
    def service(self) -> str:
        return self.record.service

    @property
    def changed(self) -> bool:
        return self.previous.status is not self.record.status


class HealthListener(Protocol):
    """Told about checks by the health monitor (an ``async`` callable taking a
    :class:`HealthUpdate`). By default a listener hears only status changes and alerts; the
    center turns a service that became unhealthy into a failure for root-cause analysis."""

    async def __call__(self, update: HealthUpdate, /) -> None: ...


# the report --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HealthReport:
    """Every service's health at ``timestamp`` (clock time), and counts by status."""

    timestamp: float
    monitoring_active: bool
    services: Mapping[str, ServiceHealth]

    @property
    def summary(self) -> dict[str, int]:
        counts = {"total": len(self.services)} | {status.value: 0 for status in HealthStatus}
        for record in self.services.values():
            counts[record.status.value] += 1
        return counts

    def as_dict(self) -> dict[str, Any]:
        return {
            "timestamp": self.timestamp,
            "monitoring_active": self.monitoring_active,
            "services": {
                name: record.as_dict(self.timestamp) for name, record in self.services.items()
            },
            "summary": self.summary,
        }


def health_report(
    records: Iterable[ServiceHealth], now: float, monitoring_active: bool
) -> HealthReport:
    """The report of ``records``, sorted by service name."""
    ordered = sorted(records, key=lambda record: record.service)
    return HealthReport(now, monitoring_active, {record.service: record for record in ordered})


# recovery ----------------------------------------------------------------------------------------


class IncidentOutcome(StrEnum):
    """How a recovery incident ended."""

    RECOVERED = "recovered"  # an action's re-check was green
    RECOVERED_ALONE = "recovered_alone"  # a check passed before the next action was due
    GAVE_UP = "gave_up"  # max_attempts actions, none verified: a person must look


@dataclass(slots=True)
class RecoveryState:
    """A service's recovery memory, plain values: the open incident (if any) and the cool-down.

    ``incident_since`` and ``cool_down_until`` are clock (monotonic) times, which start over
    with each process: what is kept across a restart is stored as wall-clock time
    (:class:`SavedRecovery`) and turned back into clock time on restore."""

    incident_since: float | None = None
    attempts: int = 0
    cool_down_until: float | None = None


class RecoveryPolicy:
    """The rules of :class:`RecoveryRule` applied to one service's :class:`RecoveryState`."""

    def __init__(self, rule: RecoveryRule, state: RecoveryState | None = None) -> None:
        self.rule = rule
        self.state = state or RecoveryState()

    @property
    def in_incident(self) -> bool:
        return self.state.incident_since is not None

    def should_start(self, consecutive_failures: int, now: float) -> bool:
        """True if an incident opens now: none is open, the failures reached the threshold,
        and no cool-down is running."""
        state = self.state
        if state.incident_since is not None:
            return False
        if consecutive_failures < self.rule.failure_threshold:
            return False
        return state.cool_down_until is None or now >= state.cool_down_until

    def start(self, now: float) -> None:
        if self.in_incident:
            raise ValueError("a recovery incident is already open for this service")
        self.state.incident_since = now
        self.state.attempts = 0

    def next_attempt(self) -> int | None:
        """The number of the next attempt (1 = first), or None when all are spent."""
        if not self.in_incident:
            raise ValueError("no recovery incident is open")
        following = self.state.attempts + 1
        return following if following <= self.rule.max_attempts else None

    def attempted(self, verified: bool, now: float) -> IncidentOutcome | None:
        """Record an attempt's verdict; the incident's outcome if it ended with it."""
        if not self.in_incident:
            raise ValueError("no recovery incident is open")
        self.state.attempts += 1
        if verified:
            return self.end(IncidentOutcome.RECOVERED, now)
        if self.state.attempts >= self.rule.max_attempts:
            return self.end(IncidentOutcome.GAVE_UP, now)
        return None

    def end(self, outcome: IncidentOutcome, now: float) -> IncidentOutcome:
        """Close the incident at ``now`` and start the cool-down."""
        self.state.incident_since = None
        self.state.cool_down_until = now + self.rule.cool_down
        return outcome


@dataclass(frozen=True, slots=True)
class RecoveryAttempt:
    """One recovery action that ran, and whether its re-check was green.

    ``error`` says why it did not count: the action raised or timed out, or the re-check
    failed. ``incident_since`` is when the incident opened: ``finished_at - incident_since``
    is the recovery time of a verified attempt.
    """

    service: str
    action: str
    attempt: int
    incident_since: float
    started_at: float
    finished_at: float
    verified: bool
    error: str | None = None

    @property
    def recovery_time(self) -> float | None:
        return self.finished_at - self.incident_since if self.verified else None


@dataclass(slots=True)
class _ActionTally:
    attempts: int = 0
    successes: int = 0
    recovery_time: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "attempts": self.attempts,
            "successes": self.successes,
            "success_rate": self.successes / self.attempts if self.attempts else None,
            "average_recovery_time": (
                self.recovery_time / self.successes if self.successes else None
            ),
        }


class RecoveryStats:
    """Running totals of recovery attempts and incidents (bounded memory: counts, and the last
    :data:`RECENT_FAILURES` failed attempts)."""

    def __init__(self) -> None:
        self.total = _ActionTally()
        self.by_action: dict[str, _ActionTally] = {}
        self.incidents: dict[str, int] = {outcome.value: 0 for outcome in IncidentOutcome}
        self.recent_failures: deque[RecoveryAttempt] = deque(maxlen=RECENT_FAILURES)

    @classmethod
    def folded(
        cls,
        by_action: Mapping[str, tuple[int, int, float]],
        incidents: Mapping[str, int],
        recent_failures: Iterable[RecoveryAttempt] = (),
    ) -> RecoveryStats:
        """Stats from totals kept elsewhere (a service's recovery log): per action
        ``(attempts, successes, summed recovery time)``, incidents per outcome, the failures."""
        stats = cls()
        for name, (attempts, successes, recovery_time) in by_action.items():
            stats.by_action[name] = _ActionTally(attempts, successes, recovery_time)
            stats.total.attempts += attempts
            stats.total.successes += successes
            stats.total.recovery_time += recovery_time
        for outcome, count in incidents.items():
            stats.incidents[outcome] = stats.incidents.get(outcome, 0) + count
        stats.recent_failures.extend(recent_failures)
        return stats

    def merge(self, other: RecoveryStats, *, offset: float = 0.0) -> None:
        """Add ``other``'s totals to these. Its recent failures join these in time order (the
        latest :data:`RECENT_FAILURES` stay), their times moved by ``offset``: ``clock now -
        wall now`` turns a restored record's wall-clock times into this process's clock."""
        for name, tally in other.by_action.items():
            mine = self.by_action.setdefault(name, _ActionTally())
            for counter in (self.total, mine):
                counter.attempts += tally.attempts
                counter.successes += tally.successes
                counter.recovery_time += tally.recovery_time
        for outcome, count in other.incidents.items():
            self.incidents[outcome] = self.incidents.get(outcome, 0) + count
        moved = [
            replace(
                failed,
                incident_since=failed.incident_since + offset,
                started_at=failed.started_at + offset,
                finished_at=failed.finished_at + offset,
            )
            for failed in other.recent_failures
        ]
        ordered = sorted([*self.recent_failures, *moved], key=lambda failed: failed.finished_at)
        self.recent_failures.clear()
        self.recent_failures.extend(ordered)

    def add(self, attempt: RecoveryAttempt) -> None:
        tally = self.by_action.setdefault(attempt.action, _ActionTally())
        for counter in (self.total, tally):
            counter.attempts += 1
            if attempt.recovery_time is not None:
                counter.successes += 1
                counter.recovery_time += attempt.recovery_time
        if not attempt.verified:
            self.recent_failures.append(attempt)

    def incident_ended(self, outcome: IncidentOutcome) -> None:
        self.incidents[outcome.value] += 1

    @property
    def success_rate(self) -> float | None:
        """Verified attempts over attempts (None before the first)."""
        total = self.total
        return total.successes / total.attempts if total.attempts else None

    @property
    def average_recovery_time(self) -> float | None:
        """Mean seconds from an incident's start to the verified attempt that ended it."""
        total = self.total
        return total.recovery_time / total.successes if total.successes else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "total_attempts": self.total.attempts,
            "successful_attempts": self.total.successes,
            "success_rate": self.success_rate,
            "average_recovery_time": self.average_recovery_time,
            "actions_by_type": {
                name: tally.as_dict() for name, tally in sorted(self.by_action.items())
            },
            "incidents": dict(self.incidents),
            "recent_failures": [
                {
                    "service": failed.service,
                    "action": failed.action,
                    "attempt": failed.attempt,
                    "at": failed.finished_at,
                    "error": failed.error,
                }
                for failed in self.recent_failures
            ],
        }


@dataclass(frozen=True, slots=True)
class IncidentStart:
    """A recovery incident opened (``since``: wall-clock time, the incident's identity in its
    service's log), after ``failures`` consecutive failed checks, the last saying ``error``."""

    service: str
    since: float
    failures: int
    error: str | None = None


@dataclass(frozen=True, slots=True)
class IncidentEnd:
    """A recovery incident (the one opened at ``since``) ended at ``at`` with ``outcome``
    after ``attempts`` attempts; no other may start before ``cool_down_until``. Wall-clock
    times."""

    service: str
    since: float
    outcome: IncidentOutcome
    attempts: int
    at: float
    cool_down_until: float


@dataclass(frozen=True, slots=True)
class AttemptStart:
    """Recovery attempt ``attempt`` of the incident opened at ``incident_since`` began to run
    ``action`` at ``started_at`` (wall-clock times). Handed to the recorder before the action
    runs, so an attempt that a stop of the center cuts short is known after the restart: it
    counts as an attempt that did not work and is not run again."""

    service: str
    action: str
    attempt: int
    incident_since: float
    started_at: float


RecoveryStep = IncidentStart | AttemptStart | RecoveryAttempt | IncidentEnd
"""What the recovery manager hands its recorder, in the order it happened, with wall-clock
times (a :class:`RecoveryAttempt`'s ``incident_since`` is its incident's ``since``)."""


@dataclass(frozen=True, slots=True)
class SavedRecovery:
    """What a service's recovery resumes from after a restart, in wall-clock times: the open
    incident (``incident_since`` None: none) with the attempts it made (and the one a stop
    cut short, if any), the end of the cool-down, and the service's statistics (recent
    failures in wall-clock times too)."""

    service: str
    incident_since: float | None
    attempts: int
    cool_down_until: float | None
    stats: RecoveryStats = field(compare=False, default_factory=RecoveryStats)
    #: The attempt the open incident began and never finished (a stop cut it short), as the
    #: failed attempt to record for it (its ``finished_at`` is its start: the end is unknown).
    interrupted: RecoveryAttempt | None = None


def recovery_stats(attempts: Iterable[RecoveryAttempt]) -> RecoveryStats:
    """The statistics of ``attempts`` (for a report rebuilt from a list)."""
    stats = RecoveryStats()
    for attempt in attempts:
        stats.add(attempt)
    return stats
