"""EventCenter: the composition root. The one place where concrete classes meet.

It builds the event-sourced application (SQLite file by default, PostgreSQL by URL), the
decision writer, the processor with its context and the built-in handlers, and gives the read
side (audit trail, dead letters) on top.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

from eventcenter.center.settings import CenterSettings
from eventcenter.domain.aggregates import DeadLetter
from eventcenter.domain.errors import DeadLetterNotFound, EventCenterError
from eventcenter.domain.event import Event
from eventcenter.domain.ports import PressureTester
from eventcenter.domain.priority import Priority
from eventcenter.handlers.builtin import BUILTIN_HANDLERS
from eventcenter.handlers.processor import EventProcessor, ShutdownReport
from eventcenter.projections.audit import DeadLetterIndex, DeadLetterRow, DecisionRow, DecisionTrail
from eventcenter.storage.application import CenterApplication
from eventcenter.storage.writer import DecisionWriter


class EventCenter:
    """An event processor whose decisions are event-sourced.

    ``async with EventCenter.from_url(url) as center: ...`` starts it and shuts it down
    gracefully (queued events handled or dead-lettered, decisions flushed, store closed).
    """

    def __init__(
        self,
        settings: CenterSettings,
        *,
        builtin_handlers: bool = True,
        pressure: PressureTester | None = None,
        services: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        settings.ensure_data_dir()
        recording = settings.recording
        self.app = CenterApplication(
            settings.effective_url,
            snapshot_interval=recording.snapshot_interval,
            cache_size=recording.cache_size,
        )
        try:
            self.writer = DecisionWriter(self.app, settings.name, recording.batch_max)
        except Exception:
            self.app.close()
            raise
        self.processor = EventProcessor(
            settings.processor,
            decisions=self.writer,
            dead_letters=self.writer,
            initial_state=self.writer.processor_state,
            pressure=pressure,
            services=services,
        )
        if builtin_handlers:
            for handler in BUILTIN_HANDLERS:
                self.processor.register(handler())
        self._read_lock = threading.Lock()
        self._trail = DecisionTrail()
        self._letters = DeadLetterIndex()
        self._closed = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> EventCenter:
        """A center on ``url`` (``sqlite:///path.db`` or ``postgresql+psycopg2://...``)."""
        return cls(CenterSettings.load(database_url=url), **options)

    @classmethod
    def from_config(
        cls,
        config_file: Path | None = None,
        overrides: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> EventCenter:
        """A center from a TOML file, ``EVENTCENTER_*`` variables and ``overrides``."""
        return cls(CenterSettings.load(config_file, **dict(overrides or {})), **options)

    # lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.processor.start()

    async def stop(self, timeout: float | None = None) -> ShutdownReport:
        """Drain the processor, flush decisions, close the store. Returns the shutdown report."""
        report = await self.processor.stop(timeout)
        await asyncio.to_thread(self.close)
        return report

    def close(self) -> None:
        """Flush and close persistence (for a center whose processor never ran, or after stop)."""
        if self._closed:
            return
        self._closed = True
        self.writer.close()
        self.app.close()

    async def __aenter__(self) -> EventCenter:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # publishing (the processor's API, here for convenience) ------------------------------------

    async def publish(
        self,
        type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        tenant: str = "default",
        priority: Priority | str = Priority.NORMAL,
        **fields: Any,
    ) -> str:
        return await self.processor.publish(
            type, payload, tenant=tenant, priority=priority, **fields
        )

    async def publish_batch(self, items: Sequence[Mapping[str, Any] | Event]) -> list[str]:
        return await self.processor.publish_batch(items)

    def publish_sync(
        self, type: str, payload: Mapping[str, Any] | None = None, **fields: Any
    ) -> str:
        return self.processor.publish_sync(type, payload, **fields)

    # read side ---------------------------------------------------------------------------------

    def _catch_up(self) -> None:
        with self._read_lock:
            after = min(self._trail.position, self._letters.position)
            for position, domain_event in self.app.read_events(after):
                self._trail.apply(position, domain_event)
                self._letters.apply(position, domain_event)

    def decisions(self) -> list[DecisionRow]:
        """The audit trail: transitions and decisions in recorded order (blocking read)."""
        self._catch_up()
        return list(self._trail.rows)

    def dead_letters(self, status: str | None = None) -> list[DeadLetterRow]:
        """Dead letters, oldest first; ``status`` "pending" or "replayed" filters (blocking)."""
        self._catch_up()
        rows = self._letters.letters.values()
        return [row for row in rows if status is None or row.status == status]

    async def replay_dead_letter(self, letter_id: UUID | str, reason: str = "replayed") -> Event:
        """Hand a pending dead letter back to its subscription; returns the replayed event.

        The event is queued again (bypassing dedupe), then the letter is marked replayed. If it
        fails again, it becomes a new dead letter.
        """
        letter = await asyncio.to_thread(self._pending_letter, _as_uuid(letter_id))
        event = Event.parse(letter.envelope, self.settings.processor.limits)
        await self.processor.redeliver(event, letter.subscription)
        await self.writer.mark_replayed(letter.id, reason)
        return event

    def _pending_letter(self, letter_id: UUID) -> DeadLetter:
        letter = self.app.dead_letter(letter_id)
        if letter.status != DeadLetter.PENDING:
            raise EventCenterError(f"dead letter {letter_id} is {letter.status}, not pending")
        return letter


def _as_uuid(value: UUID | str) -> UUID:
    if isinstance(value, UUID):
        return value
    try:
        return UUID(value)
    except ValueError:
        raise DeadLetterNotFound(f"{value!r} is not a dead letter id (a UUID)") from None
