"""Running deliveries: worker tasks take deliveries from the scheduler and run their handlers.

- A subscription runs at most ``max_in_flight`` deliveries at once; further ones are parked on
  it, so a slow handler holds a few workers and the others keep serving everyone else.
- Each attempt runs under the subscription's timeout; a timed-out attempt is cancelled (within
  ``timeout_tick`` of its deadline) and is a failure (:class:`HandlerTimeout`). A TimeoutError
  the handler raises itself stays what it is.
- Each attempt gets its own copy of the payload and metadata: a handler that mutates them
  changes nothing for other subscribers, later retries or the stored dead letter.
- A failure is retried with exponential back-off and full jitter up to ``max_attempts``
  handler failures; then (or at once for PermanentFailure) the delivery is dead-lettered. A
  store that cannot be reached (StoreUnavailable), or a lease lost to another center
  (LeaseLost), is not the handler's failure: it is retried without counting an attempt (after
  LeaseLost, until the center stops), and so is an attempt that timed out while it waited for
  a write, or while the store was unreachable at some point. A write the store refused
  (RecordingFailed: a decision it cannot store) counts like any failure: the same write would
  be refused again.
- With a durable store, the end of each delivery (handled or dead-lettered) is queued to the
  store; a crash before that commit means the delivery runs again after the restart.
- While an attempt runs (and while its outcome is logged), :data:`current_delivery` holds the
  delivery, so every log record emitted meanwhile, by the processor or by the handler's own
  code, can carry its tenant, source, event id and correlation id (:meth:`Delivery.log_fields`;
  the center's log configuration reads it). Setting one context variable per attempt costs
  about 0.15 µs; the fields are built only when a record is emitted.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import Any

from eventcenter.domain.backoff import backoff_delay
from eventcenter.domain.decisions import Decision
from eventcenter.domain.errors import (
    HandlerTimeout,
    LeaseLost,
    PermanentFailure,
    StoreUnavailable,
    waited_on_store,
)
from eventcenter.domain.event import Event
from eventcenter.domain.failures import HandlerFailure
from eventcenter.domain.ports import DeadLetterStore, DeliveryStore
from eventcenter.handlers.config import ProcessorSettings
from eventcenter.handlers.context import CauseScope, Context, current_scope
from eventcenter.handlers.metrics import Counts, ProcessorMetrics
from eventcenter.handlers.scheduling import PriorityScheduler
from eventcenter.handlers.subscriptions import Subscription

log = logging.getLogger("eventcenter.processor")

_STORE_FAILURES = (StoreUnavailable, LeaseLost)

#: The delivery whose attempt the current task runs (None outside an attempt).
current_delivery: ContextVar[Delivery | None] = ContextVar("eventcenter_delivery", default=None)


class Delivery:
    """One event on its way to one subscription."""

    __slots__ = (
        "attempt",
        "counts",
        "deadline",
        "event",
        "failure",
        "published_at",
        "replay_of",
        "seq",
        "subscription",
        "timed_out",
    )

    def __init__(
        self,
        event: Event,
        subscription: Subscription,
        published_at: float,
        counts: Counts,
        failure: PermanentFailure | None = None,
        seq: int | None = None,
        replay_of: str | None = None,
        attempt: int = 1,
    ) -> None:
        self.event = event
        self.subscription = subscription
        self.published_at = published_at
        self.counts = counts
        self.attempt = attempt
        self.failure = failure
        self.seq = seq  # its row in the durable store (None without a store)
        self.replay_of = replay_of  # the dead letter this delivery replays
        self.deadline: float | None = None  # when the running attempt times out
        self.timed_out = False

    def log_fields(self) -> dict[str, Any]:
        """What a log record emitted during this delivery's attempt says about it."""
        return {
            **log_fields(self.event),
            "source": self.event.source,
            "subscription": self.subscription.name,
            "attempt": self.attempt,
        }


def isolated(event: Event) -> Event:
    """``event`` with its own copy of payload and metadata (what one handler attempt gets)."""
    if not event.payload and not event.metadata:
        return event
    return event.fresh_copy()


