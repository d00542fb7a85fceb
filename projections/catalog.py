"""What each recorded domain event means on the audit trail, matched by its domain class.

Every decision the center takes is an event of one of its aggregates. :func:`describe` turns a
stored event into one flat :class:`AuditEntry` (when, tenant and source, what kind of decision,
from -> to, why, the correlation id of its cause, and the event's own fields as ``details``:
the inputs the policy saw). Events are matched by their domain classes (``isinstance``), never
by name strings; an event class without an entry of its own still gets a row, its kind derived
from the aggregate and the class (``rca.renotified``), so a new decision is never missing from
the trail.

The events after an aggregate's first one do not repeat its tenant, source or correlation id:
:class:`Subject` carries them from the creating event to the later ones (the read model keeps
one per aggregate).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from eventcenter.domain.aggregates import DeadLetter as _DeadLetter
from eventcenter.domain.aggregates import ProcessorLog as _ProcessorLog
from eventcenter.domain.breaker_log import BreakerLog as _BreakerLog
from eventcenter.domain.deployments import ServiceDeployments as _ServiceDeployments
from eventcenter.domain.healing_choice import HealingStats as _HealingStats
from eventcenter.domain.rca_case import RcaCase as _RcaCase
from eventcenter.domain.recovery_log import ServiceRecovery as _ServiceRecovery
from eventcenter.domain.source_log import SourceLog as _SourceLog
from eventcenter.domain.source_modes import initial_mode
from eventcenter.domain.throughput import ThroughputRecorder as _ThroughputRecorder
from eventcenter.domain.tuning_run import ServiceTuning as _ServiceTuning
from eventcenter.domain.tuning_run import TuningRun as _TuningRun

#: The aggregates as mypy sees their event classes (made by eventsourcing's ``@event``).
ProcessorLog: Any = _ProcessorLog
DeadLetter: Any = _DeadLetter
BreakerLog: Any = _BreakerLog
ServiceDeployments: Any = _ServiceDeployments
HealingStats: Any = _HealingStats
RcaCase: Any = _RcaCase
ServiceRecovery: Any = _ServiceRecovery
SourceLog: Any = _SourceLog
ThroughputRecorder: Any = _ThroughputRecorder
ServiceTuning: Any = _ServiceTuning
TuningRun: Any = _TuningRun

__all__ = ["AuditEntry", "Subject", "describe", "json_safe"]

#: Fields every stored event has; not part of what a decision saw.
_ENVELOPE_FIELDS = frozenset(
    {"originator_id", "originator_version", "timestamp", "originator_topic"}
)

#: The prefix of an aggregate's kinds, by its class (checked in this order).
_PREFIXES: tuple[tuple[type[Any], str, str], ...] = (
    (ProcessorLog, "processor", "ProcessorLog"),
    (DeadLetter, "dead_letter", "DeadLetter"),
    (SourceLog, "source", "SourceLog"),
    (BreakerLog, "breaker", "BreakerLog"),
    (RcaCase, "rca", "RcaCase"),
    (TuningRun, "tuning", "TuningRun"),
    (ServiceTuning, "tuning", "ServiceTuning"),
    (ThroughputRecorder, "throughput", "ThroughputRecorder"),
    (ServiceDeployments, "deployment", "ServiceDeployments"),
    (HealingStats, "healing", "HealingStats"),
    (ServiceRecovery, "recovery", "ServiceRecovery"),
)

#: Events that only bring an aggregate into being: they set its subject, they are no decision.
_QUIET: tuple[type[Any], ...] = (
    ProcessorLog.Opened,
    BreakerLog.Registered,
    ServiceDeployments.Registered,
    ServiceTuning.Registered,
    ThroughputRecorder.Registered,
    HealingStats.Started,
    ServiceRecovery.Registered,
)

#: Kinds named for what the trail calls them (the others: ``<prefix>.<snake class name>``).
_KINDS: tuple[tuple[type[Any], str], ...] = (
    (ProcessorLog.Transitioned, "processor.transitioned"),
    (SourceLog.ModeSwitched, "mode.switched"),
    (SourceLog.SwitchRolledBack, "mode.rolled_back"),
    (SourceLog.ThresholdRaised, "threshold.raised"),
    (SourceLog.ThresholdDecayed, "threshold.decayed"),
    (SourceLog.TimeoutExtended, "timeout.extended"),
    (ServiceDeployments.Deployed, "deployment.changed"),
    (HealingStats.OutcomeCounted, "healing.outcome_counted"),
)

#: The state a breaker is in after each of its events.
_BREAKER_STATES: tuple[tuple[type[Any], str], ...] = (
    (BreakerLog.Opened, "open"),
    (BreakerLog.HalfOpened, "half_open"),
    (BreakerLog.Closed, "closed"),
    (BreakerLog.ForcedOpen, "forced_open"),
    (BreakerLog.Disabled, "disabled"),
    (BreakerLog.Reset, "closed"),
)


@dataclass(frozen=True, slots=True)
class Subject:
    """What the later events of one aggregate share: its kind, tenant, source, the name shown
    for it, and the correlation id of what brought it into being."""

    aggregate: str
    tenant: str = ""
    source: str = ""
    name: str = ""
    correlation_id: str = ""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One decision on the audit trail (one stored event). ``position`` is the event's
    notification id: the order it was recorded in, and the id ``explain`` takes."""

    position: int
    at: float
    tenant: str
    source: str
    kind: str
    aggregate: str
    aggregate_id: str
    version: int
    subject: str
    from_state: str
    to_state: str
    reason: str
    correlation_id: str
    cause: str
    details: dict[str, Any]

    @property
    def when(self) -> datetime:
        return datetime.fromtimestamp(self.at, UTC)

    def as_dict(self) -> dict[str, Any]:
        """The entry as JSON values (``at`` as seconds and as an ISO 8601 UTC time)."""
        data = dataclasses.asdict(self)
        data["time"] = self.when.isoformat()
        return data


