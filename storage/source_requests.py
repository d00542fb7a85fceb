"""Operators' requests to pause or resume a data source, waiting for the center to apply them.

``eventcenter sources pause|resume`` runs in another process than the center: recording
``Paused`` in the source's log from there would race the center's own writer, and would not
stop the engines the center runs. So the request goes into ``center_source_requests``, one
plain row; the running center reads the pending rows through its writer, pauses or resumes
the source (recorded in its log) and marks the row applied with the outcome. A center that
starts applies the requests waiting for it before it starts its sources, so a source paused
while no center ran never starts its engines.

Applying and marking are two transactions: a center that dies between them applies the request
again at its next start, which changes nothing (pause and resume are idempotent; the outcome
then reads ``paused already``). Requests are applied in the order they were given.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Column, Index, MetaData, String, Table, Text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from eventcenter.storage import mailbox

metadata = MetaData()

requests = Table(
    "center_source_requests",
    metadata,
    *mailbox.mailbox_columns(),
    Column("tenant", String(200), nullable=False),
    Column("source", String(200), nullable=False),
    Column("action", String(16), nullable=False),
    Column("by", String(200), nullable=False),
    Column("reason", Text, nullable=False),
    Index("center_source_requests_pending", "center", "applied_at", "id"),
)


@dataclass(frozen=True, slots=True)
class PendingRequest:
    """A request not applied yet, oldest first."""

    id: int
    tenant: str
    source: str
    action: str
    by: str
    reason: str
    given_at: float


def create_tables(connection: Connection) -> None:
    metadata.create_all(connection, checkfirst=True)


def pending(session: Session, center: str, limit: int = 100) -> list[PendingRequest]:
    """The requests given to ``center`` and not applied yet, oldest first."""
    columns = ("id", "tenant", "source", "action", "by", "reason", "given_at")
    rows = mailbox.pending_rows(session, requests, center, columns, limit)
    return [PendingRequest(*row) for row in rows]


def mark_applied(session: Session, request_id: int, at: float, outcome: str) -> None:
    mailbox.mark_applied(session, requests, request_id, at, outcome)


class SourceRequestBox(mailbox.Mailbox):
    """Where another process (the CLI) leaves requests for a center."""

    def __init__(self, url: str, center: str, shown_url: str) -> None:
        missing = (
            f"no source requests at {shown_url}: no center ran on this store since sources"
            " could be paused"
        )
        super().__init__(url, center, requests, missing)

    def request(
        self, tenant: str, source: str, action: str, by: str, reason: str, at: float
    ) -> int:
        """Store one request; its id. Raises StoreNotFound for a store no center ran on."""
        values = {"tenant": tenant, "source": source, "action": action, "by": by}
        return self.give({**values, "reason": reason}, at)