class Deliverer:
    """The workers and their ready-queue; every admitted delivery ends in :meth:`finish`.

    ``on_end`` is told when a delivery leaves memory (handled, dead-lettered, discarded), so
    the owner can account for it and refill from the store.
    """

    def __init__(
        self,
        settings: ProcessorSettings,
        *,
        metrics: ProcessorMetrics,
        context: Context,
        clock: Callable[[], float],
        rng: random.Random,
        store: DeliveryStore | None,
        dead_letters: DeadLetterStore,
        on_end: Callable[[Delivery], None],
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._wall = wall
        self.metrics = metrics
        self.context = context
        self._clock = clock
        self._rng = rng
        self.store = store
        self._dead_letters = dead_letters
        self._on_end = on_end
        #: Told of each handler failure (not the store's); set by whoever wires the RCA.
        self.on_failure: Callable[[HandlerFailure], None] | None = None
        self.scheduler: PriorityScheduler[Delivery] = PriorityScheduler(settings.max_wait())
        self.running: dict[Delivery, asyncio.Task[Any] | None] = {}
        self.retrying: dict[Delivery, asyncio.TimerHandle] = {}
        self.unrecorded: list[tuple[Delivery, BaseException]] = []
        self.workers: list[asyncio.Task[None]] = []
        self.watchdog: asyncio.Task[None] | None = None
        self._idle_workers: deque[asyncio.Future[None]] = deque()
        self.accepting = True  # False once stop() ends the workers' intake
        self.retrying_allowed = True  # False once stop() began
        self.quiet = asyncio.Event()  # set when no handler runs (stop() waits on it)

    # queue -------------------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.workers = [
            loop.create_task(self._work(), name=f"eventcenter-worker-{i}")
            for i in range(self.settings.workers)
        ]
        self.watchdog = loop.create_task(self._watch(), name="eventcenter-watchdog")

    async def _watch(self) -> None:
        """Cancel attempts that ran past their deadline.

        One task checks the running attempts every ``timeout_tick`` seconds, instead of a
        timer per attempt (a timer costs about as much as the rest of a delivery): a timed-out
        attempt is cancelled at most ``timeout_tick`` after its deadline.
        """
        tick = self.settings.timeout_tick
        while True:
            await asyncio.sleep(tick)
            self.expire(self._clock())

    def expire(self, now: float) -> int:
        """Cancel the running attempts whose deadline is past ``now``; returns how many."""
        expired = 0
        for delivery, task in list(self.running.items()):
            deadline = delivery.deadline
            if (
                deadline is not None
                and now >= deadline
                and not delivery.timed_out
                and task is not None
                and not task.done()
            ):
                delivery.timed_out = True
                task.cancel()
                expired += 1
        return expired

    def push(self, delivery: Delivery) -> None:
        event = delivery.event
        self.scheduler.push(delivery, event.priority, event.tenant, delivery.published_at)
        self.wake_worker()

    def push_front(self, delivery: Delivery) -> None:
        event = delivery.event
        self.scheduler.push_front(delivery, event.priority, event.tenant, delivery.published_at)
        self.wake_worker()

    def wake_worker(self) -> None:
        idle = self._idle_workers
        while idle:
            waiter = idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    # workers -----------------------------------------------------------------------------------

    async def _work(self) -> None:
        scheduler = self.scheduler
        clock = self._clock
        idle = self._idle_workers
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        while True:
            if not scheduler or not self.accepting:
                waiter: asyncio.Future[None] = loop.create_future()
                idle.append(waiter)
                await waiter
                continue  # another worker may have taken the item meanwhile
            delivery: Delivery | None = scheduler.pop(clock())
            while delivery is not None:
                sub = delivery.subscription
                if sub.closed:
                    self.discard(delivery)
                    break
                if not sub.can_run():
                    sub.parked.append(delivery)
                    break
                await self._run(delivery, task)
                if not self.accepting:
                    break
                delivery = sub.parked.popleft() if sub.parked and sub.can_run() else None

    async def _run(self, delivery: Delivery, task: asyncio.Task[None] | None) -> None:
        if delivery.failure is not None:
            await self._give_up(delivery, delivery.failure)
            return
        sub = delivery.subscription
        clock = self._clock
        started = clock()
        if delivery.attempt == 1:
            self.metrics.dispatch.add(started - delivery.published_at)
        sub.in_flight += 1
        self.running[delivery] = task
        timeout = sub.timeout
        delivery.deadline = None if timeout is None else started + timeout
        delivery.timed_out = False
        store = self.store
        outages = store.outages if store is not None and store.available else None
        token = None
        scope: CauseScope | None = None
        if self.store is not None:
            scope = CauseScope(delivery.event.id_text, sub.name)
            token = current_scope.set(scope)
        delivering = current_delivery.set(delivery)
        try:
            try:
                await sub.handler(isolated(delivery.event), self.context)
            except asyncio.CancelledError as cancelled:
                if not delivery.timed_out or task is None:
                    raise  # stop() cancelled the worker
                task.uncancel()
                raise HandlerTimeout(
                    f"handler '{sub.name}' ran longer than {timeout:g}s"
                ) from cancelled
            if delivery.timed_out and task is not None:
                task.uncancel()  # it finished anyway, swallowing the watchdog's cancellation
        except Exception as error:
            self._left(delivery, started)
            await self._failed(delivery, error, outages, scope.pending if scope is not None else ())
            return
        finally:
            current_delivery.reset(delivering)
            if token is not None:
                current_scope.reset(token)
        self._left(delivery, started)
        delivery.counts.handled += 1
        if self.store is not None and delivery.seq is not None and scope is not None:
            self.store.settle(delivery.seq, delivery.replay_of, scope.pending)
        self.finish(delivery)

    def _left(self, delivery: Delivery, started: float) -> None:
        sub = delivery.subscription
        running = self.running
        running.pop(delivery, None)
        if not running and not self.retrying_allowed:  # stop() waits for the last one
            self.quiet.set()
        sub.in_flight -= 1
        sub.latency.add(self._clock() - started)

    # failures ----------------------------------------------------------------------------------

    async def _failed(
        self,
        delivery: Delivery,
        error: Exception,
        outages: int | None = None,
        decisions: Sequence[Decision] = (),
    ) -> None:
        """``outages``: the store's outage count when the attempt began (None: the store was
        unreachable then). An attempt that timed out while the store was unreachable at some
        point, or while it waited for a write (a silent network: the store reports nothing),
        was waiting on the store: that is not the handler's failure."""
        store = self.store
        store_failure = isinstance(error, _STORE_FAILURES) or (
            isinstance(error, HandlerTimeout)
            and store is not None
            and (
                outages is None
                or not store.available
                or store.outages != outages
                or waited_on_store(error)
            )
        )
        retryable = not isinstance(error, PermanentFailure)
        if not store_failure:
            delivery.counts.failed += 1
            final = not retryable or delivery.attempt >= self.settings.max_attempts
            self._report(delivery, error, final)
        if retryable and (store_failure or delivery.attempt < self.settings.max_attempts):
            if not self.retrying_allowed and self.store is not None:
                # Stopping with a store: the delivery stays there and runs after a restart.
                if delivery.seq is not None:
                    attempts = delivery.attempt - (1 if store_failure else 0)
                    self.store.record_attempts(delivery.seq, attempts, decisions)
                self.finish(delivery)
                return
            if self.retrying_allowed:
                self._retry_later(delivery, error, store_failure, decisions)
                return
        await self._give_up(delivery, error, decisions)

    def _report(self, delivery: Delivery, error: Exception, final: bool) -> None:
        watcher = self.on_failure
        if watcher is None:
            return
        event = delivery.event
        failure = HandlerFailure(
            subscription=delivery.subscription.name,
            tenant=event.tenant,
            event_type=event.type,
            event_id=event.id_text,
            correlation_id=event.correlation_id,
            error_type=type(error).__name__,
            error=str(error) or repr(error),
            attempt=delivery.attempt,
            final=final,
            at=self._wall(),
        )
        try:
            watcher(failure)
        except Exception:  # a watcher's bug must not lose the delivery's outcome
            log.exception("the handler failure watcher raised", extra=log_fields(event))

    def _retry_later(
        self,
        delivery: Delivery,
        error: Exception,
        store_failure: bool,
        decisions: Sequence[Decision] = (),
    ) -> None:
        event = delivery.event
        delivery.counts.retried += 1
        attempt = delivery.attempt
        delay = backoff_delay(
            attempt, self.settings.backoff_base, self.settings.backoff_max, self._rng.random()
        )
        if not store_failure:
            delivery.attempt += 1
        if self.store is not None and delivery.seq is not None:
            self.store.record_attempts(delivery.seq, delivery.attempt - 1, decisions)
        log.warning(
            "handler %s failed on %s %s (attempt %d%s), retrying in %.3fs: %r",
            delivery.subscription.name,
            event.type,
            event.id,
            attempt,
            ", the store's failure: not counted" if store_failure else "",
            delay,
            error,
            extra=log_fields(event),
        )
        loop = asyncio.get_running_loop()
        self.retrying[delivery] = loop.call_later(delay, self.requeue, delivery)

    def requeue(self, delivery: Delivery) -> None:
        self.retrying.pop(delivery, None)
        event = delivery.event
        self.scheduler.push(delivery, event.priority, event.tenant, self._clock())
        self.wake_worker()

    async def _give_up(
        self, delivery: Delivery, error: BaseException, decisions: Sequence[Decision] = ()
    ) -> None:
        """Dead-letter ``delivery``: durably with its settlement, or through the port."""
        event = delivery.event
        delivery.counts.dead_lettered += 1
        log.warning(
            "dead-lettering %s %s for %s after %d attempt(s): %r",
            event.type,
            event.id,
            delivery.subscription.name,
            delivery.attempt,
            error,
            extra=log_fields(event),
        )
        if self._letter_to_store(delivery, error, decisions):
            return
        try:
            await self._dead_letters.add(event, delivery.subscription.name, error, delivery.attempt)
        except asyncio.CancelledError:
            self.unrecorded.append((delivery, error))
            raise
        except Exception as store_error:  # kept in memory and reported, never dropped
            self.unrecorded.append((delivery, error))
            log.error(
                "could not record dead letter of %s for %s (%r); event kept in memory: %s",
                event.id,
                delivery.subscription.name,
                store_error,
                event.model_dump_json(),
                extra=log_fields(event),
            )
        finally:
            self.finish(delivery)

    def _letter_to_store(
        self, delivery: Delivery, error: BaseException, decisions: Sequence[Decision] = ()
    ) -> bool:
        """With a store, queue the dead letter with its settlement and end the delivery."""
        if self.store is None or delivery.seq is None:
            return False
        self.store.dead_letter(
            delivery.seq,
            delivery.event.to_dict(),
            delivery.subscription.name,
            error,
            delivery.attempt,
            delivery.replay_of,
            decisions,
        )
        self.finish(delivery)
        return True

    def discard(self, delivery: Delivery) -> None:
        """Its subscription was removed: with a store the delivery is dead-lettered."""
        removed = PermanentFailure(f"subscription '{delivery.subscription.name}' was removed")
        if self._letter_to_store(delivery, removed):
            delivery.counts.dead_lettered += 1
            return
        delivery.counts.discarded += 1
        log.info(
            "discarded %s %s: subscription %s was removed",
            delivery.event.type,
            delivery.event.id,
            delivery.subscription.name,
        )
        self.finish(delivery)

    def finish(self, delivery: Delivery) -> None:
        self._on_end(delivery)


def log_fields(event: Event) -> dict[str, Any]:
    return {
        "event_id": str(event.id),
        "event_type": event.type,
        "tenant": event.tenant,
        "correlation_id": event.correlation_id,
    }
