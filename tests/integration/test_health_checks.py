"""Health checkers against real servers on loopback: green checks, refused ports, wrong answers;
a redis-server the test runs itself going down and coming back, and a recovery action that
restarts it, counted only once the re-check is green."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import make_url

from eventcenter.domain.health import (
    CheckResult,
    CheckSchedule,
    CheckSettings,
    HealthStatus,
    HealthThresholds,
    IncidentOutcome,
    RecoveryRule,
    ServiceHealth,
)
from eventcenter.healing.checkers import (
    CallableCheck,
    HttpCheck,
    NatsCheck,
    PostgresCheck,
    RedisCheck,
)
from eventcenter.healing.health import HealthMonitor
from eventcenter.healing.recovery import IncidentEnded, RecoveryManager
from eventcenter.sources.clock import SystemClock
from tests.servers import closed_port, redis_process

GUARD_S = 10.0  # only turns a hang into a failure
FAST = CheckSettings(
    schedule=CheckSchedule(interval=0.2, timeout=0.2, jitter=0.2),
    thresholds=HealthThresholds(
        degraded_after=1, unhealthy_after=2, healthy_after=1, slow_after=None
    ),
)
on_postgres = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


@dataclass
class HttpServer:
    """A loopback HTTP server answering every request with ``status`` after ``delay`` s."""

    port: int = 0
    status: int = 200
    delay: float = 0.0
    requests: int = 0
    connections: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/health"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer requests on one connection until the client closes it (keep-alive)."""
        self.connections += 1
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                self.requests += 1
                if self.delay:
                    await asyncio.sleep(self.delay)
                body = b"ok" if self.status < 400 else b"not ok"
                head = f"HTTP/1.1 {self.status} X\r\nContent-Length: {len(body)}\r\n\r\n"
                writer.write(head.encode() + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client closed the connection
        finally:
            writer.close()


@pytest.fixture
async def http_server() -> AsyncIterator[HttpServer]:
    state = HttpServer()
    server = await asyncio.start_server(state.handle, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    async with server:
        yield state
        server.close()


def libpq(database_url: str) -> str:
    """The SQLAlchemy test URL as a libpq URL (the checker takes both; this tests the plain)."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(False)


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait (real time, bounded) until ``condition`` holds."""
    deadline = time.monotonic() + GUARD_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not {what} after {GUARD_S}s")
        await asyncio.sleep(0.01)


async def http_check(url: str, **options: Any) -> CheckResult:
    """One check by a fresh HttpCheck, closed afterwards."""
    checker = HttpCheck("api", url, **options)
    try:
        return await checker.check()
    finally:
        await checker.aclose()
        await checker.aclose()  # safe twice


class TestHttp:
    async def test_an_expected_status_is_green(self, http_server: HttpServer) -> None:
        result = await http_check(http_server.url)
        assert result.ok
        assert result.details == {"status_code": 200}
        http_server.status = 204
        assert (await http_check(http_server.url, expected_status={200, 204})).ok

    async def test_another_status_fails_saying_what_was_expected(
        self, http_server: HttpServer
    ) -> None:
        http_server.status = 503
        result = await http_check(http_server.url)
        assert not result.ok
        assert result.error == f"GET {http_server.url} answered 503 (expected 200)"

    async def test_each_check_opens_its_own_connection(self, http_server: HttpServer) -> None:
        checker = HttpCheck("api", http_server.url)
        for _ in range(3):
            assert (await checker.check()).ok
        await checker.aclose()
        assert http_server.connections == 3  # no pooled connection hides a restart

    async def test_a_refused_port_fails_with_the_reason(self) -> None:
        url = f"http://127.0.0.1:{closed_port()}/health"
        result = await http_check(url, timeout=2.0)
        assert not result.ok
        assert result.error is not None
        assert result.error.startswith(f"GET {url}: ConnectError")

    async def test_a_server_slower_than_the_timeout_fails(self, http_server: HttpServer) -> None:
        http_server.delay = 1.0
        started = time.monotonic()
        result = await http_check(http_server.url, timeout=0.1)
        assert not result.ok
        assert "ReadTimeout" in str(result.error)
        assert time.monotonic() - started < 0.9


@pytest.mark.postgres
class TestPostgres:
    @on_postgres
    async def test_select_one_is_green_and_reports_the_server_version(
        self, database_url: str
    ) -> None:
        for url in (database_url, libpq(database_url)):
            result = await PostgresCheck("db", url, timeout=3.0).check()
            assert result.ok, result.error
            assert int(result.details["server_version"]) >= 90000

    async def test_a_refused_port_fails_without_showing_the_password(self) -> None:
        url = f"postgresql://postgres:s3cret-pw@127.0.0.1:{closed_port()}/test"
        result = await PostgresCheck("db", url, timeout=2.0).check()
        assert not result.ok
        assert "OperationalError" in str(result.error)
        assert "s3cret-pw" not in str(result.error)
        assert "postgres:***@127.0.0.1" in str(result.error)

    @on_postgres
    async def test_a_missing_database_fails_naming_it(self, database_url: str) -> None:
        url = make_url(database_url).set(database="no_such_db_here").render_as_string(False)
        result = await PostgresCheck("db", url, timeout=3.0).check()
        assert not result.ok
        assert "no_such_db_here" in str(result.error)


@pytest.mark.redis
class TestRedis:
    async def test_ping_is_green(self, redis_url: str) -> None:
        assert (await RedisCheck("cache", redis_url, timeout=2.0).check()).ok

    async def test_a_refused_port_fails_with_the_reason(self) -> None:
        url = f"redis://127.0.0.1:{closed_port()}/0"
        result = await RedisCheck("cache", url, timeout=2.0).check()
        assert not result.ok
        assert result.error is not None
        assert result.error.startswith(f"Redis at {url}: ConnectionError")


@pytest.mark.nats
class TestNats:
    async def test_connect_and_flush_is_green_and_jetstream_answers(self, nats_url: str) -> None:
        assert (await NatsCheck("bus", nats_url, timeout=2.0).check()).ok
        result = await NatsCheck("bus", nats_url, timeout=2.0, jetstream=True).check()
        assert result.ok, result.error
        assert set(result.details) == {"streams", "consumers"}

    async def test_a_refused_port_fails_with_the_clients_reason_promptly(self) -> None:
        url = f"nats://127.0.0.1:{closed_port()}"
        started = time.monotonic()
        result = await NatsCheck("bus", url, timeout=2.0).check()
        assert not result.ok
        assert "ConnectionRefusedError" in str(result.error)
        assert time.monotonic() - started < 1.0  # nats-py's retry-forever is not used


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.nats
@on_postgres
async def test_one_monitor_reports_every_kind_of_check_green(
    database_url: str, redis_url: str, nats_url: str, http_server: HttpServer
) -> None:
    monitor = HealthMonitor(SystemClock(), settings=CheckSettings())
    monitor.add(HttpCheck("api", http_server.url))
    monitor.add(PostgresCheck("db", database_url))
    monitor.add(RedisCheck("cache", redis_url))
    monitor.add(NatsCheck("bus", nats_url, jetstream=True))
    monitor.add(CallableCheck("disk", lambda: True))
    monitor.add(RedisCheck("gone", f"redis://127.0.0.1:{closed_port()}/0"))
    for name in monitor.names:
        await monitor.check_now(name)
    await monitor.aclose()  # closes the HTTP check's client
    report = monitor.report().as_dict()
    assert report["summary"] == {
        "total": 6,
        "healthy": 5,
        "degraded": 1,  # one failed check: degraded_after is 1 by default
        "unhealthy": 0,
        "unknown": 0,
    }
    assert report["services"]["db"]["response_time"] > 0


@pytest.mark.redis
class TestRedisServerGoesAway:
    async def test_a_stopped_server_turns_unhealthy_and_healthy_again_after_a_restart(
        self, redis_binary: str, tmp_path: Path
    ) -> None:
        with redis_process(tmp_path) as server:
            monitor = HealthMonitor(SystemClock(), settings=FAST, rng=random.Random(3))
            monitor.add(RedisCheck("cache", f"{server.url}/0", timeout=0.2))
            seen: list[str] = []

            async def on_change(update: object) -> None:
                seen.append(monitor.health("cache").status.value)

            monitor.listen(on_change)
            async with monitor:
                await until(lambda: _status(monitor) is HealthStatus.HEALTHY, "healthy")
                server.stop()
                await until(lambda: _status(monitor) is HealthStatus.UNHEALTHY, "unhealthy")
                await asyncio.to_thread(server.start)
                await until(lambda: _status(monitor) is HealthStatus.HEALTHY, "healthy again")
            record = monitor.health("cache")
        assert seen[0] == "healthy"
        assert "unhealthy" in seen
        assert seen[-1] == "healthy"
        assert record.total_failures >= 2
        assert "Connection" in str(record.last_error)

    async def test_a_recovery_action_restarts_it_and_the_re_check_verifies_it(
        self, redis_binary: str, tmp_path: Path
    ) -> None:
        with redis_process(tmp_path) as server:
            clock = SystemClock()
            monitor = HealthMonitor(clock, settings=FAST, rng=random.Random(4))
            monitor.add(RedisCheck("cache", f"{server.url}/0", timeout=0.2))
            rule = RecoveryRule(
                failure_threshold=2,
                max_attempts=3,
                backoff_base=0.05,
                backoff_cap=0.2,
                cool_down=60.0,
                verify_checks=2,
                verify_interval=0.02,
                action_timeout=5.0,
            )
            recovery = RecoveryManager(monitor, clock, rule=rule, rng=random.Random(4))
            pids: list[int] = []

            async def restart_redis(record: ServiceHealth) -> None:
                await asyncio.to_thread(server.start)
                assert server.process is not None
                pids.append(server.process.pid)

            recovery.register("cache", restart_redis)
            ended: list[IncidentEnded] = []

            async def on_end(incident: IncidentEnded) -> None:
                ended.append(incident)

            recovery.listen(on_end)
            async with monitor:
                await until(lambda: _status(monitor) is HealthStatus.HEALTHY, "healthy")
                assert server.process is not None
                first_pid = server.process.pid
                server.stop()
                await until(lambda: bool(ended), "recovered")
                assert _status(monitor) is HealthStatus.HEALTHY
            await recovery.aclose()

        [incident] = ended
        assert incident.outcome is IncidentOutcome.RECOVERED
        assert incident.attempts == 1
        assert len(pids) == 1
        assert pids[0] != first_pid  # a new process: the action restarted it
        stats = recovery.stats().as_dict()
        assert stats["total_attempts"] == 1
        assert stats["success_rate"] == 1.0
        assert 0 < stats["average_recovery_time"] < 5.0
        assert stats["actions_by_type"]["restart_redis"]["successes"] == 1


def _status(monitor: HealthMonitor) -> HealthStatus:
    return monitor.health("cache").status
