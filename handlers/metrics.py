"""Processor metrics: counters per event type, tenant and priority, queue depths, latencies.

Counting is on the hot path, so it is plain attribute increments on one small object per
*series* (type, tenant, priority); everything else (sums, percentiles) happens when a snapshot
is taken.

Memory and snapshot cost are bounded, however many types and tenants pass through: the first
``max_types`` types and ``max_tenants`` tenants seen are counted under their own names, later
ones under the label :data:`OTHER`; and once ``max_series`` series exist, a new pair of known
type and known tenant is counted under (type, OTHER), so ``by_type`` stays exact for every known
type. So there are at most ``max_series + 4 * (max_types + 1)`` series, and totals and
``by_priority`` are always exact. ``OTHER`` cannot be mistaken for a real name: types and
tenants do not contain parentheses.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from eventcenter.domain.priority import Priority

#: The label that types and tenants beyond the caps are counted under.
OTHER = "(other)"

COUNTERS = (
    "published",
    "duplicates",
    "unrouted",
    "delivered",
    "handled",
    "failed",
    "retried",
    "dead_lettered",
    "discarded",
)


class Counts:
    """Counters of one (type, tenant, priority) key."""

    __slots__ = COUNTERS

    def __init__(self) -> None:
        self.published = 0  # admitted (not a duplicate)
        self.duplicates = 0  # dropped by the dedupe window
        self.unrouted = 0  # admitted but no subscription wanted it
        self.delivered = 0  # deliveries queued (one per subscription)
        self.handled = 0  # deliveries a handler completed
        self.failed = 0  # handler attempts that raised
        self.retried = 0  # retries scheduled
        self.dead_lettered = 0  # deliveries given up on, kept as dead letters
        self.discarded = 0  # deliveries of a removed subscription


#: Upper bounds (seconds) of the latency histogram's buckets: from a handler that answers
#: in a millisecond to one that runs into the default 30 s timeout.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


class LatencyWindow:
    """The last ``size`` samples (seconds) in a ring; percentiles are computed on demand.

    Every sample is also counted, for good, in a histogram over :data:`LATENCY_BUCKETS`
    (Prometheus' cumulative buckets, sum and count: :meth:`histogram`), which a ring cannot
    give: the ring forgets, a scraper needs counts that only grow.
    """

    __slots__ = ("_buckets", "_next", "_samples", "count", "size", "total")

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._samples: list[float] = []
        self._next = 0
        self.count = 0
        self.total = 0.0  # seconds, over every sample
        self._buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one: above every bound

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        self._buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        if len(self._samples) < self.size:
            self._samples.append(seconds)
        else:
            self._samples[self._next] = seconds
            self._next = (self._next + 1) % self.size

    def histogram(self) -> tuple[list[tuple[float, int]], float]:
        """Cumulative counts per upper bound (``inf`` last, equal to :attr:`count`) and the sum
        of every sample in seconds."""
        cumulative: list[tuple[float, int]] = []
        running = 0
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), self._buckets, strict=True):
            running += count
            cumulative.append((bound, running))
        return cumulative, self.total

    def summary(self) -> dict[str, float]:
        """p50/p90/p99/max in milliseconds over the window (zeros when empty)."""
        if not self._samples:
            return {"count": 0, "p50_ms": 0.0, "p90_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
        ordered = sorted(self._samples)
        last = len(ordered) - 1

        def pick(q: float) -> float:
            return round(ordered[min(last, int(q * len(ordered)))] * 1000, 3)

        return {
            "count": self.count,
            "p50_ms": pick(0.50),
            "p90_ms": pick(0.90),
            "p99_ms": pick(0.99),
            "max_ms": round(ordered[last] * 1000, 3),
        }


@dataclass
class MetricsSnapshot:
    """A point-in-time copy of the processor's metrics (plain values, safe to serialise)."""

    totals: dict[str, int]
    by_type: dict[str, dict[str, int]]
    by_tenant: dict[str, dict[str, int]]
    by_priority: dict[str, dict[str, int]]
    queue: dict[str, Any]
    dispatch_latency: dict[str, float]
    handler_latency: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "totals": self.totals,
            "by_type": self.by_type,
            "by_tenant": self.by_tenant,
            "by_priority": self.by_priority,
            "queue": self.queue,
            "dispatch_latency": self.dispatch_latency,
            "handler_latency": self.handler_latency,
        }


