"""Throughput, latency and persistence figures of the event processor, in one run.

Run from the repository root::

    .venv/bin/python -m bench.processor [--quick] [--json] [--pg-url URL] [--profile]

What is measured (every section in the same process and run, so ratios are fair):

1. **Throughput.** N events (50,000; ``--quick`` 5,000) of one type, four tenants and mixed
   priorities, published back to back, then waited for. The *bare loop* does only the work no
   event router can avoid: build and validate the envelope (``Event.create``), ``put`` it on one
   ``asyncio.Queue``, a consumer task ``get``s it and awaits a no-op ``handler(event, ctx)``. The
   queue is bounded by the processor's ``max_queued`` so both apply the same backpressure. The
   *processor* is an :class:`EventProcessor` with default settings, in-memory ports and one no-op
   handler, fed with ``await publish(...)`` and ``await join()``. Each is run 3 times; the best
   run counts. ``ratio`` is processor/bare (target >= 0.5).
2. **Latency, saturated.** One more run of each with a handler that records
   ``perf_counter() - t_publish``. ``t_publish`` is taken just before the event is built and
   published and kept in a list indexed by the ``seq`` field of the payload (every payload
   carries ``seq``, in both systems, so they validate the same bytes). The publisher runs ahead
   of the consumer here, so these figures are mostly queueing delay (about ``max_queued`` /
   rate); they show the cost of a full queue, not the processor's responsiveness. The
   processor's own ``snapshot().dispatch_latency`` (push into its scheduler to handler start,
   last 4096 deliveries) is shown next to it.
3. **Latency at an offered load of 10,000 events/s.** An open-loop generator publishes on a
   fixed schedule (event i is due at ``start + i/rate``): each loop tick it publishes every
   event that is due, then yields with ``asyncio.sleep(0)``; for 3 s (``--quick`` 1 s). Shown:
   the achieved rate and p50/p99/max of publish -> handler entry (target p99 < 5 ms for the
   processor), and p99 measured from the *scheduled* time, which also counts the time the
   generator itself fell behind (coordinated omission).
4. **Persisted decisions per second** on SQLite (a temporary file) and PostgreSQL (a fresh
   schema, dropped afterwards; reported as unavailable, with the reason, when the server cannot
   be reached). *baseline*: eventsourcing's plain way, ``log.decide(d); app.save(log)`` once per
   decision. *writer*: the :class:`StoreWriter` with M concurrent ``record_decision`` calls
   (``asyncio.gather``), which it batches into few saves (``saves`` column). M = 5,000
   (``--quick`` 1,000). Both histories are read back and their decision counts checked.
   Target: writer >= 2,000 decisions/s on PostgreSQL.
5. **Aggregate load time.** A ProcessorLog with K events (5,000; ``--quick`` 1,000), written
   100 decisions per save, in an application snapshotting every 100 events and in one whose
   interval (10**9) never triggers, both without cache; median of 5 ``repository.get`` on
   SQLite. ``events read`` is K minus the version of the latest snapshot.

Output: rich tables, one per section, then a summary of the targets (met / not met). With
``--json`` the tables go to stderr and stdout carries only one JSON document with every figure
(``targets[].met`` is true, false, or null when not measured). ``--profile`` adds a cProfile of
one processor throughput run (top functions by own time, eventcenter code first).
``config.code`` holds sha256 prefixes of the measured modules: compare runs only when they match
(the files are edited while people work; a run measures whatever was on disk at import).

Sizes are chosen to finish in about a minute on a 2-core machine (``--quick``: ~15 s). Figures
are wall-clock and vary by a few percent between runs; compare ratios rather than absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import hashlib
import importlib
import io
import json
import math
import os
import pstats
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar
from uuid import UUID

from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.exc import SQLAlchemyError

from eventcenter.domain.aggregates import ProcessorLog
from eventcenter.domain.decisions import Decision
from eventcenter.domain.event import EnvelopeLimits, Event
from eventcenter.domain.priority import Priority
from eventcenter.handlers.config import ProcessorSettings
from eventcenter.handlers.memory import MemoryDeadLetters, MemoryDecisionLog
from eventcenter.handlers.processor import EventProcessor
from eventcenter.storage.application import CenterApplication
from eventcenter.storage.writer import StoreWriter

P = ParamSpec("P")
T = TypeVar("T")

PG_URL_ENV = "EVENTCENTER_TEST_PG_URL"
DEFAULT_PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
CONNECT_TIMEOUT_S = 3

EVENT_TYPE = "bench.tick"
TENANTS = ("acme", "globex", "initech", "umbrella")
#: Share of each priority in the stream (CRITICAL is rare, as it starves the others).
PRIORITY_MIX = (
    (Priority.CRITICAL, 0.05),
    (Priority.HIGH, 0.20),
    (Priority.NORMAL, 0.50),
    (Priority.LOW, 0.25),
)
REPEATS = 3
OFFERED_RATE = 10_000.0
SNAPSHOT_INTERVAL = 100
NO_SNAPSHOTS = 10**9
LOAD_BATCH = 100
LOAD_SAMPLES = 5

#: The modules whose code decides the processor's figures (fingerprinted in the report).
MEASURED_MODULES = (
    "eventcenter.handlers.processor",
    "eventcenter.handlers.scheduling",
    "eventcenter.handlers.dedupe",
    "eventcenter.handlers.metrics",
    "eventcenter.domain.event",
)

TARGET_RATIO = 0.5
TARGET_P99_MS = 5.0
TARGET_PG_DECISIONS = 2_000.0


@dataclass(frozen=True)
class Sizes:
    events: int  # N, section 1 and 2
    offered_seconds: float  # section 3
    decisions: int  # M, section 4
    history: int  # K, section 5


DEFAULT_SIZES = Sizes(events=50_000, offered_seconds=3.0, decisions=5_000, history=5_000)
QUICK_SIZES = Sizes(events=5_000, offered_seconds=1.0, decisions=1_000, history=1_000)


# the event stream ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Spec:
    """One event to publish; both systems receive the same list."""

    tenant: str
    priority: Priority
    payload: dict[str, Any]


def event_stream(count: int, seed: int = 7) -> list[Spec]:
    """``count`` events over four tenants and mixed priorities; payload ``seq`` is the index."""
    rng = random.Random(seed)
    priorities = [p for p, _ in PRIORITY_MIX]
    weights = [w for _, w in PRIORITY_MIX]
    chosen = rng.choices(priorities, weights, k=count)
    return [
        Spec(
            tenant=TENANTS[i % len(TENANTS)],
            priority=chosen[i],
            payload={"seq": i, "service": "checkout", "latency_ms": 12.5, "region": "eu-west-1"},
        )
        for i in range(count)
    ]


class Probe:
    """Publish times and handler-entry latencies, indexed by the payload's ``seq``."""

    def __init__(self, count: int) -> None:
        self.sent = [0.0] * count
        self.latency = [math.nan] * count

    async def handler(self, event: Event, ctx: Any) -> None:
        seq = event.payload["seq"]
        self.latency[seq] = time.perf_counter() - self.sent[seq]

    def summary(self, upto: int | None = None) -> dict[str, float]:
        return latency_summary(self.latency[:upto])


