"""The recovery of one service, as an event-sourced aggregate.

One :class:`ServiceRecovery` per (center, service), its id derived from both, so a restarted
center finds the log of each service it has recovery actions for. Its events are the audit
trail of the recovery manager (:mod:`eventcenter.healing.recovery`): ``IncidentOpened``
(after how many failed checks, the last error), ``AttemptStarted`` (the action and its number,
before it runs), ``AttemptRecorded`` (the action, its number in the incident, when it ran,
whether its re-check was green, why not), ``IncidentEnded`` (the outcome, the attempts, the end
of the cool-down).

The aggregate keeps what a restart needs (:meth:`ServiceRecovery.saved`): the open incident
and the attempts it made, including one begun and never finished (a stop cut it short: it is
recorded as failed after the restart, not run again), so a restarted center never runs more
than ``max_attempts`` actions for one incident, however often it is stopped; the end of the
cool-down; and the statistics folded as the events come (counts and summed recovery time per
action, incidents per outcome, the last failed attempts), so loading costs the same however
long the history (snapshots bound the replay).
Times are WALL-CLOCK (epoch seconds): monotonic time starts over with each process. Every
attribute is a plain JSON value, so snapshots work.

A step is recorded as the manager took it; the log refuses one that does not follow from
what it holds (an attempt of an incident that is not open, out of order), and recording the
same step again changes nothing: an incident is known by the time it opened, an attempt by its
number in it, so a write retried after an ambiguous commit is stored once.
"""

from __future__ import annotations

from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from eventcenter.domain.errors import RecoveryRefused
from eventcenter.domain.health import (
    RECENT_FAILURES,
    AttemptStart,
    IncidentEnd,
    IncidentOutcome,
    IncidentStart,
    RecoveryAttempt,
    RecoveryStats,
    RecoveryStep,
    SavedRecovery,
)

_NAMESPACE = uuid5(NAMESPACE_URL, "https://eventcenter/aggregates")

#: Why an attempt that was begun and never finished did not count.
CUT_SHORT = "cut short: the center stopped while the action or its re-checks ran"


