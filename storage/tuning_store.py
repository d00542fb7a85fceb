"""The TuningStore port on the store writer: throughput records, deployments, tuning runs and
service tunings, made durable with everything else the center writes.

A change (:class:`TuningChange`) runs in the writer's transaction on a copy of the aggregate
as this batch sees it: its new events and the aggregate's index row commit together or not at
all, and a change that raises leaves nothing behind.

``center_tuning``
    One row per tuning run (``kind`` ``run``: service, signature, status, times) and per tuned
    service (``kind`` ``service``), written with the aggregate's events. It is how a restarted
    center finds the runs it has to resume and the services it tunes without reading the
    notification log, and what ``eventcenter tuning list`` shows. Created when missing by the
    first change that writes a row.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from sqlalchemy import Column, Float, Index, MetaData, String, Table, inspect, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from eventcenter.domain.tuning_run import OPEN_STATUSES, ServiceTuning, TuningRun
from eventcenter.storage.writer import Batch, Command, StoreWriter

metadata = MetaData()

tuning = Table(
    "center_tuning",
    metadata,
    Column("center", String(64), primary_key=True),
    Column("aggregate_id", String(36), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("service", String(200), nullable=False),
    Column("signature", String(300), nullable=False),
    Column("status", String(16), nullable=False),
    Column("requested_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("center_tuning_by_kind", "center", "kind", "status", "requested_at"),
)

_KEYS = ["center", "aggregate_id"]


def create_tables(session: Session) -> None:
    metadata.create_all(session.connection(), checkfirst=True)


def _load(writer: StoreWriter, aggregate_id: UUID) -> Any | None:
    try:
        found: Any = writer.app.repository.get(aggregate_id)
    except AggregateNotFoundError:
        return None
    writer.loaded(found)
    return found


def _index_row(center: str, aggregate: Any) -> dict[str, Any] | None:
    if isinstance(aggregate, TuningRun):
        return {
            "center": center,
            "aggregate_id": str(aggregate.id),
            "kind": "run",
            "service": aggregate.service,
            "signature": aggregate.signature,
            "status": aggregate.status,
            "requested_at": aggregate.requested_at,
            "updated_at": aggregate.updated_at,
        }
    if isinstance(aggregate, ServiceTuning):
        at = float(aggregate.adjustment["at"]) if aggregate.adjustment else 0.0
        return {
            "center": center,
            "aggregate_id": str(aggregate.id),
            "kind": "service",
            "service": aggregate.service,
            "signature": "",
            "status": "tuned" if aggregate.adjustment else "registered",
            "requested_at": 0.0,
            "updated_at": at,
        }
    return None


def _store_row(session: Session, row: dict[str, Any]) -> None:
    dialect = session.get_bind().dialect.name
    statement: Any = (pg_insert if dialect == "postgresql" else sqlite_insert)(tuning)
    changed = {name: statement.excluded[name] for name in row if name not in _KEYS}
    session.execute(statement.values(row).on_conflict_do_update(index_elements=_KEYS, set_=changed))


def run_ids(session: Session, center: str, *, limit: int = 50) -> list[UUID]:
    """The ids of ``center``'s latest tuning runs, newest request first (none when no run was
    ever recorded: the table is missing then)."""
    if not inspect(session.connection()).has_table(tuning.name):
        return []
    query = (
        select(tuning.c.aggregate_id)
        .where(tuning.c.center == center, tuning.c.kind == "run")
        .order_by(tuning.c.requested_at.desc(), tuning.c.aggregate_id)
        .limit(limit)
    )
    return [UUID(value) for value in session.execute(query).scalars()]


class TuningChange(Command):
    """Apply one change to a tuning aggregate in the writer's transaction (see the port)."""

    def __init__(
        self, aggregate_id: UUID, create: Callable[[], Any] | None, apply: Callable[[Any], Any]
    ) -> None:
        self.aggregate_id = aggregate_id
        self.create = create
        self.apply_change = apply

    def apply(self, writer: StoreWriter, batch: Batch) -> Any:
        touched = batch.aggregates.get(self.aggregate_id)
        current = (
            copy.deepcopy(touched) if touched is not None else _load(writer, self.aggregate_id)
        )
        if current is None and self.create is not None:
            current = self.create()
        result = self.apply_change(current)
        if current is not None and current.pending_events:
            if current.id != self.aggregate_id:
                raise ValueError(f"the change made aggregate {current.id}, not {self.aggregate_id}")
            batch.touch(current)
            row = _index_row(batch.center, current)
            if row is not None:
                assert batch.session is not None
                create_tables(batch.session)
                _store_row(batch.session, row)
        return result


class TuningGet(Command):
    """A copy of one aggregate as recorded (with this batch's earlier changes), or None."""

    def __init__(self, aggregate_id: UUID) -> None:
        self.aggregate_id = aggregate_id

    def apply(self, writer: StoreWriter, batch: Batch) -> Any:
        touched = batch.aggregates.get(self.aggregate_id)
        if touched is not None:
            return copy.deepcopy(touched)
        return _load(writer, self.aggregate_id)


class TuningList(Command):
    """The open runs (oldest request first) or every tuned service."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def apply(self, writer: StoreWriter, batch: Batch) -> list[Any]:
        assert batch.session is not None
        if not inspect(batch.session.connection()).has_table(tuning.name):
            return []
        query = select(tuning.c.aggregate_id).where(
            tuning.c.center == batch.center, tuning.c.kind == self.kind
        )
        if self.kind == "run":
            query = query.where(tuning.c.status.in_(OPEN_STATUSES))
        query = query.order_by(tuning.c.requested_at, tuning.c.service, tuning.c.aggregate_id)
        found = []
        for aggregate_id in batch.session.execute(query).scalars():
            aggregate = TuningGet(UUID(aggregate_id)).apply(writer, batch)
            if aggregate is not None:
                found.append(aggregate)
        return found


class DurableTuningStore:
    """Implements :class:`~eventcenter.domain.ports.TuningStore` with :class:`StoreWriter`."""

    def __init__(self, writer: StoreWriter) -> None:
        self.writer = writer

    async def change(
        self, aggregate_id: UUID, create: Callable[[], Any] | None, apply: Callable[[Any], Any]
    ) -> Any:
        return await self.writer.submit(TuningChange(aggregate_id, create, apply))

    async def get(self, aggregate_id: UUID) -> Any | None:
        return await self.writer.submit(TuningGet(aggregate_id))

    async def open_runs(self) -> list[Any]:
        runs: list[Any] = await self.writer.submit(TuningList("run"))
        return runs

    async def tuned_services(self) -> list[Any]:
        services: list[Any] = await self.writer.submit(TuningList("service"))
        return services
