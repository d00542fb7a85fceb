"""An RCA case: one root cause, from the first failure to healed, resolved or closed.

The case is an event-sourced aggregate whose events are the story ``rca show`` tells:
``Opened`` (the failure that opened it), ``Analysed`` (category, confidence, evidence,
recommended strategies, the context the rules saw), ``FailureAttached`` (later failures of the
same tenant, source and category), ``HealingAttempted{strategy}`` (recorded before the action
runs), ``HealingVerified`` / ``HealingFailed`` (the re-check's verdict), ``Escalated{sink}`` and
``Renotified``, ``Acknowledged{by}``, ``Resolved{note}``, ``Closed``.

Its id is derived from the cause: tenant, source, category and the id of the failure that
opened it. The same failure analysed again (after a restart) finds the same case instead of
opening a second one, and the runner attaches failures of a cause that has an open case to it.

Commands refuse what does not follow from the state (:class:`RcaCaseRefused`): a closed case
takes nothing more, an escalated one is not healed, a verdict needs the attempt it judges.
Recording the same step twice changes nothing (each command returns whether it recorded), so
a retry after an ambiguous save, or a runner resuming after a crash, stores each step once.
Every attribute is a plain JSON value, so snapshots work.

Statuses::

    open --attempt--> healing --failed--> open --...--> escalated --ack--> acknowledged
                         \\--verified--> healed --close--> closed
    any status but closed --resolve--> closed
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from eventcenter.domain.errors import RcaCaseRefused
from eventcenter.domain.healing_choice import HealingStats
from eventcenter.domain.rca import Analysis, CaseSummary, Failure, RcaContext

_NAMESPACE = uuid5(NAMESPACE_URL, "https://eventcenter/aggregates")

OPEN = "open"
HEALING = "healing"
HEALED = "healed"
ESCALATED = "escalated"
ACKNOWLEDGED = "acknowledged"
CLOSED = "closed"
STATUSES = (OPEN, HEALING, HEALED, ESCALATED, ACKNOWLEDGED, CLOSED)

VERIFIED = "verified"
FAILED = "failed"

#: How many attached failure ids a case remembers to drop a repeat (the count is exact).
RECENT_FAILURES = 50
TEXT_MAX = 2_000


def _text(value: str) -> str:
    return value[:TEXT_MAX]


class RcaCase(Aggregate):
    """One root cause and what was done about it; see the module docstring."""

    @staticmethod
    def create_id(tenant: str, source: str | None, category: str, failure_id: str) -> UUID:
        return uuid5(_NAMESPACE, f"rca/{tenant}/{source or ''}/{category}/{failure_id}")

    @event("Opened")
    def __init__(
        self,
        tenant: str,
        source: str | None,
        category: str,
        failure_id: str,
        failure: dict[str, Any],
        at: float,
        repeats: int = 0,
    ) -> None:
        self.tenant = tenant
        self.source = source
        self.category = category
        self.failure_id = failure_id
        self.correlation_id = str(failure.get("correlation_id", ""))
        self.status = OPEN
        self.opened_at = at
        self.updated_at = at
        self.first_failure = dict(failure)
        self.last_failure = dict(failure)
        self.failures = 1 + repeats
        self.recent_failures: list[str] = [failure_id]
        self.analysis: dict[str, Any] | None = None
        self.context: dict[str, Any] | None = None
        self.attempts: list[dict[str, Any]] = []
        self.notifications: list[dict[str, Any]] = []
        self.acknowledged: dict[str, Any] | None = None
        self.resolution: dict[str, Any] | None = None
        self.closed: dict[str, Any] | None = None

    @classmethod
    def open(
        cls,
        failure: Failure,
        analysis: Analysis,
        context: RcaContext,
        *,
        at: float,
        repeats: int = 0,
    ) -> RcaCase:
        """A new case for ``failure`` (and ``repeats`` more like it), analysed as ``analysis``
        (two events: Opened, Analysed)."""
        case = cls(
            failure.tenant,
            failure.source,
            analysis.category,
            str(failure.id),
            failure.as_dict(),
            at,
            repeats,
        )
        case.analysed(analysis, context, at=at)
        return case

    @staticmethod
    def id_for(failure: Failure, category: str) -> UUID:
        """The id of the case ``failure`` opens when it is analysed as ``category``."""
        return RcaCase.create_id(failure.tenant, failure.source, category, str(failure.id))

    # reading -----------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return f"{self.tenant}/{self.source or '-'}/{self.category}"

    @property
    def is_open(self) -> bool:
        return self.status != CLOSED

    @property
    def cause(self) -> tuple[str, str | None, str]:
        """(tenant, source, category): one open case per cause."""
        return (self.tenant, self.source, self.category)

    @property
    def pending_attempt(self) -> dict[str, Any] | None:
        """The last attempt if it has no verdict yet (a crash came between action and
        verdict: the runner re-checks it rather than acting again)."""
        if self.attempts and self.attempts[-1]["verdict"] is None:
            return self.attempts[-1]
        return None

    def tried(self, strategy: str) -> int:
        return sum(1 for attempt in self.attempts if attempt["strategy"] == strategy)

    def last_applied(self, strategy: str) -> float | None:
        times = [a["at"] for a in self.attempts if a["strategy"] == strategy]
        return max(times) if times else None

    def summary(self, reason: str = "", notification: int = 0) -> CaseSummary:
        """The case as strategies and escalation sinks see it."""
        analysis = self.analysis or {}
        return CaseSummary(
            case_id=str(self.id),
            tenant=self.tenant,
            source=self.source,
            category=self.category,
            status=self.status,
            confidence=float(analysis.get("confidence", 0.0)),
            evidence=tuple(analysis.get("evidence", ())),
            strategies=tuple(analysis.get("strategies", ())),
            opened_at=self.opened_at,
            failures=self.failures,
            first_failure=dict(self.first_failure),
            last_failure=dict(self.last_failure),
            correlation_id=self.correlation_id,
            attempts=tuple(dict(a) for a in self.attempts),
            reason=reason,
            notification=notification,
            escalated_at=self.escalated_at,
        )

    # analysis and failures ---------------------------------------------------------------------

    def analysed(self, analysis: Analysis, context: RcaContext, *, at: float) -> bool:
        """Record the analysis (once: the same analysis again changes nothing)."""
        values = analysis.as_dict()
        if self.analysis is not None:
            if self.analysis == values:
                return False
            self._refuse("analyse", "the case was analysed already")
        if analysis.category != self.category:
            self._refuse(
                "analyse", f"the analysis says {analysis.category}, the case is {self.category}"
            )
        self._analysed(analysis=values, context=context.as_dict(), at=at)
        return True

    @event("Analysed")
    def _analysed(self, analysis: dict[str, Any], context: dict[str, Any], at: float) -> None:
        self.analysis = analysis
        self.context = context
        self.updated_at = at

    def attach(self, failure: Failure, *, at: float, repeats: int = 0) -> bool:
        """Attach a later failure of the same cause (``repeats``: how many more like it were
        merged into it before it was taken). A failure attached already changes nothing."""
        self._check_not_closed("attach")
        if failure.key != (self.tenant, self.source):
            self._refuse("attach", f"the failure concerns {failure.tenant}/{failure.source}")
        failure_id = str(failure.id)
        if failure_id in self.recent_failures:
            return False
        self._attached(failure_id=failure_id, failure=failure.as_dict(), repeats=repeats, at=at)
        return True

    @event("FailureAttached")
    def _attached(self, failure_id: str, failure: dict[str, Any], repeats: int, at: float) -> None:
        self.failures += 1 + repeats
        self.last_failure = failure
        self.recent_failures = [*self.recent_failures[-(RECENT_FAILURES - 1) :], failure_id]
        self.updated_at = at

    # healing -----------------------------------------------------------------------------------

    def attempt(self, strategy: str, number: int, *, at: float, reason: str = "") -> bool:
        """Record that attempt ``number`` (1, 2, ...) applies ``strategy``, before it runs."""
        last = self.attempts[-1] if self.attempts else None
        if last is not None and (last["n"], last["strategy"]) == (number, strategy):
            return False
        self._check_not_closed("attempt")
        if self.status != OPEN:
            self._refuse(
                "attempt",
                "an attempt is still waiting for its verdict"
                if self.status == HEALING
                else "the case is no longer healed automatically",
            )
        if number != len(self.attempts) + 1:
            self._refuse("attempt", f"the next attempt is #{len(self.attempts) + 1}, not #{number}")
        self._attempted(strategy=strategy, n=number, reason=_text(reason), at=at)
        return True

    @event("HealingAttempted")
    def _attempted(self, strategy: str, n: int, reason: str, at: float) -> None:
        self.attempts = [
            *self.attempts,
            {
                "n": n,
                "strategy": strategy,
                "reason": reason,
                "at": at,
                "verdict": None,
                "action": "",
                "detail": "",
                "decided_at": None,
            },
        ]
        self.status = HEALING
        self.updated_at = at

    def verdict(
        self, number: int, verified: bool, *, at: float, action: str = "", detail: str = ""
    ) -> bool:
        """Record the re-check of attempt ``number``: verified (the problem is gone) or failed.

        True if recorded now; False if the same verdict was recorded before.
        """
        if not 1 <= number <= len(self.attempts):
            self._refuse("verdict", f"there is no attempt #{number}")
        attempt = self.attempts[number - 1]
        wanted = VERIFIED if verified else FAILED
        if attempt["verdict"] is not None:
            if attempt["verdict"] == wanted:
                return False
            self._refuse("verdict", f"attempt #{number} was {attempt['verdict']} already")
        if number != len(self.attempts):
            self._refuse("verdict", f"attempt #{number} is not the last one")
        self._check_not_closed("verdict")
        fields = {
            "strategy": attempt["strategy"],
            "n": number,
            "action": _text(action),
            "detail": _text(detail),
            "at": at,
        }
        if verified:
            self._verified(**fields)
        else:
            self._failed(**fields)
        return True

    @event("HealingVerified")
    def _verified(self, strategy: str, n: int, action: str, detail: str, at: float) -> None:
        self._judged(n, VERIFIED, action, detail, at)
        self.status = HEALED

    @event("HealingFailed")
    def _failed(self, strategy: str, n: int, action: str, detail: str, at: float) -> None:
        self._judged(n, FAILED, action, detail, at)
        self.status = OPEN

    def _judged(self, n: int, verdict: str, action: str, detail: str, at: float) -> None:
        attempts = [dict(a) for a in self.attempts]
        attempts[n - 1].update(verdict=verdict, action=action, detail=detail, decided_at=at)
        self.attempts = attempts
        self.updated_at = at

    # escalation and the person's answer --------------------------------------------------------

    def escalate(self, sink: str, *, at: float, reason: str) -> bool:
        """Record that ``sink`` took the case (a person must look at it). Once per case:
        escalating an escalated case changes nothing."""
        if self.status in (ESCALATED, ACKNOWLEDGED):
            return False
        self._check_not_closed("escalate")
        if self.status != OPEN:
            self._refuse("escalate", "an attempt is still waiting for its verdict")
        self._escalated(sink=sink, reason=_text(reason), at=at)
        return True

    @event("Escalated")
    def _escalated(self, sink: str, reason: str, at: float) -> None:
        self.notifications = [{"n": 1, "sink": sink, "reason": reason, "at": at}]
        self.status = ESCALATED
        self.updated_at = at

    @property
    def escalated_at(self) -> float | None:
        return self.notifications[0]["at"] if self.notifications else None

    @property
    def notified_at(self) -> float | None:
        """When a person was last notified (escalation or renotification)."""
        return self.notifications[-1]["at"] if self.notifications else None

    def renotify(self, sink: str, number: int, *, at: float) -> bool:
        """Record notification ``number`` (2, 3, ...) of an escalated case nobody answered."""
        if number <= len(self.notifications):
            return False
        self._check_not_closed("renotify")
        if self.status != ESCALATED:
            self._refuse("renotify", "only an escalated case nobody acknowledged is renotified")
        if number != len(self.notifications) + 1:
            expected = len(self.notifications) + 1
            self._refuse("renotify", f"the next notification is #{expected}, not #{number}")
        self._renotified(sink=sink, n=number, at=at)
        return True

    @event("Renotified")
    def _renotified(self, sink: str, n: int, at: float) -> None:
        self.notifications = [*self.notifications, {"n": n, "sink": sink, "reason": "", "at": at}]
        self.updated_at = at

    def acknowledge(self, by: str, *, at: float, note: str = "") -> bool:
        """A person took the escalated case: no more renotifications."""
        if not by.strip():
            self._refuse("acknowledge", "say who acknowledges it")
        self._check_not_closed("acknowledge")
        if self.status == ACKNOWLEDGED:
            assert self.acknowledged is not None
            if self.acknowledged["by"] == by:
                return False
            self._refuse("acknowledge", f"{self.acknowledged['by']} acknowledged it already")
        if self.status != ESCALATED:
            self._refuse(
                "acknowledge",
                "it was not escalated: it is being healed automatically"
                " (resolve it to end it by hand)",
            )
        self._acknowledged(by=by, note=_text(note), at=at)
        return True

    @event("Acknowledged")
    def _acknowledged(self, by: str, note: str, at: float) -> None:
        self.acknowledged = {"by": by, "note": note, "at": at}
        self.status = ACKNOWLEDGED
        self.updated_at = at

    def resolve(self, note: str, *, at: float, by: str = "") -> None:
        """A person says the cause is dealt with: Resolved, then Closed. Any open case can be
        resolved; a closed one refuses."""
        if not note.strip():
            self._refuse("resolve", "say what was done (a note)")
        self._check_not_closed("resolve")
        self._resolved(note=_text(note), by=by, at=at)
        # Closed even while an attempt awaits its verdict: the person's word ends the case,
        # and the runner's late verdict is refused (the case is closed).
        reason = f"resolved{' by ' + by if by else ''}: {note}"
        self._closed(reason=_text(reason), outcome="resolved", at=at)

    @event("Resolved")
    def _resolved(self, note: str, by: str, at: float) -> None:
        self.resolution = {"note": note, "by": by, "at": at}
        self.updated_at = at

    def close(self, reason: str, *, at: float, outcome: str = "healed") -> bool:
        """End the case (healed, resolved, or another ``outcome``). Closing again changes
        nothing."""
        if self.status == CLOSED:
            return False
        if self.status == HEALING:
            self._refuse("close", "an attempt is still waiting for its verdict")
        self._closed(reason=_text(reason), outcome=outcome, at=at)
        return True

    @event("Closed")
    def _closed(self, reason: str, outcome: str, at: float) -> None:
        self.closed = {"reason": reason, "outcome": outcome, "at": at}
        self.status = CLOSED
        self.updated_at = at

    # checks ------------------------------------------------------------------------------------

    def _check_not_closed(self, command: str) -> None:
        if self.status == CLOSED:
            assert self.closed is not None
            self._refuse(command, f"it was closed ({self.closed['reason']})")

    def _refuse(self, command: str, reason: str) -> None:
        raise RcaCaseRefused(str(self.id), command, self.status, reason)


# reading cases -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CaseRow:
    """One case as ``rca list`` shows it."""

    case_id: str
    tenant: str
    source: str | None
    category: str
    status: str
    opened_at: float
    updated_at: float
    failures: int
    attempts: int
    notifications: int
    confidence: float

    @classmethod
    def of(cls, case: RcaCase) -> CaseRow:
        return cls(
            case_id=str(case.id),
            tenant=case.tenant,
            source=case.source,
            category=case.category,
            status=case.status,
            opened_at=case.opened_at,
            updated_at=case.updated_at,
            failures=case.failures,
            attempts=len(case.attempts),
            notifications=len(case.notifications),
            confidence=float((case.analysis or {}).get("confidence", 0.0)),
        )


@dataclass(frozen=True, slots=True)
class CaseStep:
    """One recorded event of a case, as ``rca show`` prints it: its position in the case,
    name (``Opened``, ``HealingAttempted`` ...), time and fields (plain values)."""

    version: int
    name: str
    at: float | None
    fields: Mapping[str, Any]


_BOOKKEEPING = frozenset({"originator_id", "originator_version", "timestamp", "originator_topic"})


def case_step(domain_event: Any) -> CaseStep:
    """A stored event of an RCA case as a :class:`CaseStep`."""
    fields = {k: v for k, v in vars(domain_event).items() if k not in _BOOKKEEPING}
    at = fields.get("at")
    return CaseStep(
        version=int(domain_event.originator_version),
        name=type(domain_event).__name__,
        at=float(at) if isinstance(at, (int, float)) else None,
        fields=fields,
    )


# the port ----------------------------------------------------------------------------------------

#: Gives the healing stats aggregate of a category, to count an outcome in the same write.
StatsFor = Callable[[str], HealingStats]
CaseChange = Callable[[RcaCase | None, StatsFor], tuple[RcaCase | None, Any]]


class CaseRecorder(Protocol):
    """Makes RCA steps durable (storage/ implements it on the event store; an in-memory one
    serves tests and embedded use).

    ``change`` runs ``apply`` on the case (None if it does not exist) inside one write and
    saves the case it returns (if any), together with every stats aggregate ``apply`` asked
    for through its second argument; it returns what ``apply`` returned second. ``apply`` may
    run in the store's thread: it must use only the aggregates and plain values, and may be
    run again on a fresh copy if the write is retried. ``case`` reads one case as recorded (a
    person's answer given through another process included). ``open_cases`` returns every case not
    closed (the runner resumes them at start); ``stats`` the healing stats of a category
    (None: nothing counted yet).
    """

    async def change(self, case_id: UUID, apply: CaseChange) -> Any: ...

    async def case(self, case_id: UUID) -> RcaCase | None:
        """The case as recorded now (None: no such case)."""
        ...

    async def open_cases(self) -> list[RcaCase]: ...

    async def stats(self, category: str) -> HealingStats | None: ...


class CaseReader(Protocol):
    """What ``rca list`` and ``rca show`` read while the center runs (both recorders have it):
    cases newest first (open ones only, one tenant's), and one case's events in order
    (:class:`~eventcenter.domain.errors.RcaCaseNotFound` if there is no such case)."""

    async def cases(
        self, *, open_only: bool = False, tenant: str | None = None, limit: int = 1_000
    ) -> list[CaseRow]: ...

    async def history(self, case_id: UUID) -> list[CaseStep]: ...
