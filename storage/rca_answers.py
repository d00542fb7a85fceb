"""People's answers to RCA cases, waiting for the running center to apply them.

A person answers from another process (``eventcenter rca ack ID``) while the center runs and
holds its lease: writing the case aggregate from there would race the center's own writer. So
the answer goes into ``center_rca_answers``, one plain row; the center's RCA runner reads the
pending rows through its writer, applies each to its case (recorded as ``Acknowledged`` /
``Resolved``) and marks the row applied with the outcome, in that same transaction. An answer
given while no center runs waits for the next start. Nothing is lost and nothing applies twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Column, Index, MetaData, String, Table, Text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from eventcenter.storage import mailbox

metadata = MetaData()

answers = Table(
    "center_rca_answers",
    metadata,
    *mailbox.mailbox_columns(),
    Column("case_id", String(36), nullable=False),
    Column("action", String(16), nullable=False),
    Column("by", String(200), nullable=False),
    Column("note", Text, nullable=False),
    Index("center_rca_answers_pending", "center", "applied_at", "id"),
)

TABLES = (answers,)


@dataclass(frozen=True, slots=True)
class PendingAnswer:
    """An answer not applied yet, oldest first."""

    id: int
    case_id: str
    action: str
    by: str
    note: str
    given_at: float


def create_tables(connection: Connection) -> None:
    metadata.create_all(connection, checkfirst=True)


def pending(session: Session, center: str, limit: int = 100) -> list[PendingAnswer]:
    """The answers given to ``center`` and not applied yet, oldest first."""
    columns = ("id", "case_id", "action", "by", "note", "given_at")
    rows = mailbox.pending_rows(session, answers, center, columns, limit)
    return [PendingAnswer(*row) for row in rows]


def mark_applied(session: Session, answer_id: int, at: float, outcome: str) -> None:
    mailbox.mark_applied(session, answers, answer_id, at, outcome)


def outcome(session: Session, answer_id: int) -> tuple[float | None, str | None]:
    """When the answer was applied (None: not yet) and what came of it."""
    return mailbox.outcome_of(session, answers, answer_id)


class AnswerBox(mailbox.Mailbox):
    """Where another process leaves answers for a center (the CLI)."""

    def __init__(self, url: str, center: str, shown_url: str) -> None:
        missing = f"no RCA cases at {shown_url}: no center with self-healing ran on this store"
        super().__init__(url, center, answers, missing)

    def answer(self, case_id: str, action: str, by: str, note: str, at: float) -> int:
        """Store one answer; its id. Raises StoreNotFound for a store no center ran on."""
        return self.give({"case_id": case_id, "action": action, "by": by, "note": note}, at)
