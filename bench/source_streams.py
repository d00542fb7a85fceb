"""Stream sections of ``bench.sources``: a real broker's stream through a real center, next to a
plain consumer of the same stream content, in the same run.

Every run has a stream of its own (a Redis key, a JetStream stream), filled with the same N
items, ``{"key": "o-<i>", "version": 1, "data": {...}}`` (about 80 bytes of JSON each), and
deleted afterwards. Time runs from the first item added until the last one is handled (the
producer runs beside the consumer, in the same event loop, for both systems):

- **center**: an :class:`EventCenter` (default processor settings, built-in handlers left
  out, one no-op subscription on ``source.item.*``) on an empty store, with one
  :class:`DataSource` whose push path is the stream (``redis_stream`` /
  ``nats_jetstream``); every item goes through the event engine, durable idempotent admission
  (the path's position and the delivered-item record in the same commit), the ack, and the
  processor, until the subscription has handled it;
- **plain**: one loop that only reads and acknowledges: ``XREADGROUP`` + ``XACK`` of each
  batch on Redis; ``fetch`` + ``ack`` of each message on a durable pull consumer of
  JetStream. Same client libraries, same batch size.

``ratio`` = center items/s / plain items/s. Each center run also checks that every item was
handled exactly once (distinct keys = N = handler calls).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import secrets
import time
from collections.abc import Callable, Coroutine, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import orjson
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from redis.asyncio import Redis

from bench.common import CpuWindow, fresh_database, fresh_run
from eventcenter.center.app import EventCenter
from eventcenter.center.heap import freeze_startup_heap
from eventcenter.center.settings import CenterSettings
from eventcenter.center.source_sink import CenterItemSink
from eventcenter.domain.event import Event
from eventcenter.domain.sources import PushPath
from eventcenter.handlers.config import ProcessorSettings
from eventcenter.sources.connectors import nats_jetstream, redis_stream
from eventcenter.sources.connectors.redis_entry import received_entry
from eventcenter.sources.source import DataSource

CENTER = "bench"
SUBSCRIPTION = "items"
#: Messages asked for per read, by the source (``DataSource.batch``) and the plain consumer.
BATCH = 500
#: Items per producer round trip (a Redis pipeline, a NATS flush).
PRODUCER_CHUNK = 500
#: A run that has not handled every item by then is reported incomplete, not waited for.
RUN_TIMEOUT_S = 120.0
STREAM_GROUP = "eventcenter"

Producer = Callable[[int], Coroutine[Any, Any, None]]


def item_body(seq: int) -> bytes:
    """The JSON of item ``seq``: a small order, as a source would carry it."""
    item = {
        "key": f"o-{seq}",
        "version": 1,
        "data": {"n": seq, "total": 12.5, "currency": "EUR", "status": "paid"},
    }
    return orjson.dumps(item)


class HandledCount:
    """The subscription's handler: counts calls and distinct keys per tenant; ``done`` is set
    once ``expected`` items were handled in all."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.calls = 0
        self.keys: dict[str, set[str]] = {}
        self.finished_at: dict[str, float] = {}
        self.per_tenant: dict[str, int] = {}
        self.expected_per_tenant: dict[str, int] = {}
        self.done = asyncio.Event()

    async def handler(self, event: Event, ctx: Any) -> None:
        self.calls += 1
        tenant = event.tenant
        self.keys.setdefault(tenant, set()).add(event.payload["key"])
        count = self.per_tenant[tenant] = self.per_tenant.get(tenant, 0) + 1
        if count == self.expected_per_tenant.get(tenant):
            self.finished_at[tenant] = time.perf_counter()
        if self.calls >= self.expected:
            self.done.set()

    @property
    def distinct(self) -> int:
        return sum(len(keys) for keys in self.keys.values())


