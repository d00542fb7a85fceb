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

requests = Table(
    "center_source_requests",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("center", String(64), nullable=False),
    Column("tenant", String(200), nullable=False),
    Column("source", String(200), nullable=False),
    Column("action", String(16), nullable=False),
    Column("by", String(200), nullable=False),
    Column("reason", Text, nullable=False),
    Column("given_at", Float, nullable=False),
    Column("applied_at", Float, nullable=True),
    Column("outcome", Text, nullable=True),
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
    rows = session.execute(
        select(
            requests.c.id,
            requests.c.tenant,
            requests.c.source,
            requests.c.action,
            requests.c.by,
            requests.c.reason,
            requests.c.given_at,
        )
        .where(requests.c.center == center, requests.c.applied_at.is_(None))
        .order_by(requests.c.id)
        .limit(limit)
    ).all()
    return [PendingRequest(*row) for row in rows]


def mark_applied(session: Session, request_id: int, at: float, outcome: str) -> None:
    session.execute(
        update(requests).where(requests.c.id == request_id).values(applied_at=at, outcome=outcome)
    )


class SourceRequestBox:
    """Where another process (the CLI) leaves requests for a center. Opens its own connection
    per call: it holds nothing between requests."""

    def __init__(self, url: str, center: str, shown_url: str) -> None:
        self._url = url
        self._center = center
        self._shown = shown_url

    def give(self, tenant: str, source: str, action: str, by: str, reason: str, at: float) -> int:
        """Store one request; its id. Raises StoreNotFound for a store no center ran on."""
        engine = create_engine(self._url, poolclass=NullPool)
        try:
            with engine.begin() as connection:
                if not inspect(connection).has_table(requests.name):
                    raise StoreNotFound(
                        f"no source requests at {self._shown}: no center ran on this store"
                        " since sources could be paused"
                    )
                result = connection.execute(
                    insert(requests).values(
                        center=self._center,
                        tenant=tenant,
                        source=source,
                        action=action,
                        by=by,
                        reason=reason,
                        given_at=at,
                    )
                )
                key: Sequence[int] = result.inserted_primary_key or ()
                return int(key[0])
        finally:
            engine.dispose()

    def outcome(self, request_id: int) -> tuple[float | None, str | None]:
        """When the request was applied (None: not yet) and what came of it."""
        engine = create_engine(self._url, poolclass=NullPool)
        try:
            with Session(engine) as session:
                row = session.execute(
                    select(requests.c.applied_at, requests.c.outcome).where(
                        requests.c.id == request_id
                    )
                ).first()
                return (row[0], row[1]) if row is not None else (None, None)
        finally:
            engine.dispose()
