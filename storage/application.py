"""The event-sourced application behind the center, on SQLite or PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import DomainEventProtocol
from sqlalchemy.engine import Engine, make_url

from eventcenter.domain.aggregates import DeadLetter, ProcessorLog
from eventcenter.domain.breaker_log import BreakerLog
from eventcenter.domain.errors import DeadLetterNotFound
from eventcenter.domain.recovery_log import ServiceRecovery
from eventcenter.domain.source_log import SourceLog

#: libpq settings for the store's connections, unless the URL sets them: a peer that went
#: silent (a network partition) is noticed within about half a minute instead of the kernel's
#: default of many minutes, and the writer then retries like after any outage.
LIBPQ_DEFAULTS = {
    "connect_timeout": "10",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "30000",  # milliseconds of unacknowledged data
}


def with_keepalives(url: str) -> str:
    """``url`` with :data:`LIBPQ_DEFAULTS` for a psycopg2 URL (other URLs unchanged)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql" or parsed.get_driver_name() != "psycopg2":
        return url
    missing = {k: v for k, v in LIBPQ_DEFAULTS.items() if k not in parsed.query}
    return parsed.update_query_dict(missing).render_as_string(hide_password=False)


class CenterApplication(Application[UUID]):
    """Stores the processor log, dead letters, source, breaker and recovery logs. Its tables are
    ``center_events``, ``center_snapshots`` (eventsourcing names them after the application).

    Snapshots are enabled but not taken by ``save``: the store writer takes one of the processor
    log every ``snapshot_interval`` events, after the batch that crossed it has committed (a
    snapshot that fails then cannot make a stored batch look failed). Loading the log reads one
    snapshot plus a bounded tail, however long the history.

    ``create_tables=False`` is for readers: they never create a table.
    """

    name = "center"
    is_snapshotting_enabled = True

    def __init__(self, url: str, *, cache_size: int = 1000, create_tables: bool = True) -> None:
        env = {
            "PERSISTENCE_MODULE": "eventsourcing_sqlalchemy",
            "SQLALCHEMY_URL": with_keepalives(url),
            "CREATE_TABLE": "y" if create_tables else "n",
        }
        if cache_size:
            env["AGGREGATE_CACHE_MAXSIZE"] = str(cache_size)
        super().__init__(env=env)

    def close(self) -> None:
        """Close the application and its database connections.

        The persistence module keeps its engine's pool until the engine is garbage collected,
        which whatever still refers to the application (an HTTP app's routes, a test's
        frame) can put off for as long as the process lives: on PostgreSQL each closed
        center would keep its connections open."""
        super().close()
        engine = getattr(self.recorder, "datastore", None)
        engine = getattr(engine, "engine", None)
        if isinstance(engine, Engine):
            engine.dispose()

    def create_tables(self) -> None:
        """Create the events and snapshots tables if missing (writers only, at start)."""
        self.recorder.create_table()  # type: ignore[attr-defined]
        if self.snapshots is not None:
            self.snapshots.recorder.create_table()  # type: ignore[attr-defined]

    def processor_log(self, name: str) -> ProcessorLog:
        """The processor log of center ``name``, created (unsaved) if it does not exist yet."""
        try:
            log: ProcessorLog = self.repository.get(ProcessorLog.create_id(name))
        except AggregateNotFoundError:
            return ProcessorLog(name)
        return log

    def snapshot_processor_log(self, processor_log: ProcessorLog) -> None:
        """Store a snapshot of ``processor_log`` as it is in memory (all its events stored)."""
        assert self.snapshots is not None
        snapshot_class = type(self).snapshot_class or ProcessorLog.Snapshot
        self.snapshots.put([snapshot_class.take(processor_log)])

    def snapshot(self, aggregate: Any) -> None:
        """Store a snapshot of ``aggregate`` as it is in memory (all its events stored)."""
        assert self.snapshots is not None
        snapshot_class = type(self).snapshot_class or type(aggregate).Snapshot
        self.snapshots.put([snapshot_class.take(aggregate)])

    def source_log(self, log_id: UUID) -> SourceLog | None:
        """The source log with this id, or None if the source was never registered."""
        try:
            found: Any = self.repository.get(log_id)
        except AggregateNotFoundError:
            return None
        return found if isinstance(found, SourceLog) else None

    def breaker_log(self, log_id: UUID) -> BreakerLog | None:
        """The breaker log with this id, or None if that breaker never moved."""
        try:
            found: Any = self.repository.get(log_id)
        except AggregateNotFoundError:
            return None
        return found if isinstance(found, BreakerLog) else None

    def recovery_log(self, log_id: UUID) -> ServiceRecovery | None:
        """The recovery log with this id, or None if that service never had an incident."""
        try:
            found: Any = self.repository.get(log_id)
        except AggregateNotFoundError:
            return None
        return found if isinstance(found, ServiceRecovery) else None

    def dead_letter(self, letter_id: UUID) -> DeadLetter:
        try:
            letter: DeadLetter = self.repository.get(letter_id)
        except AggregateNotFoundError:
            raise DeadLetterNotFound(f"no dead letter {letter_id}") from None
        if not isinstance(letter, DeadLetter):
            raise DeadLetterNotFound(f"{letter_id} is not a dead letter")
        return letter

    def read(self, after: int, limit: int) -> list[tuple[int, DomainEventProtocol[Any]]]:
        """Up to ``limit`` stored domain events after notification id ``after``, in order, with
        their notification ids (what a read model follows)."""
        page = self.recorder.select_notifications(
            start=after, limit=limit, inclusive_of_start=False
        )
        return [(n.id, self.mapper.to_domain_event(n)) for n in page]

    def head(self) -> int:
        """The notification id of the last stored event (0: none)."""
        return self.recorder.max_notification_id() or 0

    def read_events(
        self, after: int = 0, limit: int = 500
    ) -> Iterator[tuple[int, DomainEventProtocol[Any]]]:
        """Every stored domain event with a notification id greater than ``after``, in order.

        Reads in pages of ``limit`` so projections can follow a log of any length.
        """
        while True:
            page = self.recorder.select_notifications(
                start=after, limit=limit, inclusive_of_start=False
            )
            for notification in page:
                yield notification.id, self.mapper.to_domain_event(notification)
            if len(page) < limit:
                return
            after = page[-1].id
