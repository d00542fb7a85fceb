"""The event-sourced application behind the center, on SQLite or PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import DomainEventProtocol

from eventcenter.domain.aggregates import DeadLetter, ProcessorLog
from eventcenter.domain.errors import DeadLetterNotFound


class CenterApplication(Application[UUID]):
    """Stores the processor log and dead letters. Its tables are ``center_events``,
    ``center_snapshots`` (eventsourcing names them after the application).

    The processor log is snapshotted every ``snapshot_interval`` events, so loading it reads
    one snapshot plus fewer than that many events, however long the history.
    """

    name = "center"
    snapshotting_intervals = {ProcessorLog: 100}

    def __init__(self, url: str, *, snapshot_interval: int = 100, cache_size: int = 1000) -> None:
        env = {
            "PERSISTENCE_MODULE": "eventsourcing_sqlalchemy",
            "SQLALCHEMY_URL": url,
            "CREATE_TABLE": "y",
        }
        if cache_size:
            env["AGGREGATE_CACHE_MAXSIZE"] = str(cache_size)
        super().__init__(env=env)
        # The library reads the interval from the instance; the class attribute only tells it
        # that snapshots are wanted (so it builds the snapshot store).
        self.__dict__["snapshotting_intervals"] = {ProcessorLog: snapshot_interval}

    def processor_log(self, name: str) -> ProcessorLog:
        """The processor log of center ``name``, created (unsaved) if it does not exist yet."""
        try:
            log: ProcessorLog = self.repository.get(ProcessorLog.create_id(name))
        except AggregateNotFoundError:
            return ProcessorLog(name)
        return log

    def dead_letter(self, letter_id: UUID) -> DeadLetter:
        try:
            letter: DeadLetter = self.repository.get(letter_id)
        except AggregateNotFoundError:
            raise DeadLetterNotFound(f"no dead letter {letter_id}") from None
        if not isinstance(letter, DeadLetter):
            raise DeadLetterNotFound(f"{letter_id} is not a dead letter")
        return letter

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
