"""The DeliveryStore port on the store writer: the processor's durable inbox and queue; the
sources' recorder and the operators' pause requests waiting for them."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from eventcenter.domain.decisions import Decision
from eventcenter.domain.ports import AdmissionRecord, BacklogCount, StoredDelivery
from eventcenter.domain.source_log import SourceLog
from eventcenter.domain.sources import Delivered, SourceProgress
from eventcenter.storage import source_requests
from eventcenter.storage.source_requests import PendingRequest
from eventcenter.storage.writer import (
    Admission,
    AdmitCommand,
    AttemptsCommand,
    Batch,
    Command,
    DeadLetterCommand,
    FlushCommand,
    LoadCommand,
    OrphansCommand,
    OutcomesCommand,
    SettleCommand,
    SourceLogCommand,
    SourceReadCommand,
    StoreWriter,
    SummaryCommand,
)


class DurableDeliveries:
    """Implements :class:`~eventcenter.domain.ports.DeliveryStore` with :class:`StoreWriter`."""

    def __init__(self, writer: StoreWriter, clock: Callable[[], float] = time.time) -> None:
        self.writer = writer
        self.center = writer.center
        self._clock = clock

    @property
    def available(self) -> bool:
        return self.writer.available

    @property
    def outages(self) -> int:
        return self.writer.outages

    def rows(self, record: AdmissionRecord) -> list[tuple[Any, ...]]:
        """The record's rows of ``center_deliveries``, as values in the table's column order:
        center, seq, subscription, priority, tenant, event_id, envelope, attempts, failure,
        replay_of, admitted_at."""
        event = record.event
        priority, now = int(event.priority), self._clock()
        return [
            (
                self.center,
                target.seq,
                target.subscription,
                priority,
                event.tenant,
                event.id_text,
                record.envelope,
                0,
                target.failure,
                record.replay_of,
                now,
            )
            for target in record.targets
        ]

    async def admit(
        self, records: Sequence[AdmissionRecord], progress: SourceProgress | None = None
    ) -> list[str | None]:
        admissions = [Admission(r.event.id_text, r.ident, self.rows(r)) for r in records]
        result: list[str | None] = await self.writer.submit(AdmitCommand(admissions, progress))
        return result

    async def source_position(self, tenant: str, source: str, path: str) -> str | None:
        found: str | None = await self.writer.submit(SourceReadCommand(tenant, source, path))
        return found

    async def source_delivered(self, tenant: str, source: str) -> dict[str, Delivered]:
        found: dict[str, Delivered] = await self.writer.submit(
            SourceReadCommand(tenant, source, None)
        )
        return found

    def settle(self, seq: int, replay_of: str | None, decisions: Sequence[Decision] = ()) -> None:
        self.writer.post(SettleCommand(seq, replay_of, decisions))

    def record_attempts(self, seq: int, attempts: int, decisions: Sequence[Decision] = ()) -> None:
        self.writer.post(AttemptsCommand(seq, attempts, decisions))

    def dead_letter(
        self,
        seq: int,
        envelope: dict[str, Any],
        subscription: str,
        error: BaseException,
        attempts: int,
        replay_of: str | None,
        decisions: Sequence[Decision] = (),
    ) -> None:
        self.writer.post(
            DeadLetterCommand(
                seq, envelope, subscription, error, attempts, replay_of, decisions=decisions
            )
        )

    async def load(
        self, subscription: str, priority: int, after: int, limit: int, tenant: str | None = None
    ) -> list[StoredDelivery]:
        rows = await self.writer.submit(LoadCommand(subscription, priority, after, limit, tenant))
        return [
            StoredDelivery(
                r.seq,
                r.subscription,
                r.priority,
                r.envelope,
                r.attempts,
                r.failure,
                r.replay_of,
                r.tenant,
            )
            for r in rows
        ]

    async def summary(self) -> tuple[list[BacklogCount], int]:
        counts, top = await self.writer.submit(SummaryCommand())
        found = [
            BacklogCount(c.subscription, c.priority, c.count, c.first_seq, c.tenant) for c in counts
        ]
        return found, top

    async def flush(self) -> None:
        await self.writer.submit(FlushCommand())

    async def dead_letter_orphans(self, subscription: str, limit: int) -> int:
        count: int = await self.writer.submit(OrphansCommand(subscription, limit))
        return count


class DurableSourceRecorder:
    """Implements :class:`~eventcenter.domain.ports.SourceRecorder` with :class:`StoreWriter`."""

    def __init__(self, writer: StoreWriter) -> None:
        self.writer = writer

    async def change(
        self,
        tenant: str,
        source: str,
        apply: Callable[[SourceLog | None], tuple[SourceLog | None, Any]],
    ) -> Any:
        return await self.writer.submit(SourceLogCommand(tenant, source, apply))

    def outcomes(self, tenant: str, source: str, rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        self.writer.post(
            OutcomesCommand(
                [
                    {
                        "tenant": tenant,
                        "source": source,
                        "at": at,
                        "path": path,
                        "ok": ok,
                        "reason": reason[:2000],
                        "mode": mode,
                        "items": items,
                    }
                    for at, path, ok, reason, mode, items in rows
                ]
            )
        )


class _PendingRequests(Command):
    def apply(self, writer: StoreWriter, batch: Batch) -> list[PendingRequest]:
        assert batch.session is not None
        return source_requests.pending(batch.session, batch.center)


class _RequestApplied(Command):
    def __init__(self, request_id: int, at: float, outcome: str) -> None:
        self.request_id = request_id
        self.at = at
        self.outcome = outcome

    def apply(self, writer: StoreWriter, batch: Batch) -> None:
        assert batch.session is not None
        source_requests.mark_applied(batch.session, self.request_id, self.at, self.outcome)


class DurableSourceRequests:
    """The operators' pause and resume requests for this center (see
    :mod:`eventcenter.storage.source_requests`), read and marked through the writer."""

    def __init__(self, writer: StoreWriter) -> None:
        self.writer = writer

    async def pending(self) -> list[PendingRequest]:
        """Requests left for this center and not applied yet, oldest first."""
        found: list[PendingRequest] = await self.writer.submit(_PendingRequests())
        return found

    async def applied(self, request_id: int, at: float, outcome: str) -> None:
        """Mark a request applied, with what came of it."""
        await self.writer.submit(_RequestApplied(request_id, at, outcome))