def build_center(url: str, directory: Path, handled: HandledCount) -> EventCenter:
    settings = CenterSettings(
        name=CENTER, database_url=url, data_dir=directory, processor=ProcessorSettings()
    )
    center = EventCenter(settings, builtin_handlers=False)
    center.processor.subscribe("source.item.*", handled.handler, name=SUBSCRIPTION)
    return center


def register(center: EventCenter, tenant: str, path: PushPath) -> None:
    center.sources.register(
        DataSource(tenant=tenant, name="orders", events=path, event_timeout="30s", batch=BATCH)
    )


@dataclass(frozen=True)
class Feed:
    """One tenant's stream for a center run: its push path and the producer that fills it."""

    tenant: str
    path: PushPath
    produce: Producer


async def center_run(
    url: str, directory: Path, feeds: Sequence[Feed], count: int
) -> dict[str, Any]:
    """Start a center with one source per feed, produce ``count`` items into each, wait until
    all are handled; figures of the run (per tenant when there are several)."""
    handled = HandledCount(count * len(feeds))
    handled.expected_per_tenant = {feed.tenant: count for feed in feeds}
    center = build_center(url, directory, handled)
    for feed in feeds:
        register(center, feed.tenant, feed.path)
    await center.start()
    complete = True
    try:
        saves = center.writer.saves
        started, cpu = time.perf_counter(), CpuWindow()
        producers = [asyncio.create_task(feed.produce(count)) for feed in feeds]
        try:
            async with asyncio.timeout(RUN_TIMEOUT_S):
                await handled.done.wait()
        except TimeoutError:
            complete = False
        elapsed = time.perf_counter() - started
        spent = cpu.per_item(count * len(feeds))
        await asyncio.gather(*producers)
        commits = center.writer.saves - saves
        await center.processor.join()
    finally:
        stopped = await center.stop()
    total = count * len(feeds)
    tenants = {
        feed.tenant: {
            "items": handled.per_tenant.get(feed.tenant, 0),
            "items_per_s": round(
                count / (handled.finished_at.get(feed.tenant, started + elapsed) - started)
            ),
        }
        for feed in feeds
    }
    return {
        "items": total,
        "items_per_s": round(total / elapsed),
        "seconds": round(elapsed, 3),
        **spent,
        "commits": commits,
        "items_per_commit": round(total / commits, 1) if commits else None,
        "handled": handled.calls,
        "exactly_once": complete
        and handled.calls == total
        and handled.distinct == total
        and stopped.clean,
        "tenants": tenants,
    }


# Redis ---------------------------------------------------------------------------------------


def redis_stream_name() -> str:
    return f"bench-sources-{secrets.token_hex(4)}"


def redis_producer(client: Redis, stream: str) -> Producer:
    async def produce(count: int) -> None:
        for first in range(0, count, PRODUCER_CHUNK):
            pipe = client.pipeline(transaction=False)
            for seq in range(first, min(count, first + PRODUCER_CHUNK)):
                pipe.xadd(stream, {"item": item_body(seq)})
            await pipe.execute()

    return produce


async def redis_plain(url: str, count: int) -> dict[str, Any]:
    """XREADGROUP + XACK of each batch until ``count`` entries were acknowledged."""
    stream = redis_stream_name()
    producer, reader = Redis.from_url(url), Redis.from_url(url)
    try:
        await reader.xgroup_create(stream, STREAM_GROUP, id="0", mkstream=True)
        acked = 0
        started, cpu = time.perf_counter(), CpuWindow()
        produce = asyncio.create_task(redis_producer(producer, stream)(count))
        async with asyncio.timeout(RUN_TIMEOUT_S):
            while acked < count:
                reply = await reader.xreadgroup(
                    STREAM_GROUP, "plain", {stream: ">"}, count=BATCH, block=1000
                )
                ids = [entry_id for entry_id, _ in _redis_entries(reply)]
                if ids:
                    await reader.xack(stream, STREAM_GROUP, *ids)
                    acked += len(ids)
        elapsed = time.perf_counter() - started
        spent = cpu.per_item(count)
        await produce
    finally:
        await producer.delete(stream)
        await producer.aclose()
        await reader.aclose()
    return {
        "items": count,
        "items_per_s": round(count / elapsed),
        "seconds": round(elapsed, 3),
        **spent,
    }


