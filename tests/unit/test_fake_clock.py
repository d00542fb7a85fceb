"""The fake clock moves only when told to, wakes sleepers in order, and never sleeps for real."""

from __future__ import annotations

import asyncio

import pytest

from eventcenter.sources.clock import ClockStalled, FakeClock, SystemClock


async def test_now_starts_where_asked_and_moves_only_on_advance() -> None:
    clock = FakeClock(start=100.0)
    assert clock.now() == 100.0
    await clock.advance(2.5)
    assert clock.now() == 102.5


async def test_a_sleeper_wakes_when_its_deadline_is_reached_and_not_before() -> None:
    clock = FakeClock()
    sleeper = asyncio.create_task(clock.sleep(1.0))
    await clock.advance(0.9)
    assert not sleeper.done()
    await clock.advance(0.1)
    assert sleeper.done()


async def test_sleepers_wake_in_deadline_order_each_at_its_own_time() -> None:
    clock = FakeClock()
    woke: list[tuple[str, float]] = []

    async def nap(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.now()))

    tasks = [asyncio.create_task(nap(n, s)) for n, s in (("c", 3.0), ("a", 1.0), ("b", 2.0))]
    await clock.advance(10.0)

    assert woke == [("a", 1.0), ("b", 2.0), ("c", 3.0)]
    assert clock.now() == 10.0
    await asyncio.gather(*tasks)


async def test_ties_wake_in_the_order_they_went_to_sleep() -> None:
    clock = FakeClock()
    woke: list[str] = []

    async def nap(name: str) -> None:
        await clock.sleep(1.0)
        woke.append(name)

    tasks = [asyncio.create_task(nap(name)) for name in "xyz"]
    await clock.advance(1.0)

    assert woke == ["x", "y", "z"]
    await asyncio.gather(*tasks)


async def test_a_sleeper_that_sleeps_again_inside_the_span_wakes_again_in_the_same_advance() -> (
    None
):
    clock = FakeClock()
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            await clock.sleep(1.0)
            ticks.append(clock.now())

    task = asyncio.create_task(ticker())
    await clock.advance(5.5)

    assert ticks == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert clock.next_wake == 6.0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_cancelled_sleeper_is_forgotten() -> None:
    clock = FakeClock()
    sleeper = asyncio.create_task(clock.sleep(1.0))
    await clock.advance(0.0)
    assert clock.sleepers == 1
    sleeper.cancel()
    await asyncio.gather(sleeper, return_exceptions=True)

    assert clock.sleepers == 0
    assert clock.next_wake is None
    await clock.advance(2.0)  # nothing to wake, nothing breaks


async def test_sleeping_zero_seconds_returns_without_advancing() -> None:
    clock = FakeClock()
    await asyncio.wait_for(clock.sleep(0.0), timeout=1.0)
    assert clock.now() == 0.0


async def test_time_never_moves_back() -> None:
    clock = FakeClock()
    with pytest.raises(ValueError, match="only moves forward"):
        await clock.advance(-1.0)


async def test_woken_tasks_run_until_they_wait_again_before_advance_returns() -> None:
    clock = FakeClock()
    steps: list[int] = []
    gate = asyncio.Event()

    async def worker() -> None:
        await clock.sleep(1.0)
        for step in range(100):  # many loop turns after waking
            steps.append(step)
            await asyncio.sleep(0)
        await gate.wait()

    task = asyncio.create_task(worker())
    await clock.advance(1.0)

    assert len(steps) == 100
    gate.set()
    await task


async def test_a_task_that_spins_without_waiting_is_reported_instead_of_hanging() -> None:
    clock = FakeClock()

    async def spin() -> None:
        while True:  # noqa: ASYNC110 - the spinning loop is what this test is about
            await asyncio.sleep(0)

    task = asyncio.create_task(spin())
    with pytest.raises(ClockStalled, match="spins"):
        await clock.advance(1.0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_the_system_clock_is_monotonic() -> None:
    clock = SystemClock()
    first = clock.now()
    await clock.sleep(0.0)
    assert clock.now() >= first
