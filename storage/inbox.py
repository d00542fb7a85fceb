"""The durable inbox: accepted deliveries, idempotency keys and decision causes, in SQL.

Every statement here runs inside the writer's transaction (see :mod:`.writer`), together with
the aggregates' events of the same batch, so a batch is all or nothing:

``center_deliveries``
    One row per (accepted event, subscription) that has not ended yet, with the envelope as
    JSON. Admission inserts the rows; handling deletes them; dead-lettering deletes them in the
    same transaction that stores the dead letter. What is left after a crash is exactly the
    work to redeliver. ``seq`` is assigned by the one active center (it holds the lease), in
    admission order, and is how a lagging subscription's backlog is read back in order.
``center_idempotency``
    One row per idempotency key (tenant, source, key) with the id of the event it admitted,
    kept for the configured retention.
``center_causes``
    One row per recorded decision's cause (event id, subscription, kind, ordinal), kept for the
    same retention: recording the same decision for the same cause again stores it once.
``center_commits``
    One row per center naming the writer's last committed transaction. A connection lost
    while its COMMIT was under way leaves the writer unsure whether the store committed it;
    the retry reads this row first, and a transaction that did commit is not applied twice
    (no second dead letter, no admission refused by its own rows).

Tables are created by the writer at start (never by a read-only reader).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    and_,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from eventcenter.storage import bulk

metadata = MetaData()

deliveries = Table(
    "center_deliveries",
    metadata,
    Column("center", String(64), primary_key=True),
    Column("seq", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("subscription", String(200), nullable=False),
    Column("priority", SmallInteger, nullable=False),
    Column("tenant", String(200), nullable=False),
    Column("event_id", String(36), nullable=False),
    Column("envelope", Text, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("failure", Text, nullable=True),
    Column("replay_of", String(36), nullable=True),
    Column("admitted_at", Float, nullable=False),
    Index("center_deliveries_backlog", "center", "subscription", "priority", "tenant", "seq"),
    Index("center_deliveries_by_priority", "center", "subscription", "priority", "seq"),
)

idempotency = Table(
    "center_idempotency",
    metadata,
    Column("center", String(64), primary_key=True),
    Column("ident", String(800), primary_key=True),
    Column("event_id", String(36), nullable=False),
    Column("accepted_at", Float, nullable=False),
    Index("center_idempotency_age", "center", "accepted_at"),
)

causes = Table(
    "center_causes",
    metadata,
    Column("center", String(64), primary_key=True),
    Column("cause", String(400), primary_key=True),
    Column("recorded_at", Float, nullable=False),
    Index("center_causes_age", "center", "recorded_at"),
)

commits = Table(
    "center_commits",
    metadata,
    Column("center", String(64), primary_key=True),
    Column("batch", String(32), nullable=False),
    Column("committed_at", Float, nullable=False),
)

TABLES = (deliveries, idempotency, causes, commits)

#: Rows per statement when the writer reads or deletes by a list of keys.
CHUNK = 500


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """An accepted delivery as stored: what is needed to run it again."""

    seq: int
    subscription: str
    priority: int
    tenant: str
    event_id: str
    envelope: str
    attempts: int
    failure: str | None
    replay_of: str | None


def identity(tenant: str, source: str, key: str) -> str:
    """The stored form of an idempotency key: tenant, source and key can hold no newline."""
    return f"{tenant}\n{source}\n{key}"


def create_tables(connection: Connection) -> None:
    metadata.create_all(connection, checkfirst=True)


def ensure_commit_row(session: Session, center: str) -> None:
    """Create the center's ``center_commits`` row if missing (the writer updates it)."""
    found = session.execute(select(commits.c.center).where(commits.c.center == center)).first()
    if found is None:
        session.execute(insert(commits).values(center=center, batch="", committed_at=0.0))


def mark_commit(session: Session, center: str, batch: str, now: float) -> None:
    """Name ``batch`` as the center's last transaction (inside that very transaction)."""
    session.execute(
        update(commits).where(commits.c.center == center).values(batch=batch, committed_at=now)
    )


def last_commit(session: Session, center: str) -> str | None:
    """The batch named by the center's last committed transaction."""
    found = session.execute(select(commits.c.batch).where(commits.c.center == center)).scalar()
    return None if found is None else str(found)