async def noop_handler(event: Event, ctx: Any) -> None:
    return None


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_summary(samples: Sequence[float]) -> dict[str, float]:
    """count, p50/p99/max in milliseconds; ``missing`` counts events never seen by a handler."""
    seen = sorted(s for s in samples if not math.isnan(s))
    missing = len(samples) - len(seen)
    if not seen:
        return {"count": 0, "missing": missing, "p50_ms": -1.0, "p99_ms": -1.0, "max_ms": -1.0}
    return {
        "count": len(seen),
        "missing": missing,
        "p50_ms": round(percentile(seen, 0.50) * 1000, 3),
        "p99_ms": round(percentile(seen, 0.99) * 1000, 3),
        "max_ms": round(seen[-1] * 1000, 3),
    }


# the two systems under test -------------------------------------------------------------------


Handler = Callable[[Event, Any], Awaitable[None]]
PublishOne = Callable[[Spec], Awaitable[None]]


class BareLoop:
    """The unavoidable work: validate the envelope, one queue, one consumer, one handler call."""

    def __init__(self, handler: Handler, settings: ProcessorSettings) -> None:
        self.handler = handler
        self.limits: EnvelopeLimits = settings.limits
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=settings.max_queued)
        self._consumer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._consumer = asyncio.create_task(self._consume())

    async def _consume(self) -> None:
        queue, handler = self.queue, self.handler
        while True:
            event = await queue.get()
            await handler(event, None)
            queue.task_done()

    async def publish(self, spec: Spec) -> None:
        event = Event.create(
            EVENT_TYPE,
            spec.payload,
            tenant=spec.tenant,
            priority=spec.priority,
            limits=self.limits,
        )
        await self.queue.put(event)

    async def join(self) -> None:
        await self.queue.join()

    async def stop(self) -> None:
        if self._consumer is not None:
            self._consumer.cancel()
            with suppress(asyncio.CancelledError):
                await self._consumer


