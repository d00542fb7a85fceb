"""Rows of the audit trail and the dead letters, as the CLI and the API show them.

The read model (:mod:`.view`) keeps them in SQL tables; :mod:`.queries` reads them back as
these rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID


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
