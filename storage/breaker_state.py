"""The circuit breakers' moves, made durable through the store writer, and read back at start.

Each breaker's moves are events of its :class:`~eventcenter.domain.breaker_log.BreakerLog`
(eventsourcing, ``center_events``), committed by the writer thread with everything else
(group commit): :class:`DurableBreakerRecorder` implements the
:class:`~eventcenter.domain.ports.BreakerRecorder` port by queueing a command and returning at
once, so no call through a breaker waits on the database.

``center_breakers``
    One row per (center, breaker): the breaker's name, written in the transaction that records
    its first move. It is how a restarted center finds every log it has to restore
    (:meth:`DurableBreakerRecorder.load`) without reading the whole notification log. Created
    when missing by ``load`` (run once at start, by the writing process) and by the first move.
"""

from __future__ import annotations

from sqlalchemy import Column, Float, MetaData, String, Table, insert, select
from sqlalchemy.orm import Session

from eventcenter.domain.breaker import BreakerState, BreakerTransition
from eventcenter.domain.breaker_log import BreakerLog
from eventcenter.storage.writer import Batch, Command, StoreWriter

metadata = MetaData()

breakers = Table(
    "center_breakers",
    metadata,
    Column("center", String(64), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("registered_at", Float, nullable=False),  # epoch seconds of its first move
)


def create_tables(session: Session) -> None:
    metadata.create_all(session.connection(), checkfirst=True)


class RecordBreakerMove(Command):
    """Record one move in its breaker's log (registered with the move, the first time)."""

    def __init__(self, transition: BreakerTransition) -> None:
        self.transition = transition

    def apply(self, writer: StoreWriter, batch: Batch) -> None:
        move = self.transition
        log_id = BreakerLog.create_id(batch.center, move.name)
        current = writer.current(batch, log_id, writer.app.breaker_log)
        if current is not None:
            assert isinstance(current, BreakerLog)
            current.record(move)
            batch.touch(current)
            return
        fresh = BreakerLog.register(batch.center, move.name, at=move.at)
        fresh.record(move)  # a refused move leaves no row behind it
        assert batch.session is not None
        create_tables(batch.session)
        batch.session.execute(
            insert(breakers).values(center=batch.center, name=move.name, registered_at=move.at)
        )
        batch.touch(fresh)


class LoadBreakers(Command):
    """Every breaker of this center that ever moved, as its log left it."""

    def apply(self, writer: StoreWriter, batch: Batch) -> list[BreakerState]:
        assert batch.session is not None
        create_tables(batch.session)
        names = batch.session.execute(
            select(breakers.c.name)
            .where(breakers.c.center == batch.center)
            .order_by(breakers.c.name)
        ).scalars()
        states = []
        for name in names:
            log = writer.app.breaker_log(BreakerLog.create_id(batch.center, name))
            if log is not None:
                writer.loaded(log)
                states.append(log.saved())
        return states


class DurableBreakerRecorder:
    """Implements :class:`~eventcenter.domain.ports.BreakerRecorder` with :class:`StoreWriter`.

    ``record`` queues the move and returns (from any thread); the writer commits it with the
    next batch, in order. Moves queued when the process dies before that commit are lost, and
    the breaker resumes from the last one committed: a wait that was about to be recorded is
    not, so it was not waited either. ``load`` is called once at start.
    """

    def __init__(self, writer: StoreWriter) -> None:
        self.writer = writer

    def record(self, transition: BreakerTransition) -> None:
        self.writer.post(RecordBreakerMove(transition))

    async def load(self) -> list[BreakerState]:
        """The states to restore the center's breakers from (see ``BreakerRegistry``)."""
        states: list[BreakerState] = await self.writer.submit(LoadBreakers())
        return states
