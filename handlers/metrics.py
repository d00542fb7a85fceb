"""Processor metrics: counters per event type, tenant and priority, queue depths, latencies.

Counting is on the hot path, so it is plain attribute increments on one small object per
(type, tenant, priority); everything else (sums, percentiles) happens when a snapshot is taken.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from eventcenter.domain.priority import Priority

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

    def add_to(self, total: dict[str, int]) -> None:
        for name in COUNTERS:
            total[name] = total.get(name, 0) + getattr(self, name)


class LatencyWindow:
    """The last ``size`` samples (seconds) in a ring; percentiles are computed on demand."""

    __slots__ = ("_next", "_samples", "count", "size")

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._samples: list[float] = []
        self._next = 0
        self.count = 0

    def add(self, seconds: float) -> None:
        self.count += 1
        if len(self._samples) < self.size:
            self._samples.append(seconds)
        else:
            self._samples[self._next] = seconds
            self._next = (self._next + 1) % self.size

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


class ProcessorMetrics:
    """The live metrics the processor updates; :meth:`snapshot` copies them out."""

    def __init__(self, window: int = 4096) -> None:
        self._counts: dict[tuple[str, str, Priority], Counts] = {}
        self.dispatch = LatencyWindow(window)
        self.handlers: dict[str, LatencyWindow] = {}
        self._window = window

    def counts(self, type: str, tenant: str, priority: Priority) -> Counts:
        key = (type, tenant, priority)
        counts = self._counts.get(key)
        if counts is None:
            counts = self._counts[key] = Counts()
        return counts

    def handler(self, name: str) -> LatencyWindow:
        window = self.handlers.get(name)
        if window is None:
            window = self.handlers[name] = LatencyWindow(self._window)
        return window

    def snapshot(self, queue: dict[str, Any]) -> MetricsSnapshot:
        totals: dict[str, int] = {}
        by_type: dict[str, dict[str, int]] = {}
        by_tenant: dict[str, dict[str, int]] = {}
        by_priority: dict[str, dict[str, int]] = {}
        for (type_, tenant, priority), counts in self._counts.items():
            counts.add_to(totals)
            counts.add_to(by_type.setdefault(type_, {}))
            counts.add_to(by_tenant.setdefault(tenant, {}))
            counts.add_to(by_priority.setdefault(priority.name, {}))
        return MetricsSnapshot(
            totals=totals,
            by_type=dict(sorted(by_type.items())),
            by_tenant=dict(sorted(by_tenant.items())),
            by_priority={p.name: by_priority[p.name] for p in Priority if p.name in by_priority},
            queue=queue,
            dispatch_latency=self.dispatch.summary(),
            handler_latency={name: w.summary() for name, w in sorted(self.handlers.items())},
        )