def _chunks(items: Sequence[str], size: int = CHUNK) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def known_identities(session: Session, center: str, idents: Sequence[str]) -> dict[str, str]:
    """The event ids already admitted under any of ``idents`` (ident -> event id)."""
    found: dict[str, str] = {}
    for chunk in _chunks(idents):
        rows = bulk.select_in(session, idempotency, ("ident", "event_id"), center, "ident", chunk)
        found.update({ident: event_id for ident, event_id in rows})
    return found


def known_causes(session: Session, center: str, keys: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(keys):
        rows = session.execute(
            select(causes.c.cause).where(causes.c.center == center, causes.c.cause.in_(chunk))
        )
        found.update(rows.scalars())
    return found


def delete_deliveries(session: Session, center: str, seqs: Sequence[int]) -> None:
    for start in range(0, len(seqs), CHUNK):
        bulk.delete_in(session, deliveries, center, "seq", seqs[start : start + CHUNK])


def set_attempts(session: Session, center: str, attempts: dict[int, int]) -> None:
    session.execute(
        update(deliveries)
        .where(deliveries.c.center == center, deliveries.c.seq == bindparam("b_seq"))
        .values(attempts=bindparam("b_attempts")),
        [{"b_seq": seq, "b_attempts": n} for seq, n in attempts.items()],
    )


def _row(row: object) -> DeliveryRow:
    return DeliveryRow(*row)  # type: ignore[misc]


_COLUMNS = (
    deliveries.c.seq,
    deliveries.c.subscription,
    deliveries.c.priority,
    deliveries.c.tenant,
    deliveries.c.event_id,
    deliveries.c.envelope,
    deliveries.c.attempts,
    deliveries.c.failure,
    deliveries.c.replay_of,
)


def load_backlog(
    session: Session,
    center: str,
    subscription: str,
    priority: int,
    after: int,
    limit: int,
    tenant: str | None = None,
) -> list[DeliveryRow]:
    """The next ``limit`` deliveries of one subscription and priority after ``after`` (of one
    tenant, when given)."""
    conditions = [
        deliveries.c.center == center,
        deliveries.c.subscription == subscription,
        deliveries.c.priority == priority,
        deliveries.c.seq > after,
    ]
    if tenant is not None:
        conditions.append(deliveries.c.tenant == tenant)
    rows = session.execute(
        select(*_COLUMNS).where(and_(*conditions)).order_by(deliveries.c.seq).limit(limit)
    )
    return [_row(row) for row in rows]


@dataclass(frozen=True, slots=True)
class BacklogSummary:
    subscription: str
    priority: int
    count: int
    first_seq: int
    tenant: str


def summarize(session: Session, center: str) -> tuple[list[BacklogSummary], int]:
    """Unsettled deliveries per (subscription, priority, tenant), and the highest seq."""
    rows = session.execute(
        select(
            deliveries.c.subscription,
            deliveries.c.priority,
            deliveries.c.tenant,
            func.count(),
            func.min(deliveries.c.seq),
        )
        .where(deliveries.c.center == center)
        .group_by(deliveries.c.subscription, deliveries.c.priority, deliveries.c.tenant)
    )
    summary = [BacklogSummary(s, p, n, first, t) for s, p, t, n, first in rows]
    top = session.execute(
        select(func.max(deliveries.c.seq)).where(deliveries.c.center == center)
    ).scalar()
    return summary, int(top or 0)


def load_orphans(session: Session, center: str, subscription: str, limit: int) -> list[DeliveryRow]:
    rows = session.execute(
        select(*_COLUMNS)
        .where(deliveries.c.center == center, deliveries.c.subscription == subscription)
        .order_by(deliveries.c.seq)
        .limit(limit)
    )
    return [_row(row) for row in rows]


def purge(session: Session, center: str, before: float) -> tuple[int, int]:
    """Forget idempotency keys and decision causes older than ``before`` (epoch seconds)."""
    keys: Any = session.execute(
        delete(idempotency).where(
            idempotency.c.center == center, idempotency.c.accepted_at < before
        )
    )
    old: Any = session.execute(
        delete(causes).where(causes.c.center == center, causes.c.recorded_at < before)
    )
    return int(keys.rowcount or 0), int(old.rowcount or 0)