class ProcessorUnderTest:
    """An EventProcessor with default settings, in-memory ports and one handler."""

    def __init__(self, handler: Handler, settings: ProcessorSettings) -> None:
        self.processor = EventProcessor(
            settings, decisions=MemoryDecisionLog(), dead_letters=MemoryDeadLetters()
        )
        self.processor.subscribe(EVENT_TYPE, handler, name="bench")

    async def start(self) -> None:
        await self.processor.start()

    async def publish(self, spec: Spec) -> None:
        await self.processor.publish(
            EVENT_TYPE, spec.payload, tenant=spec.tenant, priority=spec.priority
        )

    async def join(self) -> None:
        await self.processor.join()

    async def stop(self) -> None:
        report = await self.processor.stop()
        if not report.clean:
            raise RuntimeError(f"processor stopped with leftovers: {report}")


System = BareLoop | ProcessorUnderTest
SYSTEMS: dict[str, Callable[[Handler, ProcessorSettings], System]] = {
    "bare": BareLoop,
    "processor": ProcessorUnderTest,
}


async def closed_loop(system: System, specs: Sequence[Spec], sent: list[float]) -> float:
    """Publish every spec back to back, wait until all are handled; returns elapsed seconds."""
    await system.start()
    clock = time.perf_counter
    publish = system.publish
    started = clock()
    for i, spec in enumerate(specs):
        sent[i] = clock()
        await publish(spec)
    await system.join()
    elapsed = clock() - started
    await system.stop()
    return elapsed


async def open_loop(
    system: System, specs: Sequence[Spec], rate: float, sent: list[float]
) -> tuple[float, list[float]]:
    """Publish spec i at ``start + i/rate`` (catching up in bursts); returns (seconds, due times).

    The generator never waits for the handler: an overloaded system shows as latency, and a
    publisher that falls behind shows in the latency from the scheduled time.
    """
    await system.start()
    clock = time.perf_counter
    publish = system.publish
    count = len(specs)
    started = clock()
    scheduled = [started + i / rate for i in range(count)]
    i = 0
    while i < count:
        due = min(count, int((clock() - started) * rate) + 1)
        while i < due:
            sent[i] = clock()
            await publish(specs[i])
            i += 1
        await asyncio.sleep(0)
    publishing = clock() - started
    await system.join()
    await system.stop()
    return publishing, scheduled


