"""Subscriptions: who listens to what, and the bookkeeping of each one's deliveries."""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from eventcenter.domain.errors import SubscriptionError
from eventcenter.domain.event import Event
from eventcenter.domain.priority import Priority
from eventcenter.handlers.base import EventFilter, HandlerFunc
from eventcenter.handlers.metrics import LatencyWindow
from eventcenter.handlers.patterns import Pattern, RouteCache, RouteIndex

if TYPE_CHECKING:
    from eventcenter.handlers.delivery import Delivery

_PRIORITIES = len(Priority)


class Subscription:
    """A handler with what it listens to and its delivery bookkeeping (one object per name).

    ``buffered`` counts this subscription's deliveries held in memory (queued, parked, running
    or waiting for a retry). With a durable store, deliveries beyond ``memory_window`` stay in
    the store only: ``spilled[priority]`` counts them, ``waiting[(priority, tenant)]`` counts
    them per tenant and ``cursor[(priority, tenant)]`` is the highest seq of that tenant and
    priority already taken into memory; they are read back as room frees up, the room shared
    among the tenants waiting, each tenant's in seq order.
    """

    __slots__ = (
        "buffered",
        "closed",
        "cursor",
        "filters",
        "handler",
        "in_flight",
        "latency",
        "loading",
        "max_in_flight",
        "name",
        "parked",
        "patterns",
        "paused",
        "priority_min",
        "spilled",
        "timeout",
        "waiting",
    )

    def __init__(
        self,
        name: str,
        patterns: tuple[Pattern, ...],
        handler: HandlerFunc,
        filters: tuple[EventFilter, ...],
        priority_min: Priority,
        max_in_flight: int,
        timeout: float | None,
    ) -> None:
        self.name = name
        self.patterns = patterns
        self.handler = handler
        self.filters = filters
        self.priority_min = priority_min
        self.max_in_flight = max_in_flight
        self.timeout = timeout
        self.paused = False
        self.closed = False
        self.in_flight = 0
        self.parked: deque[Delivery] = deque()
        self.buffered = 0
        self.spilled = [0] * _PRIORITIES
        self.waiting: dict[tuple[int, str], int] = {}
        self.cursor: dict[tuple[int, str], int] = {}
        self.loading = False
        self.latency: LatencyWindow = LatencyWindow()  # replaced by the processor's own

    def wants(self, event: Event) -> bool:
        """Priority floor and filters (patterns were checked by routing)."""
        if event.priority > self.priority_min:
            return False
        filters = self.filters
        return not filters or all(accept(event) for accept in filters)

    def can_run(self) -> bool:
        return not self.paused and self.in_flight < self.max_in_flight

    @property
    def backlog(self) -> int:
        """Deliveries accepted for this subscription and not ended (memory and store)."""
        return self.buffered + sum(self.spilled)

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "patterns": [p.text for p in self.patterns],
            "priority_min": self.priority_min.name,
            "paused": self.paused,
            "in_flight": self.in_flight,
            "parked": len(self.parked),
            "buffered": self.buffered,
            "backlog": self.backlog,
            "timeout": self.timeout,
        }


class Subscriptions:
    """The registry: subscriptions by name, and routing of event types to them.

    Routing uses an index of the patterns (a miss costs O(segments x matching branches), not
    O(subscriptions)); routes are cached per event type in a bounded LRU that evicts one entry
    at a time, dropped when a subscription is added or removed.
    """

    def __init__(self, route_cache_size: int = 10_000) -> None:
        self._by_name: dict[str, Subscription] = {}
        self._index = RouteIndex()
        self._routes: RouteCache[tuple[Subscription, ...]] = RouteCache(
            self._resolve, route_cache_size
        )
        self.route = self._routes.lookup

    def __iter__(self) -> Iterator[Subscription]:
        return iter(self._by_name.values())

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __len__(self) -> int:
        return len(self._by_name)

    def add(self, subscription: Subscription) -> None:
        if subscription.name in self._by_name:
            raise SubscriptionError(
                f"subscription '{subscription.name}' already exists; pass another name="
            )
        self._by_name[subscription.name] = subscription
        self._index.add(subscription.name, subscription.patterns)
        self._routes.clear()

    def remove(self, name: str) -> Subscription:
        sub = self.get(name)
        sub.closed = True
        del self._by_name[name]
        self._index.remove(name)
        self._routes.clear()
        return sub

    def get(self, name: str) -> Subscription:
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(self._by_name) or "none"
            raise SubscriptionError(f"no subscription '{name}' (known: {known})") from None

    def _resolve(self, event_type: str) -> tuple[Subscription, ...]:
        by_name = self._by_name
        return tuple(by_name[name] for name in self._index.match(event_type))


def is_async_callable(handler: object) -> bool:
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - async callable objects
    )


def default_name(handler: object) -> str:
    module = getattr(handler, "__module__", None) or ""
    qualname = getattr(handler, "__qualname__", None) or type(handler).__qualname__
    return f"{module}.{qualname}" if module else qualname
