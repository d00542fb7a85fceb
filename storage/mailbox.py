"""A table where another process leaves requests for the running center (SQLAlchemy Core).

The CLI answers an RCA case or pauses a source while the center runs and holds its lease:
writing the center's aggregates from there would race the center's own writer. So it leaves
one plain row (:meth:`Mailbox.give`) and waits for its outcome (:meth:`Mailbox.outcome`); the
center reads the rows not applied yet (:func:`pending_rows`), applies each and marks it
(:func:`mark_applied`). Every mailbox table has the columns of :func:`mailbox_columns` plus its
own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Integer,
    Row,
    String,
    Table,
    Text,
    create_engine,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from eventcenter.domain.errors import StoreNotFound

__all__ = ["Mailbox", "mailbox_columns", "mark_applied", "outcome_of", "pending_rows"]


def mailbox_columns() -> list[Column[Any]]:
    """The columns every mailbox has: id, the center it is for, when it was given, when it was
    applied (None: not yet) and what came of it."""
    return [
        Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
        Column("center", String(64), nullable=False),
        Column("given_at", Float, nullable=False),
        Column("applied_at", Float, nullable=True),
        Column("outcome", Text, nullable=True),
    ]


def pending_rows(
    session: Session, table: Table, center: str, columns: Sequence[str], limit: int
) -> Sequence[Row[Any]]:
    """``columns`` of the rows left for ``center`` and not applied yet, oldest first."""
    return session.execute(
        select(*(table.c[name] for name in columns))
        .where(table.c.center == center, table.c.applied_at.is_(None))
        .order_by(table.c.id)
        .limit(limit)
    ).all()


def mark_applied(session: Session, table: Table, row_id: int, at: float, outcome: str) -> None:
    session.execute(
        update(table).where(table.c.id == row_id).values(applied_at=at, outcome=outcome)
    )


def outcome_of(session: Session, table: Table, row_id: int) -> tuple[float | None, str | None]:
    """When the row was applied (None: not yet) and what came of it."""
    row = session.execute(
        select(table.c.applied_at, table.c.outcome).where(table.c.id == row_id)
    ).first()
    return (row[0], row[1]) if row is not None else (None, None)


class Mailbox:
    """Where another process leaves rows of ``table`` for center ``center``. Opens its own
    connection per call: it holds nothing between calls. ``missing`` is what StoreNotFound
    says when the store has no such table (no center that could apply them ran on it)."""

    def __init__(self, url: str, center: str, table: Table, missing: str) -> None:
        self._url = url
        self._center = center
        self._table = table
        self._missing = missing

    def give(self, values: Mapping[str, Any], at: float) -> int:
        """Store one row with ``values``; its id. Raises StoreNotFound (see the class)."""
        engine = create_engine(self._url, poolclass=NullPool)
        try:
            with engine.begin() as connection:
                if not inspect(connection).has_table(self._table.name):
                    raise StoreNotFound(self._missing)
                result = connection.execute(
                    insert(self._table).values(center=self._center, given_at=at, **values)
                )
                key: Sequence[int] = result.inserted_primary_key or ()
                return int(key[0])
        finally:
            engine.dispose()

    def outcome(self, row_id: int) -> tuple[float | None, str | None]:
        """When the row was applied (None: not yet) and what came of it."""
        engine = create_engine(self._url, poolclass=NullPool)
        try:
            with Session(engine) as session:
                return outcome_of(session, self._table, row_id)
        finally:
            engine.dispose()
