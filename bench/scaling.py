"""How the processor's per-event structures scale with the crowd: tenants, subscriptions, labels.

Run from the repository root::

    .venv/bin/python -m bench.scaling [--quick] [--json]

Each section measures the current code next to the way it was done before, in the same run:

1. **Scheduler pop, something overdue.** A :class:`PriorityScheduler` holding two items per
   tenant (at least 2,000 items), HIGH / NORMAL / LOW mixed 20 / 50 / 30, all pushed at 0 s;
   then, from 2 s (every item overdue), each step pushes one new item (random tenant and
   priority) and pops one, the clock advancing 10 µs per step: every measured pop is an aged
   take. Reported: median, p99 and slowest step (push + pop), in µs. *scan* is the
   former algorithm (each aged pop compares every tenant's head; kept as the reference in
   ``tests/unit/test_scheduling_reference.py``). Tenants: 1, 1,000, 10,000, 100,000
   (``--quick``: up to 10,000).
2. **Scheduler pop, nothing overdue.** The same, with the clock kept before every deadline:
   strict priority and round-robin only, the common case.
3. **Worst single pop.** Every tenant has two NORMAL items and takes one turn (so every lane
   entry is out of date), then the clock jumps past the deadlines: the time of that one pop,
   which refreshes the heap (the cost the turns deferred), next to the scan's.
4. **Route miss.** 1,000 subscriptions (``svc<i>.*.failed`` or ``svc<i>.#``, plus
   ``orders.created``-style literals and one ``#.failed``), and 10,000 event types that are not
   in any cache: :meth:`RouteIndex.match` per type, next to trying every subscription's patterns
   in turn (the former ``_route``). Also a cache hit through :class:`RouteCache`.
5. **Metrics.** 200,000 events, each from a new tenant, over 50,000 types, through
   :meth:`ProcessorMetrics.counts` with the default caps and with caps high enough to count
   everything by name (the former behaviour): µs per ``counts()``, memory held (tracemalloc)
   and the time of one ``snapshot()``.

Figures are wall-clock on whatever machine runs it; compare the two columns of one run.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import time
import tracemalloc
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from rich.console import Console
from rich.table import Table

from eventcenter.domain.priority import Priority
from eventcenter.handlers.metrics import ProcessorMetrics
from eventcenter.handlers.patterns import Pattern, RouteCache, RouteIndex, compile_pattern
from eventcenter.handlers.scheduling import PriorityScheduler
from tests.unit.test_scheduling_reference import ReferenceScheduler

HIGH, NORMAL, LOW = Priority.HIGH, Priority.NORMAL, Priority.LOW
WAITS: dict[Priority, float | None] = {HIGH: 0.25, NORMAL: 0.5, LOW: 1.0}  # the defaults
MIX = (HIGH,) * 2 + (NORMAL,) * 5 + (LOW,) * 3
STEP_S = 1e-5
TENANTS = (1, 1_000, 10_000, 100_000)
QUICK_TENANTS = (1, 1_000, 10_000)
STEP_BUDGET_S = 0.5  # per case: measure steps until this much time has passed...
MAX_STEPS = 2_000  # ...or this many steps (fewer than the aged backlog)


class Scheduler(Protocol):
    def push(self, item: int, priority: Priority, tenant: str, now: float) -> None: ...
    def pop(self, now: float) -> int: ...
    def __len__(self) -> int: ...


Make = Callable[[Mapping[Priority, float | None]], Scheduler]
SCHEDULERS: dict[str, Make] = {
    "heaps": lambda waits: PriorityScheduler[int](waits),
    "scan": lambda waits: ReferenceScheduler[int](waits),
}


# 1-3. the scheduler ----------------------------------------------------------------------------


def filled(make: Make, tenants: int, rng: random.Random) -> tuple[Scheduler, list[str]]:
    names = [f"tenant-{index}" for index in range(tenants)]
    queue = make(WAITS)
    for index in range(max(2 * tenants, 2_000)):
        queue.push(index, rng.choice(MIX), names[index % tenants], 0.0)
    return queue, names


def steps(queue: Scheduler, names: list[str], rng: random.Random, start: float) -> dict[str, Any]:
    """Push one, pop one, until the budget is spent: median, p99 and slowest step in µs.

    The median rather than the mean, so that the figures survive a busy machine (a step that
    was preempted shows in p99 and max only).
    """
    clock = time.perf_counter
    times: list[float] = []
    began = clock()
    now = start
    while len(times) < MAX_STEPS and clock() - began < STEP_BUDGET_S:
        now += STEP_S
        tenant = names[rng.randrange(len(names))]
        priority = rng.choice(MIX)
        before = clock()
        queue.push(len(times), priority, tenant, now)
        queue.pop(now)
        times.append(clock() - before)
    times.sort()
    return {
        "steps": len(times),
        "median_us": times[len(times) // 2] * 1e6,
        "p99_us": times[min(len(times) - 1, len(times) * 99 // 100)] * 1e6,
        "max_us": times[-1] * 1e6,
    }


def measure_pops(tenant_counts: Sequence[int], overdue: bool) -> list[dict[str, Any]]:
    rows = []
    for tenants in tenant_counts:
        row: dict[str, Any] = {"tenants": tenants}
        for name, make in SCHEDULERS.items():
            rng = random.Random(tenants)
            queue, names = filled(make, tenants, rng)
            gc.collect()
            row[name] = steps(queue, names, rng, start=2.0 if overdue else 0.0)
        row["speedup"] = row["scan"]["median_us"] / row["heaps"]["median_us"]
        rows.append(row)
    return rows


def worst_pop(tenant_counts: Sequence[int]) -> list[dict[str, Any]]:
    rows = []
    for tenants in tenant_counts:
        row: dict[str, Any] = {"tenants": tenants}
        for name, make in SCHEDULERS.items():
            queue = make(WAITS)
            for round_ in range(2):
                for index in range(tenants):
                    queue.push(index, NORMAL, f"tenant-{index}", float(round_) * 1e-3)
            for _ in range(tenants):  # every tenant takes its turn: its lane entry moves on
                queue.pop(0.01)
            gc.collect()
            began = time.perf_counter()
            queue.pop(10.0)  # everything overdue: the first look at the heap since the turns
            row[name] = (time.perf_counter() - began) * 1e6
        rows.append(row)
    return rows


# 4. routing -------------------------------------------------------------------------------------


def subscriptions(count: int) -> dict[str, tuple[Pattern, ...]]:
    subs: dict[str, tuple[Pattern, ...]] = {}
    for index in range(count - 1):
        wildcard = f"svc{index}.*.failed" if index % 2 else f"svc{index}.#"
        subs[f"sub-{index}"] = (compile_pattern(wildcard), compile_pattern(f"orders{index}.made"))
    subs["catch-failures"] = (compile_pattern("#.failed"),)
    return subs


def event_types(count: int, rng: random.Random) -> list[str]:
    kinds = ("svc{}.x.failed", "svc{}.created", "orders{}.made", "billing{}.paid", "a{}.b.c.d")
    return [rng.choice(kinds).format(rng.randrange(2_000)) for _ in range(count)]


def measure_routes(count: int = 1_000, types: int = 10_000) -> dict[str, Any]:
    subs = subscriptions(count)
    index = RouteIndex()
    for name, patterns in subs.items():
        index.add(name, patterns)
    rng = random.Random(5)
    missed = event_types(types, rng)  # the index keeps no cache: every call is a miss

    def scan(event_type: str) -> tuple[str, ...]:
        return tuple(
            name for name, patterns in subs.items() if any(p.matches(event_type) for p in patterns)
        )

    began = time.perf_counter()
    indexed = [index.match(event_type) for event_type in missed]
    index_s = time.perf_counter() - began
    sample = missed[: max(1, len(missed) // 10)]  # the scan is slow: a tenth is plenty
    began = time.perf_counter()
    scanned = [scan(event_type) for event_type in sample]
    scan_s = time.perf_counter() - began
    if scanned != indexed[: len(sample)]:
        raise AssertionError("the index and the scan disagree")
    cache = RouteCache(index.match, 10_000)
    hot = missed[-5_000:]
    for event_type in hot:
        cache.lookup(event_type)
    began = time.perf_counter()
    for event_type in hot:
        cache.lookup(event_type)
    hit_s = time.perf_counter() - began
    return {
        "subscriptions": len(subs),
        "types": len(missed),
        "matched_share": sum(1 for names in indexed if names) / len(indexed),
        "index_miss_us": index_s / len(missed) * 1e6,
        "scan_miss_us": scan_s / len(sample) * 1e6,
        "speedup": (scan_s / len(sample)) / (index_s / len(missed)),
        "cache_hit_us": hit_s / len(hot) * 1e6,
    }


# 5. metrics -------------------------------------------------------------------------------------


def measure_metrics(events: int = 200_000) -> dict[str, Any]:
    """Two passes per case: counts() timed on prepared keys, then memory under tracemalloc
    (which slows allocation down too much to time anything), the names made as events come."""
    priorities = list(Priority)
    no_caps = 10**9
    cases: dict[str, Callable[[], ProcessorMetrics]] = {
        "capped": ProcessorMetrics,
        "uncapped": lambda: ProcessorMetrics(
            max_types=no_caps, max_tenants=no_caps, max_series=no_caps
        ),
    }
    keys = [
        (f"type-{index % 50_000}", f"tenant-{index}", priorities[index % 4])
        for index in range(events)
    ]
    result: dict[str, Any] = {"events": events}
    for name, make in cases.items():
        metrics = make()
        gc.collect()
        began = time.perf_counter()
        for type_, tenant, priority in keys:
            metrics.counts(type_, tenant, priority).published += 1
        counting_s = time.perf_counter() - began
        began = time.perf_counter()
        metrics.snapshot({})
        snapshot_s = time.perf_counter() - began
        series = metrics.series_count()
        del metrics
        gc.collect()
        tracemalloc.start()
        metrics = make()
        for index in range(events):
            counts = metrics.counts(
                f"type-{index % 50_000}", f"tenant-{index}", priorities[index % 4]
            )
            counts.published += 1
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        del metrics
        result[name] = {
            "series": series,
            "counts_us": counting_s / events * 1e6,
            "memory_mb": held / 1e6,
            "snapshot_ms": snapshot_s * 1e3,
        }
    return result


# report -----------------------------------------------------------------------------------------


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    grid = Table(title=title, title_justify="left")
    for i, column in enumerate(columns):
        grid.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        grid.add_row(*(fmt(v) for v in row))
    return grid


def render(report: dict[str, Any], console: Console) -> None:
    for key, title in (
        ("pops_overdue", "1. Scheduler push + pop, every pop aged (µs per step)"),
        ("pops_in_turn", "2. Scheduler push + pop, nothing overdue (µs per step)"),
    ):
        console.print(
            table(
                title,
                [
                    "tenants",
                    "heaps median",
                    "p99",
                    "max",
                    "scan median",
                    "p99",
                    "max",
                    "speedup",
                ],
                [
                    [
                        row["tenants"],
                        *(row["heaps"][k] for k in ("median_us", "p99_us", "max_us")),
                        *(row["scan"][k] for k in ("median_us", "p99_us", "max_us")),
                        row["speedup"],
                    ]
                    for row in report[key]
                ],
            )
        )
    console.print(
        table(
            "3. The first aged pop after every tenant took a turn (µs)",
            ["tenants", "heaps", "scan"],
            [[row["tenants"], row["heaps"], row["scan"]] for row in report["worst_pop"]],
        )
    )
    routes = report["routes"]
    console.print(
        table(
            f"4. Route miss, {routes['subscriptions']:,} subscriptions, "
            f"{routes['types']:,} new types ({routes['matched_share']:.0%} matched)",
            ["measure", "µs"],
            [
                ["index miss", routes["index_miss_us"]],
                ["scan miss (every pattern in turn)", routes["scan_miss_us"]],
                ["speedup", routes["speedup"]],
                ["route cache hit", routes["cache_hit_us"]],
            ],
        )
    )
    metrics = report["metrics"]
    console.print(
        table(
            f"5. Metrics, {metrics['events']:,} events from as many tenants, 50,000 types",
            ["caps", "series", "µs per counts()", "memory MB", "snapshot ms"],
            [
                [
                    name,
                    metrics[name]["series"],
                    metrics[name]["counts_us"],
                    metrics[name]["memory_mb"],
                    metrics[name]["snapshot_ms"],
                ]
                for name in ("capped", "uncapped")
            ],
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scaling",
        description="Scheduler, routing and metrics costs as tenants and subscriptions grow.",
    )
    parser.add_argument("--json", action="store_true", help="JSON on stdout, tables on stderr")
    parser.add_argument("--quick", action="store_true", help="at most 10,000 tenants")
    args = parser.parse_args(argv)
    console = Console(stderr=args.json)
    if not console.is_terminal:
        console.width = 120
    tenants = QUICK_TENANTS if args.quick else TENANTS
    started = time.perf_counter()
    report: dict[str, Any] = {
        "config": {"python": sys.version.split()[0], "cpus": os.cpu_count(), "tenants": tenants}
    }
    with console.status("1/5 scheduler, overdue"):
        report["pops_overdue"] = measure_pops(tenants, overdue=True)
    with console.status("2/5 scheduler, in turn"):
        report["pops_in_turn"] = measure_pops(tenants, overdue=False)
    with console.status("3/5 scheduler, worst pop"):
        report["worst_pop"] = worst_pop(tenants)
    with console.status("4/5 routes"):
        report["routes"] = measure_routes()
    with console.status("5/5 metrics"):
        report["metrics"] = measure_metrics()
    report["config"]["seconds"] = round(time.perf_counter() - started, 1)
    render(report, console)
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
