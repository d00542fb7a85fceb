"""The failover section of ``bench.sources``: a push outage for real, and the way back.

The bench starts its own ``redis-server`` on a free loopback port (nothing kept on disk) and a
center on a temporary SQLite store with one source: push = a Redis stream on that server,
poll = a ``callable_poll`` over the producer's own record of every item (the system of record
a poll API would serve). A producer adds one item every ``1 / RATE`` s to the record and, while
the server is up, to the stream. The source's policy is set for a short run (and reported):
``event_timeout`` 0.5 s, ``failure_threshold`` 2, ``success_threshold`` 3,
``polling_interval`` 0.2 s, flap damping out of the way (``flap_switches`` 20).

1. Steady push for a moment (the source is in ``event_only``).
2. **Outage**: the server is killed (``SIGKILL`` by its pid): the blocked ``XREADGROUP`` fails at
   once, the engine backs off and reconnects in vain, and silence counts too. Measured: outage ->
   the recorded switch away from ``event_only``, and outage -> the first item handled that came
   by the poll path.
3. The outage lasts ``HOLD_S`` more seconds, then the server is started again on the same port
   (empty: the stream and its group are gone, so the engine's stored position is lost and it
   resumes from the new stream's start). Measured: recovery (the server accepts connections) ->
   the first item handled that came by push again (mostly the engine's reconnect back-off, 0.8 s
   doubling, which grew during the outage) and recovery -> the recorded switch back to
   ``event_only``.
4. The producer stops; every item of the record must be handled exactly once (push, poll, the
   overlap of both, and the items the killed server lost are all in it). What is still not
   handled ``FINAL_WAIT_S`` later is reported by key (``missing``), not waited for.

Switch times are the ones recorded in the source's log (``ModeSwitched.at``, wall clock).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bench.common import fresh_run
from eventcenter.center.app import EventCenter
from eventcenter.center.settings import CenterSettings
from eventcenter.domain.event import Event
from eventcenter.domain.source_modes import EVENT_ONLY
from eventcenter.domain.sources import SourceFailure, SourceItem
from eventcenter.handlers.config import ProcessorSettings
from eventcenter.sources.connectors import callable_poll, redis_stream
from eventcenter.sources.manager import SourceRunner
from eventcenter.sources.source import DataSource

TENANT, SOURCE = "acme", "orders"
RATE = 200.0  # items per second from the producer
POLL_PAGE = 500
READY_S = 10.0
WAIT_S = 20.0  # the longest any phase may take before the run is reported as stuck
FINAL_WAIT_S = 3.0  # after the producer stopped: what is still missing then is reported

#: The source's policy for this section: short, so the run takes seconds (see the docstring).
SOURCE_CONFIG: dict[str, Any] = {
    "event_timeout": 0.5,
    "failure_threshold": 2,
    "success_threshold": 3,
    "max_hysteresis": 10,
    "polling_interval": 0.2,
    "flap_switches": 20,
    "flap_window": "5m",
    "cool_down": 0.1,
}


class FailoverStuck(RuntimeError):
    """Raised when a phase of the failover run did not happen within WAIT_S."""


class ServerDidNotStart(RuntimeError):
    """Raised when a server of the bench's own did not start."""