def _redis_entries(reply: Any) -> list[tuple[Any, Any]]:
    if not reply:
        return []
    if isinstance(reply, dict):  # RESP3
        return [entry for lists in reply.values() for batch in lists for entry in batch]
    return [entry for _, batch in reply for entry in batch]


async def redis_center(
    url: str, directory: Path, redis_url: str, count: int, tenants: Sequence[str]
) -> dict[str, Any]:
    streams = {tenant: redis_stream_name() for tenant in tenants}
    client = Redis.from_url(redis_url)
    try:
        feeds = [
            Feed(
                tenant,
                redis_stream(stream, group=STREAM_GROUP, consumer="bench", url=redis_url),
                redis_producer(client, stream),
            )
            for tenant, stream in streams.items()
        ]
        return await center_run(url, directory, feeds, count)
    finally:
        await client.delete(*streams.values())
        await client.aclose()


# NATS JetStream ------------------------------------------------------------------------------


@dataclass(frozen=True)
class JetStreamName:
    stream: str
    subject: str

    @classmethod
    def fresh(cls) -> JetStreamName:
        token = secrets.token_hex(4)
        return cls(f"BENCH_SOURCES_{token}", f"bench.sources.{token}.items")


def nats_producer(client: Any, subject: str) -> Producer:
    """Core-NATS publishes into the stream's subject, flushed per chunk (no per-message ack
    wait: the stream stores them; both systems read the same content)."""

    async def produce(count: int) -> None:
        for first in range(0, count, PRODUCER_CHUNK):
            for seq in range(first, min(count, first + PRODUCER_CHUNK)):
                await client.publish(subject, item_body(seq))
            await client.flush()

    return produce


async def nats_plain(url: str, count: int) -> dict[str, Any]:
    """``fetch`` from a durable pull consumer and ``ack`` each message, until ``count``."""
    name = JetStreamName.fresh()
    client = await nats.connect(url, name="bench-plain")
    js = client.jetstream()
    try:
        await js.add_stream(name=name.stream, subjects=[name.subject])
        sub = await js.pull_subscribe(
            name.subject,
            durable="plain",
            stream=name.stream,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                max_ack_pending=BATCH * 4,
            ),
        )
        acked = 0
        started, cpu = time.perf_counter(), CpuWindow()
        produce = asyncio.create_task(nats_producer(client, name.subject)(count))
        async with asyncio.timeout(RUN_TIMEOUT_S):
            while acked < count:
                try:
                    messages = await sub.fetch(BATCH, timeout=1.0)
                except NatsTimeout:
                    continue
                for message in messages:
                    await message.ack()
                acked += len(messages)
        elapsed = time.perf_counter() - started
        spent = cpu.per_item(count)
        await produce
    finally:
        with suppress(NotFoundError):
            await js.delete_stream(name.stream)
        await client.close()
    return {
        "items": count,
        "items_per_s": round(count / elapsed),
        "seconds": round(elapsed, 3),
        **spent,
    }


async def nats_center(
    url: str, directory: Path, nats_url: str, count: int, tenants: Sequence[str]
) -> dict[str, Any]:
    names = {tenant: JetStreamName.fresh() for tenant in tenants}
    client = await nats.connect(nats_url, name="bench-producer")
    js = client.jetstream()
    try:
        for name in names.values():
            await js.add_stream(name=name.stream, subjects=[name.subject])
        feeds = [
            Feed(
                tenant,
                nats_jetstream(
                    name.stream,
                    name.subject,
                    durable=STREAM_GROUP,
                    url=nats_url,
                    max_ack_pending=BATCH * 4,
                    create_stream=False,
                ),
                nats_producer(client, name.subject),
            )
            for tenant, name in names.items()
        ]
        return await center_run(url, directory, feeds, count)
    finally:
        for name in names.values():
            with suppress(NotFoundError):
                await js.delete_stream(name.stream)
        await client.close()


