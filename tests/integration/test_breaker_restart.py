"""Circuit breakers survive a restart, on SQLite and on PostgreSQL: their moves go through the
store writer into their logs, and a new process restores each breaker from its log, an open one
with the rest of its wait measured on the wall clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from eventcenter.domain.breaker import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerConfig,
    BreakerState,
    BreakerTransition,
)
from eventcenter.domain.breaker_log import BreakerLog
from eventcenter.domain.errors import BreakerRefused, CallNotPermitted
from eventcenter.healing.breaker import BreakerRegistry
from eventcenter.storage.application import CenterApplication
from eventcenter.storage.breaker_state import DurableBreakerRecorder, RecordBreakerMove
from eventcenter.storage.writer import FlushCommand, StoreWriter
from tests.store_writer import opened_writer

CONFIG = BreakerConfig(
    window_size=4, minimum_calls=4, permitted_calls_in_half_open=2, wait_in_open=30.0
)
WALL_START = 1_700_000_000.0


@dataclass
class Clocks:
    """One process's monotonic clock (starts near zero in each process) and the wall clock
    (goes on across the restart)."""

    t: float
    wall_t: float

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds

    def wall(self) -> float:
        return self.wall_t

    def advance(self, seconds: float) -> None:
        self.t += seconds
        self.wall_t += seconds


@dataclass
class Process:
    """One run of a center's store: the application, its writer and the breakers' recorder."""

    app: CenterApplication
    writer: StoreWriter
    store: DurableBreakerRecorder

    async def registry(self, clocks: Clocks) -> BreakerRegistry:
        saved = await self.store.load()
        return BreakerRegistry(clock=clocks, wall=clocks.wall, recorder=self.store, saved=saved)

    async def flush(self) -> None:
        await self.writer.submit(FlushCommand())


@asynccontextmanager
async def process(
    url: str, center: str = "default", snapshots: int = 100
) -> AsyncIterator[Process]:
    async with opened_writer(url, center, snapshots) as (app, writer):
        yield Process(app, writer, DurableBreakerRecorder(writer))


def fail() -> None:
    raise ConnectionError("payments API refused the connection")


def ok() -> str:
    return "ok"


def trip(call: Callable[[Callable[[], object]], object]) -> None:
    for _ in range(4):
        with pytest.raises(ConnectionError):
            call(fail)


async def test_an_open_breaker_is_open_after_a_restart_and_half_opens_when_its_wait_ends(
    database_url: str,
) -> None:
    first = Clocks(t=3.0, wall_t=WALL_START)
    async with process(database_url) as one:
        registry = await one.registry(first)
        payments = registry.get_or_create("payments", CONFIG)
        trip(payments.call)
        assert payments.state == OPEN
        registry.get_or_create("search", CONFIG).call(ok)  # never moved: nothing to restore
        await one.flush()

    second = Clocks(t=1.0, wall_t=first.wall_t + 12.0)  # down for 12 s; monotonic starts over
    async with process(database_url) as two:
        saved = await two.store.load()
        assert saved == [BreakerState("payments", OPEN, WALL_START + 30.0, reopens=1)]
        registry = await two.registry(second)
        payments = registry.get_or_create("payments", CONFIG)
        assert payments.state == OPEN
        assert payments.status().retry_in == pytest.approx(18.0)
        with pytest.raises(CallNotPermitted, match="open"):
            payments.call(ok)

        second.advance(17.9)
        with pytest.raises(CallNotPermitted):
            payments.call(ok)
        second.advance(0.1)
        assert payments.call(ok) == "ok"
        assert payments.state == HALF_OPEN
        assert payments.call(ok) == "ok"
        assert payments.state == CLOSED
        await two.flush()

        log = two.app.breaker_log(BreakerLog.create_id("default", "payments"))
        assert log is not None
        assert log.saved() == BreakerState("payments", CLOSED, None, 0)
        events = [type(e).__name__ for e in two.app.events.get(log.id)]
        assert events == ["Registered", "Opened", "HalfOpened", "Closed"]
        assert two.app.breaker_log(BreakerLog.create_id("default", "search")) is None


async def test_a_breaker_that_keeps_failing_waits_longer_after_a_restart(
    database_url: str,
) -> None:
    config = BreakerConfig(
        window_size=4,
        minimum_calls=4,
        permitted_calls_in_half_open=1,
        wait_in_open=10.0,
        wait_multiplier=3.0,
        max_wait_in_open=60.0,
    )
    clocks = Clocks(t=0.0, wall_t=WALL_START)
    async with process(database_url) as one:
        payments = (await one.registry(clocks)).get_or_create("payments", config)
        trip(payments.call)
        clocks.advance(10.0)
        with pytest.raises(ConnectionError):
            payments.call(fail)  # the trial call fails: open again, for 30 s
        await one.flush()

    later = Clocks(t=0.0, wall_t=clocks.wall_t + 30.0)  # down for the whole wait
    async with process(database_url) as two:
        payments = (await two.registry(later)).get_or_create("payments", config)
        assert payments.status().retry_in == 0.0
        with pytest.raises(ConnectionError):
            payments.call(fail)  # half-opened by this call, which fails: the third opening
        assert payments.state == OPEN
        assert payments.status().retry_in == 60.0, "10 * 3**2 = 90, at most 60"
        await two.flush()
        [saved] = await two.store.load()
        assert (saved.state, saved.reopens) == (OPEN, 3)
        assert saved.open_until == later.wall_t + 60.0


async def test_each_center_restores_only_its_own_breakers(database_url: str) -> None:
    clocks = Clocks(t=0.0, wall_t=WALL_START)
    async with process(database_url, center="east") as east:
        trip((await east.registry(clocks)).get_or_create("payments", CONFIG).call)
        await east.flush()
    async with process(database_url, center="west") as west:
        assert await west.store.load() == []
        payments = (await west.registry(clocks)).get_or_create("payments", CONFIG)
        assert payments.state == CLOSED


async def test_a_long_history_is_loaded_from_a_snapshot(database_url: str) -> None:
    config = BreakerConfig(
        window_size=1, minimum_calls=1, permitted_calls_in_half_open=1, wait_in_open=1.0,
        wait_multiplier=1.0, max_wait_in_open=1.0,
    )  # fmt: skip
    clocks = Clocks(t=0.0, wall_t=WALL_START)
    async with process(database_url, snapshots=10) as one:
        payments = (await one.registry(clocks)).get_or_create("payments", config)
        for _ in range(15):  # each round: half-open (after the first), open again
            with pytest.raises(ConnectionError):
                payments.call(fail)
            clocks.advance(1.0)
        await one.flush()
        log_id = BreakerLog.create_id("default", "payments")
        assert one.app.snapshots is not None
        [snapshot] = list(one.app.snapshots.get(log_id, desc=True, limit=1))
        assert snapshot.originator_version >= 20
        tail = list(one.app.events.get(log_id, gt=snapshot.originator_version))
        assert len(tail) < 10
        [saved] = await one.store.load()
        assert (saved.state, saved.reopens) == (OPEN, 15)


async def test_a_refused_first_move_leaves_nothing_behind(database_url: str) -> None:
    """A first move the log refuses (its breaker's earlier moves were never stored) registers
    nothing, so the breaker's next move that follows starts its log cleanly."""
    async with process(database_url) as one:
        stray = BreakerTransition("payments", "probe", OPEN, HALF_OPEN, "wait over", WALL_START)
        with pytest.raises(BreakerRefused, match="the log holds closed"):
            await one.writer.submit(RecordBreakerMove(stray))
        assert await one.store.load() == []
        opened = BreakerTransition(
            "payments", "trip", CLOSED, OPEN, "failures", WALL_START + 1, 100.0, 0.0, 4, 30.0, 1
        )
        await one.writer.submit(RecordBreakerMove(opened))
        assert await one.store.load() == [BreakerState("payments", OPEN, WALL_START + 31, 1)]
