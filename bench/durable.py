"""The durable sections: a real EventCenter on SQLite and PostgreSQL, next to raw inserts.

Every case runs a fresh :class:`EventCenter` (default processor settings, the built-in
handlers left out, ONE subscription) on an empty database: a new SQLite file, or a new
PostgreSQL schema dropped afterwards. Time runs from the first publish until
``processor.join()`` returns, that is until every delivery is handled and its settlement
committed.

- **Throughput.** (a) ``concurrent``: 64 tasks, each awaiting ``publish`` one event at a time
  (many callers share one commit); (b) ``batch``: 4 tasks publishing ``publish_batch`` of
  250 items, the way data sources and HTTP ingest hand events in; (c) ``sequential``: one
  ``await publish`` at a time, bounded by one commit per event (``ms_per_event``). The
  *raw* baseline inserts the same rows into ``center_deliveries`` of an empty database of the
  same kind, built before the clock starts: SQLite ``executemany``, PostgreSQL
  ``psycopg2.extras.execute_values``, 1,000 rows per transaction. ``ratio`` = durable
  events/s / raw rows/s (target >= 0.3; >= 10,000 events/s on PostgreSQL).
- **Latency at an offered 5,000 events/s.** An open loop starts one task per event at its
  scheduled time (``start + i/rate``; the generator sleeps about a millisecond between
  ticks); the handler records when it is entered. Latency = entry - the moment the publish
  call was made (target p99 < 10 ms); ``p99 from schedule`` also counts the generator's lag.
  The same at 1,000 events/s, a rate the center sustains here: what one publish waits for
  when nothing queues (the group commit), for comparison.
- **Decisions.** One subscription whose handler calls ``await ctx.decide(...)`` once per
  event, at default settings; events handed in with ``publish_batch`` of 250. Decisions/s =
  events / (first publish -> join). The stored ProcessorLog is read back and its decision
  count checked. Target >= 2,000/s on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import pstats
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from bench.common import (
    EVENT_TYPE,
    Probe,
    Spec,
    fresh_database,
    fresh_run,
    latency_summary,
    noop_handler,
)
from eventcenter.center.app import EventCenter
from eventcenter.center.settings import CenterSettings
from eventcenter.domain.aggregates import ProcessorLog
from eventcenter.domain.event import Event
from eventcenter.handlers.config import ProcessorSettings
from eventcenter.storage import inbox
from eventcenter.storage.application import CenterApplication

CENTER = "bench"
SUBSCRIPTION = "bench"
CONCURRENT_PUBLISHERS = 64
BATCH_SIZE = 250
BATCH_PUBLISHERS = 4
RAW_ROWS_PER_TRANSACTION = 1000
OFFERED_RATE = 5_000.0
#: A rate the center sustains on a 2-core machine: its latency shows the commit, not a queue.
LOW_RATE = 1_000.0
#: The generator's sleep between ticks (asyncio rounds timeouts up to whole milliseconds).
TICK_S = 0.0005

TARGET_RATIO = 0.3
TARGET_PG_EPS = 10_000.0
TARGET_P99_MS = 10.0
TARGET_PG_DECISIONS = 2_000.0

Handler = Callable[[Event, Any], Awaitable[None]]


def build_center(url: str, directory: Path, handler: Handler) -> EventCenter:
    """A center with default processor settings and one subscription to ``bench.tick``."""
    settings = CenterSettings(
        name=CENTER, database_url=url, data_dir=directory, processor=ProcessorSettings()
    )
    center = EventCenter(settings, builtin_handlers=False)
    center.processor.subscribe(EVENT_TYPE, handler, name=SUBSCRIPTION)
    return center


def _publish_kwargs(spec: Spec) -> dict[str, Any]:
    return {"tenant": spec.tenant, "priority": spec.priority}


# publishers ------------------------------------------------------------------------------------


async def publish_concurrent(center: EventCenter, specs: Sequence[Spec]) -> None:
    """CONCURRENT_PUBLISHERS tasks, each awaiting one publish at a time (events interleaved)."""

    async def publisher(first: int) -> None:
        for spec in specs[first::CONCURRENT_PUBLISHERS]:
            await center.publish(EVENT_TYPE, spec.payload, **_publish_kwargs(spec))

    await asyncio.gather(*(publisher(i) for i in range(CONCURRENT_PUBLISHERS)))


async def publish_batches(center: EventCenter, specs: Sequence[Spec]) -> None:
    """BATCH_PUBLISHERS tasks, each handing in batches of BATCH_SIZE items in turn."""
    batches = [specs[i : i + BATCH_SIZE] for i in range(0, len(specs), BATCH_SIZE)]

    async def publisher(first: int) -> None:
        for batch in batches[first::BATCH_PUBLISHERS]:
            await center.publish_batch([spec.item() for spec in batch])

    await asyncio.gather(*(publisher(i) for i in range(BATCH_PUBLISHERS)))


async def publish_sequential(center: EventCenter, specs: Sequence[Spec]) -> None:
    for spec in specs:
        await center.publish(EVENT_TYPE, spec.payload, **_publish_kwargs(spec))


PUBLISHERS: dict[str, Callable[[EventCenter, Sequence[Spec]], Awaitable[None]]] = {
    "concurrent": publish_concurrent,
    "batch": publish_batches,
    "sequential": publish_sequential,
}


# throughput ------------------------------------------------------------------------------------


async def timed_run(
    center: EventCenter,
    specs: Sequence[Spec],
    publish: Callable[[EventCenter, Sequence[Spec]], Awaitable[None]],
) -> dict[str, Any]:
    """Start ``center``, publish ``specs``, wait for ``join``; stop it. Figures of the run."""
    await center.start()
    try:
        saves = center.writer.saves
        clock = time.perf_counter
        started = clock()
        await publish(center, specs)
        published = clock() - started
        await center.processor.join()
        elapsed = clock() - started
        commits = center.writer.saves - saves
        handled = center.processor.snapshot().totals.get("handled", 0)
    finally:
        stopped = await center.stop()
    count = len(specs)
    return {
        "events": count,
        "eps": round(count / elapsed),
        "seconds": round(elapsed, 3),
        "publish_seconds": round(published, 3),
        "ms_per_event": round(elapsed / count * 1000, 3),
        "commits": commits,
        "events_per_commit": round(count / commits, 1) if commits else None,
        "handled": handled,
        "all_handled": handled == count and stopped.clean,
    }


def durable_throughput(
    url: str, directory: Path, specs: Sequence[Spec], mode: str
) -> dict[str, Any]:
    center = build_center(url, directory, noop_handler)
    return fresh_run(timed_run, center, specs, PUBLISHERS[mode])


def raw_rows(specs: Sequence[Spec]) -> list[tuple[Any, ...]]:
    """The rows of ``center_deliveries`` the center writes for ``specs`` (one subscription)."""
    now = time.time()
    rows = []
    for seq, spec in enumerate(specs, start=1):
        event = Event.create(EVENT_TYPE, spec.payload, tenant=spec.tenant, priority=spec.priority)
        rows.append(
            (
                CENTER,
                seq,
                SUBSCRIPTION,
                int(event.priority),
                event.tenant,
                str(event.id),
                event.model_dump_json(),
                0,
                None,
                None,
                now,
            )
        )
    return rows


_COLUMNS = (
    "center, seq, subscription, priority, tenant, event_id, envelope, attempts, failure,"
    " replay_of, admitted_at"
)


def raw_insert(url: str, specs: Sequence[Spec]) -> dict[str, Any]:
    """Insert the envelope rows of ``specs``, RAW_ROWS_PER_TRANSACTION per transaction."""
    rows = raw_rows(specs)
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            inbox.create_tables(connection)
            if engine.dialect.name == "sqlite":
                connection.execute(text("PRAGMA journal_mode=WAL"))  # as the center runs it
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            insert = _inserter(engine.dialect.name, cursor)
            started = time.perf_counter()
            for first in range(0, len(rows), RAW_ROWS_PER_TRANSACTION):
                insert(rows[first : first + RAW_ROWS_PER_TRANSACTION])
                raw.commit()
            elapsed = time.perf_counter() - started
            cursor.execute("SELECT count(*) FROM center_deliveries")
            (stored,) = cursor.fetchone() or (0,)
        finally:
            raw.close()
    finally:
        engine.dispose()
    return {
        "rows": len(rows),
        "rows_per_s": round(len(rows) / elapsed),
        "seconds": round(elapsed, 3),
        "rows_per_transaction": RAW_ROWS_PER_TRANSACTION,
        "all_stored": stored == len(rows),
    }


def _inserter(dialect: str, cursor: Any) -> Callable[[list[tuple[Any, ...]]], None]:
    if dialect == "postgresql":
        from psycopg2.extras import execute_values  # type: ignore[import-untyped]

        statement = f"INSERT INTO center_deliveries ({_COLUMNS}) VALUES %s"

        def insert_pg(chunk: list[tuple[Any, ...]]) -> None:
            execute_values(cursor, statement, chunk, page_size=RAW_ROWS_PER_TRANSACTION)

        return insert_pg
    marks = ", ".join("?" * 11)
    statement = f"INSERT INTO center_deliveries ({_COLUMNS}) VALUES ({marks})"

    def insert_sqlite(chunk: list[tuple[Any, ...]]) -> None:
        cursor.executemany(statement, chunk)

    return insert_sqlite


# latency at an offered load --------------------------------------------------------------------


async def offered_run(
    center: EventCenter, probe: Probe, specs: Sequence[Spec], rate: float
) -> dict[str, Any]:
    """Open loop: event i is published by its own task, started at ``start + i/rate``."""
    await center.start()
    loop = asyncio.get_running_loop()
    clock = time.perf_counter
    count = len(specs)
    tasks: list[asyncio.Task[str]] = []
    try:
        saves = center.writer.saves
        started = clock()
        scheduled = [started + i / rate for i in range(count)]
        i = 0
        while i < count:
            due = min(count, int((clock() - started) * rate) + 1)
            while i < due:
                spec = specs[i]
                probe.sent[i] = clock()
                publish = center.publish(EVENT_TYPE, spec.payload, **_publish_kwargs(spec))
                tasks.append(loop.create_task(publish))
                i += 1
            await asyncio.sleep(TICK_S)
        publishing = clock() - started
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        await center.processor.join()
        commits = center.writer.saves - saves
    finally:
        stopped = await center.stop()
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    from_schedule = [
        lat + sent - due
        for lat, sent, due in zip(probe.latency, probe.sent, scheduled, strict=True)
    ]
    return {
        "offered_eps": rate,
        "events": count,
        "achieved_eps": round(count / publishing),
        **probe.summary(),
        "p99_from_schedule_ms": latency_summary(from_schedule)["p99_ms"],
        "commits": commits,
        "publish_failures": len(failures),
        "first_failure": repr(failures[0]) if failures else None,
        "clean_stop": stopped.clean,
    }


def durable_offered(
    url: str, directory: Path, specs: Sequence[Spec], rate: float
) -> dict[str, Any]:
    probe = Probe(len(specs))
    center = build_center(url, directory, probe.handler)
    return fresh_run(offered_run, center, probe, specs, rate)


# decisions -------------------------------------------------------------------------------------


async def decide_handler(event: Event, ctx: Any) -> None:
    await ctx.decide("bench.decided", "one decision per event", event, seq=event.payload["seq"])


async def publish_in_batches(center: EventCenter, specs: Sequence[Spec]) -> None:
    for first in range(0, len(specs), BATCH_SIZE):
        await center.publish_batch([spec.item() for spec in specs[first : first + BATCH_SIZE]])


def durable_decisions(url: str, directory: Path, specs: Sequence[Spec]) -> dict[str, Any]:
    center = build_center(url, directory, decide_handler)
    settings = center.settings.processor
    run = fresh_run(timed_run, center, specs, publish_in_batches)
    app = CenterApplication(url, create_tables=False, cache_size=0)
    try:
        log: ProcessorLog = app.repository.get(ProcessorLog.create_id(CENTER))
        stored = int(log.decisions)
    finally:
        app.close()
    return {
        "events": run["events"],
        "decisions_per_s": run["eps"],
        "seconds": run["seconds"],
        "publish_seconds": run["publish_seconds"],
        "commits": run["commits"],
        "events_per_commit": run["events_per_commit"],
        "stored": stored,
        "all_stored": stored == len(specs) and run["all_handled"],
        "workers": settings.workers,
        "max_in_flight_per_subscription": settings.max_in_flight_per_subscription,
    }


# the section, per backend ----------------------------------------------------------------------


def measure_backend(
    backend: str,
    pg_url: str,
    throughput: Sequence[Spec],
    sequential: Sequence[Spec],
    offered: Sequence[Spec],
    decisions: Sequence[Spec],
    rate: float = OFFERED_RATE,
) -> dict[str, Any]:
    """Every durable figure on one backend, each case on an empty database."""
    runs: dict[str, Any] = {}
    with fresh_database(backend, pg_url) as (url, _):
        raw = raw_insert(url, throughput)
    for mode in PUBLISHERS:
        specs = sequential if mode == "sequential" else throughput
        with fresh_database(backend, pg_url) as (url, directory):
            runs[mode] = durable_throughput(url, directory, specs, mode)
        runs[mode]["ratio"] = round(runs[mode]["eps"] / raw["rows_per_s"], 3)
    with fresh_database(backend, pg_url) as (url, directory):
        latency = durable_offered(url, directory, offered, rate)
    low = offered[: max(1, round(len(offered) * LOW_RATE / rate))]
    with fresh_database(backend, pg_url) as (url, directory):
        latency_low = durable_offered(url, directory, low, LOW_RATE)
    with fresh_database(backend, pg_url) as (url, directory):
        decided = durable_decisions(url, directory, decisions)
    return {
        "status": "measured",
        "raw": raw,
        "throughput": runs,
        "offered_load": latency,
        "offered_load_low": latency_low,
        "decisions": decided,
    }


# profiling -------------------------------------------------------------------------------------


def profile_durable(backend: str, pg_url: str, specs: Sequence[Spec], top: int = 25) -> str:
    """cProfile of one concurrent durable run: the loop thread and the writer thread apart."""
    loop_profile, writer_profile = cProfile.Profile(), cProfile.Profile()
    with fresh_database(backend, pg_url) as (url, directory):
        center = build_center(url, directory, noop_handler)
        writer = center.writer
        run_writer = writer._run

        def profiled_writer() -> None:
            writer_profile.enable()
            try:
                run_writer()
            finally:
                writer_profile.disable()

        writer._run = profiled_writer  # type: ignore[method-assign]
        loop_profile.enable()
        fresh_run(timed_run, center, specs, publish_concurrent)
        loop_profile.disable()
    out = io.StringIO()
    for title, profile in (("loop thread", loop_profile), ("writer thread", writer_profile)):
        out.write(f"== durable concurrent run on {backend}, {title}, by own time ==\n")
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()
