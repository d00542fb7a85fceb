"""What the center keeps per data source, in SQL, written in the admission's transaction.

``center_source_positions``
    One row per (tenant, source, path): the position a path resumes from (a Redis stream id,
    a JetStream sequence, a table row id, a poll cursor). Stored in the transaction that
    admits the items read up to it, so a restart resumes exactly where the committed items
    end: nothing lost, and no replay storm.
``center_source_items``
    One row per (tenant, source, key): the version and sha256 digest admitted last. The
    reconciler compares the source's authoritative listing against it.
``center_source_outcomes``
    What each path of a source did (a batch received, a poll, a failure, a rollback, a start
    or stop), in order: the hysteresis policy's input (:class:`~eventcenter.domain.hysteresis.
    Outcome`, silence is derived from the gaps), kept so ``sources simulate`` can replay it
    through another configuration; purged after the key retention like idempotency keys.

Tables are created by the writer at start, with the inbox's (never by a reader).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    select,
)
from sqlalchemy.orm import Session

from eventcenter.domain.sources import Delivered
from eventcenter.storage import bulk

metadata = MetaData()

positions = Table(
    "center_source_positions",
    metadata,
    Column("center", String(64), primary_key=True),
    Column("tenant", String(200), primary_key=True),
    Column("source", String(200), primary_key=True),
    Column("path", String(32), primary_key=True),
    Column("position", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
)

items = Table(
    "center_source_items",
    metadata,
    Column("center", String(64), primary_key=True),
    Column("tenant", String(200), primary_key=True),
    Column("source", String(200), primary_key=True),
    Column("key", String(600), primary_key=True),
    Column("version", String(200), nullable=False),
    Column("digest", String(64), nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("updated_at", Float, nullable=False),
)

outcomes = Table(
    "center_source_outcomes",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("center", String(64), nullable=False),
    Column("tenant", String(200), nullable=False),
    Column("source", String(200), nullable=False),
    Column("at", Float, nullable=False),  # seconds since the epoch
    Column("path", String(16), nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("mode", String(32), nullable=False, default=""),
    Column("items", Integer, nullable=False, default=0),
    Index("center_source_outcomes_by_source", "center", "tenant", "source", "id"),
    Index("center_source_outcomes_age", "center", "at"),
)

TABLES = (positions, items, outcomes)


@dataclass(frozen=True, slots=True)
class OutcomeRow:
    """One recorded outcome of a source's path (see the module docstring)."""

    at: float
    path: str
    ok: bool
    reason: str
    mode: str
    items: int


def store_position(
    session: Session, center: str, tenant: str, source: str, path: str, position: str, now: float
) -> None:
    row = {
        "center": center,
        "tenant": tenant,
        "source": source,
        "path": path,
        "position": position,
        "updated_at": now,
    }
    bulk.upsert_rows(session, positions, [row], ("center", "tenant", "source", "path"))


def read_position(session: Session, center: str, tenant: str, source: str, path: str) -> str | None:
    found = session.execute(
        select(positions.c.position).where(
            positions.c.center == center,
            positions.c.tenant == tenant,
            positions.c.source == source,
            positions.c.path == path,
        )
    ).scalar()
    return None if found is None else str(found)


def store_delivered(
    session: Session,
    center: str,
    tenant: str,
    source: str,
    entries: Iterable[tuple[str, Delivered]],
    now: float,
) -> None:
    rows = {  # values in the table's column order; a key repeated in the batch: the last wins
        key: (center, tenant, source, key, entry.version, entry.digest, entry.deleted, now)
        for key, entry in entries
    }
    bulk.upsert_values(session, items, list(rows.values()), ("center", "tenant", "source", "key"))


def read_delivered(session: Session, center: str, tenant: str, source: str) -> dict[str, Delivered]:
    rows = session.execute(
        select(items.c.key, items.c.version, items.c.digest, items.c.deleted).where(
            items.c.center == center, items.c.tenant == tenant, items.c.source == source
        )
    )
    return {
        key: Delivered(version, digest, bool(deleted)) for key, version, digest, deleted in rows
    }


def store_outcomes(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        session.execute(outcomes.insert(), list(rows))


def read_outcomes(
    session: Session, center: str, tenant: str, source: str, after: int = 0, limit: int = 100_000
) -> list[tuple[int, OutcomeRow]]:
    rows = session.execute(
        select(
            outcomes.c.id,
            outcomes.c.at,
            outcomes.c.path,
            outcomes.c.ok,
            outcomes.c.reason,
            outcomes.c.mode,
            outcomes.c["items"],
        )
        .where(
            outcomes.c.center == center,
            outcomes.c.tenant == tenant,
            outcomes.c.source == source,
            outcomes.c.id > after,
        )
        .order_by(outcomes.c.id)
        .limit(limit)
    )
    return [
        (i, OutcomeRow(at, path, bool(ok), kind, detail, n))
        for i, at, path, ok, kind, detail, n in rows
    ]


def purge_outcomes(session: Session, center: str, before: float) -> int:
    result: Any = session.execute(
        delete(outcomes).where(outcomes.c.center == center, outcomes.c.at < before)
    )
    return int(result.rowcount or 0)
