"""Admission: from a validated event to its deliveries, durable before ``publish`` returns.

For each event: the dedupe window drops an id seen recently; routing picks the subscriptions
whose patterns match and that want it (priority floor, filters); then there is room or not:

- without a store, at most ``max_queued`` deliveries are admitted and not ended; ``publish``
  waits up to ``publish_timeout`` for room, then raises Backpressure;
- with a store, each subscription may have at most ``max_backlog`` deliveries not ended (in
  memory and in the store); past that ``publish`` waits, then raises Backpressure naming the
  lagging subscription. The deliveries are committed to the store (many publishes share one
  commit) before ``publish`` returns; an idempotency key already admitted returns the first
  event's id and admits nothing again.

A batch is all or nothing: if one event cannot be admitted, none is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from eventcenter.domain.errors import (
    Backpressure,
    InvalidEvent,
    PermanentFailure,
    ProcessorClosed,
)
from eventcenter.domain.event import Event
from eventcenter.domain.ports import AdmissionRecord, DeliveryStore, Target
from eventcenter.domain.sources import SourceProgress
from eventcenter.handlers.books import Books
from eventcenter.handlers.config import ProcessorSettings
from eventcenter.handlers.dedupe import DedupeWindow
from eventcenter.handlers.delivery import Delivery
from eventcenter.handlers.metrics import Counts, ProcessorMetrics
from eventcenter.handlers.subscriptions import Subscription, Subscriptions

#: An event to admit: the event, its counters, its deliveries and its idempotency identity.
_Planned = tuple[Event, Counts, list[Delivery], str | None]


class Admitter:
    """Turns events into deliveries; see the module docstring."""

    def __init__(
        self,
        settings: ProcessorSettings,
        *,
        subscriptions: Subscriptions,
        metrics: ProcessorMetrics,
        books: Books,
        clock: Callable[[], float],
        store: DeliveryStore | None,
        place: Callable[[Delivery], None],
        ensure_running: Callable[[], None],
    ) -> None:
        self.settings = settings
        self._subscriptions = subscriptions
        self._metrics = metrics
        self._books = books
        self._clock = clock
        self._store = store
        self._place = place
        self._ensure_running = ensure_running
        self._dedupe = DedupeWindow(settings.dedupe_window, settings.dedupe_max_ids)
        self.next_seq = 1
        self._in_flight: set[asyncio.Future[list[str | None]]] = set()

    def identity(self, event: Event, key: str | None) -> str | None:
        if key is None:
            return None
        limit = self.settings.max_key_length
        if not isinstance(key, str) or not 0 < len(key) <= limit or "\n" in key:
            raise InvalidEvent("key", f"must be 1 to {limit} characters without a newline")
        return f"{event.tenant}\n{event.source}\n{key}"

    async def admit(
        self,
        events: Sequence[Event],
        keys: Sequence[str | None] | None = None,
        progress: SourceProgress | None = None,
    ) -> list[str]:
        """Admit ``events`` (all or none); returns their ids (or the first ids of their keys).

        ``progress`` (a data source's position, delivered items, rejected messages) is
        committed with them; it needs a store.
        """
        if progress is not None and self._store is None:
            raise ProcessorClosed("a data source's progress needs a store: use an EventCenter")
        self._ensure_running()
        if keys is None:
            idents: list[str | None] = [None] * len(events)
        else:
            idents = [self.identity(e, k) for e, k in zip(events, keys, strict=True)]
        route = self._subscriptions.route
        routes = [route(event.type) for event in events]
        if self._store is None:
            needed = sum(len(targets) for targets in routes)
            if self._books.pending + needed > self.settings.max_queued:
                await self._wait_for_room(needed)
        else:
            await self._wait_for_backlog(routes)
        # From here to the commit there is no await: the room just found is still there.
        now = self._clock()
        planned: list[_Planned] = []
        for event, targets, ident in zip(events, routes, idents, strict=True):
            counts = self._metrics.counts(event.type, event.tenant, event.priority)
            if ident is None and self._dedupe.is_duplicate(event.id, now):
                counts.duplicates += 1
                continue
            planned.append((event, counts, self._deliveries(event, targets, counts, now), ident))
        ids = [event.id_text for event in events]
        if self._store is None:
            for event, counts, deliveries, _ in planned:
                self._accepted(event, counts, deliveries)
            return ids
        return await self._commit(planned, ids, progress)

    def _deliveries(
        self, event: Event, targets: tuple[Subscription, ...], counts: Counts, now: float
    ) -> list[Delivery]:
        deliveries = []
        priority = event.priority
        for sub in targets:
            if sub.closed or priority > sub.priority_min:
                continue
            try:
                if sub.filters and not sub.wants(event):
                    continue
            except Exception as error:
                # A filter that raises must not lose the event or break the batch: the
                # delivery is admitted marked failed and dead-lettered by a worker.
                failed = PermanentFailure(f"a filter of '{sub.name}' raised {error!r}")
                deliveries.append(Delivery(event, sub, now, counts, failed))
            else:
                deliveries.append(Delivery(event, sub, now, counts))
        return deliveries

    def _accepted(self, event: Event, counts: Counts, deliveries: list[Delivery]) -> None:
        counts.published += 1
        if not deliveries:
            counts.unrouted += 1
            return
        self._books.add(len(deliveries))
        for delivery in deliveries:
            counts.delivered += 1
            self._place(delivery)

    async def _commit(
        self, planned: list[_Planned], ids: list[str], progress: SourceProgress | None = None
    ) -> list[str]:
        """Store the planned deliveries (and keys), then place them; returns the ids.

        An event nobody subscribed to and without a key has nothing to store: it is counted
        as unrouted without waiting for a commit.
        """
        assert self._store is not None
        kept = [i for i, p in enumerate(planned) if p[2] or p[3] is not None]
        stored = [planned[i] for i in kept]
        records = []
        for event, _, deliveries, ident in stored:
            for delivery in deliveries:
                delivery.seq = self.next_seq
                self.next_seq += 1
            records.append(
                AdmissionRecord(
                    event=event,
                    envelope=event.to_json().decode(),
                    targets=tuple(
                        Target(
                            d.seq or 0,
                            d.subscription.name,
                            str(d.failure) if d.failure is not None else None,
                        )
                        for d in deliveries
                    ),
                    ident=ident,
                )
            )
        # Pending from now on, so that join() also waits for this commit.
        pending = sum(len(p[2]) for p in stored)
        self._books.add(pending)
        store = self._store
        commit: asyncio.Future[list[str | None]]
        if progress is not None:
            commit = asyncio.ensure_future(store.admit(records, progress))
        elif records:
            commit = asyncio.ensure_future(store.admit(records))
        else:
            commit = asyncio.get_running_loop().create_future()
            commit.set_result([])
        self._in_flight.add(commit)
        commit.add_done_callback(self._in_flight.discard)
        try:
            earlier = await asyncio.shield(commit)
        except asyncio.CancelledError:
            # The caller went away, not the write: the store commits it all the same, so its
            # deliveries are placed when it does (else they would wait for a restart).
            commit.add_done_callback(lambda done: self._after_cancel(done, planned, kept, pending))
            raise
        except BaseException:
            self._not_admitted(planned, pending)
            raise
        return self._admitted(planned, kept, earlier, ids)

    async def settle(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) for commits under way, including those whose caller
        went away, so that what they admitted is accounted for before the processor reports
        what it leaves in the store."""
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=timeout)
            await asyncio.sleep(0)  # let their done callbacks place or end the deliveries

    def _not_admitted(self, planned: list[_Planned], pending: int) -> None:
        for _ in range(pending):
            self._books.end()
        for event, *_ in planned:
            self._dedupe.forget(event.id)

    def _after_cancel(
        self,
        commit: asyncio.Future[list[str | None]],
        planned: list[_Planned],
        kept: list[int],
        pending: int,
    ) -> None:
        if commit.cancelled() or commit.exception() is not None:
            self._not_admitted(planned, pending)
            return
        self._admitted(planned, kept, commit.result(), ())  # nobody waits for the ids

    def _admitted(
        self,
        planned: list[_Planned],
        kept: list[int],
        earlier: Sequence[str | None],
        ids: Sequence[str],
    ) -> list[str]:
        """The commit succeeded: place the new deliveries, count the repeats; the ids."""
        known_of = dict(zip(kept, earlier, strict=True))
        first: dict[str, str] = {}
        for index, (event, counts, deliveries, _) in enumerate(planned):
            known = known_of.get(index)
            if known is not None:  # the key was admitted before: nothing new was stored
                counts.duplicates += 1
                first[event.id_text] = known
                for _ in deliveries:
                    self._books.end()
                continue
            counts.published += 1
            if not deliveries:
                counts.unrouted += 1
            for delivery in deliveries:
                counts.delivered += 1
                self._place(delivery)
        return [first.get(event_id, event_id) for event_id in ids]

    async def _wait_for_room(self, needed: int) -> None:
        limit = self.settings.max_queued
        if needed > limit:
            raise Backpressure(f"{needed} deliveries exceed the whole queue ({limit}, max_queued)")
        books = self._books
        await self._wait(
            lambda: books.pending + needed <= limit,
            lambda: f"queue full ({books.pending}/{limit} deliveries)",
        )

    async def _wait_for_backlog(self, routes: list[tuple[Subscription, ...]]) -> None:
        needed: dict[Subscription, int] = {}
        for targets in routes:
            for sub in targets:
                needed[sub] = needed.get(sub, 0) + 1
        limit = self.settings.max_backlog

        def lagging() -> Subscription | None:
            for sub, n in needed.items():
                if sub.backlog + n > limit:
                    return sub
            return None

        for sub, n in needed.items():
            if n > limit:
                raise Backpressure(
                    f"{n} deliveries for '{sub.name}' exceed its whole backlog ({limit})"
                )

        def why() -> str:
            sub = lagging()
            name = sub.name if sub else "?"
            backlog = sub.backlog if sub else 0
            return (
                f"subscription '{name}' is lagging: {backlog} deliveries not ended"
                f" (max_backlog {limit})"
            )

        await self._wait(lambda: lagging() is None, why)

    async def _wait(self, room: Callable[[], bool], why: Callable[[], str]) -> None:
        if room():
            return
        timeout = self.settings.publish_timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        space = self._books.space
        while not room():
            self._ensure_running()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise Backpressure(f"{why()} for {timeout}s; the event was not accepted")
            space.clear()
            try:
                await asyncio.wait_for(space.wait(), remaining)
            except TimeoutError:
                continue
