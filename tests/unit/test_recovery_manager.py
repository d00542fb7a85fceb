"""The recovery manager on a fake clock: an incident opens at the failure threshold, actions run
with back-off and count only when the re-check is green, a cool-down follows, statistics add up."""

from __future__ import annotations

import itertools
import random

import pytest

from eventcenter.domain.errors import ConfigurationError, UnknownService
from eventcenter.domain.health import (
    AlertThresholds,
    CheckResult,
    CheckSchedule,
    CheckSettings,
    HealthThresholds,
    IncidentOutcome,
    RecoveryRule,
    ServiceHealth,
)
from eventcenter.healing.health import HealthMonitor
from eventcenter.healing.recovery import IncidentEnded, RecoveryAction, RecoveryManager
from eventcenter.sources.clock import FakeClock

SETTINGS = CheckSettings(
    schedule=CheckSchedule(interval=10.0, timeout=1.0, jitter=0.0),
    thresholds=HealthThresholds(unhealthy_after=3, healthy_after=1, slow_after=None),
    alerts=AlertThresholds(
        success_rate_below=None,
        success_rate_clear=None,
        response_time_above=None,
        response_time_clear=None,
    ),
)
RULE = RecoveryRule(
    failure_threshold=3,
    max_attempts=3,
    backoff_base=4.0,
    backoff_cap=60.0,
    jitter=0.0,
    cool_down=100.0,
    verify_checks=1,
    verify_interval=1.0,
    action_timeout=5.0,
)


class Service:
    """A service that is down until an action brings it up; it counts its checks."""

    def __init__(self, name: str = "cache") -> None:
        self.name = name
        self.up = False
        self.checks = 0

    async def check(self) -> CheckResult:
        self.checks += 1
        return CheckResult.passed() if self.up else CheckResult.failed("connection refused")


class Rig:
    """A monitor driven by hand (``check_now``), a manager, and what the actions saw."""

    def __init__(self, rule: RecoveryRule = RULE, seed: int = 0) -> None:
        self.clock = FakeClock()
        self.service = Service()
        self.monitor = HealthMonitor(self.clock, settings=SETTINGS, rng=random.Random(seed))
        self.monitor.add(self.service)
        self.recovery = RecoveryManager(
            self.monitor, self.clock, rule=rule, rng=random.Random(seed)
        )
        self.ended: list[IncidentEnded] = []
        self.calls: list[tuple[str, float]] = []

        async def on_end(ended: IncidentEnded) -> None:
            self.ended.append(ended)

        self.recovery.listen(on_end)

    def action(self, name: str, *, fixes: bool) -> RecoveryAction:
        async def run(record: ServiceHealth) -> None:
            self.calls.append((name, self.clock.now()))
            if fixes:
                self.service.up = True

        return RecoveryAction(name, run)

    async def fail(self, checks: int = 3) -> None:
        for _ in range(checks):
            await self.monitor.check_now("cache")


async def test_an_action_whose_re_check_is_green_recovers_the_service() -> None:
    rig = Rig()
    rig.recovery.register("cache", rig.action("restart", fixes=True))
    await rig.fail(2)
    assert not rig.recovery.recovering("cache")  # below the threshold
    await rig.fail(1)
    assert rig.recovery.recovering("cache")
    await rig.clock.advance(1.0)  # verify_interval, then the re-check
    assert not rig.recovery.recovering("cache")
    assert rig.calls == [("restart", 0.0)]
    [ended] = rig.ended
    assert (ended.outcome, ended.attempts, ended.last_action) == (
        IncidentOutcome.RECOVERED,
        1,
        "restart",
    )
    stats = rig.recovery.stats().as_dict()
    assert stats["total_attempts"] == 1
    assert stats["success_rate"] == 1.0
    assert stats["average_recovery_time"] == pytest.approx(1.0)
    assert stats["incidents"]["recovered"] == 1
    assert rig.monitor.health("cache").consecutive_successes == 1


