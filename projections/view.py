"""The read model: the center's notification log followed into SQL tables, exactly once.

:class:`ReadModel` is an eventsourcing tracking recorder (``SQLAlchemyTrackingRecorder``): each
batch of notifications becomes audit rows, subjects, dead-letter and source rows **and** the
tracking row of its last notification id, in one transaction. A batch that fails leaves
nothing behind (the rows and the position roll back together); a batch processed twice (two
readers, or a crash after commit) is refused by the tracking check and the audit table's key,
and changes nothing. So the tables hold each decision once and resume exactly where they
stopped.

An event the catalogue cannot read (a bug, or a class from a newer version) does not wedge the
model: it becomes a ``projection.unreadable`` row naming the event and the error, and the
model goes on.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from eventsourcing.persistence import Tracking
from eventsourcing_sqlalchemy.datastore import SQLAlchemyDatastore
from eventsourcing_sqlalchemy.recorders import SQLAlchemyTrackingRecorder
from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from eventcenter.domain.aggregates import DeadLetter as _DeadLetter
from eventcenter.domain.source_log import SourceLog as _SourceLog
from eventcenter.projections import tables
from eventcenter.projections.catalog import AuditEntry, Subject, describe
from eventcenter.projections.sources import SourceRow, fold_source, row_from_json, row_to_json

#: The aggregates as mypy sees their event classes (made by eventsourcing's ``@event``).
DeadLetter: Any = _DeadLetter
SourceLog: Any = _SourceLog

__all__ = ["ReadModel", "entry_values"]

log = logging.getLogger("eventcenter.projections")


def _dumps(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def entry_values(entry: AuditEntry) -> dict[str, Any]:
    """The audit table's row of ``entry``."""
    values = dataclasses.asdict(entry)
    values["details"] = _dumps(entry.details)
    return values


class ReadModel(SQLAlchemyTrackingRecorder):
    """The read side's tables and their tracking row, on the datastore of the center's store.

    ``application_name`` is the application whose notification log it follows (the tracking
    row's key). Pass the datastore the writer uses (SQLite then serialises the two writers in
    this process) or one of its own (a CLI beside a running center).
    """

    def __init__(self, datastore: SQLAlchemyDatastore, application_name: str = "center") -> None:
        super().__init__(datastore, tracking_table_name=tables.TRACKING_TABLE)
        self.application_name = application_name

    def create_table(self) -> None:
        """Create the tracking table and the view's tables if missing."""
        super().create_table()
        assert self.datastore.engine is not None
        tables.metadata.create_all(self.datastore.engine, checkfirst=True)

    @property
    def position(self) -> int:
        """The notification id of the last event the tables hold (0: none)."""
        return self.max_tracking_id(self.application_name) or 0

    def reset(self) -> None:
        """Empty the tables and forget the position: the next catch-up rebuilds from zero."""
        with self.transaction(commit=True) as session:
            for table in tables.VIEW_TABLES:
                session.execute(delete(table))
            session.execute(
                delete(self.tracking_table).where(
                    self.tracking_table.c.application_name == self.application_name
                )
            )

    def process(self, notifications: Sequence[tuple[int, Any]]) -> int:
        """Write the rows of ``notifications`` (``(notification id, domain event)`` in order)
        and the tracking row of the last one, in one transaction; the number of audit rows.

        Raises eventsourcing's IntegrityError if these notifications were already processed
        (nothing is written then)."""
        if not notifications:
            return 0
        with self.transaction(commit=True) as session:
            batch = _Batch(session, [str(event.originator_id) for _, event in notifications])
            for position, event in notifications:
                batch.add(position, event)
            written = batch.flush()
            self._insert_tracking(session, Tracking(self.application_name, notifications[-1][0]))
        return written