# the center alone ----------------------------------------------------------------------------


def redis_entries(count: int) -> list[list[tuple[str, dict[bytes, bytes]]]]:
    """``count`` stream entries as redis-py hands them over, in reads of :data:`BATCH`."""
    entries = [(f"{seq + 1}-0", {b"item": item_body(seq)}) for seq in range(count)]
    return [entries[first : first + BATCH] for first in range(0, count, BATCH)]


async def sink_only(
    url: str, directory: Path, count: int, ready: Callable[[], object] | None = None
) -> dict[str, Any]:
    """The center's own cost per item, without a broker: ``count`` entries already read are
    decoded as the Redis connector decodes them (``received_entry``) and admitted in reads of
    :data:`BATCH` through the center's item sink, one after the other as one engine does,
    until every item is handled. CPU: the event loop's thread, and the whole process (the
    writer thread and the database driver included). ``ready`` is called once the center has
    started, just before the timed part (processes run side by side wait there for each
    other); ``began``/``ended`` are ``time.monotonic()`` readings, the same clock in every
    process of the machine."""
    handled = HandledCount(count)
    handled.expected_per_tenant = {"acme": count}
    center = build_center(url, directory, handled)
    reads = redis_entries(count)
    await center.start()
    try:
        sink = CenterItemSink(center.processor)
        saves = center.writer.saves
        if ready is not None:
            ready()
        began = time.monotonic()
        started, process, loop = time.perf_counter(), time.process_time(), time.thread_time()
        for read in reads:
            received = [received_entry(entry_id, fields) for entry_id, fields in read]
            await sink.admit("acme", "orders", "push", received, received[-1].position)
        async with asyncio.timeout(RUN_TIMEOUT_S):
            await handled.done.wait()
        elapsed, ended = time.perf_counter() - started, time.monotonic()
        loop_cpu, process_cpu = time.thread_time() - loop, time.process_time() - process
        commits = center.writer.saves - saves
        await center.processor.join()
    finally:
        stopped = await center.stop()
    return {
        "items": count,
        "items_per_s": round(count / elapsed),
        "seconds": round(elapsed, 3),
        "loop_cpu_us": round(loop_cpu / count * 1e6, 1),
        "process_cpu_us": round(process_cpu / count * 1e6, 1),
        "commits": commits,
        "exactly_once": handled.calls == count and handled.distinct == count and stopped.clean,
        "began": began,
        "ended": ended,
    }


def measure_sink_only(
    count: int, backends: Sequence[str], pg_url: str, repeats: int
) -> dict[str, Any]:
    """Best of ``repeats`` :func:`sink_only` runs on each backend (a fresh store each)."""
    result: dict[str, Any] = {"status": "measured", "items": count, "best_of": repeats}
    for backend in backends:
        runs = []
        for _ in range(repeats):
            with fresh_database(backend, pg_url) as (url, directory):
                runs.append(fresh_run(sink_only, url, directory, count))
        best = max(runs, key=lambda run: int(run["items_per_s"]))
        result[backend] = {
            **best,
            "runs": [run["items_per_s"] for run in runs],
            "exactly_once": all(run["exactly_once"] for run in runs),
            "checked_runs": len(runs),
        }
    return result


def _sink_only_process(backend: str, pg_url: str, count: int, start: Any, results: Any) -> None:
    """One of the processes of :func:`measure_sink_side_by_side`: a center on a store of its
    own, timed from when every process has started its center."""
    freeze_startup_heap()
    try:
        with fresh_database(backend, pg_url) as (url, directory):
            results.put(fresh_run(sink_only, url, directory, count, start.wait))
    except Exception as error:  # reported to the parent: a process must not fail silently
        start.abort()
        results.put({"error": f"{type(error).__name__}: {error}"})


