"""EventCenter: the composition root. The one place where concrete classes meet.

:func:`bootstrap` wires a processor from its ports (tests pass in-memory fakes);
:class:`EventCenter` builds the real ports on the configured store (SQLite file by default,
PostgreSQL by URL) and runs them as one service: constructing it does no I/O, ``start()``
takes the center's lease, opens the store, reads back unfinished work and starts the workers;
``stop()`` stops them and closes the store.

While it runs, the center checks its lease every ``lease_check_interval`` seconds. A lease
whose lock connection was cut (a network blip, a restarted server) is taken again as soon as
the store answers, if no other process took it meanwhile. If one did, this center has lost
it: it stops taking work (what it left unfinished stays in the store, for the new holder),
``publish`` raises LeaseLost, and ``lease_lost`` says why.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

from eventcenter.center.healing import CenterHealing
from eventcenter.center.heap import freeze_startup_heap
from eventcenter.center.reader import CenterReader
from eventcenter.center.settings import CenterSettings
from eventcenter.center.source_requests import REQUESTS_EVERY, SourceRequests
from eventcenter.center.source_sink import CenterItemSink
from eventcenter.center.source_switches import SwitchCountingRecorder
from eventcenter.center.tuning import SourceKnobs, TunedFrequency
from eventcenter.domain.aggregates import DeadLetter
from eventcenter.domain.errors import (
    DeadLetterNotFound,
    EventCenterError,
    LeaseLost,
    StoreUnavailable,
)
from eventcenter.domain.event import Event
from eventcenter.domain.ports import (
    AdmissionRecord,
    DeadLetterStore,
    DecisionLog,
    DeliveryStore,
    Dispatcher,
    PressureTester,
    Target,
)
from eventcenter.domain.priority import Priority
from eventcenter.domain.source_pause import PauseResult
from eventcenter.domain.sources import Clock
from eventcenter.handlers.builtin import BUILTIN_HANDLERS
from eventcenter.handlers.config import ProcessorSettings
from eventcenter.handlers.processor import EventProcessor, ShutdownReport
from eventcenter.handlers.tuning import TuningWorkflow
from eventcenter.healing.escalation import EscalationSink
from eventcenter.pressure.dispatcher import DispatchPolicy, HttpDispatcher
from eventcenter.pressure.tester import LocustPressureTester
from eventcenter.projections.audit import DeadLetterRow, DecisionRow
from eventcenter.projections.runner import ProjectionRunner
from eventcenter.projections.view import ReadModel
from eventcenter.sources.clock import SystemClock
from eventcenter.sources.manager import SourceManager
from eventcenter.storage.application import CenterApplication
from eventcenter.storage.lease import Lease
from eventcenter.storage.queue import (
    DurableDeliveries,
    DurableSourceRecorder,
    DurableSourceRequests,
)
from eventcenter.storage.tables import retry_created_concurrently
from eventcenter.storage.tuning_store import DurableTuningStore
from eventcenter.storage.writer import ClaimReplayCommand, PurgeCommand, StoreWriter

log = logging.getLogger("eventcenter.center")

LEASE_CHECK_S = 2.0
"""Seconds between two checks of a running center's lease."""


def bootstrap(
    settings: ProcessorSettings,
    *,
    decisions: DecisionLog,
    dead_letters: DeadLetterStore,
    store: DeliveryStore | None = None,
    services: Mapping[str, Any] | None = None,
    builtin_handlers: bool = True,
) -> EventProcessor:
    """A processor wired to its ports, with the built-in handlers registered."""
    processor = EventProcessor(
        settings,
        decisions=decisions,
        dead_letters=dead_letters,
        store=store,
        services=services,
    )
    if builtin_handlers:
        for handler in BUILTIN_HANDLERS:
            processor.register(handler())
    return processor