class ServiceRecovery(Aggregate):
    """The recorded recovery of one service; see the module docstring."""

    # Class-level default: a log recorded before attempt starts were recorded loads with none.
    begun: dict[str, Any] | None = None  # the attempt started and not yet recorded

    @staticmethod
    def create_id(center: str, service: str) -> UUID:
        return uuid5(_NAMESPACE, f"recovery/{center}/{service}")

    @event("Registered")
    def __init__(self, center: str, service: str, at: float) -> None:
        self.center = center
        self.service = service
        self.registered_at = at
        self.incident_since: float | None = None
        self.attempts = 0  # made in the open incident
        self.cool_down_until: float | None = None
        self.last_incident: float | None = None  # ``since`` of the last incident ended
        # statistics: action -> {"attempts", "successes", "recovery_time"}
        self.actions: dict[str, dict[str, float]] = {}
        self.incidents: dict[str, int] = {outcome.value: 0 for outcome in IncidentOutcome}
        self.recent_failures: list[dict[str, Any]] = []

    @classmethod
    def register(cls, center: str, service: str, *, at: float) -> ServiceRecovery:
        """A new, empty log for ``service`` of center ``center``."""
        if not service:
            raise RecoveryRefused(service, "register", "a service needs a name")
        return cls(center, service, at)

    @property
    def name(self) -> str:
        return f"recovery {self.center}/{self.service}"

    def saved(self) -> SavedRecovery:
        """What the service's recovery resumes from after a restart (wall-clock times)."""
        stats = RecoveryStats.folded(
            {
                action: (int(t["attempts"]), int(t["successes"]), float(t["recovery_time"]))
                for action, t in self.actions.items()
            },
            self.incidents,
            (_failed_attempt(self.service, failed) for failed in self.recent_failures),
        )
        begun, interrupted = self.begun, None
        if begun is not None and self.incident_since is not None:
            interrupted = RecoveryAttempt(
                self.service,
                begun["action"],
                begun["attempt"],
                self.incident_since,
                begun["started_at"],
                begun["started_at"],
                False,
                CUT_SHORT,
            )
        return SavedRecovery(
            self.service,
            self.incident_since,
            self.attempts,
            self.cool_down_until,
            stats,
            interrupted,
        )

    def record(self, step: RecoveryStep) -> None:
        """Record one step of the service's recovery (see the module docstring for what is
        refused and what is recorded once)."""
        if step.service != self.service:
            raise RecoveryRefused(
                self.service, _kind(step), f"a step of '{step.service}' does not belong here"
            )
        if isinstance(step, IncidentStart):
            self._start(step)
        elif isinstance(step, AttemptStart):
            self._begin(step)
        elif isinstance(step, RecoveryAttempt):
            self._attempt(step)
        else:
            self._end(step)

    # the commands --------------------------------------------------------------------------

    def _start(self, step: IncidentStart) -> None:
        if step.since in (self.incident_since, self.last_incident):
            return  # recorded already
        if self.incident_since is not None:
            raise RecoveryRefused(
                self.service,
                "opening an incident",
                f"the incident opened at {self.incident_since} is still open",
            )
        self._opened(since=step.since, failures=step.failures, error=step.error)

    def _begin(self, step: AttemptStart) -> None:
        if self._ended_already(step.incident_since):
            return  # its incident ended: this start was recorded before the end
        what = f"starting attempt {step.attempt}"
        self._check_open(step.incident_since, what)
        begun = self.begun
        if step.attempt <= self.attempts or (
            begun is not None and begun["attempt"] == step.attempt
        ):
            return  # recorded already
        self._check_next(step.attempt, what)
        self._began(
            attempt=step.attempt,
            action=step.action,
            incident_since=step.incident_since,
            started_at=step.started_at,
        )

    def _attempt(self, step: RecoveryAttempt) -> None:
        if self._ended_already(step.incident_since):
            return  # its incident ended: this attempt was recorded before the end
        what = f"attempt {step.attempt}"
        self._check_open(step.incident_since, what)
        if step.attempt <= self.attempts:
            return  # recorded already
        self._check_next(step.attempt, what)
        self._attempted(
            attempt=step.attempt,
            action=step.action,
            incident_since=step.incident_since,
            started_at=step.started_at,
            finished_at=step.finished_at,
            verified=step.verified,
            error=step.error,
        )

    def _end(self, step: IncidentEnd) -> None:
        if self._ended_already(step.since):
            return  # recorded already
        self._check_open(step.since, f"ending as {step.outcome.value}")
        self._ended(
            since=step.since,
            outcome=step.outcome.value,
            attempts=step.attempts,
            at=step.at,
            cool_down_until=step.cool_down_until,
        )

    def _ended_already(self, since: float) -> bool:
        """Whether ``since`` names the incident that ended last (none is open since)."""
        return since == self.last_incident and self.incident_since is None

    def _check_next(self, attempt: int, what: str) -> None:
        if attempt != self.attempts + 1:
            raise RecoveryRefused(
                self.service, what, f"the log holds {self.attempts} attempt(s) of this incident"
            )

    def _check_open(self, since: float, what: str) -> None:
        if self.incident_since is None:
            raise RecoveryRefused(self.service, what, "no incident is open")
        if since != self.incident_since:
            raise RecoveryRefused(
                self.service,
                what,
                f"it belongs to the incident opened at {since}, "
                f"the open one opened at {self.incident_since}",
            )

    # the events ----------------------------------------------------------------------------

    @event("IncidentOpened")
    def _opened(self, since: float, failures: int, error: str | None) -> None:
        self.incident_since = since
        self.attempts = 0
        self.begun = None

    @event("AttemptStarted")
    def _began(self, attempt: int, action: str, incident_since: float, started_at: float) -> None:
        self.begun = {"attempt": attempt, "action": action, "started_at": started_at}

    @event("AttemptRecorded")
    def _attempted(
        self,
        attempt: int,
        action: str,
        incident_since: float,
        started_at: float,
        finished_at: float,
        verified: bool,
        error: str | None,
    ) -> None:
        self.attempts = attempt
        self.begun = None
        tally = self.actions.setdefault(
            action, {"attempts": 0, "successes": 0, "recovery_time": 0.0}
        )
        tally["attempts"] += 1
        if verified:
            tally["successes"] += 1
            tally["recovery_time"] += finished_at - incident_since
            return
        self.recent_failures.append(
            {
                "action": action,
                "attempt": attempt,
                "incident_since": incident_since,
                "started_at": started_at,
                "finished_at": finished_at,
                "error": error,
            }
        )
        del self.recent_failures[:-RECENT_FAILURES]

    @event("IncidentEnded")
    def _ended(
        self, since: float, outcome: str, attempts: int, at: float, cool_down_until: float
    ) -> None:
        self.incident_since = None
        self.attempts = 0
        self.begun = None
        self.last_incident = since
        self.cool_down_until = cool_down_until
        self.incidents[outcome] = self.incidents.get(outcome, 0) + 1


def _kind(step: RecoveryStep) -> str:
    if isinstance(step, IncidentStart):
        return "opening an incident"
    if isinstance(step, AttemptStart):
        return f"starting attempt {step.attempt}"
    if isinstance(step, RecoveryAttempt):
        return f"attempt {step.attempt}"
    return f"ending as {step.outcome.value}"


def _failed_attempt(service: str, failed: dict[str, Any]) -> RecoveryAttempt:
    return RecoveryAttempt(
        service,
        failed["action"],
        failed["attempt"],
        failed["incident_since"],
        failed["started_at"],
        failed["finished_at"],
        False,
        failed["error"],
    )
