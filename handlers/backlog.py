"""Memory is a cache: a bounded window of each subscription's deliveries, the rest in the store.

With a durable store, a subscription holds at most ``memory_window`` deliveries in memory.
Deliveries admitted beyond that stay in the store only (counted per priority and tenant);
once the subscription has drained to half its window they are read back, up to the window:
highest priority first, and within a priority the room is shared evenly among the tenants
that have deliveries waiting, each tenant's read in admission order. While a tenant has
deliveries of a priority waiting in the store, its new deliveries of that priority for that
subscription go to the store too, so each tenant's admission order within a priority is kept.

What holds over the durable backlog: among the deliveries in memory, the scheduler's rules
(priority, ageing, tenant round-robin) hold exactly. A lagging subscription's stored backlog is
read back priority first, then tenant by tenant in equal shares, then oldest first: a
CRITICAL delivery waiting in the store is taken into memory before any HIGH one, and a tenant
with a few deliveries waiting behind another tenant's flood gets its share of the next read
instead of waiting for the whole flood. Ageing only applies once deliveries are in memory.
Other subscriptions are not affected by one subscription's lag.

After a restart, every delivery still in the store (handled or not before the crash: the
store cannot tell) is read back this way and runs again: at-least-once. Deliveries for a
subscription that is no longer registered are dead-lettered with the reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from eventcenter.domain.errors import EventCenterError, PermanentFailure
from eventcenter.domain.event import EnvelopeLimits, Event
from eventcenter.domain.ports import DeliveryStore, StoredDelivery
from eventcenter.domain.priority import Priority
from eventcenter.handlers.books import Books
from eventcenter.handlers.delivery import Deliverer, Delivery
from eventcenter.handlers.metrics import ProcessorMetrics
from eventcenter.handlers.subscriptions import Subscription, Subscriptions

log = logging.getLogger("eventcenter.processor")

_ORPHAN_BATCH = 500


class Backlog:
    """Places admitted deliveries in memory or leaves them in the store; reads them back."""

    def __init__(
        self,
        *,
        window: int,
        store: DeliveryStore | None,
        subscriptions: Subscriptions,
        deliverer: Deliverer,
        books: Books,
        metrics: ProcessorMetrics,
        clock: Callable[[], float],
        limits: EnvelopeLimits,
    ) -> None:
        self.window = window
        self._store = store
        self._subscriptions = subscriptions
        self._deliverer = deliverer
        self._books = books
        self._metrics = metrics
        self._clock = clock
        self._limits = limits
        self._loads: set[asyncio.Task[None]] = set()
        self.recovered = 0

    def place(self, delivery: Delivery) -> None:
        """An admitted delivery: into memory if its subscription has room, else store only."""
        sub = delivery.subscription
        priority = delivery.event.priority
        key = (int(priority), delivery.event.tenant)
        if self._store is not None and (sub.waiting.get(key) or sub.buffered >= self.window):
            if not sub.waiting.get(key):
                sub.cursor[key] = (delivery.seq or 1) - 1
            sub.waiting[key] = sub.waiting.get(key, 0) + 1
            sub.spilled[priority] += 1
            if not sub.loading and sub.buffered <= self.window // 2:
                self._start_load(sub)
            return
        sub.buffered += 1
        self._deliverer.push(delivery)

    def ended(self, delivery: Delivery) -> None:
        """A delivery left memory (handled, dead-lettered, discarded)."""
        sub = delivery.subscription
        sub.buffered -= 1
        self._books.end()
        if (
            self._store is not None
            and not sub.loading
            and sub.buffered <= self.window // 2
            and any(sub.spilled)
            and not sub.closed
        ):
            self._start_load(sub)

    def _start_load(self, sub: Subscription) -> None:
        sub.loading = True
        task = asyncio.get_running_loop().create_task(self._load(sub))
        self._loads.add(task)
        task.add_done_callback(self._loads.discard)

    async def _load(self, sub: Subscription) -> None:
        assert self._store is not None
        try:
            for priority in Priority:
                room = self.window - sub.buffered
                if room <= 0:
                    break
                tenants = [t for (p, t), n in sub.waiting.items() if p == priority and n]
                if tenants:
                    await self._load_tenants(sub, int(priority), tenants, room)
        except EventCenterError as error:
            log.error("reading the backlog of '%s' failed, retrying in 1s: %s", sub.name, error)
            sub.loading = False
            asyncio.get_running_loop().call_later(1.0, self._retry_load, sub)
            return
        finally:
            sub.loading = False
        if any(sub.spilled) and sub.buffered <= self.window // 2 and not sub.closed:
            self._start_load(sub)

    async def _load_tenants(
        self, sub: Subscription, priority: int, tenants: list[str], room: int
    ) -> None:
        """Read back up to ``room`` deliveries of one priority, shared evenly among
        ``tenants`` (a tenant that needs less leaves its share to the next read)."""
        assert self._store is not None
        share = max(1, room // len(tenants))
        for tenant in tenants:
            key = (priority, tenant)
            waiting = sub.waiting[key]
            wanted = min(share, waiting, self.window - sub.buffered)
            if wanted <= 0:
                return
            rows = await self._store.load(sub.name, priority, sub.cursor[key], wanted, tenant)
            for row in rows:
                self._take(sub, row)
            taken = len(rows)
            if rows:
                sub.cursor[key] = rows[-1].seq
            lost = 0
            if taken < wanted:  # the store has none left of those counted before the read
                lost = waiting - taken
                log.error(
                    "store holds %d fewer deliveries of %s for '%s' (tenant %s) than counted",
                    lost,
                    Priority(priority).name,
                    sub.name,
                    tenant,
                )
                for _ in range(lost):
                    self._books.end()
            # Deliveries of this tenant placed in the store while the read ran count on.
            left = sub.waiting.get(key, 0) - taken - lost
            sub.spilled[priority] -= taken + lost
            if left > 0:
                sub.waiting[key] = left
            else:
                sub.waiting.pop(key, None)
                sub.cursor.pop(key, None)

    def _retry_load(self, sub: Subscription) -> None:
        if not sub.loading and not sub.closed and any(sub.spilled):
            self._start_load(sub)

    def _take(self, sub: Subscription, row: StoredDelivery) -> None:
        event = Event.model_validate_json(row.envelope, context=self._limits)
        counts = self._metrics.counts(event.type, event.tenant, event.priority)
        failure = PermanentFailure(row.failure) if row.failure else None
        delivery = Delivery(
            event,
            sub,
            self._clock(),
            counts,
            failure,
            seq=row.seq,
            replay_of=row.replay_of,
            attempt=row.attempts + 1,
        )
        sub.buffered += 1
        self._deliverer.push(delivery)

    async def recover(self) -> int:
        """Count what the store holds from before this start; schedule reading it back."""
        assert self._store is not None
        counts, top = await self._store.summary()
        orphans: dict[str, int] = {}
        recovered = 0
        for count in counts:
            if count.subscription not in self._subscriptions:
                orphans[count.subscription] = orphans.get(count.subscription, 0) + count.count
                continue
            sub = self._subscriptions.get(count.subscription)
            key = (count.priority, count.tenant)
            sub.spilled[count.priority] += count.count
            sub.waiting[key] = sub.waiting.get(key, 0) + count.count
            sub.cursor[key] = count.first_seq - 1
            recovered += count.count
        self._books.add(recovered)
        for name, number in orphans.items():
            log.warning(
                "%d stored deliveries are for subscription '%s', which is not registered:"
                " dead-lettering them",
                number,
                name,
            )
            while await self._store.dead_letter_orphans(name, _ORPHAN_BATCH):
                pass
        self.recovered = recovered
        if recovered:
            log.warning(
                "recovered %d deliveries not ended before this start: they run again"
                " (at-least-once)",
                recovered,
            )
        for sub in self._subscriptions:
            if any(sub.spilled):
                self._start_load(sub)
        return top

    async def close(self) -> None:
        for task in list(self._loads):
            task.cancel()
        await asyncio.gather(*self._loads, return_exceptions=True)