# a redis-server of the bench's own --------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def accepting(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class RedisServer:
    """``redis-server`` on a free loopback port, stopped only by its own pid.

    ``keep_data``: an append-only file synced on every write, so a server killed and started
    again has its streams and consumer groups back (a pure outage); without it nothing is kept
    and a restart comes back empty (the stream and its group are gone).
    """

    directory: Path
    keep_data: bool = False
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "redis-server"
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--dir", str(self.directory)]
        if self.keep_data:
            argv += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            argv += ["--appendonly", "no"]
        with (self.directory / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + READY_S
        while not accepting(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise ServerDidNotStart(f"redis-server did not start on port {self.port}")
            time.sleep(0.01)

    def kill(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(READY_S)


def redis_reason() -> str | None:
    """None when a redis-server binary is installed; else why this section cannot run."""
    return None if shutil.which("redis-server") else "no redis-server binary on PATH"


# the run ------------------------------------------------------------------------------------------


class Record:
    """The producer's record of every item (what the poll path serves), and what was handled."""

    def __init__(self) -> None:
        self.items: list[SourceItem] = []
        self.seen: Counter[str] = Counter()
        self.paths: Counter[str] = Counter()
        self.first_at: dict[str, float] = {}  # "<mark>:<path>" -> wall time of the first item
        self.marks: dict[str, float] = {}
        self.changed = asyncio.Event()

    def add(self) -> SourceItem:
        item = SourceItem(key=f"o-{len(self.items)}", version="1", data={"n": len(self.items)})
        self.items.append(item)
        return item

    async def poll(self, cursor: str | None) -> tuple[list[SourceItem], int]:
        start = int(cursor or 0)
        page = self.items[start : start + POLL_PAGE]
        return page, start + len(page)

    def mark(self, name: str) -> None:
        """From now on, note when the first item of each path is handled (``<name>:<path>``)."""
        self.marks[name] = time.time()

    async def handler(self, event: Event, ctx: Any) -> None:
        self.seen[event.payload["key"]] += 1
        now = time.time()
        path = str(event.metadata.get("path"))
        self.paths[path] += 1
        for name in self.marks:
            self.first_at.setdefault(f"{name}:{path}", now)
        self.changed.set()

    def first(self, name: str, path: str) -> float | None:
        return self.first_at.get(f"{name}:{path}")

    async def wait(self, ready: Callable[[], bool], limit: float = WAIT_S) -> None:
        async with asyncio.timeout(limit):
            while not ready():
                self.changed.clear()
                await self.changed.wait()


async def produce(record: Record, client: Redis, stream: str, stop: asyncio.Event) -> int:
    """One item every 1/RATE s: into the record always, into the stream while it is up."""
    lost = 0
    while not stop.is_set():
        item = record.add()
        body = orjson.dumps({"key": item.key, "version": item.version, "data": item.data})
        try:
            await client.xadd(stream, {"item": body})
        except RedisError:
            lost += 1  # the server is down: this item reaches the center by polling only
        await asyncio.sleep(1 / RATE)
    return lost


def switches(runner: SourceRunner, after: float) -> list[dict[str, Any]]:
    return [entry for entry in runner.recent if entry["at"] >= after]


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise FailoverStuck(f"{what} did not happen within {WAIT_S:g}s")
        await asyncio.sleep(0.005)


def first_switch(entries: Iterable[dict[str, Any]], **match: str) -> dict[str, Any] | None:
    for entry in entries:
        if all(entry[key] == value for key, value in match.items()):
            return entry
    return None


async def outage_cycle(
    number: int,
    server: RedisServer,
    runner: SourceRunner,
    record: Record,
    hold_s: float,
    failures: list[SourceFailure],
) -> dict[str, Any]:
    """Kill the server, wait for a polled item, hold, start it again, wait for event_only."""
    if runner.mode != EVENT_ONLY:
        raise FailoverStuck(f"the source is in {runner.mode} before outage {number}")
    outage, down, up = time.time(), f"outage {number}", f"recovery {number}"
    record.mark(down)
    server.kill()
    await until(lambda: record.first(down, "poll") is not None, f"a polled item ({down})")
    await asyncio.sleep(hold_s)
    server.start()
    recovery = time.time()
    record.mark(up)
    await until(
        lambda: first_switch(switches(runner, recovery), to=EVENT_ONLY) is not None,
        f"the switch back to event_only ({up})",
    )
    left = first_switch(switches(runner, outage), previous=EVENT_ONLY)
    back = first_switch(switches(runner, recovery), to=EVENT_ONLY)
    polled, pushed = record.first(down, "poll"), record.first(up, "push")
    # The push path's failed attempts (connection errors and silences) during the outage: the
    # reconnect back-off after n of them is 0.8 s * 2^(n-1) with jitter, so the last attempt
    # before the recovery and its count tell how long the engine still waited after it.
    attempts = [
        f.at for f in failures if f.path == "push" and f.kind != "silence" and outage <= f.at
    ]
    before = [at for at in attempts if at <= recovery]
    assert left is not None
    assert back is not None
    assert polled is not None
    return {
        "outage_at": outage,
        "outage_to_switch_s": round(left["at"] - outage, 3),
        "switched_to": left["to"],
        "switch_reason": left["reason"],
        "outage_to_first_polled_s": round(polled - outage, 3),
        "recovery_to_first_pushed_s": round(pushed - recovery, 3) if pushed else None,
        "recovery_to_event_only_s": round(back["at"] - recovery, 3),
        "return_reason": back["reason"],
        "failed_push_attempts": len(before),
        "last_failed_attempt_before_recovery_s": round(recovery - before[-1], 3)
        if before
        else None,
    }


def build_center(directory: Path, stream: str, server: RedisServer, record: Record) -> EventCenter:
    settings = CenterSettings(
        name="bench",
        database_url=f"sqlite:///{directory / 'center.db'}",
        data_dir=directory,
        processor=ProcessorSettings(),
    )
    center = EventCenter(settings, builtin_handlers=False)
    center.processor.subscribe("source.item.*", record.handler, name="items")
    center.sources.register(
        DataSource(
            tenant=TENANT,
            name=SOURCE,
            events=redis_stream(
                stream, group="eventcenter", consumer="bench", url=server.url, connect_timeout=1.0
            ),
            poll=callable_poll(record.poll, name="record"),
            **SOURCE_CONFIG,
        )
    )
    return center


async def failover_run(
    directory: Path, cycles: int, steady_s: float, hold_s: float
) -> dict[str, Any]:
    server = RedisServer(directory)
    server.start()
    stream = f"bench-failover-{secrets.token_hex(4)}"
    record = Record()
    center = build_center(directory, stream, server, record)
    runner = center.sources.runner(TENANT, SOURCE)
    failures: list[SourceFailure] = []
    center.sources.on_failure = failures.append
    client = Redis.from_url(server.url, socket_connect_timeout=0.2, socket_timeout=1.0)
    stop = asyncio.Event()
    measured: list[dict[str, Any]] = []
    try:
        await center.start()
        producer = asyncio.create_task(produce(record, client, stream, stop))
        await record.wait(lambda: record.seen.total() >= RATE * steady_s / 2)
        for number in range(1, cycles + 1):
            await asyncio.sleep(steady_s / 2)
            measured.append(await outage_cycle(number, server, runner, record, hold_s, failures))
        stop.set()
        lost = await producer
        produced = len(record.items)
        with suppress(TimeoutError):  # what is still missing then is reported, not waited for
            await record.wait(lambda: len(record.seen) >= produced, FINAL_WAIT_S)
        await center.processor.join()
    finally:
        stop.set()
        await center.stop()
        await client.aclose()
        server.kill()
    first = measured[0]["outage_at"]
    for cycle in measured:
        del cycle["outage_at"]
    return {
        "status": "measured",
        "config": {
            **SOURCE_CONFIG,
            "producer_items_per_s": RATE,
            "outage_held_s": hold_s,
            "cycles": cycles,
        },
        "cycles": measured,
        **{key: summary([c[key] for c in measured]) for key in MEASURES},
        "timeline": [
            {**entry, "at": round(entry["at"] - first, 3)} for entry in switches(runner, first)
        ],
        "produced": produced,
        "lost_by_push": lost,
        "delivered": len(record.seen),
        "missing": [item.key for item in record.items if item.key not in record.seen][:20],
        "by_path": dict(record.paths),
        "duplicates": record.seen.total() - len(record.seen),
        "exactly_once": len(record.seen) == produced
        and record.seen.total() == produced
        and set(record.seen) == {item.key for item in record.items},
    }


MEASURES = (
    "outage_to_switch_s",
    "outage_to_first_polled_s",
    "recovery_to_first_pushed_s",
    "recovery_to_event_only_s",
)


def summary(values: list[float | None]) -> dict[str, float | None]:
    """Median and maximum over the cycles (None where a cycle had no value)."""
    known = sorted(v for v in values if v is not None)
    if not known:
        return {"median": None, "max": None}
    return {"median": round(statistics.median(known), 3), "max": known[-1]}


def measure_failover(cycles: int, steady_s: float, hold_s: float) -> dict[str, Any]:
    reason = redis_reason()
    if reason is not None:
        return {"status": "unavailable", "reason": reason}
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as scratch:
        try:
            return fresh_run(failover_run, Path(scratch), cycles, steady_s, hold_s)
        except (FailoverStuck, ServerDidNotStart) as stuck:
            return {"status": "failed", "reason": str(stuck)}