async def test_an_action_that_leaves_the_check_red_does_not_count_and_back_off_grows() -> None:
    rig = Rig()
    rig.recovery.register("cache", rig.action("restart", fixes=False))
    await rig.fail()
    await rig.clock.advance(60.0)
    # attempt 1 at once; re-check at 1 fails; attempt 2 after 4 s (at 5), re-check at 6;
    # attempt 3 after 8 s (at 14), re-check at 15: three attempts, none verified.
    assert rig.calls == [("restart", 0.0), ("restart", 5.0), ("restart", 14.0)]
    [ended] = rig.ended
    assert ended.outcome is IncidentOutcome.GAVE_UP
    assert (ended.started_at, ended.ended_at) == (0.0, 15.0)
    assert ended.last_error == "re-check 1 failed: connection refused"
    stats = rig.recovery.stats()
    assert stats.total.attempts == 3
    assert stats.success_rate == 0.0
    assert stats.average_recovery_time is None
    assert stats.incidents["gave_up"] == 1


async def test_the_cool_down_keeps_a_new_incident_from_starting_at_once() -> None:
    rig = Rig()
    rig.recovery.register("cache", rig.action("restart", fixes=False))
    await rig.fail()
    await rig.clock.advance(20.0)  # gave up at 15: cool-down until 115
    assert rig.recovery.state("cache").cool_down_until == 115.0
    await rig.fail()
    assert not rig.recovery.recovering("cache")
    await rig.clock.advance(95.0)  # t = 115
    await rig.fail(1)
    assert rig.recovery.recovering("cache")
    await rig.clock.advance(0.0)  # let the incident's task run its first attempt
    assert rig.calls[-1] == ("restart", 115.0)
    await rig.recovery.aclose()


async def test_actions_run_in_order_and_the_last_one_repeats() -> None:
    rig = Rig()
    rig.recovery.register(
        "cache", rig.action("reconnect", fixes=False), rig.action("restart", fixes=False)
    )
    await rig.fail()
    await rig.clock.advance(60.0)
    assert [name for name, _ in rig.calls] == ["reconnect", "restart", "restart"]
    by_action = rig.recovery.stats().as_dict()["actions_by_type"]
    assert by_action["reconnect"]["attempts"] == 1
    assert by_action["restart"]["attempts"] == 2


async def test_a_later_action_that_works_is_credited_with_the_recovery() -> None:
    rig = Rig()
    rig.recovery.register(
        "cache", rig.action("reconnect", fixes=False), rig.action("restart", fixes=True)
    )
    await rig.fail()
    await rig.clock.advance(60.0)
    assert [name for name, _ in rig.calls] == ["reconnect", "restart"]
    stats = rig.recovery.stats().as_dict()
    assert stats["success_rate"] == pytest.approx(0.5)
    assert stats["average_recovery_time"] == pytest.approx(6.0)  # verified at 6, opened at 0
    assert stats["actions_by_type"]["restart"]["successes"] == 1
    assert stats["actions_by_type"]["reconnect"]["successes"] == 0
    assert rig.ended[0].outcome is IncidentOutcome.RECOVERED


async def test_an_action_that_raises_or_hangs_fails_without_a_re_check() -> None:
    rig = Rig(RULE.model_copy(update={"max_attempts": 2}))

    def broken(record: ServiceHealth) -> None:
        raise RuntimeError("no permission to restart")

    async def hangs(record: ServiceHealth) -> None:
        await rig.clock.sleep(1000.0)

    rig.recovery.register("cache", broken, hangs)
    await rig.fail()
    checks = rig.service.checks
    await rig.clock.advance(60.0)
    assert rig.service.checks == checks  # no re-check after an action that did not run
    failures = rig.recovery.stats().as_dict()["recent_failures"]
    assert [f["error"] for f in failures] == [
        "action 'broken' failed: RuntimeError: no permission to restart",
        "action 'hangs' failed: TimeoutError: no answer within 5s",
    ]
    assert rig.ended[0].outcome is IncidentOutcome.GAVE_UP
    assert rig.clock.sleepers == 0


