"""What the store keeps about RCA cases besides their events: an index to list them.

``center_rca_cases``
    One row per case: tenant, source, category, status, times and counts, as ``rca list``
    shows them. It is written in the same transaction as the case's events (by
    :class:`~eventcenter.storage.rca_recorder.CaseCommand`), so the list never disagrees with
    the cases; the cases themselves (and ``rca show``'s story) are their aggregates' events.

Tables are created by the writer at start, with the inbox's (never by a reader). A store
written before RCA existed has no such table: reading then finds no case.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from sqlalchemy import Column, Float, Index, Integer, MetaData, String, Table, inspect, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from eventcenter.domain.errors import RcaCaseNotFound
from eventcenter.domain.healing_choice import HealingStats
from eventcenter.domain.rca_case import CLOSED, CaseRow, CaseStep, RcaCase, case_step

metadata = MetaData()

cases = Table(
    "center_rca_cases",
    metadata,
    Column("center", String(64), primary_key=True),
    Column("case_id", String(36), primary_key=True),
    Column("tenant", String(200), nullable=False),
    Column("source", String(200), nullable=True),
    Column("category", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("opened_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("failures", Integer, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("notifications", Integer, nullable=False),
    Column("confidence", Float, nullable=False),
    Index("center_rca_cases_by_status", "center", "status"),
    Index("center_rca_cases_by_tenant", "center", "tenant", "opened_at"),
)

TABLES = (cases,)


def store_case(session: Session, center: str, row: CaseRow) -> None:
    """Insert or update the index row of one case."""
    values: dict[str, Any] = {"center": center, **asdict(row)}
    dialect = session.get_bind().dialect.name
    statement: Any = (pg_insert if dialect == "postgresql" else sqlite_insert)(cases)
    changed = {name: statement.excluded[name] for name in values if name not in _KEYS}
    session.execute(
        statement.values(values).on_conflict_do_update(index_elements=_KEYS, set_=changed)
    )


_KEYS = ["center", "case_id"]


def list_cases(
    session: Session,
    center: str,
    *,
    open_only: bool = False,
    tenant: str | None = None,
    limit: int = 1_000,
) -> list[CaseRow]:
    """Cases of ``center``, newest first; open ones only, or one tenant's, when asked. A
    store without the table (written before RCA existed) has none."""
    query = select(
        cases.c.case_id,
        cases.c.tenant,
        cases.c.source,
        cases.c.category,
        cases.c.status,
        cases.c.opened_at,
        cases.c.updated_at,
        cases.c.failures,
        cases.c.attempts,
        cases.c.notifications,
        cases.c.confidence,
    ).where(cases.c.center == center)
    if open_only:
        query = query.where(cases.c.status != CLOSED)
    if tenant is not None:
        query = query.where(cases.c.tenant == tenant)
    query = query.order_by(cases.c.opened_at.desc(), cases.c.case_id).limit(limit)
    if not inspect(session.connection()).has_table(cases.name):
        return []
    return [CaseRow(*row) for row in session.execute(query).all()]


def open_case_ids(session: Session, center: str) -> list[UUID]:
    """The ids of every case of ``center`` that is not closed, oldest first."""
    rows = session.execute(
        select(cases.c.case_id)
        .where(cases.c.center == center, cases.c.status != CLOSED)
        .order_by(cases.c.opened_at, cases.c.case_id)
    ).scalars()
    return [UUID(case_id) for case_id in rows]


def load_case(app: Application[UUID], case_id: UUID) -> RcaCase | None:
    """The case with this id as recorded, or None."""
    try:
        found: Any = app.repository.get(case_id)
    except AggregateNotFoundError:
        return None
    return found if isinstance(found, RcaCase) else None


def load_stats(app: Application[UUID], center: str, category: str) -> HealingStats | None:
    """The healing stats of ``category`` in ``center``, or None if nothing was counted."""
    try:
        found: Any = app.repository.get(HealingStats.create_id(center, category))
    except AggregateNotFoundError:
        return None
    return found if isinstance(found, HealingStats) else None


def case_history(app: Application[UUID], case_id: UUID) -> list[CaseStep]:
    """Every event of the case, in order (what ``rca show`` prints)."""
    stored = list(app.events.get(case_id))
    if not stored or not type(stored[0]).__qualname__.startswith(f"{RcaCase.__name__}."):
        raise RcaCaseNotFound(f"no rca case {case_id}")
    return [case_step(e) for e in stored]
