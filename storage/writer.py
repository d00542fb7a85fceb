"""The decision writer: makes decisions durable off the event loop, many per transaction.

eventsourcing is synchronous, and on PostgreSQL every save takes an exclusive table lock, so
one save per decision would serialise the center on the database. Instead, callers hand
commands to one writer thread through a queue; the thread applies every command waiting (up to
``batch_max``) to the aggregates and saves them all with ONE ``app.save(...)``, then tells each
caller its result. The asyncio loop never waits on the database, only on a future.

The thread is the only writer of the processor log in this process, so it keeps that aggregate
in memory instead of reloading it for every decision.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from eventcenter.domain.aggregates import DeadLetter, ProcessorLog
from eventcenter.domain.decisions import Decision, Transition
from eventcenter.domain.errors import EventCenterError, ProcessorClosed, RecordingFailed
from eventcenter.domain.event import Event
from eventcenter.storage.application import CenterApplication

log = logging.getLogger("eventcenter.recording")

#: A command runs in the writer thread: it mutates aggregates and returns (result, touched).
Apply = Callable[[], tuple[Any, list[Aggregate]]]


@dataclass(slots=True)
class _Command:
    apply: Apply
    done: Callable[[Any, BaseException | None], None]


class DecisionWriter:
    """Implements the DecisionLog and DeadLetterStore ports on a :class:`CenterApplication`.

    Use ``await record_transition(...)`` / ``record_decision`` / ``add`` / ``mark_replayed``
    from the event loop. :meth:`close` saves what is queued and stops the thread.
    """

    def __init__(self, app: CenterApplication, center_name: str, batch_max: int = 500) -> None:
        self.app = app
        self.batch_max = batch_max
        self._processor_log = app.processor_log(center_name)
        self._log_stale = False  # a save failed: reload the log before the next command
        self._center_name = center_name
        self._queue: queue.SimpleQueue[_Command | None] = queue.SimpleQueue()
        self._closed = False
        self.saves = 0  # transactions written (for benchmarks and metrics)
        self.commands = 0
        self._thread = threading.Thread(target=self._run, name="eventcenter-writer", daemon=True)
        self._thread.start()

    @property
    def processor_state(self) -> str:
        """The state the processor log last recorded (the machine is rebuilt from it)."""
        return self._processor_log.state

    # ports (async) -----------------------------------------------------------------------------

    async def record_transition(self, transition: Transition) -> None:
        await self._submit(self._transition_command(transition))

    async def record_decision(self, decision: Decision) -> None:
        await self._submit(self._decision_command(decision))

    async def add(
        self, event: Event, subscription: str, error: BaseException, attempts: int
    ) -> UUID:
        result: UUID = await self._submit(
            self._dead_letter_command(event, subscription, error, attempts)
        )
        return result

    async def mark_replayed(self, letter_id: UUID, reason: str) -> None:
        await self._submit(self._replayed_command(letter_id, reason))

    def close(self, timeout: float = 30.0) -> None:
        """Save what is queued, stop the thread. Later submissions raise ProcessorClosed."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("decision writer did not finish within %.1fs", timeout)

    # commands ----------------------------------------------------------------------------------

    def _current_log(self) -> ProcessorLog:
        """The processor log, reloaded from the store after a failed save lost its events."""
        if self._log_stale:
            self._processor_log = self.app.processor_log(self._center_name)
            self._log_stale = False
        return self._processor_log

    def _transition_command(self, transition: Transition) -> Apply:
        def apply() -> tuple[None, list[Aggregate]]:
            log = self._current_log()
            log.transition(transition)
            return None, [log]

        return apply

    def _decision_command(self, decision: Decision) -> Apply:
        def apply() -> tuple[None, list[Aggregate]]:
            log = self._current_log()
            log.decide(decision)
            return None, [log]

        return apply

    @staticmethod
    def _dead_letter_command(
        event: Event, subscription: str, error: BaseException, attempts: int
    ) -> Apply:
        envelope = event.to_dict()

        def apply() -> tuple[UUID, list[Aggregate]]:
            letter = DeadLetter(
                envelope=envelope,
                subscription=subscription,
                error_type=type(error).__name__,
                error=str(error) or repr(error),
                attempts=attempts,
            )
            return letter.id, [letter]

        return apply

    def _replayed_command(self, letter_id: UUID, reason: str) -> Apply:
        def apply() -> tuple[None, list[Aggregate]]:
            letter = self.app.dead_letter(letter_id)
            letter.replay(reason)
            return None, [letter]

        return apply

    # plumbing ----------------------------------------------------------------------------------

    async def _submit(self, apply: Apply) -> Any:
        """Queue a command now (before any await, so order is kept) and wait for its save."""
        if self._closed:
            raise ProcessorClosed("the decision writer is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def done(result: Any, error: BaseException | None) -> None:
            loop.call_soon_threadsafe(_settle, future, result, error)

        self._queue.put(_Command(apply, done))
        return await future

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch: list[_Command] = []
            item = self._queue.get()
            while True:
                if item is None:  # close() was called: finish this batch, then stop
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
                self._write(batch)

    def _write(self, batch: list[_Command]) -> None:
        outcomes: list[tuple[_Command, Any, BaseException | None]] = []
        touched: dict[UUID, Aggregate] = {}
        for command in batch:
            try:
                result, aggregates = command.apply()
            except EventCenterError as error:
                outcomes.append((command, None, error))
                continue
            except Exception as error:
                outcomes.append((command, None, RecordingFailed(f"could not apply: {error!r}")))
                continue
            for aggregate in aggregates:
                touched[aggregate.id] = aggregate
            outcomes.append((command, result, None))
        if touched:
            try:
                self.app.save(*touched.values())
            except Exception as save_error:
                log.error("saving %d decisions failed: %r", len(outcomes), save_error)
                failure = RecordingFailed(f"the event store refused the batch: {save_error!r}")
                failure.__cause__ = save_error
                outcomes = [(c, None, e or failure) for c, _, e in outcomes]
                # Pending events were lost with the failed save: reload what is stored (lazily,
                # so a store that is down fails the next command instead of this thread).
                self._log_stale = True
            else:
                self.saves += 1
        self.commands += len(outcomes)
        for command, result, problem in outcomes:
            try:
                command.done(result, problem)
            except RuntimeError as error:  # the caller's event loop is closed: nobody waits
                log.warning("result of a decision could not be delivered: %r", error)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled meanwhile; the decision is saved regardless
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)