async def test_a_service_back_during_the_back_off_ends_the_incident_without_more_actions() -> None:
    rig = Rig()
    rig.recovery.register("cache", rig.action("restart", fixes=False))
    await rig.fail()
    await rig.clock.advance(2.0)  # attempt 1 ran, its re-check at 1 failed; back-off to 5
    rig.service.up = True
    await rig.monitor.check_now("cache")  # a scheduled check sees it back
    await rig.clock.advance(10.0)
    assert rig.calls == [("restart", 0.0)]
    [ended] = rig.ended
    assert ended.outcome is IncidentOutcome.RECOVERED_ALONE
    assert ended.ended_at == 6.0  # confirmed by its own re-check after verify_interval
    assert rig.recovery.stats().incidents["recovered_alone"] == 1


async def test_every_re_check_must_pass_when_several_are_asked() -> None:
    rig = Rig(RULE.model_copy(update={"verify_checks": 2, "max_attempts": 1}))
    flips = iter([True, False])

    async def flaky(record: ServiceHealth) -> None:
        rig.service.up = True

    original = rig.service.check

    async def check_after_action() -> CheckResult:
        if rig.service.up:
            rig.service.up = next(flips, False)
            if not rig.service.up:
                return CheckResult.failed("flapping")
            return CheckResult.passed()
        return await original()

    rig.service.check = check_after_action  # type: ignore[method-assign]
    rig.recovery.register("cache", flaky)
    await rig.fail()
    await rig.clock.advance(10.0)
    [ended] = rig.ended
    assert ended.outcome is IncidentOutcome.GAVE_UP
    assert ended.last_error == "re-check 2 failed: flapping"


async def test_the_back_off_jitter_comes_from_the_seeded_random_source() -> None:
    rule = RULE.model_copy(update={"jitter": 0.5, "max_attempts": 4, "backoff_base": 2.0})
    rig = Rig(rule, seed=21)
    rig.recovery.register("cache", rig.action("restart", fixes=False))
    await rig.fail()
    await rig.clock.advance(100.0)
    draws = random.Random(21)
    expected, at = [], 0.0
    for attempt in range(1, 5):
        at += rule.delay_before(attempt, draws.random())
        expected.append(at)
        at += rule.verify_interval
    assert [t for _, t in rig.calls] == pytest.approx(expected)
    gaps = [b - a - rule.verify_interval for a, b in itertools.pairwise(expected)]
    assert 1.0 <= gaps[0] <= 2.0  # base 2, less up to half of it
    assert 2.0 <= gaps[1] <= 4.0
    assert 4.0 <= gaps[2] <= 8.0


async def test_scheduled_checks_drive_an_incident_while_the_monitor_runs() -> None:
    rig = Rig()
    rig.recovery.register("cache", rig.action("restart", fixes=True))
    async with rig.monitor:
        await rig.clock.advance(45.0)  # three failed scheduled checks, then the action
    assert [name for name, _ in rig.calls] == ["restart"]
    assert rig.ended[0].outcome is IncidentOutcome.RECOVERED
    assert len(rig.ended) == 1


async def test_registration_is_checked_and_unknown_services_are_named() -> None:
    rig = Rig()
    rig.recovery.register("cache", rig.action("restart", fixes=True))
    with pytest.raises(ConfigurationError, match="already registered"):
        rig.recovery.register("cache", rig.action("restart", fixes=True))
    with pytest.raises(ConfigurationError, match="at least one action"):
        rig.recovery.register("db")
    with pytest.raises(ConfigurationError, match="must be callable"):
        rig.recovery.register("db", "restart")  # type: ignore[arg-type]
    with pytest.raises(UnknownService, match="no recovery named 'db'"):
        rig.recovery.state("db")


async def test_a_service_without_actions_is_only_monitored() -> None:
    rig = Rig()
    await rig.fail(5)
    assert rig.ended == []
    assert rig.recovery.stats().total.attempts == 0


async def test_aclose_cancels_a_running_incident_without_counting_it() -> None:
    rig = Rig()
    rig.recovery.register("cache", rig.action("restart", fixes=False))
    await rig.fail()
    await rig.clock.advance(2.0)  # in the back-off before attempt 2
    await rig.recovery.aclose()
    assert not rig.recovery.recovering("cache")
    assert rig.recovery.state("cache").incident_since is None
    assert rig.ended == []
    assert rig.clock.sleepers == 0
    await rig.fail()
    assert not rig.recovery.recovering("cache")  # closed: no new incident either