_values = attrgetter(*COUNTERS)

Series = tuple[str, str, Priority]


class ProcessorMetrics:
    """The live metrics the processor updates; :meth:`snapshot` copies them out.

    ``max_types``, ``max_tenants`` and ``max_series`` bound what is kept (see the module
    docstring); memory is O(max_series + max_types + max_tenants) and so is :meth:`snapshot`.
    """

    def __init__(
        self,
        window: int = 4096,
        *,
        max_types: int = 1000,
        max_tenants: int = 1000,
        max_series: int = 10_000,
    ) -> None:
        for name, cap in (
            ("max_types", max_types),
            ("max_tenants", max_tenants),
            ("max_series", max_series),
        ):
            if cap < 1:
                raise ValueError(f"{name} must be at least 1, got {cap}")
        self.max_types = max_types
        self.max_tenants = max_tenants
        self.max_series = max_series
        # Keyed by the labels; for known type and tenant that is the key counts() looks up.
        self._series: dict[Series, Counts] = {}
        self._types: set[str] = set()
        self._tenants: set[str] = set()
        self.dispatch = LatencyWindow(window)
        self.handlers: dict[str, LatencyWindow] = {}
        self._window = window

    def counts(self, type: str, tenant: str, priority: Priority) -> Counts:
        """The counters to update for an event of ``type``, ``tenant`` and ``priority``.

        One dict lookup when the type and tenant are counted under their own names and the
        series exists; beyond the caps, three (the labels, then the series).
        """
        counts = self._series.get((type, tenant, priority))
        if counts is None:
            counts = self._labelled(type, tenant, priority)
        return counts

    def series_count(self) -> int:
        """How many series are kept (bounded, see the module docstring)."""
        return len(self._series)

    def _labelled(self, type: str, tenant: str, priority: Priority) -> Counts:
        type_label = _label(type, self._types, self.max_types)
        tenant_label = _label(tenant, self._tenants, self.max_tenants)
        series = self._series
        key = (type_label, tenant_label, priority)
        counts = series.get(key)
        if counts is None:
            if len(series) >= self.max_series and tenant_label != OTHER:
                key = (type_label, OTHER, priority)
                counts = series.get(key)
            if counts is None:
                counts = series[key] = Counts()
        return counts

    def handler(self, name: str) -> LatencyWindow:
        window = self.handlers.get(name)
        if window is None:
            window = self.handlers[name] = LatencyWindow(self._window)
        return window

    def snapshot(self, queue: dict[str, Any]) -> MetricsSnapshot:
        """Sums per type, tenant and priority: O(series), one pass and C-level sums."""
        rows: list[tuple[int, ...]] = []
        by_type: dict[str, list[tuple[int, ...]]] = {}
        by_tenant: dict[str, list[tuple[int, ...]]] = {}
        by_priority: dict[Priority, list[tuple[int, ...]]] = {}
        for (type_, tenant, priority), counts in self._series.items():
            row = _values(counts)
            rows.append(row)
            by_type.setdefault(type_, []).append(row)
            by_tenant.setdefault(tenant, []).append(row)
            by_priority.setdefault(priority, []).append(row)
        return MetricsSnapshot(
            totals=_summed(rows) if rows else {},
            by_type={label: _summed(by_type[label]) for label in sorted(by_type)},
            by_tenant={label: _summed(by_tenant[label]) for label in sorted(by_tenant)},
            by_priority={p.name: _summed(by_priority[p]) for p in Priority if p in by_priority},
            queue=queue,
            dispatch_latency=self.dispatch.summary(),
            handler_latency={name: w.summary() for name, w in sorted(self.handlers.items())},
        )


def _label(name: str, known: set[str], cap: int) -> str:
    """``name`` if it is (or can still become) one of the ``cap`` names counted by name."""
    if name in known:
        return name
    if len(known) < cap:
        known.add(name)
        return name
    return OTHER


def _summed(rows: list[tuple[int, ...]]) -> dict[str, int]:
    return dict(zip(COUNTERS, map(sum, zip(*rows, strict=True)), strict=True))