def fresh_run(func: Callable[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run one measurement on a new event loop after a full collection (same start for all)."""
    gc.collect()
    return asyncio.run(func(*args, **kwargs))


# section 1 and 2 ------------------------------------------------------------------------------


def measure_throughput(specs: Sequence[Spec], settings: ProcessorSettings) -> dict[str, Any]:
    """Best of REPEATS closed-loop runs per system, interleaved so drift hits both alike."""
    runs: dict[str, list[float]] = {name: [] for name in SYSTEMS}
    sent = [0.0] * len(specs)
    for _ in range(REPEATS):
        for name, build in SYSTEMS.items():
            elapsed = fresh_run(closed_loop, build(noop_handler, settings), specs, sent)
            runs[name].append(len(specs) / elapsed)
    bare, processor = max(runs["bare"]), max(runs["processor"])
    return {
        "events": len(specs),
        "repeats": REPEATS,
        "best_of": REPEATS,
        "bare_eps": round(bare),
        "processor_eps": round(processor),
        "ratio": round(processor / bare, 3),
        "runs_eps": {name: [round(r) for r in rates] for name, rates in runs.items()},
        "per_event_us": {
            "bare": round(1e6 / bare, 2),
            "processor": round(1e6 / processor, 2),
        },
    }


def measure_saturated_latency(specs: Sequence[Spec], settings: ProcessorSettings) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, build in SYSTEMS.items():
        probe = Probe(len(specs))
        system = build(probe.handler, settings)
        elapsed = fresh_run(closed_loop, system, specs, probe.sent)
        entry: dict[str, Any] = {"eps": round(len(specs) / elapsed), **probe.summary()}
        if isinstance(system, ProcessorUnderTest):
            entry["dispatch_latency"] = system.processor.snapshot().dispatch_latency
        result[name] = entry
    return result


# section 3 ------------------------------------------------------------------------------------


def measure_offered_load(
    specs: Sequence[Spec], settings: ProcessorSettings, rate: float
) -> dict[str, Any]:
    result: dict[str, Any] = {"offered_eps": rate, "events": len(specs)}
    for name, build in SYSTEMS.items():
        probe = Probe(len(specs))
        system = build(probe.handler, settings)
        seconds, scheduled = fresh_run(open_loop, system, specs, rate, probe.sent)
        from_schedule = [
            lat + sent - due
            for lat, sent, due in zip(probe.latency, probe.sent, scheduled, strict=True)
        ]
        entry: dict[str, Any] = {
            "achieved_eps": round(len(specs) / seconds),
            **probe.summary(),
            "p99_from_schedule_ms": latency_summary(from_schedule)["p99_ms"],
        }
        if isinstance(system, ProcessorUnderTest):
            entry["dispatch_latency"] = system.processor.snapshot().dispatch_latency
        result[name] = entry
    return result


# section 4 ------------------------------------------------------------------------------------


def decision_stream(count: int) -> list[Decision]:
    return [
        Decision(
            kind="frequency.reduce",
            reason=f"p99 latency 480 ms over the 250 ms threshold (sample {i})",
            correlation_id=f"corr-{i}",
            tenant=TENANTS[i % len(TENANTS)],
            details={"factor": 0.52, "service": "checkout"},
        )
        for i in range(count)
    ]


def decisions_stored(app: CenterApplication, name: str) -> int:
    log: ProcessorLog = app.repository.get(ProcessorLog.create_id(name))
    return int(log.decisions)


def baseline_decisions(url: str, decisions: Sequence[Decision]) -> dict[str, Any]:
    """eventsourcing's plain way: one ``app.save`` per decision."""
    app = CenterApplication(url)
    app.create_tables()
    try:
        log = ProcessorLog("bench-baseline")
        app.save(log)
        started = time.perf_counter()
        for decision in decisions:
            log.decide(decision)
            app.save(log)
        elapsed = time.perf_counter() - started
        stored = decisions_stored(app, "bench-baseline")
    finally:
        app.close()
    return {
        "decisions_per_s": round(len(decisions) / elapsed),
        "seconds": round(elapsed, 3),
        "saves": len(decisions),
        "stored": stored,
    }


def writer_decisions(url: str, decisions: Sequence[Decision]) -> dict[str, Any]:
    """The StoreWriter under M concurrent callers (it batches them into few saves)."""
    app = CenterApplication(url)
    app.create_tables()
    writer = StoreWriter(app, "bench-writer")
    writer.open()
    try:

        async def record_all() -> float:
            started = time.perf_counter()
            await asyncio.gather(*(writer.record_decision(d) for d in decisions))
            return time.perf_counter() - started

        elapsed = fresh_run(record_all)
        saves = writer.saves
        stored = decisions_stored(app, "bench-writer")
    finally:
        writer.close()
        app.close()
    return {
        "decisions_per_s": round(len(decisions) / elapsed),
        "seconds": round(elapsed, 3),
        "saves": saves,
        "batch_max": writer.batch_max,
        "stored": stored,
    }


def persistence_on(url: str, decisions: Sequence[Decision]) -> dict[str, Any]:
    baseline = baseline_decisions(url, decisions)
    writer = writer_decisions(url, decisions)
    ok = baseline["stored"] == writer["stored"] == len(decisions)
    return {
        "status": "measured",
        "decisions": len(decisions),
        "baseline": baseline,
        "writer": writer,
        "ratio": round(writer["decisions_per_s"] / baseline["decisions_per_s"], 2),
        "all_stored": ok,
    }


def sqlite_url(directory: Path, name: str) -> str:
    return f"sqlite:///{directory / name}"


def with_search_path(base_url: str, schema: str) -> str:
    separator = "&" if "?" in base_url else "?"
    return f"{base_url}{separator}options=-csearch_path%3D{schema}"


def shown(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


@contextmanager
def postgres_schema(base_url: str) -> Iterator[str]:
    """A fresh schema on the server; yields the URL that uses it, drops it afterwards.

    Raises SQLAlchemyError when the server cannot be reached (the caller reports it).
    """
    engine: Engine = create_engine(
        base_url,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
        isolation_level="AUTOCOMMIT",
        pool_size=1,
    )
    schema = f"bench_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        with engine.connect() as connection:
            connection.execute(text(f"CREATE SCHEMA {schema}"))
        try:
            yield with_search_path(base_url, schema)
        finally:
            with engine.connect() as connection:
                connection.execute(text("SET lock_timeout = '10s'"))
                connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
    finally:
        engine.dispose()


def measure_persistence(pg_url: str, decisions: Sequence[Decision]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-decisions-") as directory:
        result["sqlite"] = persistence_on(sqlite_url(Path(directory), "center.db"), decisions)
    try:
        with postgres_schema(pg_url) as url:
            result["postgresql"] = persistence_on(url, decisions)
    except SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        result["postgresql"] = {"status": "unavailable", "url": shown(pg_url), "reason": reason}
    return result


# section 5 ------------------------------------------------------------------------------------


def write_history(app: CenterApplication, name: str, events: int, interval: int) -> UUID:
    """A ProcessorLog of ``events`` events (Opened + decisions), saved LOAD_BATCH at a time,
    snapshotted every ``interval`` events as the store writer does."""
    log = ProcessorLog(name)
    decision = decision_stream(1)[0]
    last_snapshot = 0
    for version in range(2, events + 1):
        log.decide(decision)
        if version % LOAD_BATCH == 0:
            app.save(log)
            if log.version - last_snapshot >= interval:
                app.snapshot_processor_log(log)
                last_snapshot = log.version
    app.save(log)
    if log.version != events:
        raise RuntimeError(f"history has {log.version} events, expected {events}")
    return log.id


def time_loads(app: CenterApplication, aggregate_id: UUID) -> float:
    """Median milliseconds of LOAD_SAMPLES ``repository.get`` (after one warm-up)."""
    app.repository.get(aggregate_id)
    samples = []
    for _ in range(LOAD_SAMPLES):
        started = time.perf_counter()
        app.repository.get(aggregate_id)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def load_case(url: str, interval: int, events: int) -> dict[str, Any]:
    app = CenterApplication(url, cache_size=0)
    app.create_tables()
    try:
        started = time.perf_counter()
        aggregate_id = write_history(app, "bench-load", events, interval)
        written = time.perf_counter() - started
        snapshots = list(app.snapshots.get(aggregate_id)) if app.snapshots is not None else []
        latest = max((s.originator_version for s in snapshots), default=0)
        return {
            "snapshot_interval": interval,
            "snapshots": len(snapshots),
            "latest_snapshot_version": latest,
            "events_read": events - latest,
            "load_ms": round(time_loads(app, aggregate_id), 3),
            "write_s": round(written, 3),
        }
    finally:
        app.close()


def measure_load_time(events: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-load-") as directory:
        base = Path(directory)
        with_snapshots = load_case(sqlite_url(base, "snap.db"), SNAPSHOT_INTERVAL, events)
        without = load_case(sqlite_url(base, "plain.db"), NO_SNAPSHOTS, events)
    return {
        "events": events,
        "backend": "sqlite",
        "with_snapshots": with_snapshots,
        "without_snapshots": without,
        "speedup": round(without["load_ms"] / with_snapshots["load_ms"], 1),
    }


# profiling ------------------------------------------------------------------------------------


def profile_processor(specs: Sequence[Spec], settings: ProcessorSettings, top: int = 25) -> str:
    """cProfile of one processor throughput run: eventcenter functions, then all, by own time."""
    profiler = cProfile.Profile()
    sent = [0.0] * len(specs)
    profiler.enable()
    fresh_run(closed_loop, ProcessorUnderTest(noop_handler, settings), specs, sent)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).sort_stats("tottime")
    out.write("== eventcenter code, by own time ==\n")
    stats.print_stats(r"eventcenter/(handlers|domain|center)/", top)
    out.write("== everything, by own time ==\n")
    stats.print_stats(top)
    return out.getvalue()


# report ---------------------------------------------------------------------------------------


def target(name: str, goal: str, value: Any, met: bool | None) -> dict[str, Any]:
    return {"name": name, "target": goal, "value": value, "met": met}


def targets_of(report: dict[str, Any]) -> list[dict[str, Any]]:
    ratio = report["throughput"]["ratio"]
    p99 = report["offered_load"]["processor"]["p99_ms"]
    achieved = report["offered_load"]["processor"]["achieved_eps"]
    pg = report["persistence"]["postgresql"]
    pg_rate = pg["writer"]["decisions_per_s"] if pg["status"] == "measured" else None
    load = report["load_time"]["with_snapshots"]
    stored = all(
        r.get("all_stored", True) for r in report["persistence"].values() if "all_stored" in r
    )
    return [
        target("processor / bare throughput", f">= {TARGET_RATIO}", ratio, ratio >= TARGET_RATIO),
        target(
            "processor p99 at 10,000 events/s",
            f"< {TARGET_P99_MS} ms",
            p99,
            p99 < TARGET_P99_MS,
        ),
        target(
            "processor keeps up with 10,000 events/s",
            ">= 95% achieved",
            achieved,
            achieved >= 0.95 * OFFERED_RATE,
        ),
        target(
            "PostgreSQL decisions/s (writer)",
            f">= {TARGET_PG_DECISIONS:,.0f}",
            pg_rate if pg_rate is not None else "unavailable",
            None if pg_rate is None else pg_rate >= TARGET_PG_DECISIONS,
        ),
        target(
            "snapshotted load reads < interval events",
            f"< {SNAPSHOT_INTERVAL}",
            load["events_read"],
            load["events_read"] < SNAPSHOT_INTERVAL,
        ),
        target("every decision stored and counted", "all", stored, stored),
    ]


def fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
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
    t = report["throughput"]
    console.print(
        table(
            f"1. Throughput, {t['events']:,} events, best of {t['best_of']} (events/s)",
            ["system", "best events/s", "µs/event", "runs"],
            [
                [name, t[f"{name}_eps"], t["per_event_us"][name], str(t["runs_eps"][name])]
                for name in SYSTEMS
            ]
            + [["ratio processor/bare", t["ratio"], "", f"target >= {TARGET_RATIO}"]],
        )
    )
    lat = report["saturated_latency"]
    console.print(
        table(
            "2. Latency publish -> handler, saturated closed loop (ms; mostly queueing)",
            ["system", "events/s", "p50", "p99", "max", "dispatch p50", "dispatch p99"],
            [
                [
                    name,
                    e["eps"],
                    e["p50_ms"],
                    e["p99_ms"],
                    e["max_ms"],
                    e.get("dispatch_latency", {}).get("p50_ms", "-"),
                    e.get("dispatch_latency", {}).get("p99_ms", "-"),
                ]
                for name, e in lat.items()
            ],
        )
    )
    off = report["offered_load"]
    console.print(
        table(
            f"3. Offered load {off['offered_eps']:,.0f} events/s, {off['events']:,} events (ms)",
            ["system", "achieved/s", "p50", "p99", "max", "p99 from schedule", "dispatch p99"],
            [
                [
                    name,
                    off[name]["achieved_eps"],
                    off[name]["p50_ms"],
                    off[name]["p99_ms"],
                    off[name]["max_ms"],
                    off[name]["p99_from_schedule_ms"],
                    off[name].get("dispatch_latency", {}).get("p99_ms", "-"),
                ]
                for name in SYSTEMS
            ],
        )
    )
    rows: list[list[Any]] = []
    for backend, p in report["persistence"].items():
        if p["status"] != "measured":
            rows.append([backend, "unavailable", "", "", "", p["reason"]])
            continue
        b, w = p["baseline"], p["writer"]
        rows.append([f"{backend} baseline", b["decisions_per_s"], b["saves"], b["seconds"], "", ""])
        rows.append(
            [
                f"{backend} writer",
                w["decisions_per_s"],
                w["saves"],
                w["seconds"],
                p["ratio"],
                "stored ok" if p["all_stored"] else "COUNT MISMATCH",
            ]
        )
    decisions = report["config"]["sizes"]["decisions"]
    console.print(
        table(
            f"4. Persisted decisions, M = {decisions:,}",
            ["case", "decisions/s", "saves", "seconds", "writer/baseline", "note"],
            rows,
        )
    )
    load = report["load_time"]
    console.print(
        table(
            f"5. Load a ProcessorLog of {load['events']:,} events on SQLite (median of "
            f"{LOAD_SAMPLES}, no cache); speedup {load['speedup']}x",
            ["case", "interval", "snapshots", "latest snapshot", "events read", "load ms"],
            [
                [
                    name.replace("_", " "),
                    c["snapshot_interval"],
                    c["snapshots"],
                    c["latest_snapshot_version"],
                    c["events_read"],
                    c["load_ms"],
                ]
                for name, c in (
                    ("with_snapshots", load["with_snapshots"]),
                    ("without_snapshots", load["without_snapshots"]),
                )
            ],
        )
    )
    console.print(
        table(
            f"Targets (total {report['config']['seconds']:.1f} s)",
            ["target", "goal", "value", "met"],
            [[t["name"], t["target"], t["value"], _met(t["met"])] for t in report["targets"]],
        )
    )


def _met(met: bool | None) -> str:
    return "not measured" if met is None else ("met" if met else "NOT MET")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.processor",
        description="Throughput, latency and persistence figures of the event processor.",
    )
    parser.add_argument("--json", action="store_true", help="JSON on stdout, tables on stderr")
    parser.add_argument("--quick", action="store_true", help="small sizes (about 15 s)")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(PG_URL_ENV, DEFAULT_PG_URL),
        help=f"PostgreSQL server (default: ${PG_URL_ENV} or {DEFAULT_PG_URL})",
    )
    parser.add_argument(
        "--profile", action="store_true", help="also cProfile one processor throughput run"
    )
    return parser.parse_args(argv)


def code_fingerprint() -> dict[str, str]:
    """sha256 prefixes of the measured modules: runs are comparable only when these match."""
    fingerprint = {}
    for name in MEASURED_MODULES:
        source = Path(str(importlib.import_module(name).__file__)).read_bytes()
        fingerprint[name.removeprefix("eventcenter.")] = hashlib.sha256(source).hexdigest()[:12]
    return fingerprint


def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    sizes = QUICK_SIZES if args.quick else DEFAULT_SIZES
    settings = ProcessorSettings()
    started = time.perf_counter()
    report: dict[str, Any] = {
        "config": {
            "sizes": sizes.__dict__,
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
            "event_type": EVENT_TYPE,
            "tenants": list(TENANTS),
            "priority_mix": {p.name: w for p, w in PRIORITY_MIX},
            "processor_settings": settings.model_dump(exclude={"limits"}),
            "code": code_fingerprint(),
        }
    }
    specs = event_stream(sizes.events)
    with console.status("1/5 throughput"):
        report["throughput"] = measure_throughput(specs, settings)
    with console.status("2/5 saturated latency"):
        report["saturated_latency"] = measure_saturated_latency(specs, settings)
    with console.status("3/5 latency at 10,000 events/s"):
        offered = event_stream(int(OFFERED_RATE * sizes.offered_seconds), seed=11)
        report["offered_load"] = measure_offered_load(offered, settings, OFFERED_RATE)
    with console.status("4/5 persisted decisions"):
        report["persistence"] = measure_persistence(args.pg_url, decision_stream(sizes.decisions))
    with console.status("5/5 aggregate load time"):
        report["load_time"] = measure_load_time(sizes.history)
    report["config"]["seconds"] = round(time.perf_counter() - started, 1)
    report["targets"] = targets_of(report)
    if args.profile:
        with console.status("profiling the processor"):
            report["profile"] = profile_processor(specs, settings)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(stderr=args.json)
    if not console.is_terminal:
        console.width = 120  # rich assumes 80 columns when piped; the tables need more
    report = run(args, console)
    render(report, console)
    if "profile" in report:
        console.print(report["profile"], markup=False, highlight=False)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
