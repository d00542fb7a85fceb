"""The EventProcessor: admits events, schedules deliveries, runs handlers, retries, dead-letters.

How an event travels:

1. ``publish`` validates the envelope (:class:`~eventcenter.domain.event.Event`), waits for
   queue space (backpressure), drops an id already seen inside the dedupe window, and routes
   the event to the subscriptions whose patterns match: one *delivery* per subscription.
2. Deliveries wait in the :class:`~eventcenter.handlers.scheduling.PriorityScheduler`
   (priority, ageing, tenant round-robin) until one of ``workers`` worker tasks takes one.
3. A subscription runs at most ``max_in_flight_per_subscription`` deliveries at once; further
   deliveries for it are parked on the subscription, so a slow handler holds a few workers and
   the others keep serving the other subscriptions.
4. A handler exception is retried with exponential back-off and full jitter up to
   ``max_attempts``; then (or at once for PermanentFailure) the event is dead-lettered with the
   error and attempt count.

Nothing is dropped silently: every admitted delivery ends handled, dead-lettered, or (when
its subscription is removed) counted as discarded.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from eventcenter.domain.backoff import backoff_delay
from eventcenter.domain.errors import (
    Backpressure,
    EventCenterError,
    InvalidBatch,
    InvalidEvent,
    PermanentFailure,
    ProcessorClosed,
    ShutdownInterrupted,
    SubscriptionError,
)
from eventcenter.domain.event import Event
from eventcenter.domain.fsm import STABLE, ProcessorStateMachine
from eventcenter.domain.ports import DeadLetterStore, DecisionLog, PressureTester
from eventcenter.domain.priority import Priority
from eventcenter.handlers.base import EventFilter, Handler, HandlerFunc
from eventcenter.handlers.config import ProcessorSettings
from eventcenter.handlers.context import Context
from eventcenter.handlers.dedupe import DedupeWindow
from eventcenter.handlers.metrics import Counts, MetricsSnapshot, ProcessorMetrics
from eventcenter.handlers.patterns import Pattern, RouteCache, RouteIndex, compile_pattern
from eventcenter.handlers.scheduling import PriorityScheduler
from eventcenter.handlers.state import StateGuard

log = logging.getLogger("eventcenter.processor")

F = TypeVar("F", bound=HandlerFunc)


class Subscription:
    """A handler with what it listens to and its delivery bookkeeping (one object per name)."""

    __slots__ = (
        "closed",
        "filters",
        "handler",
        "in_flight",
        "max_in_flight",
        "name",
        "parked",
        "patterns",
        "paused",
        "priority_min",
    )

    def __init__(
        self,
        name: str,
        patterns: tuple[Pattern, ...],
        handler: HandlerFunc,
        filters: tuple[EventFilter, ...],
        priority_min: Priority,
        max_in_flight: int,
    ) -> None:
        self.name = name
        self.patterns = patterns
        self.handler = handler
        self.filters = filters
        self.priority_min = priority_min
        self.max_in_flight = max_in_flight
        self.paused = False
        self.closed = False
        self.in_flight = 0
        self.parked: deque[Delivery] = deque()

    def matches(self, event_type: str) -> bool:
        return any(p.matches(event_type) for p in self.patterns)

    def wants(self, event: Event) -> bool:
        """Priority floor and filters (patterns were checked by the route cache)."""
        if event.priority > self.priority_min:
            return False
        return all(accept(event) for accept in self.filters)

    def can_run(self) -> bool:
        return not self.paused and self.in_flight < self.max_in_flight

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "patterns": [p.text for p in self.patterns],
            "priority_min": self.priority_min.name,
            "paused": self.paused,
            "in_flight": self.in_flight,
            "parked": len(self.parked),
        }


class Delivery:
    """One event on its way to one subscription."""

    __slots__ = ("attempt", "counts", "event", "failure", "published_at", "subscription")

    def __init__(
        self,
        event: Event,
        subscription: Subscription,
        published_at: float,
        counts: Counts,
        failure: PermanentFailure | None = None,
    ) -> None:
        self.event = event
        self.subscription = subscription
        self.published_at = published_at
        self.counts = counts
        self.attempt = 1
        self.failure = failure  # set when it failed before any handler ran (a raising filter)


@dataclass
class ShutdownReport:
    """What ``stop`` did with the work that was still pending."""

    handled_while_stopping: int = 0
    dead_lettered: list[str] = field(default_factory=list)  # event ids, reason ShutdownInterrupted
    unrecorded: int = 0  # dead letters the store refused (kept in memory and logged)

    @property
    def clean(self) -> bool:
        return not self.dead_lettered and not self.unrecorded


class EventProcessor:
    """Routes events to subscriptions by pattern and priority; see the module docstring.

    Build one per center (the composition root does); tests build one with in-memory ports.
    It starts on first publish or explicitly with :meth:`start`; :meth:`stop` shuts it down
    gracefully. All methods must be called from the event loop it runs on, except
    :meth:`publish_sync`, which is for other threads.
    """

    def __init__(
        self,
        settings: ProcessorSettings | None = None,
        *,
        decisions: DecisionLog,
        dead_letters: DeadLetterStore,
        initial_state: str = STABLE,
        clock: Callable[[], float] = time.perf_counter,
        rng: random.Random | None = None,
        pressure: PressureTester | None = None,
        services: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings or ProcessorSettings()
        self._clock = clock
        self._rng = rng or random.Random()
        self._dead_letters = dead_letters
        self._scheduler: PriorityScheduler[Delivery] = PriorityScheduler(self.settings.max_wait())
        self._dedupe = DedupeWindow(self.settings.dedupe_window, self.settings.dedupe_max_ids)
        self.metrics = ProcessorMetrics(
            max_types=self.settings.metrics_max_types,
            max_tenants=self.settings.metrics_max_tenants,
            max_series=self.settings.metrics_max_series,
        )
        self._subscriptions: dict[str, Subscription] = {}
        self._index = RouteIndex()
        self._routes = RouteCache(self._resolve_route, self.settings.route_cache_size)
        self._pending = 0
        self._running: set[Delivery] = set()
        self._retrying: dict[Delivery, asyncio.TimerHandle] = {}
        self._unrecorded: list[tuple[Delivery, BaseException]] = []
        self._status = "new"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._workers: list[asyncio.Task[None]] = []
        # Workers with nothing to do wait on their own future here; a push wakes one of them.
        # (asyncio.Semaphore costs a scan of all waiters per acquire: too slow per event.)
        self._idle_workers: deque[asyncio.Future[None]] = deque()
        self._space = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        machine = ProcessorStateMachine(initial_state, self.settings.load_test_cooldown)
        self.state = StateGuard(machine, decisions, clock)
        self.context = Context(
            state=self.state,
            decisions=decisions,
            publish=self.publish,
            clock=clock,
            pressure=pressure,
            services=dict(services or {}),
        )

    # lifecycle ---------------------------------------------------------------------------------

    @property
    def status(self) -> str:
        """``new``, ``running``, ``stopping`` or ``stopped``."""
        return self._status

    async def start(self) -> None:
        """Start the worker tasks on the running loop (idempotent while running)."""
        if self._status == "running":
            return
        if self._status != "new":
            raise ProcessorClosed(f"processor is {self._status}; build a new one to run again")
        self._start_workers()

    def _start_workers(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._status = "running"
        self._workers = [
            self._loop.create_task(self._work(), name=f"eventcenter-worker-{i}")
            for i in range(self.settings.workers)
        ]

    async def join(self) -> None:
        """Wait until every admitted delivery is handled or dead-lettered (retries included)."""
        await self._idle.wait()

    async def stop(self, timeout: float | None = None) -> ShutdownReport:
        """Stop accepting events, let queued work finish for ``timeout`` s, then stop.

        Pending retries are tried once more at once. Whatever is still queued, parked or running
        when the time is up is dead-lettered with :class:`ShutdownInterrupted` (nothing is lost:
        replay it after a restart). Returns what happened.
        """
        report = ShutdownReport()
        if self._status in ("new", "stopped"):
            self._status = "stopped"
            return report
        if self._status == "stopping":
            raise ProcessorClosed("stop() is already in progress")
        self._status = "stopping"
        self._space.set()  # wake publishers waiting for space: they get ProcessorClosed
        for delivery, timer in list(self._retrying.items()):
            timer.cancel()
            self._requeue(delivery)
        before = self._handled_total()
        limit = self.settings.shutdown_timeout if timeout is None else timeout
        try:
            await asyncio.wait_for(self._idle.wait(), limit)
        except TimeoutError:
            log.warning("shutdown: %d deliveries still pending after %.1fs", self._pending, limit)
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        leftovers = list(self._running) + self._scheduler.drain()
        for sub in self._subscriptions.values():
            leftovers.extend(sub.parked)
            sub.parked.clear()
        self._running.clear()
        reason = ShutdownInterrupted(f"not handled before shutdown (waited {limit:.1f}s)")
        # Together, so the store can save them in a few batches rather than one by one.
        await asyncio.gather(*(self._dead_letter(delivery, reason) for delivery in leftovers))
        report.dead_lettered = [str(delivery.event.id) for delivery in leftovers]
        report.handled_while_stopping = self._handled_total() - before
        report.unrecorded = len(self._unrecorded)
        self._status = "stopped"
        return report

    async def __aenter__(self) -> EventProcessor:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # subscriptions -----------------------------------------------------------------------------

    def subscribe(
        self,
        pattern: str | Sequence[str],
        handler: HandlerFunc,
        *,
        name: str | None = None,
        filters: Iterable[EventFilter] = (),
        priority_min: Priority | str = Priority.LOW,
        max_in_flight: int | None = None,
    ) -> str:
        """Deliver events whose type matches ``pattern`` to ``handler``; returns the name.

        ``priority_min`` is the least urgent priority delivered (HIGH: CRITICAL and HIGH).
        ``filters`` are predicates on the event; all must accept it. The name identifies the
        subscription across restarts (dead letters are replayed to it) and must be unique.
        """
        if not _is_async_callable(handler):
            raise TypeError(
                f"handler {handler!r} must be an async function: async def h(event, ctx): ..."
            )
        texts = [pattern] if isinstance(pattern, str) else list(pattern)
        if not texts:
            raise SubscriptionError("a subscription needs at least one pattern")
        patterns = tuple(compile_pattern(text) for text in texts)
        name = name or _default_name(handler)
        if name in self._subscriptions:
            raise SubscriptionError(f"subscription '{name}' already exists; pass another name=")
        limit = max_in_flight or self.settings.max_in_flight_per_subscription
        self._subscriptions[name] = Subscription(
            name, patterns, handler, tuple(filters), Priority.parse(priority_min), limit
        )
        self._index.add(name, patterns)
        self._routes.clear()
        return name

    def on(
        self,
        pattern: str,
        *more: str,
        name: str | None = None,
        filters: Iterable[EventFilter] = (),
        priority_min: Priority | str = Priority.LOW,
        max_in_flight: int | None = None,
    ) -> Callable[[F], F]:
        """Decorator form of :meth:`subscribe`: ``@processor.on("deployment.*")``."""

        def register(handler: F) -> F:
            self.subscribe(
                (pattern, *more),
                handler,
                name=name,
                filters=filters,
                priority_min=priority_min,
                max_in_flight=max_in_flight,
            )
            return handler

        return register

    def register(self, handler: Handler) -> str:
        """Subscribe a :class:`Handler` instance by its class attributes; returns its name."""
        if not handler.patterns:
            raise SubscriptionError(f"{type(handler).__name__}.patterns is empty")
        if handler.name in self._subscriptions:
            raise SubscriptionError(
                f"a handler named '{handler.name}' is already registered (a center registers"
                " the built-in handlers itself: build it with builtin_handlers=False to register"
                " your own instances, or override the handler's name)"
            )
        filters: tuple[EventFilter, ...] = ()
        if type(handler).accepts is not Handler.accepts:
            filters = (handler.accepts,)
        return self.subscribe(
            handler.patterns,
            handler.handle,
            name=handler.name,
            filters=filters,
            priority_min=handler.priority_min,
            max_in_flight=handler.max_in_flight,
        )

    def unsubscribe(self, name: str) -> None:
        """Remove a subscription; its parked and queued deliveries are discarded (and counted)."""
        sub = self._subscription(name)
        sub.closed = True
        del self._subscriptions[name]
        self._index.remove(name)
        self._routes.clear()
        while sub.parked:
            self._discard(sub.parked.popleft())

    def pause(self, name: str) -> None:
        """Hold deliveries to ``name`` (they wait, counted in the queue bound) until resumed."""
        self._subscription(name).paused = True

    def resume(self, name: str) -> None:
        """Deliver again; deliveries held while paused go back to the scheduler in order."""
        sub = self._subscription(name)
        sub.paused = False
        # Held deliveries go back to the head of their queues, newest first, so they come out
        # in the order they were taken, ahead of what was published after them, with their age.
        while sub.parked:
            delivery = sub.parked.pop()
            event = delivery.event
            self._scheduler.push_front(
                delivery, event.priority, event.tenant, delivery.published_at
            )
            self._wake_worker()

    def subscriptions(self) -> list[dict[str, Any]]:
        return [sub.info() for sub in self._subscriptions.values()]

    def _subscription(self, name: str) -> Subscription:
        try:
            return self._subscriptions[name]
        except KeyError:
            known = ", ".join(self._subscriptions) or "none"
            raise SubscriptionError(f"no subscription '{name}' (known: {known})") from None

    def _route(self, event_type: str) -> tuple[Subscription, ...]:
        return self._routes.lookup(event_type)

    def _resolve_route(self, event_type: str) -> tuple[Subscription, ...]:
        subscriptions = self._subscriptions
        return tuple(subscriptions[name] for name in self._index.match(event_type))

    # publishing --------------------------------------------------------------------------------

    async def publish(
        self,
        type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        tenant: str = "default",
        priority: Priority | str = Priority.NORMAL,
        **fields: Any,
    ) -> str:
        """Validate and admit one event; returns its id once it is queued (not yet handled).

        ``fields`` are further envelope fields (source, correlation_id, metadata, id,
        timestamp, version). Raises InvalidEvent, Backpressure or ProcessorClosed.
        """
        event = Event.create(
            type, payload, limits=self.settings.limits, tenant=tenant, priority=priority, **fields
        )
        await self._admit((event,))
        return str(event.id)

    async def publish_event(self, event: Event) -> str:
        """Admit an already built envelope (e.g. one received from another service)."""
        await self._admit((event,))
        return str(event.id)

    async def publish_batch(self, items: Sequence[Mapping[str, Any] | Event]) -> list[str]:
        """Validate all, then admit all; if one is invalid none is admitted (InvalidBatch).

        Each item is an Event or a mapping of envelope fields (``type`` required).
        """
        events: list[Event] = []
        for index, item in enumerate(items):
            if isinstance(item, Event):
                events.append(item)
                continue
            try:
                events.append(Event.parse(item, self.settings.limits))
            except InvalidEvent as error:
                raise InvalidBatch(index, error.field, error.reason) from None
        await self._admit(events)
        return [str(event.id) for event in events]

    def publish_sync(
        self,
        type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = 30.0,
        **fields: Any,
    ) -> str:
        """Publish from another thread (or non-async code) into the running processor.

        Validation runs in the calling thread; admission is handed to the processor's loop and
        this call waits for it. Calling it from the loop's own thread would deadlock: that
        raises EventCenterError instead.
        """
        loop = self._loop
        if loop is None or self._status != "running":
            raise ProcessorClosed(
                f"processor is {self._status}: publish_sync needs it running in an event loop"
            )
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        if current is loop:
            raise EventCenterError(
                "publish_sync called from the processor's own loop: use 'await publish(...)'"
            )
        event = Event.create(type, payload, limits=self.settings.limits, **fields)
        future = asyncio.run_coroutine_threadsafe(self.publish_event(event), loop)
        return future.result(timeout)

    async def redeliver(self, event: Event, subscription: str) -> None:
        """Queue ``event`` again for one subscription, bypassing dedupe (dead-letter replay)."""
        self._ensure_running()
        sub = self._subscription(subscription)
        await self._wait_for_space(1)
        counts = self.metrics.counts(event.type, event.tenant, event.priority)
        self._push(Delivery(event, sub, self._clock(), counts))

    async def _admit(self, events: Sequence[Event]) -> None:
        self._ensure_running()
        routes = [self._route(event.type) for event in events]
        await self._wait_for_space(sum(len(targets) for targets in routes))
        # From here to the end there is no await: the space just found is still there.
        now = self._clock()
        for event, targets in zip(events, routes, strict=True):
            counts = self.metrics.counts(event.type, event.tenant, event.priority)
            if self._dedupe.is_duplicate(event.id, now):
                counts.duplicates += 1
                continue
            counts.published += 1
            routed = False
            for sub in targets:
                if sub.closed:
                    continue
                try:
                    if not sub.wants(event):
                        continue
                except Exception as error:
                    # A filter that raises must not lose the event or break the batch: the
                    # delivery is queued marked failed and dead-lettered by a worker.
                    failed = PermanentFailure(f"a filter of '{sub.name}' raised {error!r}")
                    self._push(Delivery(event, sub, now, counts, failed))
                else:
                    self._push(Delivery(event, sub, now, counts))
                routed = True
            if not routed:
                counts.unrouted += 1

    def _push(self, delivery: Delivery) -> None:
        delivery.counts.delivered += 1
        self._pending += 1
        self._idle.clear()
        event = delivery.event
        self._scheduler.push(delivery, event.priority, event.tenant, delivery.published_at)
        self._wake_worker()

    def _ensure_running(self) -> None:
        if self._status == "running":
            return
        if self._status == "new":
            self._start_workers()  # lazy start: the first publish inside a running loop
            return
        raise ProcessorClosed(f"processor is {self._status}; events are no longer accepted")

    async def _wait_for_space(self, needed: int) -> None:
        limit = self.settings.max_queued
        if needed > limit:
            raise Backpressure(f"{needed} deliveries exceed the whole queue ({limit}, max_queued)")
        if self._pending + needed <= limit:
            return
        timeout = self.settings.publish_timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._pending + needed > limit:
            self._ensure_running()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise Backpressure(
                    f"queue full ({self._pending}/{limit} deliveries) for {timeout}s;"
                    " the event was not accepted"
                )
            self._space.clear()
            try:
                await asyncio.wait_for(self._space.wait(), remaining)
            except TimeoutError:
                continue

    # delivering --------------------------------------------------------------------------------

    def _wake_worker(self) -> None:
        idle = self._idle_workers
        while idle:
            waiter = idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _work(self) -> None:
        scheduler = self._scheduler
        clock = self._clock
        idle = self._idle_workers
        loop = asyncio.get_running_loop()
        while True:
            if not scheduler:
                waiter: asyncio.Future[None] = loop.create_future()
                idle.append(waiter)
                await waiter
                continue  # another worker may have taken the item meanwhile
            delivery: Delivery | None = scheduler.pop(clock())
            while delivery is not None:
                sub = delivery.subscription
                if sub.closed:
                    self._discard(delivery)
                    break
                if not sub.can_run():
                    sub.parked.append(delivery)
                    break
                await self._run(delivery)
                delivery = sub.parked.popleft() if sub.parked and sub.can_run() else None

    async def _run(self, delivery: Delivery) -> None:
        if delivery.failure is not None:
            await self._failed(delivery, delivery.failure)
            return
        sub = delivery.subscription
        clock = self._clock
        started = clock()
        if delivery.attempt == 1:
            self.metrics.dispatch.add(started - delivery.published_at)
        sub.in_flight += 1
        self._running.add(delivery)
        try:
            await sub.handler(delivery.event, self.context)
        except Exception as error:
            self._running.discard(delivery)
            sub.in_flight -= 1
            self.metrics.handler(sub.name).add(clock() - started)
            await self._failed(delivery, error)
            return
        self._running.discard(delivery)
        sub.in_flight -= 1
        self.metrics.handler(sub.name).add(clock() - started)
        delivery.counts.handled += 1
        self._finish()

    async def _failed(self, delivery: Delivery, error: Exception) -> None:
        delivery.counts.failed += 1
        event = delivery.event
        retryable = not isinstance(error, PermanentFailure)
        if (
            retryable
            and delivery.attempt < self.settings.max_attempts
            and self._status == "running"
        ):
            delivery.counts.retried += 1
            delay = backoff_delay(
                delivery.attempt,
                self.settings.backoff_base,
                self.settings.backoff_max,
                self._rng.random(),
            )
            log.warning(
                "handler %s failed on %s %s (attempt %d), retrying in %.3fs: %r",
                delivery.subscription.name,
                event.type,
                event.id,
                delivery.attempt,
                delay,
                error,
                extra=_log_fields(event),
            )
            delivery.attempt += 1
            loop = asyncio.get_running_loop()
            self._retrying[delivery] = loop.call_later(delay, self._requeue, delivery)
            return
        await self._dead_letter(delivery, error)

    def _requeue(self, delivery: Delivery) -> None:
        self._retrying.pop(delivery, None)
        event = delivery.event
        self._scheduler.push(delivery, event.priority, event.tenant, self._clock())
        self._wake_worker()

    async def _dead_letter(self, delivery: Delivery, error: BaseException) -> None:
        event = delivery.event
        delivery.counts.dead_lettered += 1
        try:
            letter = await self._dead_letters.add(
                event, delivery.subscription.name, error, delivery.attempt
            )
        except asyncio.CancelledError:
            # stop() cancelled the worker while the store was writing: keep it, then stop.
            self._unrecorded.append((delivery, error))
            raise
        except Exception as store_error:  # kept in memory and reported, never dropped
            self._unrecorded.append((delivery, error))
            log.error(
                "could not record dead letter of %s for %s (%r); event kept in memory: %s",
                event.id,
                delivery.subscription.name,
                store_error,
                event.model_dump_json(),
                extra=_log_fields(event),
            )
        else:
            log.warning(
                "dead-lettered %s %s for %s after %d attempt(s) as %s: %r",
                event.type,
                event.id,
                delivery.subscription.name,
                delivery.attempt,
                letter,
                error,
                extra=_log_fields(event),
            )
        finally:
            self._finish()

    def _discard(self, delivery: Delivery) -> None:
        delivery.counts.discarded += 1
        log.info(
            "discarded %s %s: subscription %s was removed",
            delivery.event.type,
            delivery.event.id,
            delivery.subscription.name,
        )
        self._finish()

    def _finish(self) -> None:
        self._pending -= 1
        self._space.set()
        if self._pending == 0:
            self._idle.set()

    # observing ---------------------------------------------------------------------------------

    def _handled_total(self) -> int:
        return self.metrics.snapshot({}).totals.get("handled", 0)

    def unrecorded_dead_letters(self) -> list[tuple[Event, str, BaseException]]:
        """Dead letters the store could not take (kept here so they are not lost)."""
        return [(d.event, d.subscription.name, e) for d, e in self._unrecorded]

    def queue_depths(self) -> dict[str, Any]:
        now = self._clock()
        return {
            "pending": self._pending,
            "queued": len(self._scheduler),
            "by_priority": {p.name: n for p, n in self._scheduler.depths().items()},
            "by_tenant": self._scheduler.tenant_depths(),
            "parked": sum(len(s.parked) for s in self._subscriptions.values()),
            "in_flight": len(self._running),
            "retrying": len(self._retrying),
            "oldest_wait_ms": round(self._scheduler.oldest_wait(now) * 1000, 3),
        }

    def snapshot(self) -> MetricsSnapshot:
        """Counters per type/tenant/priority, queue depths and latency percentiles."""
        return self.metrics.snapshot(self.queue_depths())


def _is_async_callable(handler: object) -> bool:
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - async callable objects
    )


def _default_name(handler: object) -> str:
    module = getattr(handler, "__module__", None) or ""
    qualname = getattr(handler, "__qualname__", None) or type(handler).__qualname__
    return f"{module}.{qualname}" if module else qualname


def _log_fields(event: Event) -> dict[str, Any]:
    return {
        "event_id": str(event.id),
        "event_type": event.type,
        "tenant": event.tenant,
        "correlation_id": event.correlation_id,
    }
