"""The event engine: runs a source's push path and hands what arrives to the center.

It resumes from the position stored with the last admission, receives a batch, admits it (the
good items as events, the bad messages as dead letters, the position in the same transaction)
and only then acknowledges it. Whatever fails before the acknowledgement comes again, and the
center's idempotent admission drops what it already holds: nothing is lost, nothing delivered
twice.

On a :class:`~eventcenter.domain.sources.SourceError` it reports the failure, closes the path and
reconnects after a back-off (0.8 s doubling to 30 s, with jitter, see
:class:`~eventcenter.domain.backoff.ReconnectBackoff`), longer if the server asked for it
(``retry_after``). When the server no longer has the position (:class:`PositionLost`) it reports
it, calls ``on_position_lost`` (the manager re-lists and reconciles, so the gap is filled) and
resumes from where the server can serve, at once.

It decides nothing about modes: the manager reads its outcomes (and ``last_message_at`` for
silence) and starts or stops it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence

from eventcenter.domain.backoff import ReconnectBackoff
from eventcenter.domain.errors import EventCenterError
from eventcenter.domain.sources import (
    Clock,
    ItemSink,
    PositionLost,
    PushPath,
    Received,
    SourceError,
)
from eventcenter.sources.lifecycle import EngineTask, raise_if_cancelling
from eventcenter.sources.outcomes import AdmissionFailed, OnOutcome, PathName, PathOutcome

log = logging.getLogger("eventcenter.sources")

PUSH: PathName = "push"
#: Received batches one admission may bring together (read while the one before committed).
AHEAD_BATCHES = 1


class EventEngine:
    """Receive, admit, acknowledge, for one source's push path, until stopped.

    ``batch`` is the most messages asked for per ``receive``; ``receive_timeout`` how long one
    ``receive`` may wait for them (a quiet wait is not an error). ``rng`` draws the back-off
    jitter (pass a seeded one for reproducible runs).
    """

    def __init__(
        self,
        tenant: str,
        source: str,
        path: PushPath,
        sink: ItemSink,
        clock: Clock,
        on_outcome: OnOutcome,
        *,
        on_position_lost: Callable[[], None] | None = None,
        batch: int = 100,
        receive_timeout: float = 5.0,
        backoff: ReconnectBackoff | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if batch < 1:
            raise ValueError(f"batch must be at least 1 message, got {batch}")
        if not receive_timeout > 0.0:
            raise ValueError(f"receive_timeout must be > 0 seconds, got {receive_timeout}")
        self.tenant = tenant
        self.source = source
        self._path = path
        self._sink = sink
        self._clock = clock
        self._on_outcome = on_outcome
        self._on_position_lost = on_position_lost
        self._batch = batch
        self._receive_timeout = receive_timeout
        self._backoff = backoff or ReconnectBackoff()
        self._rng = rng or random.Random()
        self._task = EngineTask(
            f"push {tenant}/{source}", {"tenant": tenant, "source": source, "path": PUSH}
        )
        self._open = False
        self._position: str | None = None
        self._last_message_at: float | None = None
        self._failures = 0

    @property
    def connected(self) -> bool:
        """True while the path is open (a quiet open path is still connected)."""
        return self._open

    @property
    def position(self) -> str | None:
        """The position of the last batch admitted (where a reconnect resumes)."""
        return self._position

    @property
    def last_message_at(self) -> float | None:
        """Clock time of the last message received (None: none yet)."""
        return self._last_message_at

    @property
    def running(self) -> bool:
        return self._task.running

    def start(self) -> asyncio.Task[None]:
        """Run :meth:`run` as a task (the running one if already started)."""
        return self._task.start(self.run)

    async def stop(self) -> None:
        """Cancel the task and wait until the path is closed."""
        await self._task.stop()

    async def run(self) -> None:
        """Resume from the stored position and run until cancelled. A new run (a restart of
        the path) starts its reconnect back-off over."""
        self._failures = 0
        self._position = await self._stored_position()
        try:
            while True:
                try:
                    await self._connect_and_receive()
                except PositionLost as lost:
                    raise_if_cancelling(lost)
                    if self._position is None:  # lost even "from now": a plain failure
                        await self._retry_later(lost, lost.retry_after)
                    else:
                        await self._resume_from_now(lost)
                except SourceError as error:
                    raise_if_cancelling(error)
                    await self._retry_later(error, error.retry_after)
                except AdmissionFailed as failed:
                    raise_if_cancelling(failed)
                    await self._retry_later(failed, None)
        finally:
            await self._close()

    async def _stored_position(self) -> str | None:
        while True:
            try:
                return await self._sink.position(self.tenant, self.source, PUSH)
            except SourceError:
                raise
            except EventCenterError as error:
                failed = AdmissionFailed(error, 0, "reading the stored position")
                await self._retry_later(failed, None)

    async def _connect_and_receive(self) -> None:
        await self._path.open(self._position)
        self._open = True
        log.info(
            "push path of %s/%s open at %s (%s)",
            self.tenant,
            self.source,
            self._position or "the server's position",
            self._path.describe,
            extra=self._fields(),
        )
        await _Pipeline(self).run()

    async def _receive(self) -> Sequence[Received]:
        received = await self._path.receive(self._batch, self._receive_timeout)
        self._failures = 0  # the connection answered: the next failure starts over
        if received:
            self._last_message_at = self._clock.now()
        return received

    async def _admit_and_ack(self, received: Sequence[Received]) -> None:
        position = received[-1].position
        try:
            await self._sink.admit(self.tenant, self.source, PUSH, received, position)
        except SourceError:
            raise
        except EventCenterError as error:
            raise AdmissionFailed(error, len(received)) from error
        self._position = position
        await self._path.ack(received)
        bad = sum(1 for message in received if message.item is None)
        self._on_outcome(
            PathOutcome.success(
                self._clock.now(),
                PUSH,
                items=len(received),
                dead_lettered=bad,
                detail=f"admitted up to {position}",
                last_message_at=self._last_message_at,
            )
        )

    async def _resume_from_now(self, lost: PositionLost) -> None:
        log.warning(
            "push path of %s/%s lost its position %s: re-listing, resuming from now: %s",
            self.tenant,
            self.source,
            self._position,
            lost,
            extra=self._fields(),
        )
        await self._close()
        self._position = None
        self._on_outcome(
            PathOutcome.failure(
                self._clock.now(),
                PUSH,
                lost,
                retry_in=0.0,
                last_message_at=self._last_message_at,
            )
        )
        if self._on_position_lost is not None:
            self._on_position_lost()

    async def _retry_later(self, error: SourceError | AdmissionFailed, after: float | None) -> None:
        await self._close()
        self._failures += 1
        delay = self._backoff.delay(self._failures, self._rng.random())
        if after is not None:
            delay = max(delay, after)
        now = self._clock.now()
        if isinstance(error, AdmissionFailed):
            outcome = PathOutcome.admission_failure(
                now, PUSH, error, retry_in=delay, last_message_at=self._last_message_at
            )
        else:
            outcome = PathOutcome.failure(
                now, PUSH, error, retry_in=delay, last_message_at=self._last_message_at
            )
        log.warning(
            "push path of %s/%s failed (attempt %d), reconnecting in %.3fs: %s",
            self.tenant,
            self.source,
            self._failures,
            delay,
            outcome.detail,
            extra=self._fields(),
        )
        self._on_outcome(outcome)
        await self._clock.sleep(delay)

    async def _close(self) -> None:
        if not self._open:
            return
        self._open = False
        try:
            await self._path.aclose()
        except SourceError as error:
            log.warning(
                "closing the push path of %s/%s failed: %s",
                self.tenant,
                self.source,
                error,
                extra=self._fields(),
            )

    def _fields(self) -> dict[str, str]:
        return {"tenant": self.tenant, "source": self.source, "path": PUSH}


class _Pipeline:
    """One open path's flow: the next ``receive`` runs while the batch before it is admitted.

    Admissions (admit, then acknowledge) run one after the other in the engine's own task, so
    positions are stored in the order the path handed the messages out, and each batch is
    acknowledged only after its own admission committed. Meanwhile one ``receive`` reads ahead
    in a task of its own; what it brings waits in ``ahead`` (at most
    :data:`AHEAD_BATCHES` x ``batch`` messages) and goes into the next admission, up to
    ``batch`` messages at a time (small reads that piled up are admitted together).

    Any failure ends the flow: the read-ahead is dropped unacknowledged (the path hands it
    out again after the reconnect), and nothing after a failed admission is admitted or
    acknowledged. A read-ahead that failed is reported once the admission under way ended.
    """

    def __init__(self, engine: EventEngine) -> None:
        self._engine = engine
        self._size = engine._batch
        self._limit = engine._batch * AHEAD_BATCHES
        self._ahead: list[Received] = []
        self._receiving: asyncio.Task[Sequence[Received]] | None = None

    async def run(self) -> None:
        engine = self._engine
        try:
            while True:
                raise_if_cancelling()  # a path may have swallowed a stop (redis-py does)
                if not self._ahead:
                    self._ahead.extend(await self._next())
                    raise_if_cancelling()
                if self._ahead:
                    batch = self._ahead[: self._size]
                    del self._ahead[: self._size]
                    if self._receiving is None and len(self._ahead) < self._limit:
                        self._receiving = asyncio.create_task(engine._receive())
                    await engine._admit_and_ack(batch)
                    self._take_read_ahead()
                await asyncio.sleep(0)  # a busy source leaves the loop to other sources' engines
        finally:
            await self._cancel()

    async def _next(self) -> Sequence[Received]:
        """What the read-ahead brought (waiting for it), or a receive of its own."""
        task = self._receiving
        if task is None:
            return await self._engine._receive()
        await asyncio.wait((task,))
        self._receiving = None
        return task.result()

    def _take_read_ahead(self) -> None:
        task = self._receiving
        if task is not None and task.done():
            self._receiving = None
            self._ahead.extend(task.result())

    async def _cancel(self) -> None:
        task, self._receiving = self._receiving, None
        if task is None:
            return
        task.cancel()
        # What it raises now is the echo of its cancellation (or a path's translation of it):
        # the failure that ended the flow, if any, is already on its way up.
        await asyncio.gather(task, return_exceptions=True)
