"""The EventProcessor: the public face of admission, scheduling and delivery.

How an event travels:

1. ``publish`` validates the envelope (:class:`~eventcenter.domain.event.Event`);
   :mod:`.admission` drops an id already seen in the dedupe window (or a known idempotency
   key), routes the event to the subscriptions that want it (one *delivery* each), checks
   there is room, and, with a durable store, commits the deliveries before returning.
2. :mod:`.backlog` keeps a bounded window of each subscription's deliveries in memory (the rest
   wait in the store); in memory they wait in the
   :class:`~eventcenter.handlers.scheduling.PriorityScheduler` (priority, ageing, tenant
   round-robin) until one of ``workers`` worker tasks takes one.
3. :mod:`.delivery` runs the handler under its timeout, retries failures with back-off, and
   dead-letters what still fails; with a store the end of each delivery is committed there.

Without a store (a bare processor built with in-memory ports) everything lives in memory and
is lost with the process: ``publish`` returns once the event is queued. With a store (what
``EventCenter`` builds) an accepted event is never lost: after a crash, every delivery not
ended runs again.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from uuid import uuid4

from eventcenter.domain.errors import (
    EventCenterError,
    InvalidBatch,
    InvalidEvent,
    ProcessorClosed,
    ShutdownInterrupted,
    SubscriptionError,
)
from eventcenter.domain.event import Event
from eventcenter.domain.failures import HandlerFailure
from eventcenter.domain.fsm import STABLE, ProcessorStateMachine
from eventcenter.domain.ports import DeadLetterStore, DecisionLog, DeliveryStore
from eventcenter.domain.priority import Priority
from eventcenter.domain.sources import SourceProgress
from eventcenter.handlers.admission import Admitter
from eventcenter.handlers.backlog import Backlog
from eventcenter.handlers.base import EventFilter, Handler, HandlerFunc
from eventcenter.handlers.books import Books
from eventcenter.handlers.config import ProcessorSettings
from eventcenter.handlers.context import Context
from eventcenter.handlers.delivery import Deliverer, Delivery
from eventcenter.handlers.metrics import MetricsSnapshot, ProcessorMetrics
from eventcenter.handlers.patterns import compile_pattern
from eventcenter.handlers.state import StateGuard
from eventcenter.handlers.subscriptions import (
    Subscription,
    Subscriptions,
    default_name,
    is_async_callable,
)

log = logging.getLogger("eventcenter.processor")

F = TypeVar("F", bound=HandlerFunc)

_UNSET: Any = object()


@dataclass
class ShutdownReport:
    """What ``stop`` did with the work that was still pending."""

    handled_while_stopping: int = 0
    #: event ids dead-lettered as ShutdownInterrupted (never started; without a store only)
    dead_lettered: list[str] = field(default_factory=list)
    #: dead letters the store refused (without a store only; kept in memory and logged)
    unrecorded: int = 0
    #: event ids whose handler was cancelled while running (it may have partly run)
    interrupted: list[str] = field(default_factory=list)
    #: subscriptions whose handler ignored cancellation and was left running
    abandoned: list[str] = field(default_factory=list)
    #: deliveries left in the durable store, to run after the next start
    left_in_store: int = 0

    @property
    def clean(self) -> bool:
        return not (self.dead_lettered or self.unrecorded or self.interrupted or self.abandoned)


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
        store: DeliveryStore | None = None,
        initial_state: str = STABLE,
        clock: Callable[[], float] = time.perf_counter,
        rng: random.Random | None = None,
        services: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings or ProcessorSettings()
        self._clock = clock
        self._store = store
        self.metrics = ProcessorMetrics(
            max_types=self.settings.metrics_max_types,
            max_tenants=self.settings.metrics_max_tenants,
            max_series=self.settings.metrics_max_series,
        )
        self._subscriptions = Subscriptions(self.settings.route_cache_size)
        self._books = Books()
        self._status = "new"
        self._loop: asyncio.AbstractEventLoop | None = None
        machine = ProcessorStateMachine(initial_state, self.settings.load_test_cooldown)
        self.state = StateGuard(machine, decisions, clock)
        self.context = Context(
            state=self.state,
            decisions=decisions,
            publish=self.publish,
            clock=clock,
            services=dict(services or {}),
        )
        self._deliverer = Deliverer(
            self.settings,
            metrics=self.metrics,
            context=self.context,
            clock=clock,
            rng=rng or random.Random(),
            store=store,
            dead_letters=dead_letters,
            on_end=self._ended,
        )
        self._backlog = Backlog(
            window=self.settings.memory_window,
            store=store,
            subscriptions=self._subscriptions,
            deliverer=self._deliverer,
            books=self._books,
            metrics=self.metrics,
            clock=clock,
            limits=self.settings.limits,
        )
        self._admitter = Admitter(
            self.settings,
            subscriptions=self._subscriptions,
            metrics=self.metrics,
            books=self._books,
            clock=clock,
            store=store,
            place=self._backlog.place,
            ensure_running=self._ensure_running,
        )

    @property
    def on_failure(self) -> Callable[[HandlerFailure], None] | None:
        """Told of each failed handler attempt (not the store's failures): the RCA's input."""
        return self._deliverer.on_failure

    @on_failure.setter
    def on_failure(self, watcher: Callable[[HandlerFailure], None] | None) -> None:
        self._deliverer.on_failure = watcher

    @property
    def durable(self) -> bool:
        """True when accepted events are kept in a store (built by ``EventCenter``)."""
        return self._store is not None

    # lifecycle ---------------------------------------------------------------------------------

    @property
    def status(self) -> str:
        """``new``, ``running``, ``stopping`` or ``stopped``."""
        return self._status

    async def start(self) -> None:
        """Start the workers; with a store, first read back what the last run left unfinished.

        Idempotent while running. Register subscriptions before: deliveries stored for a
        subscription that is not registered at start are dead-lettered.
        """
        if self._status == "running":
            return
        if self._status != "new":
            raise ProcessorClosed(f"processor is {self._status}; build a new one to run again")
        self._status = "starting"
        try:
            # State held by work that cannot have survived a restart (a load test) is ended,
            # with the reason recorded, before any handler runs.
            await self.state.recover(correlation_id=f"start-{uuid4()}")
            if self._store is not None:
                top = await self._backlog.recover()
                self._admitter.next_seq = top + 1
        except BaseException:
            self._status = "new"
            raise
        self._start_workers()

    def _start_workers(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._status = "running"
        self._deliverer.start(self._loop)

    async def join(self) -> None:
        """Wait until every admitted delivery is handled or dead-lettered (retries included);
        with a store, until that is committed too."""
        await self._books.idle.wait()
        if self._store is not None:
            await self._store.flush()

    async def stop(self, timeout: float | None = None) -> ShutdownReport:
        """Stop accepting events and stop the workers; returns what happened to pending work.

        Without a store: pending retries are tried once more, queued work may finish for
        ``timeout`` (default ``shutdown_timeout``) seconds, and what never started is then
        dead-lettered as ShutdownInterrupted. With a store: workers take nothing new, running
        handlers may finish for ``timeout`` seconds, and everything else stays in the store,
        to run after the next start.

        Handlers still running then are cancelled and get ``shutdown_grace`` seconds to unwind;
        one that ignores cancellation is left behind and named in the report. So ``stop``
        returns within ``timeout + shutdown_grace`` (plus the time to record dead letters
        without a store).
        """
        report = ShutdownReport()
        if self._status in ("new", "stopped"):
            self._status = "stopped"
            return report
        if self._status == "stopping":
            raise ProcessorClosed("stop() is already in progress")
        self._status = "stopping"
        self._books.space.set()  # wake publishers waiting for room: they get ProcessorClosed
        deliverer = self._deliverer
        deliverer.retrying_allowed = False
        before = self._handled_total()
        limit = self.settings.shutdown_timeout if timeout is None else timeout
        if self._store is None:
            for delivery, timer in list(deliverer.retrying.items()):
                timer.cancel()
                deliverer.requeue(delivery)
            try:
                await asyncio.wait_for(self._books.idle.wait(), limit)
            except TimeoutError:
                log.warning(
                    "shutdown: %d deliveries still pending after %.1fs", self._books.pending, limit
                )
            deliverer.accepting = False
        else:
            deliverer.accepting = False
            for timer in deliverer.retrying.values():
                timer.cancel()
            deliverer.retrying.clear()
            await self._wait_running(limit)
        await self._stop_workers(report)
        await self._backlog.close()
        if self._store is None:
            leftovers = deliverer.scheduler.drain()
            for sub in self._subscriptions:
                leftovers.extend(sub.parked)
                sub.parked.clear()
            reason = ShutdownInterrupted(f"not handled before shutdown (waited {limit:.1f}s)")
            for delivery in leftovers:
                await deliverer._give_up(delivery, reason)
            report.dead_lettered = [str(delivery.event.id) for delivery in leftovers]
            report.unrecorded = len(deliverer.unrecorded)
        else:
            await self._admitter.settle(limit)
            report.left_in_store = self._books.pending
        report.handled_while_stopping = self._handled_total() - before
        self._status = "stopped"
        return report

    async def _wait_running(self, limit: float) -> None:
        if not self._deliverer.running:
            return
        self._deliverer.quiet.clear()
        try:
            await asyncio.wait_for(self._deliverer.quiet.wait(), limit)
        except TimeoutError:
            log.warning(
                "shutdown: %d handlers still running after %.1fs",
                len(self._deliverer.running),
                limit,
            )

    async def _stop_workers(self, report: ShutdownReport) -> None:
        deliverer = self._deliverer
        if deliverer.watchdog is not None:
            deliverer.watchdog.cancel()
        interrupted = {d: str(d.event.id) for d in deliverer.running}
        workers = deliverer.workers
        for worker in workers:
            worker.cancel()
        if not workers:
            return
        _, stuck = await asyncio.wait(workers, timeout=self.settings.shutdown_grace)
        report.interrupted = sorted(interrupted.values())
        for delivery, task in list(deliverer.running.items()):
            if task in stuck:
                report.abandoned.append(delivery.subscription.name)
                log.error(
                    "handler '%s' ignored cancellation at shutdown; left running (event %s)",
                    delivery.subscription.name,
                    delivery.event.id,
                )
        deliverer.running.clear()

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
        timeout: float | None = _UNSET,
    ) -> str:
        """Deliver events whose type matches ``pattern`` to ``handler``; returns the name.

        ``priority_min`` is the least urgent priority delivered (HIGH: CRITICAL and HIGH).
        ``filters`` are predicates on the event; all must accept it. ``timeout`` is the seconds
        one attempt may run (default ``handler_timeout``; None: no limit). The name identifies
        the subscription across restarts (stored deliveries and dead letters name it) and must
        be unique.
        """
        if not is_async_callable(handler):
            raise TypeError(
                f"handler {handler!r} must be an async function: async def h(event, ctx): ..."
            )
        texts = [pattern] if isinstance(pattern, str) else list(pattern)
        if not texts:
            raise SubscriptionError("a subscription needs at least one pattern")
        patterns = tuple(compile_pattern(text) for text in texts)
        if timeout is _UNSET:
            timeout = self.settings.handler_timeout
        if timeout is not None and not timeout > 0:
            raise SubscriptionError(f"timeout must be > 0 seconds or None, got {timeout!r}")
        name = name or default_name(handler)
        limit = max_in_flight or self.settings.max_in_flight_per_subscription
        sub = Subscription(
            name, patterns, handler, tuple(filters), Priority.parse(priority_min), limit, timeout
        )
        self._subscriptions.add(sub)
        sub.latency = self.metrics.handler(name)
        return name

    def on(
        self,
        pattern: str,
        *more: str,
        name: str | None = None,
        filters: Iterable[EventFilter] = (),
        priority_min: Priority | str = Priority.LOW,
        max_in_flight: int | None = None,
        timeout: float | None = _UNSET,
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
                timeout=timeout,
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
        timeout = getattr(handler, "timeout", _UNSET)
        return self.subscribe(
            handler.patterns,
            handler.handle,
            name=handler.name,
            filters=filters,
            priority_min=handler.priority_min,
            max_in_flight=handler.max_in_flight,
            timeout=timeout,
        )

    def unsubscribe(self, name: str) -> None:
        """Remove a subscription. Its parked deliveries are discarded (counted), or, with a
        store, dead-lettered (replayable once it is subscribed again)."""
        sub = self._subscriptions.remove(name)
        while sub.parked:
            self._deliverer.discard(sub.parked.popleft())

    def pause(self, name: str) -> None:
        """Hold deliveries to ``name`` (they wait, counted in the bounds) until resumed."""
        self._subscriptions.get(name).paused = True

    def resume(self, name: str) -> None:
        """Deliver again; deliveries held while paused go back to the scheduler in order."""
        sub = self._subscriptions.get(name)
        sub.paused = False
        # Held deliveries go back to the head of their queues, newest first, so they come out
        # in the order they were taken, ahead of what was published after them, with their age.
        while sub.parked:
            self._deliverer.push_front(sub.parked.pop())

    def subscriptions(self) -> list[dict[str, Any]]:
        return [sub.info() for sub in self._subscriptions]

    # publishing --------------------------------------------------------------------------------

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
        """Validate and admit one event; returns its id.

        With a store it returns once the event is durable; without one, once it is queued.
        ``key`` is an idempotency key, unique per tenant and source: publishing again with a
        key already admitted (within the store's key retention) admits nothing and returns
        the first event's id. ``fields`` are further envelope fields (source, correlation_id,
        metadata, id, timestamp, version). Raises InvalidEvent, Backpressure or
        ProcessorClosed.
        """
        event = Event.create(
            type, payload, limits=self.settings.limits, tenant=tenant, priority=priority, **fields
        )
        ids = await self._admitter.admit((event,), (key,) if key is not None else None)
        return ids[0]

    async def publish_event(self, event: Event, *, key: str | None = None) -> str:
        """Admit an already built envelope (e.g. one received from another service)."""
        ids = await self._admitter.admit((event,), (key,) if key is not None else None)
        return ids[0]

    @property
    def store(self) -> DeliveryStore | None:
        """The durable delivery store (None: in-memory mode)."""
        return self._store

    async def publish_events(
        self,
        events: Sequence[Event],
        keys: Sequence[str | None] | None = None,
        *,
        progress: SourceProgress | None = None,
    ) -> list[str]:
        """Admit built envelopes with their idempotency keys, all or none, and a data source's
        ``progress`` in the same commit (the center's source sink uses this; it needs a store).
        Returns per event its id, or the id admitted earlier under the same key."""
        return await self._admitter.admit(events, keys, progress)

    async def publish_batch(self, items: Sequence[Mapping[str, Any] | Event]) -> list[str]:
        """Validate all, then admit all; if one is invalid none is admitted (InvalidBatch).

        Each item is an Event or a mapping of envelope fields (``type`` required, ``key`` an
        optional idempotency key).
        """
        events: list[Event] = []
        keys: list[str | None] = []
        for index, item in enumerate(items):
            if isinstance(item, Event):
                events.append(item)
                keys.append(None)
                continue
            fields = dict(item)
            key = fields.pop("key", None)
            try:
                events.append(Event.parse(fields, self.settings.limits))
                if key is not None:
                    self._admitter.identity(events[-1], key)
            except InvalidEvent as error:
                raise InvalidBatch(index, error.field, error.reason) from None
            keys.append(key)
        return await self._admitter.admit(events, keys)

    def publish_sync(
        self,
        type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = 30.0,
        key: str | None = None,
        **fields: Any,
    ) -> str:
        """Publish from another thread (or non-async code) into the running processor.

        Validation runs in the calling thread; admission is handed to the processor's loop and
        this call waits for it (with a store: until the event is durable). Calling it from the
        loop's own thread would deadlock: that raises EventCenterError instead.
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
        future = asyncio.run_coroutine_threadsafe(self.publish_event(event, key=key), loop)
        return future.result(timeout)

    async def redeliver(self, event: Event, subscription: str) -> None:
        """Queue ``event`` again for one subscription, bypassing dedupe (no store only)."""
        if self._store is not None:
            raise EventCenterError("with a store, replay dead letters through the center")
        self._ensure_running()
        sub = self._subscriptions.get(subscription)
        await self._admitter._wait_for_room(1)
        counts = self.metrics.counts(event.type, event.tenant, event.priority)
        self._books.add(1)
        counts.delivered += 1
        self._backlog.place(Delivery(event, sub, self._clock(), counts))

    async def replay(
        self,
        event: Event,
        subscription: str,
        letter_id: str,
        claim: Callable[[int], Awaitable[object]],
    ) -> None:
        """Deliver a dead letter's event again (with a store).

        ``claim(seq)`` must claim the letter and store its new delivery under ``seq`` in one
        transaction (it raises ReplayRefused when the letter is not pending); the delivery is
        then placed like any other.
        """
        self._ensure_running()
        sub = self._subscriptions.get(subscription)
        seq = self._admitter.next_seq
        self._admitter.next_seq += 1
        self._books.add(1)
        try:
            await claim(seq)
        except BaseException:
            self._books.end()
            raise
        counts = self.metrics.counts(event.type, event.tenant, event.priority)
        counts.delivered += 1
        self._backlog.place(
            Delivery(event, sub, self._clock(), counts, seq=seq, replay_of=letter_id)
        )

    def check_timeouts(self) -> int:
        """Cancel running attempts past their timeout now (the watchdog does it every
        ``timeout_tick``); returns how many. For tests on a fake clock, and operators."""
        return self._deliverer.expire(self._clock())

    def _ensure_running(self) -> None:
        if self._status == "running":
            return
        if self._status == "new" and self._store is None:
            self._start_workers()  # lazy start: the first publish inside a running loop
            return
        if self._status == "new":
            raise ProcessorClosed("start the center first: 'await center.start()'")
        raise ProcessorClosed(f"processor is {self._status}; events are no longer accepted")

    def _ended(self, delivery: Delivery) -> None:
        self._backlog.ended(delivery)

    # observing ---------------------------------------------------------------------------------

    def _handled_total(self) -> int:
        return self.metrics.snapshot({}).totals.get("handled", 0)

    def unrecorded_dead_letters(self) -> list[tuple[Event, str, BaseException]]:
        """Dead letters the store could not take (without a store; kept so they are not lost)."""
        return [(d.event, d.subscription.name, e) for d, e in self._deliverer.unrecorded]

    def queue_depths(self) -> dict[str, Any]:
        now = self._clock()
        scheduler = self._deliverer.scheduler
        subs = list(self._subscriptions)
        return {
            "pending": self._books.pending,
            "queued": len(scheduler),
            "by_priority": {p.name: n for p, n in scheduler.depths().items()},
            "by_tenant": scheduler.tenant_depths(),
            "parked": sum(len(s.parked) for s in subs),
            "in_flight": len(self._deliverer.running),
            "retrying": len(self._deliverer.retrying),
            "in_store": sum(sum(s.spilled) for s in subs),
            "lag_by_subscription": {s.name: s.backlog for s in subs if s.backlog},
            "redelivered_at_start": self._backlog.recovered,
            "oldest_wait_ms": round(scheduler.oldest_wait(now) * 1000, 3),
        }

    def snapshot(self) -> MetricsSnapshot:
        """Counters per type/tenant/priority, queue depths and latency percentiles."""
        return self.metrics.snapshot(self.queue_depths())
