"""Throughput, latency and persistence figures of the event processor, in one run.

Run from the repository root::

    .venv/bin/python -m bench.processor [--quick] [--json] [--pg-url URL] [--profile]

What is measured (every section in the same process and run, so ratios are fair):

1. **Throughput in memory.** N events (50,000; ``--quick`` 5,000) of one type at mixed
   priorities, published back to back, then waited for, in three cases: one tenant; tenants
   drawn at random from 100,000 (10,000 events; ``--quick`` 2,000); and a nested payload of
   about 10 KB (3,000 events; ``--quick`` 500). The *bare
   loop* does only the work no event router can avoid: build and validate the envelope
   (``Event.create``), ``put`` it on one ``asyncio.Queue``, a consumer task ``get``s it and
   awaits a no-op ``handler(event, ctx)``. The queue is bounded by the processor's
   ``max_queued`` so both apply the same backpressure. The *processor* is an
   :class:`EventProcessor` with default settings, in-memory ports (no store) and one no-op
   handler, fed with ``await publish(...)`` and ``await join()``. Each is run 3 times,
   interleaved; the best run counts (a case whose run takes over 15 s runs once). ``ratio`` is
   processor/bare (target >= 0.6).
2. **Latency, saturated.** One more run of each (four tenants) with a handler that records
   ``perf_counter() - t_publish``. ``t_publish`` is taken just before the event is built and
   published and kept in a list indexed by the ``seq`` field of the payload (every payload
   carries ``seq``, in both systems, so they validate the same bytes). The publisher runs ahead
   of the consumer here, so these figures are mostly queueing delay (about ``max_queued`` /
   rate); they show the cost of a full queue, not the processor's responsiveness. The
   processor's own ``snapshot().dispatch_latency`` (push into its scheduler to handler start,
   last 4096 deliveries) is shown next to it.
3. **Latency at an offered load of 10,000 events/s, in memory.** An open-loop generator
   publishes on a fixed schedule (event i is due at ``start + i/rate``): each loop tick it
   publishes every event that is due, then yields with ``asyncio.sleep(0)``; for 3 s
   (``--quick`` 1 s). Shown: the achieved rate and p50/p99/max of publish -> handler entry
   (target p99 < 5 ms for the processor), and p99 measured from the *scheduled* time, which
   also counts the time the generator itself fell behind (coordinated omission).
4. to 6. **Durable**, on SQLite and PostgreSQL (see :mod:`bench.durable`): a real
   EventCenter, publish -> handled throughput with 64 concurrent publishers, with
   ``publish_batch`` of 250 and one publish at a time, next to raw batched inserts of the same
   rows (20,000 events, ``--quick`` 2,000; one at a time: 500, ``--quick`` 100; target ratio
   >= 0.3, >= 10,000 events/s on PostgreSQL); p99 publish -> handler entry
   at an offered 5,000 events/s for 2 s (``--quick`` 0.5 s; target < 10 ms), and at 1,000
   events/s for comparison; decisions/s with one subscription that calls ``ctx.decide`` once per
   event (3,000 events, ``--quick`` 500; target >= 2,000/s on PostgreSQL).
7. **Persisted decisions per second** on SQLite (a temporary file) and PostgreSQL (a fresh
   schema, dropped afterwards; reported as unavailable, with the reason, when the server cannot
   be reached). *baseline*: eventsourcing's plain way, ``log.decide(d); app.save(log)`` once per
   decision. *writer*: the :class:`StoreWriter` with M concurrent ``record_decision`` calls
   (``asyncio.gather``), which it batches into few saves (``saves`` column). M = 2,000
   (``--quick`` 300). Both histories are read back and their decision counts checked.
   Target: writer >= 2,000 decisions/s on PostgreSQL.
8. **Aggregate load time.** A ProcessorLog with K events (5,000; ``--quick`` 1,000), written
   100 decisions per save, in an application snapshotting every 100 events and in one whose
   interval (10**9) never triggers, both without cache; median of 5 ``repository.get`` on
   SQLite. ``events read`` is K minus the version of the latest snapshot.

Output: rich tables, one per section, then a summary of the targets (met / not met). With
``--json`` the tables go to stderr and stdout carries only one JSON document with every figure
(``targets[].met`` is true, false, or null when not measured). ``--profile`` adds cProfiles of
one in-memory processor run and of one durable concurrent run on each backend (loop thread and
writer thread apart), by own time. ``config.code`` holds sha256 prefixes of the measured
modules: compare runs only when they match (the files are edited while people work; a run
measures whatever was on disk at import). ``config.load`` holds the machine's load averages
at the start and the end: other work on the cores moves every figure.

Sizes are chosen to finish in about three minutes on a 2-core machine (``--quick``: about
40 s). Figures are wall-clock and vary between runs, the durable ones most (they share the
cores with the database server); compare ratios rather than absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from rich.console import Console

from bench import durable
from bench.common import (
    BACKENDS,
    EVENT_TYPE,
    PRIORITY_MIX,
    TENANTS,
    Probe,
    Spec,
    add_pg_url,
    code_fingerprint,
    event_stream,
    fresh_run,
    latency_summary,
    machine_load,
    nested_payload,
    noop_handler,
    postgres_reason,
    postgres_schema,
    print_json,
    report_parser,
    run_report,
    sqlite_url,
    table,
    targets_table,
    unavailable,
)
from eventcenter.domain.aggregates import ProcessorLog
from eventcenter.domain.decisions import Decision
from eventcenter.domain.event import EnvelopeLimits, Event
from eventcenter.handlers.config import ProcessorSettings
from eventcenter.handlers.memory import MemoryDeadLetters, MemoryDecisionLog
from eventcenter.handlers.processor import EventProcessor
from eventcenter.storage.application import CenterApplication
from eventcenter.storage.writer import StoreWriter

REPEATS = 3
OFFERED_RATE = 10_000.0
MANY_TENANTS = 100_000
SNAPSHOT_INTERVAL = 100
NO_SNAPSHOTS = 10**9
LOAD_BATCH = 100
LOAD_SAMPLES = 5

#: The modules whose code decides the processor's figures (fingerprinted in the report).
MEASURED_MODULES = (
    "eventcenter.handlers.processor",
    "eventcenter.handlers.admission",
    "eventcenter.handlers.backlog",
    "eventcenter.handlers.delivery",
    "eventcenter.handlers.scheduling",
    "eventcenter.handlers.dedupe",
    "eventcenter.handlers.metrics",
    "eventcenter.domain.event",
    "eventcenter.storage.writer",
    "eventcenter.storage.queue",
    "eventcenter.storage.inbox",
    "eventcenter.center.app",
)

TARGET_RATIO = 0.6
TARGET_P99_MS = 5.0
TARGET_PG_DECISIONS = 2_000.0


@dataclass(frozen=True)
class Sizes:
    events: int  # N, section 1 (one tenant) and section 2
    tenant_events: int  # section 1, tenants drawn from 100,000
    payload_events: int  # section 1, the 10 KB payload case
    offered_seconds: float  # section 3
    durable_events: int  # section 4: concurrent, batch and the raw baseline
    sequential_events: int  # section 4: one publish at a time
    durable_offered_seconds: float  # section 5
    decide_events: int  # section 6
    decisions: int  # M, section 7
    history: int  # K, section 8


DEFAULT_SIZES = Sizes(
    events=50_000,
    tenant_events=10_000,
    payload_events=3_000,
    offered_seconds=3.0,
    durable_events=20_000,
    sequential_events=500,
    durable_offered_seconds=2.0,
    decide_events=3_000,
    decisions=2_000,
    history=5_000,
)
QUICK_SIZES = Sizes(
    events=5_000,
    tenant_events=2_000,
    payload_events=500,
    offered_seconds=1.0,
    durable_events=2_000,
    sequential_events=100,
    durable_offered_seconds=0.5,
    decide_events=500,
    decisions=300,
    history=1_000,
)
#: A case whose run takes longer than this is not repeated (keeps a pathological case bounded).
SLOW_RUN_S = 15.0


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


# sections 1 and 2 ----------------------------------------------------------------------------


def throughput_case(specs: Sequence[Spec], settings: ProcessorSettings) -> dict[str, Any]:
    """Best of REPEATS closed-loop runs per system, interleaved so drift hits both alike."""
    runs: dict[str, list[float]] = {name: [] for name in SYSTEMS}
    sent = [0.0] * len(specs)
    slow = False
    for _ in range(REPEATS):
        for name, build in SYSTEMS.items():
            elapsed = fresh_run(closed_loop, build(noop_handler, settings), specs, sent)
            runs[name].append(len(specs) / elapsed)
            slow = slow or elapsed > SLOW_RUN_S
        if slow:
            break
    bare, processor = max(runs["bare"]), max(runs["processor"])
    return {
        "events": len(specs),
        "tenants": len({spec.tenant for spec in specs}),
        "payload_bytes": len(json.dumps(specs[0].payload, separators=(",", ":"))),
        "repeats": REPEATS,
        "best_of": len(runs["processor"]),
        "bare_eps": round(bare),
        "processor_eps": round(processor),
        "ratio": round(processor / bare, 3),
        "runs_eps": {name: [round(r) for r in rates] for name, rates in runs.items()},
        "per_event_us": {
            "bare": round(1e6 / bare, 2),
            "processor": round(1e6 / processor, 2),
        },
    }


def measure_throughput(sizes: Sizes, settings: ProcessorSettings) -> dict[str, Any]:
    """The in-memory cases: one tenant, tenants drawn from 100,000, a 10 KB nested payload.

    A case whose run takes longer than SLOW_RUN_S is run once (``best_of`` says so).
    """
    cases = {
        "one_tenant": event_stream(sizes.events, tenants=("acme",)),
        "many_tenants": event_stream(sizes.tenant_events, tenants=MANY_TENANTS),
        "payload_10kb": event_stream(sizes.payload_events, tenants=TENANTS, payload=nested_payload),
    }
    return {name: throughput_case(specs, settings) for name, specs in cases.items()}


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


# section 7 ------------------------------------------------------------------------------------


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


def measure_persistence(
    pg_url: str, pg_down: str | None, decisions: Sequence[Decision]
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-decisions-") as directory:
        result["sqlite"] = persistence_on(sqlite_url(Path(directory), "center.db"), decisions)
    if pg_down is not None:
        result["postgresql"] = unavailable(pg_url, pg_down)
        return result
    with postgres_schema(pg_url) as url:
        result["postgresql"] = persistence_on(url, decisions)
    return result


def measure_durable(pg_url: str, pg_down: str | None, sizes: Sizes) -> dict[str, Any]:
    """Sections 4 to 6 on each backend (PostgreSQL reported unavailable when it is)."""
    throughput = event_stream(sizes.durable_events, seed=21)
    sequential = event_stream(sizes.sequential_events, seed=22)
    offered = event_stream(int(durable.OFFERED_RATE * sizes.durable_offered_seconds), seed=23)
    decisions = event_stream(sizes.decide_events, seed=24)
    result: dict[str, Any] = {}
    for backend in BACKENDS:
        if backend == "postgresql" and pg_down is not None:
            result[backend] = unavailable(pg_url, pg_down)
            continue
        result[backend] = durable.measure_backend(
            backend, pg_url, throughput, sequential, offered, decisions
        )
    return result


# section 8 ------------------------------------------------------------------------------------


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


def at_least(name: str, goal: float, value: float | None, label: str = "") -> dict[str, Any]:
    """A ">= goal" target; ``value`` None means the backend was not measured."""
    shown_goal = f">= {goal:,.0f}" if goal >= 100 else f">= {goal}"
    if value is None:
        return target(name, shown_goal, "unavailable", None)
    return target(name, shown_goal + label, value, value >= goal)


def memory_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    cases = report["throughput"]
    offered = report["offered_load"]["processor"]
    return [
        at_least(
            "in memory: processor / bare, 1 tenant", TARGET_RATIO, cases["one_tenant"]["ratio"]
        ),
        at_least(
            "in memory: processor / bare, 100,000 tenants",
            TARGET_RATIO,
            cases["many_tenants"]["ratio"],
        ),
        target(
            "in memory: p99 at 10,000 events/s",
            f"< {TARGET_P99_MS} ms",
            offered["p99_ms"],
            offered["p99_ms"] < TARGET_P99_MS,
        ),
        target(
            "in memory: keeps up with 10,000 events/s",
            ">= 95% achieved",
            offered["achieved_eps"],
            offered["achieved_eps"] >= 0.95 * OFFERED_RATE,
        ),
    ]


def durable_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for backend, result in report["durable"].items():
        measured = result["status"] == "measured"
        runs = result["throughput"] if measured else {}
        for mode in ("concurrent", "batch"):
            ratio = runs[mode]["ratio"] if measured else None
            rows.append(at_least(f"durable {backend}: {mode} / raw", durable.TARGET_RATIO, ratio))
        if backend == "postgresql":
            for mode in ("concurrent", "batch"):
                eps = runs[mode]["eps"] if measured else None
                rows.append(
                    at_least(f"durable {backend}: {mode} events/s", durable.TARGET_PG_EPS, eps)
                )
        offered = result["offered_load"] if measured else None
        name = f"durable {backend}: p99 at {durable.OFFERED_RATE:,.0f} events/s"
        goal = f"< {durable.TARGET_P99_MS} ms"
        if offered is None:
            rows.append(target(name, goal, "unavailable", None))
        else:
            p99 = offered["p99_ms"]
            rows.append(target(name, goal, p99, 0 <= p99 < durable.TARGET_P99_MS))
        if backend == "postgresql":
            decided = result["decisions"]["decisions_per_s"] if measured else None
            rows.append(
                at_least(f"durable {backend}: ctx.decide/s", durable.TARGET_PG_DECISIONS, decided)
            )
    return rows


def targets_of(report: dict[str, Any]) -> list[dict[str, Any]]:
    pg = report["persistence"]["postgresql"]
    pg_rate = pg["writer"]["decisions_per_s"] if pg["status"] == "measured" else None
    load = report["load_time"]["with_snapshots"]
    stored = all(r.get("all_stored", True) for r in report["persistence"].values())
    durable_ok = all(
        r["raw"]["all_stored"]
        and all(run["all_handled"] for run in r["throughput"].values())
        and all(
            r[key]["missing"] == 0 and r[key]["publish_failures"] == 0
            for key in ("offered_load", "offered_load_low")
        )
        and r["decisions"]["all_stored"]
        for r in report["durable"].values()
        if r["status"] == "measured"
    )
    return [
        *memory_targets(report),
        *durable_targets(report),
        at_least("PostgreSQL decisions/s (writer alone)", TARGET_PG_DECISIONS, pg_rate),
        target(
            "snapshotted load reads < interval events",
            f"< {SNAPSHOT_INTERVAL}",
            load["events_read"],
            load["events_read"] < SNAPSHOT_INTERVAL,
        ),
        target(
            "every event handled, every decision stored",
            "all",
            stored and durable_ok,
            stored and durable_ok,
        ),
    ]


def render_memory(report: dict[str, Any], console: Console) -> None:
    rows: list[list[Any]] = []
    for name, case in report["throughput"].items():
        label = f"{name.replace('_', ' ')} ({case['events']:,} events, {case['tenants']:,} tenants,"
        label += f" {case['payload_bytes']:,} B)"
        for system in SYSTEMS:
            rows.append(
                [
                    f"{label} {system}",
                    case[f"{system}_eps"],
                    case["per_event_us"][system],
                    str(case["runs_eps"][system]),
                ]
            )
        rows.append([f"{label} ratio", case["ratio"], "", f"target >= {TARGET_RATIO}"])
    console.print(
        table(
            f"1. Throughput in memory, best of {REPEATS} (events/s)",
            ["case / system", "best events/s", "µs/event", "runs"],
            rows,
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
            f"3. In memory, offered load {off['offered_eps']:,.0f} events/s, {off['events']:,}"
            " events (ms)",
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


def render_durable(report: dict[str, Any], console: Console) -> None:
    throughput: list[list[Any]] = []
    latency: list[list[Any]] = []
    decisions: list[list[Any]] = []
    for backend, result in report["durable"].items():
        if result["status"] != "measured":
            for rows, width in ((throughput, 7), (latency, 8), (decisions, 7)):
                rows.append([backend, "unavailable", *[""] * (width - 3), result["reason"]])
            continue
        raw = result["raw"]
        throughput.append(
            [f"{backend} raw insert", raw["rows_per_s"], raw["rows"], raw["seconds"], "", "", ""]
        )
        for mode, run in result["throughput"].items():
            throughput.append(
                [
                    f"{backend} {mode}",
                    run["eps"],
                    run["events"],
                    run["seconds"],
                    run["ms_per_event"],
                    run["events_per_commit"],
                    run["ratio"],
                ]
            )
        for off in (result["offered_load"], result["offered_load_low"]):
            latency.append(
                [
                    f"{backend} at {off['offered_eps']:,.0f}/s",
                    off["achieved_eps"],
                    off["p50_ms"],
                    off["p99_ms"],
                    off["max_ms"],
                    off["p99_from_schedule_ms"],
                    off["commits"],
                    off["missing"] + off["publish_failures"],
                ]
            )
        d = result["decisions"]
        decisions.append(
            [
                backend,
                d["decisions_per_s"],
                d["events"],
                d["seconds"],
                d["events_per_commit"],
                d["max_in_flight_per_subscription"],
                "stored ok" if d["all_stored"] else "COUNT MISMATCH",
            ]
        )
    console.print(
        table(
            f"4. Durable publish -> handled (64 publishers / publish_batch of "
            f"{durable.BATCH_SIZE} x {durable.BATCH_PUBLISHERS} / one at a time) vs raw insert",
            ["case", "events/s", "events", "seconds", "ms/event", "events/commit", "vs raw"],
            throughput,
        )
    )
    console.print(
        table(
            "5. Durable, open loop at an offered rate: publish -> handler entry (ms)",
            [
                "backend, offered",
                "achieved/s",
                "p50",
                "p99",
                "max",
                "p99 from schedule",
                "commits",
                "lost",
            ],
            latency,
        )
    )
    console.print(
        table(
            "6. Durable, one subscription, one ctx.decide per event, default settings",
            ["backend", "decisions/s", "events", "seconds", "per commit", "max in flight", "note"],
            decisions,
        )
    )


def render_stores(report: dict[str, Any], console: Console) -> None:
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
            f"7. Persisted decisions, the writer alone, M = {decisions:,}",
            ["case", "decisions/s", "saves", "seconds", "writer/baseline", "note"],
            rows,
        )
    )
    load = report["load_time"]
    console.print(
        table(
            f"8. Load a ProcessorLog of {load['events']:,} events on SQLite (median of "
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


def render(report: dict[str, Any], console: Console) -> None:
    render_memory(report, console)
    render_durable(report, console)
    render_stores(report, console)
    console.print(targets_table(report))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = report_parser(
        "python -m bench.processor",
        "Throughput, latency and persistence figures of the event processor.",
        "small sizes (well under a minute)",
    )
    add_pg_url(parser)
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also cProfile one in-memory run and one durable run per backend",
    )
    return parser.parse_args(argv)


def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    sizes = QUICK_SIZES if args.quick else DEFAULT_SIZES
    settings = ProcessorSettings()
    started = time.perf_counter()
    report: dict[str, Any] = {
        "config": {
            "sizes": sizes.__dict__,
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
            "load": {"start": machine_load()},
            "event_type": EVENT_TYPE,
            "tenants": list(TENANTS),
            "priority_mix": {p.name: w for p, w in PRIORITY_MIX},
            "processor_settings": settings.model_dump(exclude={"limits"}),
            "code": code_fingerprint(MEASURED_MODULES),
        }
    }
    pg_down = postgres_reason(args.pg_url)
    mixed = event_stream(sizes.events)
    offered = event_stream(int(OFFERED_RATE * sizes.offered_seconds), seed=11)
    sections: list[tuple[str, str, Callable[[], dict[str, Any]]]] = [
        ("throughput", "1/8 throughput in memory", lambda: measure_throughput(sizes, settings)),
        (
            "saturated_latency",
            "2/8 saturated latency",
            lambda: measure_saturated_latency(mixed, settings),
        ),
        (
            "offered_load",
            "3/8 latency at 10,000 events/s",
            lambda: measure_offered_load(offered, settings, OFFERED_RATE),
        ),
        (
            "durable",
            "4-6/8 durable center on SQLite and PostgreSQL",
            lambda: measure_durable(args.pg_url, pg_down, sizes),
        ),
        (
            "persistence",
            "7/8 persisted decisions",
            lambda: measure_persistence(args.pg_url, pg_down, decision_stream(sizes.decisions)),
        ),
        ("load_time", "8/8 aggregate load time", lambda: measure_load_time(sizes.history)),
    ]
    timings: dict[str, float] = {}
    for key, label, measure in sections:
        section_started = time.perf_counter()
        with console.status(label):
            report[key] = measure()
        timings[key] = round(time.perf_counter() - section_started, 1)
    report["config"]["section_seconds"] = timings
    report["config"]["seconds"] = round(time.perf_counter() - started, 1)
    report["config"]["load"]["end"] = machine_load()
    report["targets"] = targets_of(report)
    if args.profile:
        with console.status("profiling"):
            profiles = [profile_processor(mixed, settings)]
            specs = event_stream(sizes.durable_events, seed=21)
            for backend in BACKENDS:
                if backend == "postgresql" and pg_down is not None:
                    continue
                profiles.append(durable.profile_durable(backend, args.pg_url, specs))
            report["profile"] = "\n".join(profiles)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = run_report(args, run, render, width=120)
    if "profile" in report:  # plain print: rich would wrap the long lines
        print(report["profile"], file=sys.stderr if args.json else sys.stdout)
    print_json(args, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