class _Batch:
    """The rows one transaction writes: loaded once, changed in memory, written at the end."""

    def __init__(self, session: Session, aggregate_ids: Iterable[str]) -> None:
        self.session = session
        ids = sorted(set(aggregate_ids))
        self.subjects: dict[str, Subject] = {}
        self.new_subjects: dict[str, Subject] = {}
        self.sources: dict[str, SourceRow] = {}
        self.new_sources: set[str] = set()
        self.changed_sources: set[str] = set()
        self.letters: dict[str, dict[str, Any]] = {}
        self.new_letters: set[str] = set()
        self.changed_letters: set[str] = set()
        self.entries: list[dict[str, Any]] = []
        self.chain_tenants: dict[str, str] = {}
        for chunk in _chunks(ids, 500):
            for row in session.execute(
                select(tables.subjects).where(tables.subjects.c.aggregate_id.in_(chunk))
            ).mappings():
                values = dict(row)
                key = values.pop("aggregate_id")
                self.subjects[key] = Subject(**values)
            for source in session.execute(
                select(tables.sources.c.aggregate_id, tables.sources.c.row).where(
                    tables.sources.c.aggregate_id.in_(chunk)
                )
            ):
                self.sources[source.aggregate_id] = row_from_json(orjson.loads(source.row))
            for row in session.execute(
                select(tables.dead_letters).where(tables.dead_letters.c.id.in_(chunk))
            ).mappings():
                self.letters[row["id"]] = dict(row)
        self.stored_subjects = frozenset(self.subjects)

    def add(self, position: int, event: Any) -> None:
        key = str(event.originator_id)
        known = self.subjects.get(key)
        try:
            subject, entry = describe(position, event, known)
        except Exception as error:  # a bug must not wedge the read side: keep it as a row
            log.exception("cannot read event %s at position %s", type(event).__name__, position)
            self.entries.append(entry_values(_unreadable(position, event, error)))
            return
        if subject is not None and subject != known:
            self.subjects[key] = self.new_subjects[key] = subject
        if isinstance(event, SourceLog.Event):
            entry = self._fold_source(key, position, event, entry)
        elif isinstance(event, DeadLetter.Event):
            self._fold_letter(key, position, event)
        if entry is not None:
            if not entry.tenant and entry.correlation_id:
                tenant = self._tenant_of(entry.correlation_id)
                if tenant:
                    entry = dataclasses.replace(entry, tenant=tenant)
            self.entries.append(entry_values(entry))

    def _tenant_of(self, correlation_id: str) -> str:
        """The tenant of the aggregate a chain started with (a tuning run, an RCA case, a
        dead letter): a measurement, adjustment or dispatch of a tenant's deployment records
        no tenant of its own, yet belongs to that tenant's chain."""
        if correlation_id in self.chain_tenants:
            return self.chain_tenants[correlation_id]
        tenant = next(
            (s.tenant for s in self.subjects.values() if s.correlation_id == correlation_id),
            "",
        )
        if not tenant:
            row = self.session.execute(
                select(tables.subjects.c.tenant)
                .where(
                    tables.subjects.c.correlation_id == correlation_id,
                    tables.subjects.c.tenant != "",
                )
                .limit(1)
            ).first()
            tenant = row.tenant if row is not None else ""
        if tenant:
            self.chain_tenants[correlation_id] = tenant
        return tenant

    def _fold_source(
        self, key: str, position: int, event: Any, entry: AuditEntry | None
    ) -> AuditEntry | None:
        before = self.sources.get(key)
        mode_before = before.mode if before is not None else ""
        row = fold_source(before, position, event)
        if row is None:
            return entry
        if before is None:
            self.new_sources.add(key)
        self.sources[key] = row
        self.changed_sources.add(key)
        if entry is not None and isinstance(event, SourceLog.Reconfigured):
            entry = dataclasses.replace(entry, from_state=mode_before)
        return entry

    def _fold_letter(self, key: str, position: int, event: Any) -> None:
        e = event
        if isinstance(e, DeadLetter.Recorded):
            envelope = dict(e.envelope)
            self.letters[key] = {
                "id": key,
                "position": position,
                "at": e.timestamp.timestamp(),
                "tenant": str(envelope.get("tenant", "")),
                "event_type": str(envelope.get("type", "")),
                "subscription": e.subscription,
                "error_type": e.error_type,
                "error": e.error,
                "attempts": e.attempts,
                "status": "pending",
                "replayed_at": None,
                "replay_of": str(getattr(e, "replay_of", "") or ""),
                "failed_again_as": "",
                "envelope": _dumps(envelope),
            }
            self.new_letters.add(key)
            self.changed_letters.add(key)
            return
        letter = self.letters.get(key)
        if letter is None:
            return
        if isinstance(e, DeadLetter.ReplayClaimed):
            letter["status"] = "replaying"
        elif isinstance(e, DeadLetter.Replayed | DeadLetter.ReplayFailed):
            letter["status"] = "replayed"
            letter["replayed_at"] = e.timestamp.timestamp()
            letter["failed_again_as"] = str(getattr(e, "new_letter", "") or "")
        else:
            return
        self.changed_letters.add(key)

    def _update(self, table: Any, key_column: Any, rows: list[dict[str, Any]]) -> None:
        """Update ``rows`` (each with its ``key`` and the new values) in one executemany."""
        if not rows:
            return
        columns = [name for name in rows[0] if name != "key"]
        self.session.execute(
            update(table)
            .where(key_column == bindparam("key"))
            .values({name: bindparam(f"new_{name}") for name in columns}),
            [{"key": r["key"], **{f"new_{n}": r[n] for n in columns}} for r in rows],
        )

    def flush(self) -> int:
        session = self.session
        if self.entries:
            session.execute(insert(tables.audit), self.entries)
        inserted = [
            {"aggregate_id": key, **dataclasses.asdict(subject)}
            for key, subject in self.new_subjects.items()
            if key not in self.stored_subjects
        ]
        if inserted:
            session.execute(insert(tables.subjects), inserted)
        # What a chain recorded before its tenant was known (a deployment event comes before
        # its tuning run) is that tenant's too. One statement for the batch (executemany).
        fills = [
            {"fill_correlation": subject.correlation_id, "fill_tenant": subject.tenant}
            for subject in self.new_subjects.values()
            if subject.tenant and subject.correlation_id
        ]
        if fills:
            audit = tables.audit.c
            session.execute(
                update(tables.audit)
                .where(audit.correlation_id == bindparam("fill_correlation"), audit.tenant == "")
                .values(tenant=bindparam("fill_tenant")),
                fills,
            )
        changed_subjects = [
            {"key": key, **dataclasses.asdict(subject)}
            for key, subject in self.new_subjects.items()
            if key in self.stored_subjects
        ]
        self._update(tables.subjects, tables.subjects.c.aggregate_id, changed_subjects)
        source_rows = [
            {
                "key": key,
                "tenant": row.tenant,
                "name": row.name,
                "mode": row.mode,
                "position": row.position,
                "row": _dumps(row_to_json(row)),
            }
            for key, row in ((key, self.sources[key]) for key in sorted(self.changed_sources))
        ]
        new_sources = [r for r in source_rows if r["key"] in self.new_sources]
        if new_sources:
            session.execute(
                insert(tables.sources),
                [
                    {"aggregate_id": r["key"], **{k: v for k, v in r.items() if k != "key"}}
                    for r in new_sources
                ],
            )
        self._update(
            tables.sources,
            tables.sources.c.aggregate_id,
            [r for r in source_rows if r["key"] not in self.new_sources],
        )
        letters = [self.letters[key] for key in sorted(self.changed_letters)]
        new_letters = [letter for letter in letters if letter["id"] in self.new_letters]
        if new_letters:
            session.execute(insert(tables.dead_letters), new_letters)
        self._update(
            tables.dead_letters,
            tables.dead_letters.c.id,
            [
                {"key": letter["id"], **{k: v for k, v in letter.items() if k != "id"}}
                for letter in letters
                if letter["id"] not in self.new_letters
            ],
        )
        return len(self.entries)


def _unreadable(position: int, event: Any, error: Exception) -> AuditEntry:
    return AuditEntry(
        position=position,
        at=event.timestamp.timestamp() if hasattr(event, "timestamp") else 0.0,
        tenant="",
        source="",
        kind="projection.unreadable",
        aggregate=type(event).__qualname__.split(".")[0][:40],
        aggregate_id=str(getattr(event, "originator_id", "")),
        version=int(getattr(event, "originator_version", 0)),
        subject=type(event).__qualname__,
        from_state="",
        to_state="",
        reason=f"{type(error).__name__}: {error}",
        correlation_id="",
        cause="",
        details={},
    )


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
