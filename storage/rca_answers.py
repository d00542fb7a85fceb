"""People's answers to RCA cases, waiting for the running center to apply them.

A person answers from another process (``eventcenter rca ack ID``) while the center runs and
holds its lease: writing the case aggregate from there would race the center's own writer. So
the answer goes into ``center_rca_answers``, one plain row; the center's RCA runner reads the
pending rows through its writer, applies each to its case (recorded as ``Acknowledged`` /
``Resolved``) and marks the row applied with the outcome, in that same transaction. An answer
given while no center runs waits for the next start. Nothing is lost and nothing applies twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from eventcenter.domain.errors import StoreNotFound

metadata = MetaData()

answers = Table(
    "center_rca_answers",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("center", String(64), nullable=False),
    Column("case_id", String(36), nullable=False),
    Column("action", String(16), nullable=False),
    Column("by", String(200), nullable=False),
    Column("note", Text, nullable=False),
    Column("given_at", Float, nullable=False),
    Column("applied_at", Float, nullable=True),
    Column("outcome", Text, nullable=True),
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
    rows = session.execute(
        select(
            answers.c.id,
            answers.c.case_id,
            answers.c.action,
            answers.c.by,
            answers.c.note,
            answers.c.given_at,
        )
        .where(answers.c.center == center, answers.c.applied_at.is_(None))
        .order_by(answers.c.id)
        .limit(limit)
    ).all()
    return [PendingAnswer(*row) for row in rows]


def mark_applied(session: Session, answer_id: int, at: float, outcome: str) -> None:
    session.execute(
        update(answers).where(answers.c.id == answer_id).values(applied_at=at, outcome=outcome)
    )


def outcome(session: Session, answer_id: int) -> tuple[float | None, str | None]:
    """When the answer was applied (None: not yet) and what came of it."""
    row = session.execute(
        select(answers.c.applied_at, answers.c.outcome).where(answers.c.id == answer_id)
    ).first()
    return (row[0], row[1]) if row is not None else (None, None)


class AnswerBox:
    """Where another process leaves answers for a center (the CLI). Opens its own connection
    per call: it holds nothing between answers."""

    def __init__(self, url: str, center: str, shown_url: str) -> None:
        self._url = url
        self._center = center
        self._shown = shown_url

    def give(self, case_id: str, action: str, by: str, note: str, at: float) -> int:
        """Store one answer; its id. Raises StoreNotFound for a store no center ran on."""
        engine = create_engine(self._url, poolclass=NullPool)
        try:
            with engine.begin() as connection:
                self._require_table(connection)
                result = connection.execute(
                    insert(answers).values(
                        center=self._center,
                        case_id=case_id,
                        action=action,
                        by=by,
                        note=note,
                        given_at=at,
                    )
                )
                key: Sequence[int] = result.inserted_primary_key or ()
                return int(key[0])
        finally:
            engine.dispose()

    def outcome(self, answer_id: int) -> tuple[float | None, str | None]:
        engine = create_engine(self._url, poolclass=NullPool)
        try:
            with Session(engine) as session:
                return outcome(session, answer_id)
        finally:
            engine.dispose()

    def _require_table(self, connection: Connection) -> None:
        if not inspect(connection).has_table(answers.name):
            raise StoreNotFound(
                f"no RCA cases at {self._shown}: no center with self-healing ran on this store"
            )