class EventCenter:
    """An event processor whose accepted events and decisions are durable.

    ``async with EventCenter.from_url(url) as center: ...`` starts it and stops it. Register
    handlers on ``center.processor`` before starting.
    """

    def __init__(
        self,
        settings: CenterSettings,
        *,
        builtin_handlers: bool = True,
        pressure: PressureTester | None = None,
        dispatcher: Dispatcher | None = None,
        services: Mapping[str, Any] | None = None,
        lease_check_interval: float = LEASE_CHECK_S,
        source_clock: Clock | None = None,
        source_wall: Callable[[], float] = time.time,
        escalation_sinks: Iterable[EscalationSink] = (),
        source_requests_every: float = REQUESTS_EVERY,
    ) -> None:
        # Built first: a source the settings cannot build leaves nothing open behind it.
        declared = [source.to_source() for source in settings.sources]
        self.settings = settings
        recording = settings.recording
        url = settings.effective_url
        self.app = CenterApplication(url, cache_size=recording.cache_size, create_tables=False)
        self.lease = Lease(url, settings.name)  # SQLite: the lock file is next to the database
        self.writer = StoreWriter(
            self.app,
            settings.name,
            batch_max=recording.batch_max,
            snapshot_interval=recording.snapshot_interval,
            fence=self.lease.fence,
        )
        self.deliveries = DurableDeliveries(self.writer)
        self.processor = bootstrap(
            settings.processor,
            decisions=self.writer,
            dead_letters=self.writer,
            store=self.deliveries,
            services=services,
            builtin_handlers=builtin_handlers,
        )
        #: Each data source's recorded mode switches, noted as its log's changes commit.
        self.source_switches = SwitchCountingRecorder(DurableSourceRecorder(self.writer))
        #: The center's data sources: those of ``settings.sources`` (the ``[[sources]]``
        #: tables), and any ``center.sources.register(DataSource(...))`` before ``start()``
        #: (or ``await center.sources.add(...)`` while it runs). ``source_clock`` paces their
        #: engines and ``source_wall`` stamps their decisions (tests pass a fake clock).
        self.sources = SourceManager(
            CenterItemSink(self.processor),
            self.source_switches,
            clock=source_clock,
            wall=source_wall,
        )
        for spec in declared:
            self.sources.register(spec)
        #: Operators' pause and resume requests (``eventcenter sources pause|resume``), applied
        #: before the sources start and every ``source_requests_every`` seconds while running.
        self.source_requests = SourceRequests(
            DurableSourceRequests(self.writer),
            self.sources,
            wall=source_wall,
            every=source_requests_every,
        )
        #: Self-healing: RCA cases from the sources', handlers' and health checks' failures,
        #: healing strategies, escalation (``escalation_sinks`` besides the configured ones),
        #: circuit breakers (``center.healing.breakers``), health checks and recovery.
        self.healing = CenterHealing(
            settings.healing,
            writer=self.writer,
            sources=self.sources,
            processor=self.processor,
            clock=source_clock,
            wall=source_wall,
            sinks=escalation_sinks,
        )
        #: Load-test driven tuning: deployment.changed runs, latency spikes, idle periods
        #: (``pressure``: the load tester; ``dispatcher``: sends agents their frequencies).
        if pressure is None and settings.tuning.tester == "locust":
            pressure = LocustPressureTester()
        self._own_dispatcher: HttpDispatcher | None = None
        if dispatcher is None:
            dispatcher = self._own_dispatcher = HttpDispatcher(
                DispatchPolicy(
                    attempts=settings.tuning.dispatch_attempts,
                    timeout=settings.tuning.dispatch_timeout,
                ),
                breaker_for=self.healing.breakers.get_or_create,
            )
        self.tuning = TuningWorkflow(
            store=DurableTuningStore(self.writer),
            state=self.processor.state,
            decisions=self.writer,
            publish=self.processor.publish,
            settings=settings.tuning,
            tester=pressure,
            dispatcher=dispatcher,
            clock=source_clock or SystemClock(),
            wall=source_wall,
            on_dispatch_failed=self.healing.dispatch_failed,
            on_adjustment=SourceKnobs(settings.tuning, self.sources),
        )
        self.processor.context.services.setdefault("tuning", self.tuning)
        self.healing.connect_tuning(TunedFrequency(settings.tuning, self.tuning))
        #: The read model (audit trail, dead letters, sources as tables), kept caught up with
        #: the notification log by a thread while the center runs.
        self.projections = ProjectionRunner(
            ReadModel(self.app.recorder.datastore, self.app.name),  # type: ignore[attr-defined]
            self.app,
            page=settings.projections.page,
            interval=settings.projections.interval,
        )
        self._reader: CenterReader | None = None
        self._read_lock = threading.Lock()
        self._purger: asyncio.Task[None] | None = None
        self._lease_check_interval = lease_check_interval
        self._lease_watch: asyncio.Task[None] | None = None
        #: Why this center stopped on its own: another process took its lease.
        self.lease_lost: LeaseLost | None = None
        self._lost_report: ShutdownReport | None = None
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
        """Take the lease, open the store, read back unfinished work, start the workers.

        Raises CenterLocked when another process is the active center of this name on this
        store (``standby_wait`` seconds are waited first), StoreUnavailable when the store
        cannot be used.
        """
        if self.processor.status == "running":
            return
        if self._closed:
            raise EventCenterError("this center was stopped; build a new one")
        await asyncio.to_thread(self._open)
        self.processor.state.restore(self.writer.processor_state)
        await self.processor.start()
        try:
            await self.healing.start()
            await self.tuning.start()
            await self.source_requests.apply_pending()  # a source paused meanwhile stays so
            await self.sources.start()
            self.source_requests.start()
        except BaseException:
            await self.source_requests.stop()
            await self.sources.stop()
            await self.tuning.stop()
            await self.healing.stop()
            await self.processor.stop()
            await asyncio.to_thread(self.close)
            raise
        loop = asyncio.get_running_loop()
        self._purger = loop.create_task(self._purge_forever())
        self._lease_watch = loop.create_task(self._watch_lease())
        if self.settings.freeze_heap:
            freeze_startup_heap()

    def _open(self) -> None:
        try:
            self.settings.ensure_data_dir()
        except OSError as error:
            raise StoreUnavailable(
                f"cannot use the data dir {self.settings.data_dir}: {error.strerror or error}"
            ) from None
        self.lease.acquire(wait=self.settings.standby_wait)
        try:
            try:
                retry_created_concurrently(self.app.create_tables)
                retry_created_concurrently(self.projections.model.create_table)
            except Exception as error:
                raise StoreUnavailable(
                    f"cannot create the center's tables in {self.settings.shown_url}: {error}"
                ) from error
            self.writer.open()
            self.projections.start()
        except BaseException:
            self.lease.release()
            raise

    async def _purge_forever(self) -> None:
        """Forget idempotency keys and decision causes older than ``key_retention``."""
        retention = self.settings.recording.key_retention
        while True:
            await asyncio.sleep(min(retention / 10, 3600.0))
            try:
                await self.writer.submit(PurgeCommand(self.writer._clock() - retention))
            except EventCenterError as error:
                log.warning("purging old idempotency keys failed: %s", error)

    async def _watch_lease(self) -> None:
        """Check the lease now and then; stop this center once another process holds it.

        While the store cannot be reached the lease is in doubt, not lost: writes wait for the
        store anyway, and fencing refuses them should another process have taken over.
        """
        while True:
            await asyncio.sleep(self._lease_check_interval)
            try:
                await asyncio.to_thread(self.lease.check)
            except StoreUnavailable:
                continue
            except LeaseLost as lost:
                self.lease_lost = lost
                log.error("%s: this center stops; its unfinished work stays in the store", lost)
                await self.source_requests.stop()
                await self.sources.stop()
                await self.tuning.stop()
                await self.healing.stop()
                self._lost_report = await self.processor.stop(timeout=0)
                return

    def _check_lease(self) -> None:
        if self.lease_lost is not None:
            raise LeaseLost(str(self.lease_lost))

    async def stop(self, timeout: float | None = None) -> ShutdownReport:
        """Stop the sources, then the processor; commit what is queued, close the store,
        release the lease."""
        await self.source_requests.stop()
        await self.sources.stop()
        await self.tuning.stop()
        await self.healing.stop()
        if self._purger is not None:
            self._purger.cancel()
        if self._lease_watch is not None:
            if self.lease_lost is None:
                self._lease_watch.cancel()
            await asyncio.gather(self._lease_watch, return_exceptions=True)
        report = await self.processor.stop(timeout)
        if self._own_dispatcher is not None:
            await self._own_dispatcher.aclose()
        if self._lost_report is not None:
            report = self._lost_report
        await asyncio.to_thread(self.close)
        return report

    def close(self) -> None:
        """Commit what is queued and close the store (for a center that never ran, or after
        stop)."""
        if self._closed:
            return
        self._closed = True
        self.writer.close()
        self.projections.stop()
        self.app.close()
        if self._reader is not None:
            self._reader.close()
        self.lease.release()

    async def __aenter__(self) -> EventCenter:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # data sources -----------------------------------------------------------------------------

    async def pause_source(self, tenant: str, name: str, *, reason: str, by: str) -> PauseResult:
        """Pause one of this running center's sources now: ``Paused`` is recorded in its log,
        then its engines stop; nothing is admitted from it until it is resumed, and it stays
        paused across restarts. Pausing a paused source records nothing (``changed`` False).
        Raises SourceNotFound, InvalidPauseRequest (no reason, no ``by``), LeaseLost."""
        self._check_lease()
        return await self.sources.pause(tenant, name, reason=reason, by=by)

    async def resume_source(
        self, tenant: str, name: str, *, by: str, reason: str = ""
    ) -> PauseResult:
        """Resume a paused source: ``Resumed`` is recorded and its engines start again in the
        recorded mode from their stored positions. A source not paused: nothing recorded."""
        self._check_lease()
        return await self.sources.resume(tenant, name, reason=reason, by=by)

    # publishing (the processor's API, here for convenience) ------------------------------------

    async def publish(
        self,
        type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        tenant: str = "default",
        priority: Priority | str = Priority.NORMAL,
        key: str | None = None,
        **fields: Any,
    ) -> str:
        """Publish one event; returns its id once it is durable (see EventProcessor.publish)."""
        self._check_lease()
        return await self.processor.publish(
            type, payload, tenant=tenant, priority=priority, key=key, **fields
        )

    async def publish_event(self, event: Event, *, key: str | None = None) -> str:
        """Admit an envelope validated already (e.g. by ``parse_json`` from an HTTP body);
        returns its id once it is durable. ``key`` is an idempotency key, as for publish."""
        self._check_lease()
        return await self.processor.publish_event(event, key=key)

    async def publish_batch(self, items: Sequence[Mapping[str, Any] | Event]) -> list[str]:
        self._check_lease()
        return await self.processor.publish_batch(items)

    def publish_sync(
        self, type: str, payload: Mapping[str, Any] | None = None, **fields: Any
    ) -> str:
        self._check_lease()
        return self.processor.publish_sync(type, payload, **fields)

    # read side ---------------------------------------------------------------------------------

    def _read(self) -> CenterReader:
        with self._read_lock:
            if self._reader is None:
                self._reader = CenterReader(self.settings, self.projections)
            return self._reader

    def reader(self) -> CenterReader:
        """The center's read-only view of its store, shared and built on first use (its
        calls block: call them off the event loop)."""
        return self._read()

    def decisions(self, last: int | None = None) -> list[DecisionRow]:
        """The processor's transitions and decisions in recorded order, the ``last`` ones
        (blocking read of the read model, caught up first)."""
        return self._read().decisions(last)

    def dead_letters(self, status: str | None = None) -> list[DeadLetterRow]:
        """Dead letters, oldest first; ``status`` filters (blocking read)."""
        return self._read().dead_letters(status)

    async def replay_dead_letter(self, letter_id: UUID | str, reason: str = "replayed") -> Event:
        """Hand a pending dead letter back to its subscription; returns the replayed event.

        The letter is claimed (pending -> replaying) in the same transaction that stores its
        new delivery, so two replays of one letter deliver it once: the second raises
        ReplayRefused. If the delivery fails again, it becomes a new dead letter linked to
        this one.
        """
        letter_uuid = _as_uuid(letter_id)
        letter = await asyncio.to_thread(self.letter_status, letter_uuid)
        event = Event.parse(letter.envelope, self.settings.processor.limits)
        record_rows = self.deliveries.rows

        async def claim(seq: int) -> object:
            record = AdmissionRecord(
                event=event,
                envelope=event.to_json().decode(),
                targets=(Target(seq, letter.subscription),),
                replay_of=str(letter_uuid),
            )

            def make_row(_: DeadLetter) -> tuple[tuple[Any, ...], None]:
                return record_rows(record)[0], None

            return await self.writer.submit(ClaimReplayCommand(letter_uuid, reason, make_row))

        await self.processor.replay(event, letter.subscription, str(letter_uuid), claim)
        return event

    def letter_status(self, letter_id: UUID | str) -> DeadLetter:
        """The dead letter as stored now (blocking read)."""
        return self.app.dead_letter(_as_uuid(letter_id))


def _as_uuid(value: UUID | str) -> UUID:
    if isinstance(value, UUID):
        return value
    try:
        return UUID(value)
    except ValueError:
        raise DeadLetterNotFound(f"{value!r} is not a dead letter id (a UUID)") from None
