"""The store writer: one thread commits everything the center writes, many commands per
transaction (group commit), and the asyncio loop never waits on the database.

Callers on the loop hand commands to the thread through a queue; the thread takes every command
waiting (up to ``batch_max``), applies them all inside ONE transaction (inbox rows in bulk
through the driver, :mod:`.bulk`, or SQLAlchemy Core; aggregate events through eventsourcing,
which joins the same transaction), then tells each caller its result, once per batch and loop.
So a dead letter is stored in the very transaction that settles its delivery, an admission's
deliveries and its idempotency key commit together, and many concurrent publishes share one
commit.

Failures:

- A store that cannot be reached (connection refused or cut, database locked) is *transient*:
  the thread keeps the batch and retries it with exponential back-off and jitter until the
  store answers; callers simply wait longer. ``available`` is False meanwhile. Nothing is
  turned into an in-memory-only record. A connection lost during the COMMIT leaves it unknown
  whether the store committed: each transaction names itself in ``center_commits``, and the
  retry looks there first, so a batch that did commit is not applied a second time.
- A command that creates a missing table (breakers, tuning runs) and lost the race to another
  process creating it: the batch is run again at once, and finds the table there.
- Anything else fails the batch's commands one by one (each retried alone, so one bad command
  does not fail the others) with :class:`RecordingFailed`.
- A lost lease (another process became the active center) fails every command with
  :class:`LeaseLost`; nothing more is written.

Snapshots of the processor log are taken after a batch has committed, in their own
transaction; a snapshot that fails is logged and never fails the batch (its events are stored).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

import sqlalchemy.exc
from eventsourcing import persistence as es_persistence
from eventsourcing.domain import Aggregate
from sqlalchemy import insert
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from eventcenter.domain.aggregates import DeadLetter, ProcessorLog
from eventcenter.domain.backoff import backoff_delay
from eventcenter.domain.breaker_log import BreakerLog
from eventcenter.domain.decisions import Decision, Transition
from eventcenter.domain.errors import (
    EventCenterError,
    LeaseLost,
    ProcessorClosed,
    RecordingFailed,
    StoreUnavailable,
    causes,
    note_store_wait,
)
from eventcenter.domain.event import Event
from eventcenter.domain.healing_choice import HealingStats
from eventcenter.domain.rca_case import RcaCase
from eventcenter.domain.recovery_log import ServiceRecovery
from eventcenter.domain.source_log import SourceLog
from eventcenter.domain.sources import Delivered, SourceProgress
from eventcenter.domain.tuning_run import ServiceTuning
from eventcenter.storage import (
    api_keys,
    bulk,
    inbox,
    rca_answers,
    rca_state,
    source_requests,
    source_state,
)
from eventcenter.storage.application import CenterApplication
from eventcenter.storage.tables import ATTEMPTS as TABLE_ATTEMPTS
from eventcenter.storage.tables import created_concurrently, retry_created_concurrently

log = logging.getLogger("eventcenter.storage")

#: Aggregates whose loading the writer keeps bounded with snapshots (besides the processor log).
SNAPSHOTTED = (SourceLog, RcaCase, HealingStats, BreakerLog, ServiceTuning, ServiceRecovery)

_TRANSIENT = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    es_persistence.OperationalError,
    es_persistence.InterfaceError,
)


def is_transient(error: BaseException) -> bool:
    """True for failures that say "the store is not reachable now", not "this is wrong"."""
    return any(
        isinstance(cause, _TRANSIENT) or getattr(cause, "connection_invalidated", False)
        for cause in causes(error)
    )


@dataclass
class Batch:
    """What the commands of one transaction add up to (filled by ``Command.apply``)."""

    center: str
    known_idents: dict[str, str]
    known_causes: set[str]
    aggregates: dict[UUID, Aggregate] = field(default_factory=dict)
    #: Rows of ``center_deliveries`` and ``center_idempotency`` as their values in column order.
    delivery_rows: list[tuple[Any, ...]] = field(default_factory=list)
    ident_rows: dict[str, tuple[str, str, str, float]] = field(default_factory=dict)
    cause_rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    settled: list[int] = field(default_factory=list)
    attempts: dict[int, int] = field(default_factory=dict)
    session: Session | None = None

    def touch(self, aggregate: Aggregate) -> None:
        self.aggregates[aggregate.id] = aggregate

    def letter(self, writer: StoreWriter, letter_id: UUID) -> DeadLetter:
        """The dead letter as this batch sees it (an earlier command may have changed it)."""
        touched = self.aggregates.get(letter_id)
        if isinstance(touched, DeadLetter):
            return touched
        return writer.app.dead_letter(letter_id)


@dataclass(frozen=True, slots=True)
class Admission:
    """One accepted event: its deliveries (rows of ``center_deliveries``, as their values in
    column order) and optional key."""

    event_id: str
    ident: str | None
    rows: list[tuple[Any, ...]]


class Command:
    """One unit of work for the writer thread. ``apply`` runs inside the transaction."""

    idents: Sequence[str] = ()
    causes: Sequence[str] = ()

    def apply(self, writer: StoreWriter, batch: Batch) -> Any:
        raise NotImplementedError


@dataclass(slots=True)
class _Pending:
    command: Command
    loop: asyncio.AbstractEventLoop | None
    future: asyncio.Future[Any] | None


#: Each command of a batch with its result or its error.
_Outcomes = list[tuple[_Pending, Any, BaseException | None]]


class StoreWriter:
    """Commits the center's writes off the loop; see the module docstring.

    Build it with no I/O; :meth:`open` (blocking, call it in a thread) creates the tables,
    loads the processor log and starts the thread. ``fence`` is called with the transaction's
    connection at the start of every write transaction (the lease's fencing check).
    """

    def __init__(
        self,
        app: CenterApplication,
        center_name: str,
        *,
        batch_max: int = 500,
        snapshot_interval: int = 100,
        fence: Callable[[Connection], None] | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        backoff_base: float = 0.05,
        backoff_max: float = 1.0,
    ) -> None:
        self.app = app
        self.center = center_name
        self.batch_max = batch_max
        self.snapshot_interval = snapshot_interval
        self._fence = fence
        self._clock = clock
        self._rng = rng or random.Random()
        self._backoff = (backoff_base, backoff_max)
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._processor_log: ProcessorLog | None = None
        self._log_stale = False
        self._snapshot_version = 0
        self._closed = False
        self._closing = threading.Event()
        self._fenced: LeaseLost | None = None
        self._committing: _Outcomes | None = None  # outcomes of the attempt now committing
        self.available = True  # False while the store cannot be reached
        self.outage_since: float | None = None
        self.outages = 0  # times the store became unreachable
        self._source_snapshots: dict[UUID, int] = {}  # aggregate id -> version snapshotted
        self.saves = 0  # transactions committed
        self.commands = 0
        self.retries = 0  # batches retried after a transient failure
        self.refused = 0  # commands the store refused (RecordingFailed)

    # lifecycle ---------------------------------------------------------------------------------

    def open(self) -> None:
        """Create the inbox tables, load the processor log, start the thread (blocking)."""
        try:
            retry_created_concurrently(self._create_tables)
            self._processor_log = self.app.processor_log(self.center)
        except Exception as error:
            raise StoreUnavailable(f"cannot open the store: {short_error(error)}") from error
        self._snapshot_version = self._processor_log.version
        self._thread = threading.Thread(target=self._run, name="eventcenter-writer", daemon=True)
        self._thread.start()

    def _create_tables(self) -> None:
        """The writer's tables and this center's commit row, created where missing."""
        with self._datastore.transaction(commit=True) as session:
            inbox.create_tables(session.connection())
            source_state.metadata.create_all(session.connection(), checkfirst=True)
            rca_state.metadata.create_all(session.connection(), checkfirst=True)
            rca_answers.create_tables(session.connection())
            source_requests.create_tables(session.connection())
            api_keys.create_tables(session.connection())
            inbox.ensure_commit_row(session, self.center)

    @property
    def _datastore(self) -> Any:
        return self.app.recorder.datastore  # type: ignore[attr-defined]

    @property
    def processor_state(self) -> str:
        """The state the processor log last recorded (the machine is rebuilt from it)."""
        return self._current_log().state

    def close(self, timeout: float = 30.0) -> None:
        """Commit what is queued, stop the thread. Later submissions raise ProcessorClosed.

        While the store is unreachable the thread keeps retrying until ``timeout``; then what
        is still queued fails with StoreUnavailable.
        """
        if self._closed:
            return
        self._closed = True
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._closing.set()  # stop retrying: fail what is left
            self._thread.join(5.0)
            if self._thread.is_alive():
                log.error("store writer did not finish within %.1fs", timeout)

    # ports (async) -----------------------------------------------------------------------------

    async def record_transition(self, transition: Transition) -> None:
        await self.submit(_RecordTransition(transition))

    async def record_decision(self, decision: Decision) -> None:
        await self.submit(_RecordDecision(decision))

    async def add(
        self, event: Event, subscription: str, error: BaseException, attempts: int
    ) -> UUID:
        """The DeadLetterStore port: store a dead letter (no delivery row to settle)."""
        result: UUID = await self.submit(
            DeadLetterCommand(None, event.to_dict(), subscription, error, attempts, None)
        )
        return result

    async def submit(self, command: Command) -> Any:
        """Queue ``command`` now (before any await, so order is kept) and wait for its commit."""
        self._check_open()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put(_Pending(command, loop, future))
        try:
            return await future
        except asyncio.CancelledError as cancelled:  # e.g. a handler's timeout fired meanwhile
            note_store_wait(cancelled)
            raise

    def post(self, command: Command) -> None:
        """Queue ``command`` without waiting for it (failures are logged by the thread).

        Once the lease is lost nothing more is written, and nothing is raised either: the
        caller (a worker ending a delivery) has nobody to tell, and the delivery stays in the
        store for the new holder, which runs it again.
        """
        if self._fenced is not None:
            return
        self._check_open()
        self._queue.put(_Pending(command, None, None))

    def _check_open(self) -> None:
        if self._closed:
            raise ProcessorClosed("the store writer is closed")
        if self._fenced is not None:
            raise self._fenced

    def run_sync(self, command: Command) -> Any:
        """Run one command in its own transaction from the calling thread (tools, start-up)."""
        outcomes = self._attempt([_Pending(command, None, None)])
        _, result, error = outcomes[0]
        if error is not None:
            raise error
        return result

    # the thread --------------------------------------------------------------------------------

    def _current_log(self) -> ProcessorLog:
        if self._processor_log is None or self._log_stale:
            self._processor_log = self.app.processor_log(self.center)
            self._log_stale = False
        return self._processor_log

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch: list[_Pending] = []
            item = self._queue.get()
            while True:
                if item is None:
                    stopping = True
                    break
                batch.append(item)
                if len(batch) >= self.batch_max:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._deliver(self._write(batch))

    def _write(self, batch: list[_Pending]) -> list[tuple[_Pending, Any, BaseException | None]]:
        attempt = lost_races = 0
        name = uuid4().hex
        maybe_committed: _Outcomes | None = None
        while True:
            self._committing = None
            try:
                outcomes = self._attempt(batch, name, maybe_committed)
            except LeaseLost as lost:
                self._fenced = lost
                log.error("%s; nothing more is written by this process", lost)
                return [(p, None, lost) for p in batch]
            except Exception as error:
                if created_concurrently(error) and lost_races < TABLE_ATTEMPTS - 1:
                    lost_races += 1  # a table another process created meanwhile: it is there now
                    continue
                if is_transient(error):
                    if self._committing is not None:  # lost during the COMMIT: in doubt
                        maybe_committed = self._committing
                    attempt += 1
                    if self._closing.is_set():
                        failure = StoreUnavailable(f"store unavailable: {short_error(error)}")
                        return [(p, None, failure) for p in batch]
                    self._outage(error, attempt)
                    continue
                if len(batch) > 1:  # find the command at fault: each alone
                    return [out for pending in batch for out in self._write([pending])]
                refused = RecordingFailed(f"the store refused the write: {short_error(error)}")
                refused.__cause__ = error
                self.refused += 1
                log.error("%s", refused)
                return [(batch[0], None, refused)]
            if not self.available:
                log.warning(
                    "store reachable again after %.1fs", time.monotonic() - (self.outage_since or 0)
                )
                self.available = True
                self.outage_since = None
            return outcomes

    def _outage(self, error: BaseException, attempt: int) -> None:
        if self.available:
            self.available = False
            self.outages += 1
            self.outage_since = time.monotonic()
            log.error("store unavailable, retrying with back-off: %s", short_error(error))
        self.retries += 1
        delay = backoff_delay(attempt, *self._backoff, self._rng.random())
        self._closing.wait(max(delay, 0.01))

    def _attempt(
        self, batch: list[_Pending], name: str = "", maybe_committed: _Outcomes | None = None
    ) -> _Outcomes:
        """Apply and commit ``batch`` in one transaction named ``name``; raise if it failed.

        ``maybe_committed``: the outcomes of an earlier attempt of this batch whose COMMIT was
        cut off. If the store names this batch as its last commit, that attempt did commit:
        its outcomes stand and nothing is applied again.
        """
        commands = [p.command for p in batch]
        idents = [i for c in commands for i in c.idents]
        causes = [k for c in commands for k in c.causes]
        state = Batch(self.center, {}, set())
        outcomes: list[tuple[_Pending, Any, BaseException | None]] = []
        try:
            with self._datastore.transaction(commit=True) as session:
                state.session = session
                if self._fence is not None:
                    self._fence(session.connection())
                if maybe_committed is not None and inbox.last_commit(session, self.center) == name:
                    log.warning(
                        "a transaction whose commit was cut off had been committed:"
                        " its %d writes are not applied again",
                        len(batch),
                    )
                    return maybe_committed
                if idents:
                    state.known_idents = inbox.known_identities(session, self.center, idents)
                if causes:
                    state.known_causes = inbox.known_causes(session, self.center, causes)
                for pending in batch:
                    try:
                        result = pending.command.apply(self, state)
                    except EventCenterError as error:
                        outcomes.append((pending, None, error))
                    else:
                        outcomes.append((pending, result, None))
                self._flush(session, state)
                inbox.mark_commit(session, self.center, name or uuid4().hex, self._clock())
                self._committing = outcomes  # from here on, a failure is the COMMIT's
        except BaseException:
            self._forget(state)
            raise
        self.saves += 1
        self.commands += len(batch)
        self._snapshot(state)
        return outcomes

    def _flush(self, session: Session, state: Batch) -> None:
        bulk.insert_values(session, inbox.deliveries, state.delivery_rows)
        bulk.insert_values(session, inbox.idempotency, list(state.ident_rows.values()))
        if state.cause_rows:
            session.execute(insert(inbox.causes), list(state.cause_rows.values()))
        if state.settled:
            inbox.delete_deliveries(session, self.center, state.settled)
        if state.attempts:
            inbox.set_attempts(session, self.center, state.attempts)
        if state.aggregates:
            self.app.save(*state.aggregates.values())

    def _forget(self, state: Batch) -> None:
        """A transaction failed: aggregates touched by it hold events that were not stored."""
        self._log_stale = True
        cache = self.app.repository.cache
        if cache is not None:
            for aggregate_id in state.aggregates:
                with contextlib.suppress(KeyError):
                    cache.get(aggregate_id, evict=True)

    def _snapshot(self, state: Batch) -> None:
        self._snapshot_sources(state)
        processor_log = self._processor_log
        if processor_log is None or processor_log.id not in state.aggregates:
            return
        if processor_log.version - self._snapshot_version < self.snapshot_interval:
            return
        try:
            self.app.snapshot_processor_log(processor_log)
        except Exception as error:  # the batch is stored; a later snapshot will do
            log.warning("snapshot of the processor log failed (events are stored): %r", error)
        else:
            self._snapshot_version = processor_log.version

    def loaded(self, aggregate: Aggregate) -> None:
        """Note the version ``aggregate`` had when a command loaded it from the store: its
        snapshots are counted from there."""
        self._source_snapshots.setdefault(aggregate.id, aggregate.version)

    def current(
        self, batch: Batch, aggregate_id: UUID, load: Callable[[UUID], Aggregate | None]
    ) -> Aggregate | None:
        """The aggregate as this batch left it, else as ``load`` reads it from the store (noted
        as :meth:`loaded`); None if it was never stored."""
        found = batch.aggregates.get(aggregate_id)
        if found is None:
            found = load(aggregate_id)
            if found is not None:
                self.loaded(found)
        return found

    def _snapshot_sources(self, state: Batch) -> None:
        """Snapshot each aggregate of :data:`SNAPSHOTTED` this batch moved
        ``snapshot_interval`` events past its last snapshot (or past where this process first
        loaded it), so loading stays bounded."""
        for aggregate in state.aggregates.values():
            if not isinstance(aggregate, SNAPSHOTTED):
                continue
            last = self._source_snapshots.setdefault(aggregate.id, 0)
            if aggregate.version - last < self.snapshot_interval:
                continue
            try:
                self.app.snapshot(aggregate)
            except Exception as error:  # the batch is stored; a later snapshot will do
                log.warning("snapshot of %s failed: %r", aggregate.name, error)
            else:
                self._source_snapshots[aggregate.id] = aggregate.version

    def _deliver(self, outcomes: list[tuple[_Pending, Any, BaseException | None]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, Any]]] = {}
        for pending, result, error in outcomes:
            if pending.future is None or pending.loop is None:
                if error is not None:
                    log.error("a queued write failed: %s", error)
                continue
            by_loop.setdefault(pending.loop, []).append((pending.future, result, error))
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle_all, settled)
            except RuntimeError as error:  # the caller's loop is closed: nobody waits
                log.warning("results of %d writes could not be delivered: %r", len(settled), error)


def _settle_all(settled: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in settled:
        if future.done():  # the caller was cancelled meanwhile; the write happened regardless
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)


def short_error(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip().splitlines()
    return text[0] if text else type(error).__name__


# commands ----------------------------------------------------------------------------------------


class _RecordTransition(Command):
    def __init__(self, transition: Transition) -> None:
        self.transition = transition

    def apply(self, writer: StoreWriter, batch: Batch) -> None:
        processor_log = writer._current_log()
        processor_log.transition(self.transition)
        batch.touch(processor_log)


class _RecordDecision(Command):
    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        self.causes = (decision.cause,) if decision.cause else ()

    def apply(self, writer: StoreWriter, batch: Batch) -> bool:
        cause = self.decision.cause
        if cause:
            if cause in batch.known_causes or cause in batch.cause_rows:
                return False  # recorded before for the same cause: once is enough
            batch.cause_rows[cause] = {
                "center": batch.center,
                "cause": cause,
                "recorded_at": writer._clock(),
            }
        processor_log = writer._current_log()
        processor_log.decide(self.decision)
        batch.touch(processor_log)
        return True


class AdmitCommand(Command):
    """Store accepted events' deliveries; a known idempotency key admits nothing again.

    The result lists, per admission, None when it was stored, or the id of the event that
    was admitted earlier under the same key. A source's ``progress`` is stored in the same
    transaction: the path's position, what each newly admitted item stands for, and the
    messages it rejected as dead letters.
    """

    def __init__(
        self, admissions: Sequence[Admission], progress: SourceProgress | None = None
    ) -> None:
        self.admissions = admissions
        self.progress = progress
        self.idents = [a.ident for a in admissions if a.ident is not None]

    def apply(self, writer: StoreWriter, batch: Batch) -> list[str | None]:
        results: list[str | None] = []
        for admission in self.admissions:
            ident = admission.ident
            if ident is not None:
                earlier = batch.known_idents.get(ident)
                if earlier is None and ident in batch.ident_rows:
                    earlier = batch.ident_rows[ident][2]  # its event_id
                if earlier is not None:
                    results.append(earlier)
                    continue
                batch.ident_rows[ident] = (
                    batch.center,
                    ident,
                    admission.event_id,
                    writer._clock(),
                )
            batch.delivery_rows.extend(admission.rows)
            results.append(None)
        if self.progress is not None:
            self._progress(writer, batch, self.progress, results)
        return results

    def _progress(
        self,
        writer: StoreWriter,
        batch: Batch,
        progress: SourceProgress,
        results: list[str | None],
    ) -> None:
        assert batch.session is not None
        now = writer._clock()
        admitted = {a.event_id for a, r in zip(self.admissions, results, strict=True) if r is None}
        entries: list[tuple[str, Delivered]] = [
            entry for event_id, entry in progress.delivered.items() if event_id in admitted
        ]
        source_state.store_delivered(
            batch.session, batch.center, progress.tenant, progress.source, entries, now
        )
        if progress.position is not None:
            source_state.store_position(
                batch.session,
                batch.center,
                progress.tenant,
                progress.source,
                progress.path,
                progress.position,
                now,
            )
        for rejected in progress.rejected:
            DeadLetterCommand(
                None,
                dict(rejected.envelope),
                progress.letter_subscription,
                rejected.problem,
                0,
                None,
                error_type="InvalidItem",
            ).apply(writer, batch)


class SourceLogCommand(Command):
    """Apply a change to a source's log (see ``SourceRecorder.change``) in the transaction."""

    def __init__(
        self,
        tenant: str,
        source: str,
        apply: Callable[[SourceLog | None], tuple[SourceLog | None, Any]],
    ) -> None:
        self.log_id = SourceLog.create_id(tenant, source)
        self.apply_change = apply

    def apply(self, writer: StoreWriter, batch: Batch) -> Any:
        current = batch.aggregates.get(self.log_id)
        if current is None:
            current = writer.app.source_log(self.log_id)
            if current is not None:
                writer._source_snapshots.setdefault(current.id, current.version)
        assert current is None or isinstance(current, SourceLog)
        changed, result = self.apply_change(current)
        if changed is not None:
            batch.touch(changed)
        return result


class SourceReadCommand(Command):
    """Read a source's stored position of one path, or what was delivered per key."""

    def __init__(self, tenant: str, source: str, path: str | None) -> None:
        self.tenant = tenant
        self.source = source
        self.path = path

    def apply(self, writer: StoreWriter, batch: Batch) -> Any:
        assert batch.session is not None
        if self.path is None:
            return source_state.read_delivered(
                batch.session, batch.center, self.tenant, self.source
            )
        return source_state.read_position(
            batch.session, batch.center, self.tenant, self.source, self.path
        )


class OutcomesCommand(Command):
    """Append outcomes of sources' paths (rows of ``center_source_outcomes``)."""

    def __init__(self, rows: Sequence[dict[str, Any]]) -> None:
        self.rows = rows

    def apply(self, writer: StoreWriter, batch: Batch) -> None:
        assert batch.session is not None
        source_state.store_outcomes(
            batch.session, [{**row, "center": batch.center} for row in self.rows]
        )


def _decisions_apply(writer: StoreWriter, batch: Batch, decisions: Sequence[Decision]) -> None:
    for decision in decisions:
        _RecordDecision(decision).apply(writer, batch)


def _causes(decisions: Sequence[Decision]) -> list[str]:
    return [d.cause for d in decisions if d.cause]


class SettleCommand(Command):
    """A delivery was handled: forget it (and end the replay it was part of, if any); the
    decisions its handler took are recorded in the same transaction."""

    def __init__(
        self, seq: int, replay_of: str | None = None, decisions: Sequence[Decision] = ()
    ) -> None:
        self.seq = seq
        self.replay_of = replay_of
        self.decisions = decisions
        self.causes = _causes(decisions)

    def apply(self, writer: StoreWriter, batch: Batch) -> None:
        _decisions_apply(writer, batch, self.decisions)
        batch.settled.append(self.seq)
        if self.replay_of:
            letter = batch.letter(writer, UUID(self.replay_of))
            if letter.status != DeadLetter.REPLAYED:
                letter.replay("handled when replayed")
                batch.touch(letter)


class FlushCommand(Command):
    """Nothing to write: its commit means everything queued before it is committed."""

    def apply(self, writer: StoreWriter, batch: Batch) -> None:
        return None


class AttemptsCommand(Command):
    """Remember how many handler attempts a delivery has failed (survives a restart)."""

    def __init__(self, seq: int, attempts: int, decisions: Sequence[Decision] = ()) -> None:
        self.seq = seq
        self.attempts = attempts
        self.decisions = decisions
        self.causes = _causes(decisions)

    def apply(self, writer: StoreWriter, batch: Batch) -> None:
        _decisions_apply(writer, batch, self.decisions)
        batch.attempts[self.seq] = self.attempts


class DeadLetterCommand(Command):
    """Store a dead letter and settle its delivery in the same transaction."""

    def __init__(
        self,
        seq: int | None,
        envelope: dict[str, Any],
        subscription: str,
        error: BaseException | str,
        attempts: int,
        replay_of: str | None,
        error_type: str | None = None,
        decisions: Sequence[Decision] = (),
    ) -> None:
        self.decisions = decisions
        self.causes = _causes(decisions)
        self.seq = seq
        self.envelope = envelope
        self.subscription = subscription
        self.error_type = error_type or type(error).__name__
        self.error = str(error) or repr(error)
        self.attempts = attempts
        self.replay_of = replay_of

    def apply(self, writer: StoreWriter, batch: Batch) -> UUID:
        _decisions_apply(writer, batch, self.decisions)
        letter = DeadLetter(
            envelope=self.envelope,
            subscription=self.subscription,
            error_type=self.error_type,
            error=self.error,
            attempts=self.attempts,
            replay_of=self.replay_of or "",
        )
        batch.touch(letter)
        if self.seq is not None:
            batch.settled.append(self.seq)
        if self.replay_of:
            old = batch.letter(writer, UUID(self.replay_of))
            if old.status != DeadLetter.REPLAYED:
                old.failed_again(str(letter.id))
                batch.touch(old)
        return letter.id


class ClaimReplayCommand(Command):
    """Claim a pending dead letter and admit its redelivery, in one transaction."""

    def __init__(self, letter_id: UUID, reason: str, make_row: Callable[[DeadLetter], Any]) -> None:
        self.letter_id = letter_id
        self.reason = reason
        self.make_row = make_row

    def apply(self, writer: StoreWriter, batch: Batch) -> Any:
        letter = batch.letter(writer, self.letter_id)
        letter.claim(self.reason)  # raises ReplayRefused unless pending
        row, result = self.make_row(letter)
        batch.delivery_rows.append(row)
        batch.touch(letter)
        return result


class LoadCommand(Command):
    """Read back a subscription's backlog (one priority, after a seq)."""

    def __init__(
        self, subscription: str, priority: int, after: int, limit: int, tenant: str | None = None
    ) -> None:
        self.args = (subscription, priority, after, limit, tenant)

    def apply(self, writer: StoreWriter, batch: Batch) -> list[inbox.DeliveryRow]:
        assert batch.session is not None
        return inbox.load_backlog(batch.session, batch.center, *self.args)


class PurgeCommand(Command):
    """Forget idempotency keys, decision causes and source outcomes older than the retention."""

    def __init__(self, before: float) -> None:
        self.before = before

    def apply(self, writer: StoreWriter, batch: Batch) -> tuple[int, int]:
        assert batch.session is not None
        source_state.purge_outcomes(batch.session, batch.center, self.before)
        return inbox.purge(batch.session, batch.center, self.before)


class SummaryCommand(Command):
    def apply(self, writer: StoreWriter, batch: Batch) -> tuple[list[inbox.BacklogSummary], int]:
        assert batch.session is not None
        return inbox.summarize(batch.session, batch.center)


class OrphansCommand(Command):
    """Dead-letter up to ``limit`` deliveries of a subscription that is no longer registered."""

    def __init__(self, subscription: str, limit: int) -> None:
        self.subscription = subscription
        self.limit = limit

    def apply(self, writer: StoreWriter, batch: Batch) -> int:
        assert batch.session is not None
        rows = inbox.load_orphans(batch.session, batch.center, self.subscription, self.limit)
        for row in rows:
            DeadLetterCommand(
                row.seq,
                json.loads(row.envelope),
                row.subscription,
                f"no subscription named '{row.subscription}' is registered any more",
                row.attempts,
                row.replay_of,
                error_type="SubscriptionError",
            ).apply(writer, batch)
        return len(rows)
