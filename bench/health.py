"""What a health check costs, next to baselines measured in the same run.

Run from the repository root::

    .venv/bin/python -m bench.health

Three tables:

- **Monitor overhead**: microseconds per ``HealthMonitor.check_now`` of a check that does
  nothing (the timeout race, the record, the alert window, the listeners), next to awaiting
  the same check directly.
- **Checks against loopback servers**: milliseconds per check (median and p95 of ``N_CHECKS``)
  of HTTP (a server in this process), PostgreSQL, Redis and NATS, next to a bare TCP connect
  to the same port: the floor of a check that opens its own connection. A server that is not
  reachable is reported as such.
- **Spread**: the most checks that start within any 100 ms of the first interval when 1000
  services with a 10 s interval are registered at once, spread (the monitor) versus not (all
  at the start), on a fake clock.

Figures are wall-clock on a shared machine: compare the rows of one run with each other.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import statistics
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from rich.console import Console
from rich.table import Table

from eventcenter.domain.health import CheckResult, CheckSchedule, CheckSettings
from eventcenter.healing.checkers import (
    CallableCheck,
    HttpCheck,
    NatsCheck,
    PostgresCheck,
    RedisCheck,
)
from eventcenter.healing.health import HealthMonitor
from eventcenter.sources.clock import FakeClock, SystemClock

N_OVERHEAD = 20_000
N_CHECKS = 200
PG_URL = os.environ.get("EVENTCENTER_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("EVENTCENTER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
NATS_URL = os.environ.get("EVENTCENTER_TEST_NATS_URL", "nats://127.0.0.1:4222")


async def overhead() -> tuple[float, float]:
    """(µs per monitored check, µs per direct check) of a check that does nothing."""
    checker = CallableCheck("noop", lambda: True)
    monitor = HealthMonitor(SystemClock())
    monitor.add(checker)
    started = time.perf_counter()
    for _ in range(N_OVERHEAD):
        await checker.check()
    direct = (time.perf_counter() - started) / N_OVERHEAD * 1e6
    started = time.perf_counter()
    for _ in range(N_OVERHEAD):
        await monitor.check_now("noop")
    monitored = (time.perf_counter() - started) / N_OVERHEAD * 1e6
    return monitored, direct


async def timed(check: Callable[[], Awaitable[object]]) -> tuple[float, float] | str:
    """(median ms, p95 ms) of ``N_CHECKS`` calls, or the first failure's reason."""
    samples = []
    for _ in range(N_CHECKS):
        started = time.perf_counter()
        result = await check()
        samples.append((time.perf_counter() - started) * 1000)
        if isinstance(result, CheckResult) and not result.ok:
            return str(result.error)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def tcp_connect(url: str, default_port: int) -> Callable[[], Awaitable[None]]:
    parts = urlsplit(url)
    address = (parts.hostname or "127.0.0.1", parts.port or default_port)

    async def connect() -> None:
        _, writer = await asyncio.open_connection(*address)
        writer.close()
        await writer.wait_closed()

    return connect


async def http_server() -> tuple[asyncio.Server, str]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/health"


async def checks() -> list[tuple[str, tuple[float, float] | str, tuple[float, float] | str]]:
    server, url = await http_server()
    http = HttpCheck("api", url)
    rows = [
        ("HTTP", await timed(http.check), await timed(tcp_connect(url, 80))),
        (
            "PostgreSQL SELECT 1",
            await timed(PostgresCheck("db", PG_URL).check),
            await timed(tcp_connect(PG_URL, 5432)),
        ),
        (
            "Redis PING",
            await timed(RedisCheck("cache", REDIS_URL).check),
            await timed(tcp_connect(REDIS_URL, 6379)),
        ),
        (
            "NATS flush",
            await timed(NatsCheck("bus", NATS_URL).check),
            await timed(tcp_connect(NATS_URL, 4222)),
        ),
        (
            "NATS JetStream info",
            await timed(NatsCheck("bus", NATS_URL, jetstream=True).check),
            await timed(tcp_connect(NATS_URL, 4222)),
        ),
    ]
    await http.aclose()
    server.close()
    await server.wait_closed()
    return rows


async def spread() -> tuple[int, int]:
    """(most starts in 100 ms with the monitor's spread, the same without)."""
    clock = FakeClock()
    schedule = CheckSchedule(interval=10.0, timeout=1.0, jitter=0.1)
    monitor = HealthMonitor(clock, rng=random.Random(1))
    starts: list[float] = []

    def noted() -> bool:
        starts.append(clock.now())
        return True

    for n in range(1000):
        monitor.add(CallableCheck(f"s{n}", noted), CheckSettings(schedule=schedule))
    async with monitor:
        await clock.advance(9.999)
    buckets = [0] * 100
    for start in starts:
        buckets[int(start * 10)] += 1
    return max(buckets), 1000


def shown(cell: tuple[float, float] | str) -> str:
    if isinstance(cell, str):
        return f"unavailable: {cell[:60]}"
    median, p95 = cell
    return f"{median:.2f} / {p95:.2f}"


async def main() -> None:
    console = Console()
    monitored, direct = await overhead()
    table = Table(title="Monitor overhead per check (µs)")
    for column in ("monitored check_now", "direct check()", "ratio"):
        table.add_column(column, justify="right")
    table.add_row(f"{monitored:.1f}", f"{direct:.1f}", f"{monitored / direct:.1f}x")
    console.print(table)

    table = Table(title=f"Checks against loopback servers, ms median / p95 of {N_CHECKS}")
    for column in ("check", "the check", "bare TCP connect", "ratio of medians"):
        table.add_column(column, justify="right")
    for name, check, connect in await checks():
        ratio = (
            f"{check[0] / connect[0]:.1f}x"
            if isinstance(check, tuple) and isinstance(connect, tuple)
            else "-"
        )
        table.add_row(name, shown(check), shown(connect), ratio)
    console.print(table)

    spread_max, herd_max = await spread()
    table = Table(title="1000 services, 10 s interval: most check starts in any 100 ms")
    for column in ("spread over the interval", "all at once"):
        table.add_column(column, justify="right")
    table.add_row(str(spread_max), str(herd_max))
    console.print(table)


if __name__ == "__main__":
    socket.setdefaulttimeout(5)
    asyncio.run(main())
