"""The health monitor on a fake clock: spread starts, intervals with jitter, per-check timeouts,
records and report, listeners, and checks of one service that never overlap."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

import pytest

from eventcenter.domain.errors import ConfigurationError, UnknownService
from eventcenter.domain.health import (
    AlertThresholds,
    CheckResult,
    CheckSchedule,
    CheckSettings,
    HealthStatus,
    HealthThresholds,
    HealthUpdate,
)
from eventcenter.healing.checkers import CallableCheck
from eventcenter.healing.health import HealthMonitor
from eventcenter.sources.clock import FakeClock

QUIET = AlertThresholds(
    success_rate_below=None,
    success_rate_clear=None,
    response_time_above=None,
    response_time_clear=None,
)


def settings(
    interval: float = 10.0,
    timeout: float = 1.0,
    jitter: float = 0.0,
    *,
    unhealthy_after: int = 3,
    degraded_after: int = 1,
    healthy_after: int = 1,
    slow_after: float | None = None,
    alerts: AlertThresholds | None = None,
) -> CheckSettings:
    return CheckSettings(
        schedule=CheckSchedule(interval=interval, timeout=timeout, jitter=jitter),
        thresholds=HealthThresholds(
            degraded_after=degraded_after,
            unhealthy_after=unhealthy_after,
            healthy_after=healthy_after,
            slow_after=slow_after,
        ),
        alerts=alerts or QUIET,
    )


class Switchable:
    """A service the test turns up and down; it notes the clock time of every check."""

    def __init__(self, clock: FakeClock, name: str = "svc", *, up: bool = True) -> None:
        self.name = name
        self.clock = clock
        self.up = up
        self.delay = 0.0
        self.times: list[float] = []

    async def check(self) -> CheckResult:
        self.times.append(self.clock.now())
        if self.delay:
            await self.clock.sleep(self.delay)
        return CheckResult.passed() if self.up else CheckResult.failed("down for the test")


async def test_first_checks_are_spread_over_the_interval_not_a_herd() -> None:
    clock = FakeClock()
    monitor = HealthMonitor(clock, settings=settings(interval=10.0), rng=random.Random(1))
    services = [Switchable(clock, f"s{n}") for n in range(50)]
    for service in services:
        monitor.add(service)
    async with monitor:
        await clock.advance(9.999)
    firsts = [service.times[0] for service in services]
    assert all(0.0 <= first < 10.0 for first in firsts)
    assert len({round(first, 6) for first in firsts}) == 50  # no two start together
    busiest = max(sum(1 for f in firsts if second <= f < second + 1) for second in range(10))
    assert busiest <= 12  # uniform would put 5 in each second


async def test_checks_repeat_at_the_interval_within_the_jitter() -> None:
    clock = FakeClock()
    monitor = HealthMonitor(
        clock, settings=settings(interval=10.0, jitter=0.2), rng=random.Random(5)
    )
    service = Switchable(clock)
    monitor.add(service)
    async with monitor:
        await clock.advance(200.0)
    gaps = [b - a for a, b in zip(service.times, service.times[1:], strict=False)]
    assert len(gaps) >= 15
    assert all(8.0 - 1e-9 <= gap <= 12.0 + 1e-9 for gap in gaps)
    assert len({round(gap, 6) for gap in gaps}) > 1  # they vary: services do not stay in step


async def test_the_same_seed_gives_the_same_schedule() -> None:
    async def times(seed: int) -> list[float]:
        clock = FakeClock()
        monitor = HealthMonitor(clock, settings=settings(jitter=0.3), rng=random.Random(seed))
        service = Switchable(clock)
        monitor.add(service)
        async with monitor:
            await clock.advance(100.0)
        return service.times

    assert await times(9) == await times(9)
    assert await times(9) != await times(10)


async def test_status_follows_the_thresholds_as_the_service_goes_down_and_up() -> None:
    clock = FakeClock()
    monitor = HealthMonitor(clock, settings=settings(unhealthy_after=2, healthy_after=2))
    service = Switchable(clock, "db")
    monitor.add(service)
    assert monitor.health("db").status is HealthStatus.UNKNOWN
    assert (await monitor.check_now("db")).status is HealthStatus.HEALTHY
    service.up = False
    assert (await monitor.check_now("db")).status is HealthStatus.DEGRADED
    assert (await monitor.check_now("db")).status is HealthStatus.UNHEALTHY
    assert monitor.is_down("db")
    service.up = True
    assert (await monitor.check_now("db")).status is HealthStatus.DEGRADED
    assert (await monitor.check_now("db")).status is HealthStatus.HEALTHY
    assert not monitor.is_down("db")
    assert not monitor.is_down("not-monitored")


async def test_a_check_past_its_timeout_fails_with_the_reason_and_is_cut_at_the_timeout() -> None:
    clock = FakeClock()
    monitor = HealthMonitor(clock, settings=settings(timeout=2.0))
    service = Switchable(clock, "slow")
    service.delay = 30.0
    monitor.add(service)
    checking = asyncio.create_task(monitor.check_now("slow"))
    await clock.advance(2.0)
    record = await checking
    assert record.consecutive_failures == 1
    assert record.last_error == "TimeoutError: no answer within 2s"
    assert record.response_time == pytest.approx(2.0)
    assert clock.sleepers == 0  # the cut check does not linger


async def test_response_time_is_measured_on_the_clock_and_slow_passes_degrade() -> None:
    clock = FakeClock()
    monitor = HealthMonitor(clock, settings=settings(timeout=5.0, slow_after=1.0))
    service = Switchable(clock, "api")
    service.delay = 1.5
    monitor.add(service)
    checking = asyncio.create_task(monitor.check_now("api"))
    await clock.advance(1.5)
    record = await checking
    assert record.response_time == pytest.approx(1.5)
    assert record.status is HealthStatus.DEGRADED
    assert record.reason == "slow: 1.5s > 1s"


async def test_a_raising_or_misbehaving_check_is_a_failed_check_not_a_crash() -> None:
    clock = FakeClock()
    monitor = HealthMonitor(clock)

    def broken() -> bool:
        raise ConnectionRefusedError("refused by the test")

    async def wrong_type() -> CheckResult:
        return "yes"  # type: ignore[return-value]

    monitor.add(CallableCheck("broken", broken))
    monitor.add(_Raw("raw", wrong_type))  # type: ignore[arg-type]
    assert (await monitor.check_now("broken")).last_error == (
        "ConnectionRefusedError: refused by the test"
    )
    assert "not a CheckResult" in str((await monitor.check_now("raw")).last_error)


class _Raw:
    def __init__(self, name: str, check: Callable[[], object]) -> None:
        self.name = name
        self.check = check


async def test_listeners_hear_status_changes_by_default_and_every_check_if_asked() -> None:
    clock = FakeClock()
    monitor = HealthMonitor(clock, settings=settings(unhealthy_after=2))
    service = Switchable(clock, "db")
    monitor.add(service)
    changes: list[tuple[str, str]] = []
    every: list[HealthUpdate] = []

    async def on_change(update: HealthUpdate) -> None:
        changes.append((update.previous.status.value, update.record.status.value))

    async def on_check(update: HealthUpdate) -> None:
        every.append(update)

    monitor.listen(on_change)
    monitor.listen(on_check, every_check=True)
    for up in (True, True, False, False, False, True):
        service.up = up
        await monitor.check_now("db")
    assert changes == [
        ("unknown", "healthy"),
        ("healthy", "degraded"),
        ("degraded", "unhealthy"),
        ("unhealthy", "healthy"),
    ]
    assert len(every) == 6
    assert [u.result.ok for u in every] == [True, True, False, False, False, True]


async def test_a_failing_listener_is_logged_and_the_others_still_hear(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    monitor = HealthMonitor(clock)
    monitor.add(Switchable(clock, "db"))
    heard: list[str] = []

    async def broken(update: HealthUpdate) -> None:
        raise RuntimeError("listener bug")

    async def fine(update: HealthUpdate) -> None:
        heard.append(update.service)

    monitor.listen(broken)
    monitor.listen(fine)
    with caplog.at_level(logging.ERROR, logger="eventcenter.health"):
        await monitor.check_now("db")
    assert heard == ["db"]
    assert "health listener" in caplog.text
    assert "listener bug" in caplog.text


async def test_listeners_hear_alerts_that_fire() -> None:
    clock = FakeClock()
    alerts = AlertThresholds(window=4, min_checks=4, success_rate_below=0.5, success_rate_clear=1)
    monitor = HealthMonitor(clock, settings=settings(unhealthy_after=10, alerts=alerts))
    service = Switchable(clock, "db")
    monitor.add(service)
    messages: list[str] = []

    async def on_alert(update: HealthUpdate) -> None:
        messages.extend(alert.message for alert in update.alerts)

    monitor.listen(on_alert)
    for up in (True, False, False, False, False, True):
        service.up = up
        await monitor.check_now("db")
    assert messages == ["ALERT: db success rate 25% below 50%"]


async def test_a_manual_check_waits_for_a_running_scheduled_one() -> None:
    clock = FakeClock()
    monitor = HealthMonitor(clock, settings=settings(interval=10.0, timeout=5.0))
    service = Switchable(clock, "db")
    service.delay = 3.0
    monitor.add(service)
    async with monitor:
        while not service.times:  # the scheduled check starts and runs for 3 s
            await clock.advance(0.5)
        manual = asyncio.create_task(monitor.check_now("db"))
        await clock.advance(1.0)
        assert len(service.times) == 1  # still waiting for the scheduled check
        await clock.advance(6.0)
        record = await manual
    assert service.times[1] == pytest.approx(service.times[0] + 3.0)
    assert record.total_checks == 2


async def test_the_report_lists_every_service_with_the_summary() -> None:
    clock = FakeClock(start=100.0)
    monitor = HealthMonitor(clock, settings=settings(unhealthy_after=1))
    monitor.add(Switchable(clock, "api"))
    monitor.add(Switchable(clock, "db", up=False))
    monitor.add(Switchable(clock, "queue"))
    await monitor.check_now("api")
    await monitor.check_now("db")
    await clock.advance(5.0)
    report = monitor.report().as_dict()
    assert report["summary"] == {
        "total": 3,
        "healthy": 1,
        "degraded": 0,
        "unhealthy": 1,
        "unknown": 1,
    }
    assert report["services"]["db"]["last_error"] == "down for the test"
    assert report["services"]["api"]["checked_ago"] == pytest.approx(5.0)
    assert report["monitoring_active"] is False


async def test_names_are_checked_unknown_and_duplicate_ones_refused() -> None:
    clock = FakeClock()
    monitor = HealthMonitor(clock)
    monitor.add(Switchable(clock, "db"))
    with pytest.raises(ConfigurationError, match="'db' is already registered"):
        monitor.add(Switchable(clock, "db"))
    with pytest.raises(UnknownService, match=r"no health check named 'dbb' \(registered: db\)"):
        await monitor.check_now("dbb")
    with pytest.raises(UnknownService):
        monitor.health("nope")


async def test_stop_ends_the_checks_and_aclose_closes_the_checkers() -> None:
    clock = FakeClock()
    monitor = HealthMonitor(clock, settings=settings(interval=1.0, timeout=0.5))
    service = Switchable(clock, "db")
    closed: list[str] = []

    async def aclose() -> None:
        closed.append("db")

    service.aclose = aclose  # type: ignore[attr-defined]
    monitor.add(service)
    await monitor.start()
    assert monitor.running
    await clock.advance(5.0)
    await monitor.stop()
    checks = len(service.times)
    await clock.advance(5.0)
    assert len(service.times) == checks
    assert clock.sleepers == 0
    await monitor.start()
    await clock.advance(5.0)
    assert len(service.times) > checks  # start() schedules again
    await monitor.aclose()
    assert closed == ["db"]


async def test_a_service_added_to_a_running_monitor_is_checked_and_removed_stops() -> None:
    clock = FakeClock()
    monitor = HealthMonitor(clock, settings=settings(interval=2.0, timeout=1.0))
    async with monitor:
        late = Switchable(clock, "late")
        monitor.add(late)
        await clock.advance(4.0)
        assert late.times
        await monitor.remove("late")
        seen = len(late.times)
        await clock.advance(10.0)
        assert len(late.times) == seen
        assert monitor.names == []