def json_safe(value: Any) -> Any:
    """``value`` as JSON values: dataclasses, UUIDs, datetimes, sets and tuples converted."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: json_safe(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _fields(event: Any) -> dict[str, Any]:
    if not dataclasses.is_dataclass(event):
        return {}
    return {
        f.name: json_safe(getattr(event, f.name))
        for f in dataclasses.fields(event)
        if f.name not in _ENVELOPE_FIELDS
    }


def _first(pairs: tuple[tuple[type[Any], str], ...], event: Any) -> str | None:
    for cls, value in pairs:
        if isinstance(event, cls):
            return value
    return None


def _aggregate_of(event: Any) -> tuple[str, str] | None:
    """(kind prefix, aggregate name) of an event of one of the center's aggregates."""
    for cls, prefix, name in _PREFIXES:
        if isinstance(event, cls.Event):
            return prefix, name
    return None


def _subject_of(event: Any, aggregate: str, known: Subject | None) -> Subject:
    """The subject an aggregate's creating event names (or the one already known)."""
    e = event
    if isinstance(e, ProcessorLog.Opened):
        return Subject(aggregate, name=e.name)
    if isinstance(e, SourceLog.Registered):
        return Subject(aggregate, e.tenant, e.source, f"{e.tenant}/{e.source}")
    if isinstance(e, BreakerLog.Registered):
        return Subject(aggregate, name=e.name)
    if isinstance(e, RcaCase.Opened):
        correlation = str(e.failure.get("correlation_id", "")) or str(e.originator_id)
        return Subject(aggregate, e.tenant, e.source or "", e.category, correlation)
    if isinstance(e, TuningRun.Requested):
        return Subject(aggregate, e.tenant, "", e.service, e.correlation_id)
    if isinstance(
        e, ServiceTuning.Registered | ServiceDeployments.Registered | ServiceRecovery.Registered
    ):
        return Subject(aggregate, name=e.service)
    if isinstance(e, ThroughputRecorder.Registered):
        return Subject(aggregate, name=f"{e.service}@{e.signature}")
    if isinstance(e, DeadLetter.Recorded):
        envelope = e.envelope
        return Subject(
            aggregate,
            str(envelope.get("tenant", "")),
            str(envelope.get("source", "")),
            e.subscription,
            str(envelope.get("correlation_id", "")),
        )
    if isinstance(e, HealingStats.Started):
        return Subject(aggregate, name=f"{e.scope}/{e.category}")
    return known or Subject(aggregate)


def _transition(event: Any, details: dict[str, Any]) -> tuple[str, str]:
    """(from, to) of a decision that moves something between states."""
    e = event
    if isinstance(e, ProcessorLog.Transitioned):
        return e.source, e.dest
    if isinstance(e, SourceLog.Registered):
        return "", initial_mode(e.has_push, e.has_poll)
    if isinstance(e, SourceLog.Reconfigured):
        return "", e.mode  # the read model fills in the mode it left
    if isinstance(e, SourceLog.ModeSwitched):
        return e.previous, e.to
    if isinstance(e, SourceLog.SwitchRolledBack):
        return e.attempted, e.to
    if isinstance(e, SourceLog.ThresholdRaised | SourceLog.ThresholdDecayed):
        step = 1 if isinstance(e, SourceLog.ThresholdRaised) else -1
        return f"level {e.level - step}", f"level {e.level}"
    breaker_state = _first(_BREAKER_STATES, e)
    if breaker_state is not None:
        return str(details.get("previous", "")), breaker_state
    return "", ""


def describe(
    position: int, event: Any, known: Subject | None
) -> tuple[Subject | None, AuditEntry | None]:
    """The subject of ``event``'s aggregate after it, and its audit entry (None for an event
    that only creates an aggregate, and for events of no aggregate of the center)."""
    found = _aggregate_of(event)
    if found is None:
        return known, None
    prefix, aggregate = found
    subject = _subject_of(event, aggregate, known)
    if isinstance(event, _QUIET):
        return subject, None
    details = _fields(event)
    kind = _first(_KINDS, event)
    tenant, source = subject.tenant, subject.source
    if isinstance(event, ProcessorLog.DecisionRecorded):
        kind = event.kind if "." in event.kind else f"decision.{event.kind}"
        tenant = event.tenant
    elif kind is None:
        kind = f"{prefix}.{_snake(type(event).__name__)}"
    from_state, to_state = _transition(event, details)
    at = details.get("at")
    if not isinstance(at, int | float) or isinstance(at, bool):
        at = event.timestamp.timestamp()
    reason = str(details.get("reason", "") or "")
    if isinstance(event, DeadLetter.Recorded):  # a dead letter's why is what it failed with
        reason = f"{event.error_type}: {event.error}"
    correlation = str(getattr(event, "correlation_id", "") or "") or subject.correlation_id
    cause = str(getattr(event, "cause", "") or getattr(event, "event_id", "") or "")
    entry = AuditEntry(
        position=position,
        at=float(at),
        tenant=tenant,
        source=source,
        kind=kind,
        aggregate=aggregate,
        aggregate_id=str(event.originator_id),
        version=int(event.originator_version),
        subject=subject.name,
        from_state=from_state,
        to_state=to_state,
        reason=reason,
        correlation_id=correlation,
        cause=cause,
        details=details,
    )
    return subject, entry
