"""Read models of the center's decisions and dead letters, folded from stored domain events.

Projections see only domain events (they follow the notification log; they never query
aggregates). Each ``apply`` is idempotent per notification id, so a reader can resume from
:attr:`position` after a restart without counting anything twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

PROCESSOR_TRANSITIONED = "ProcessorLog.Transitioned"
PROCESSOR_DECIDED = "ProcessorLog.DecisionRecorded"
LETTER_RECORDED = "DeadLetter.Recorded"
LETTER_REPLAYED = "DeadLetter.Replayed"
LETTER_CLAIMED = "DeadLetter.ReplayClaimed"
LETTER_FAILED_AGAIN = "DeadLetter.ReplayFailed"


def event_name(domain_event: object) -> str:
    """``Aggregate.EventClass`` name of a stored domain event."""
    return type(domain_event).__qualname__


@dataclass(frozen=True, slots=True)
class DecisionRow:
    """One line of the audit trail: a state transition or a handler decision."""

    position: int
    at: datetime
    kind: str  # "transition" or the decision kind
    summary: str
    reason: str
    correlation_id: str
    tenant: str
    details: dict[str, Any]


@dataclass
class Projection:
    """Folds stored events in notification order; a position already applied is skipped."""

    position: int = 0

    def apply(self, position: int, domain_event: Any) -> None:
        if position <= self.position:
            return
        self.position = position
        self.fold(position, event_name(domain_event), domain_event)

    def fold(self, position: int, name: str, domain_event: Any) -> None:
        raise NotImplementedError


@dataclass
class DecisionTrail(Projection):
    """Decisions in the order they were recorded."""

    rows: list[DecisionRow] = field(default_factory=list)

    def fold(self, position: int, name: str, domain_event: Any) -> None:
        if name == PROCESSOR_TRANSITIONED:
            e = domain_event
            self.rows.append(
                DecisionRow(
                    position,
                    e.timestamp,
                    "transition",
                    f"{e.source} -> {e.dest} ({e.trigger})",
                    e.reason,
                    e.correlation_id,
                    "",
                    {"trigger": e.trigger, "from": e.source, "to": e.dest},
                )
            )
        elif name == PROCESSOR_DECIDED:
            e = domain_event
            self.rows.append(
                DecisionRow(
                    position,
                    e.timestamp,
                    e.kind,
                    " ".join(f"{k}={v}" for k, v in e.details.items()),
                    e.reason,
                    e.correlation_id,
                    e.tenant,
                    dict(e.details),
                )
            )


@dataclass
class DeadLetterRow:
    position: int
    id: UUID
    at: datetime
    event: dict[str, Any]
    subscription: str
    error_type: str
    error: str
    attempts: int
    status: str = "pending"
    replayed_at: datetime | None = None
    replay_of: str = ""
    failed_again_as: str = ""

    @property
    def event_type(self) -> str:
        return str(self.event.get("type", ""))

    @property
    def tenant(self) -> str:
        return str(self.event.get("tenant", ""))


@dataclass
class DeadLetterIndex(Projection):
    """Dead letters by id, with their status (pending or replayed)."""

    letters: dict[UUID, DeadLetterRow] = field(default_factory=dict)

    def fold(self, position: int, name: str, domain_event: Any) -> None:
        if name == LETTER_RECORDED:
            e = domain_event
            self.letters[e.originator_id] = DeadLetterRow(
                position,
                e.originator_id,
                e.timestamp,
                dict(e.envelope),
                e.subscription,
                e.error_type,
                e.error,
                e.attempts,
                replay_of=getattr(e, "replay_of", ""),
            )
        elif name == LETTER_CLAIMED:
            row = self.letters.get(domain_event.originator_id)
            if row is not None:
                row.status = "replaying"
        elif name in (LETTER_REPLAYED, LETTER_FAILED_AGAIN):
            row = self.letters.get(domain_event.originator_id)
            if row is not None:
                row.status = "replayed"
                row.replayed_at = domain_event.timestamp
                row.failed_again_as = getattr(domain_event, "new_letter", "")