def measure_sink_side_by_side(
    count: int, backends: Sequence[str], pg_url: str, processes: int = 2
) -> dict[str, Any]:
    """:func:`sink_only` in ``processes`` processes at once, each with a center and a store
    of its own (what more than one process per machine could do): each process's items/s,
    and all of them together, from the first start to the last item handled."""
    result: dict[str, Any] = {"status": "measured", "items": count, "processes": processes}
    spawn = multiprocessing.get_context("spawn")
    for backend in backends:
        start, results = spawn.Barrier(processes), spawn.Queue()
        workers = [
            spawn.Process(target=_sink_only_process, args=(backend, pg_url, count, start, results))
            for _ in range(processes)
        ]
        for worker in workers:
            worker.start()
        runs = [results.get(timeout=RUN_TIMEOUT_S * 2) for _ in workers]
        for worker in workers:
            worker.join(RUN_TIMEOUT_S)
        errors = [run["error"] for run in runs if "error" in run]
        if errors:
            result[backend] = {"status": "unavailable", "reason": errors[0]}
            continue
        span = max(run["ended"] for run in runs) - min(run["began"] for run in runs)
        result[backend] = {
            "per_process": sorted(run["items_per_s"] for run in runs),
            "items_per_s": round(count * processes / span),
            "seconds": round(span, 3),
            "exactly_once": all(run["exactly_once"] for run in runs),
        }
    return result


# one broker, every store ---------------------------------------------------------------------

CenterRun = Callable[[str, Path, str, int, Sequence[str]], Coroutine[Any, Any, dict[str, Any]]]
PlainRun = Callable[[str, int], Coroutine[Any, Any, dict[str, Any]]]


def measure_broker(
    broker_url: str,
    plain: PlainRun,
    center: CenterRun,
    count: int,
    backends: Sequence[str],
    pg_url: str,
    repeats: int,
) -> dict[str, Any]:
    """Best of ``repeats`` runs of the plain consumer and of the center on each backend (a
    fresh store and stream each), interleaved so that drift on the machine hits all alike."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in ("plain", *backends)}
    for _ in range(repeats):
        runs["plain"].append(fresh_run(plain, broker_url, count))
        for backend in backends:
            with fresh_database(backend, pg_url) as (url, directory):
                runs[backend].append(
                    fresh_run(center, url, directory, broker_url, count, ("acme",))
                )
    result: dict[str, Any] = {
        "status": "measured",
        "url": broker_url,
        "items": count,
        "batch": BATCH,
        "best_of": repeats,
    }
    for name, measured in runs.items():
        best = max(measured, key=lambda run: int(run["items_per_s"]))
        result[name] = {**best, "runs": [run["items_per_s"] for run in measured]}
        if name != "plain":
            result[name]["exactly_once"] = all(run["exactly_once"] for run in measured)
            result[name]["checked_runs"] = len(measured)
            result[name]["ratio"] = round(
                result[name]["items_per_s"] / result["plain"]["items_per_s"], 3
            )
    return result


def measure_tenants(
    redis_url: str, count: int, tenants: int, backends: Sequence[str], pg_url: str
) -> dict[str, Any]:
    """``tenants`` sources of as many tenants at once, each on its own Redis stream of
    ``count`` items, on each backend: items/s per tenant and for all of them."""
    names = [f"tenant-{n}" for n in range(tenants)]
    result: dict[str, Any] = {}
    for backend in backends:
        with fresh_database(backend, pg_url) as (url, directory):
            run = fresh_run(redis_center, url, directory, redis_url, count, names)
        rates = [tenant["items_per_s"] for tenant in run["tenants"].values()]
        run["per_tenant_min"], run["per_tenant_max"] = min(rates), max(rates)
        result[backend] = run
    return result
