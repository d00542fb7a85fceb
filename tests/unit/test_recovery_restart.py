"""The recovery manager across a restart, with an in-memory recorder on fake clocks: what it
records (wall-clock times), and what a new manager restored from it does: an open incident goes
on from its recorded attempts (never more than max_attempts in all), a cool-down holds for what
is left of it, the statistics add up, an attempt cut short by the stop counts as nothing."""

from __future__ import annotations

import random
from collections.abc import Iterable

import pytest

from eventcenter.domain.health import (
    AttemptStart,
    CheckResult,
    IncidentEnd,
    IncidentOutcome,
    IncidentStart,
    RecoveryAttempt,
    RecoveryStep,
    SavedRecovery,
    ServiceHealth,
)
from eventcenter.domain.ports import RecoveryRecorder
from eventcenter.domain.recovery_log import CUT_SHORT, ServiceRecovery
from eventcenter.healing.health import HealthMonitor
from eventcenter.healing.recovery import IncidentEnded, RecoveryAction, RecoveryManager
from eventcenter.sources.clock import FakeClock
from tests.unit.test_recovery_manager import RULE, SETTINGS

WALL0 = 1_700_000_000.0


class MemoryRecorder:
    """The RecoveryRecorder port in memory, on the same aggregate as the store's."""

    def __init__(self) -> None:
        self.steps: list[RecoveryStep] = []
        self.logs: dict[str, ServiceRecovery] = {}
        self.events = 0

    def record(self, step: RecoveryStep) -> None:
        self.steps.append(step)
        log = self.logs.get(step.service)
        if log is None:
            log = self.logs[step.service] = ServiceRecovery.register("test", step.service, at=0)
            log.collect_events()  # ``events`` counts the steps' events
        log.record(step)
        self.events += len(log.collect_events())

    def load(self, services: Iterable[str]) -> list[SavedRecovery]:
        return [self.logs[name].saved() for name in sorted(services) if name in self.logs]


class Process:
    """One run of a center: its own monotonic clock (from zero), the wall clock going on from
    ``wall_start``, a monitor driven by hand, a manager recording into ``recorder``."""

    def __init__(
        self,
        recorder: RecoveryRecorder,
        wall_start: float,
        *,
        fixes: bool = False,
        hangs: bool = False,
    ) -> None:
        self.clock = FakeClock()
        self.wall_start = wall_start
        self.up = False
        self.monitor = HealthMonitor(self.clock, settings=SETTINGS, rng=random.Random(0))
        self.monitor.add(self)
        self.recovery = RecoveryManager(
            self.monitor,
            self.clock,
            rule=RULE,
            rng=random.Random(0),
            recorder=recorder,
            wall=self.wall,
        )
        self.calls: list[float] = []
        self.ended: list[IncidentEnded] = []

        async def restart(record: ServiceHealth) -> None:
            self.calls.append(self.clock.now())
            if hangs:
                await self.clock.sleep(1_000.0)
            if fixes:
                self.up = True

        async def on_end(ended: IncidentEnded) -> None:
            self.ended.append(ended)

        self.recovery.register("cache", RecoveryAction("restart", restart))
        self.recovery.listen(on_end)
        if isinstance(recorder, MemoryRecorder):  # a store's recorder loads asynchronously
            self.recovery.restore(recorder.load(self.recovery.services()))

    name = "cache"

    async def check(self) -> CheckResult:
        return CheckResult.passed() if self.up else CheckResult.failed("connection refused")

    def wall(self) -> float:
        return self.wall_start + self.clock.now()

    async def fail(self, checks: int = 3) -> None:
        for _ in range(checks):
            await self.monitor.check_now("cache")


async def test_steps_are_recorded_in_order_with_wall_clock_times() -> None:
    recorder = MemoryRecorder()
    one = Process(recorder, WALL0)
    await one.clock.advance(7.0)
    await one.fail()
    await one.clock.advance(60.0)
    assert one.calls == [7.0, 12.0, 21.0]
    opened, *attempts, ended = recorder.steps
    assert opened == IncidentStart("cache", WALL0 + 7.0, 3, "connection refused")
    assert attempts == [
        step
        for number, at in ((1, 7.0), (2, 12.0), (3, 21.0))
        for step in (
            AttemptStart("cache", "restart", number, WALL0 + 7.0, WALL0 + at),  # before it runs
            RecoveryAttempt(
                "cache",
                "restart",
                number,
                WALL0 + 7.0,
                WALL0 + at,
                WALL0 + at + 1.0,
                False,
                "re-check 1 failed: connection refused",
            ),
        )
    ]
    assert ended == IncidentEnd(
        "cache", WALL0 + 7.0, IncidentOutcome.GAVE_UP, 3, WALL0 + 22.0, WALL0 + 122.0
    )
    assert recorder.events == 8  # each step once


async def test_an_incident_with_two_of_three_attempts_makes_one_more_after_a_restart() -> None:
    recorder = MemoryRecorder()
    one = Process(recorder, WALL0)
    await one.fail()
    await one.clock.advance(10.0)  # attempts at 0 and 5 made; the third is due at 14
    await one.recovery.aclose()
    assert one.calls == [0.0, 5.0]
    assert recorder.logs["cache"].saved() == SavedRecovery("cache", WALL0, 2, None)

    two = Process(recorder, one.wall() + 30.0)  # down for 30 s
    state = two.recovery.state("cache")
    assert (state.incident_since, state.attempts) == (-40.0, 2)  # opened 40 s ago
    assert not two.recovery.recovering("cache")  # it resumes at the first check
    await two.fail(1)
    assert two.recovery.recovering("cache")
    await two.clock.advance(20.0)
    assert two.calls == [8.0]  # the third attempt after its back-off, and no more
    [ended] = two.ended
    assert (ended.outcome, ended.attempts) == (IncidentOutcome.GAVE_UP, 3)
    assert ended.duration == pytest.approx(10.0 + 30.0 + 9.0)
    assert two.recovery.stats().total.attempts == 3
    assert [type(step).__name__ for step in recorder.steps] == [
        "IncidentStart",
        *["AttemptStart", "RecoveryAttempt"] * 3,
        "IncidentEnd",
    ]
    assert [s.attempt for s in recorder.steps if isinstance(s, RecoveryAttempt)] == [1, 2, 3]
    await two.fail(5)
    await two.clock.advance(50.0)
    assert two.calls == [8.0], "the cool-down after the incident holds"


async def test_a_service_back_after_the_restart_ends_the_incident_without_an_action() -> None:
    recorder = MemoryRecorder()
    one = Process(recorder, WALL0)
    await one.fail()
    await one.clock.advance(2.0)
    await one.recovery.aclose()

    two = Process(recorder, one.wall() + 5.0)
    two.up = True
    await two.fail(1)  # the first check passes
    await two.clock.advance(20.0)  # the back-off of attempt 2, then a re-check: green
    assert two.calls == []
    [ended] = two.ended
    assert (ended.outcome, ended.attempts) == (IncidentOutcome.RECOVERED_ALONE, 1)
    end = recorder.steps[-1]
    assert isinstance(end, IncidentEnd)
    assert end.outcome is IncidentOutcome.RECOVERED_ALONE
    assert two.recovery.stats().incidents["recovered_alone"] == 1


async def test_a_cool_down_running_at_the_stop_holds_for_what_is_left_of_it() -> None:
    recorder = MemoryRecorder()
    one = Process(recorder, WALL0)
    await one.fail()
    await one.clock.advance(20.0)  # gave up at 15: cool-down until 115 (wall + 115)
    await one.recovery.aclose()
    assert one.calls == [0.0, 5.0, 14.0]

    two = Process(recorder, one.wall() + 30.0)  # restarted at wall + 50: 65 s left
    assert two.recovery.state("cache").cool_down_until == pytest.approx(65.0)
    await two.fail()
    await two.clock.advance(64.0)
    await two.fail()
    assert two.calls == []
    assert not two.recovery.recovering("cache")
    await two.clock.advance(1.0)
    await two.fail(1)
    assert two.recovery.recovering("cache")
    await two.clock.advance(0.0)
    assert two.calls == [65.0]
    await two.recovery.aclose()


async def test_a_cool_down_that_ran_out_during_the_stop_is_gone() -> None:
    recorder = MemoryRecorder()
    one = Process(recorder, WALL0)
    await one.fail()
    await one.clock.advance(20.0)
    await one.recovery.aclose()

    two = Process(recorder, one.wall() + 500.0)
    assert two.recovery.state("cache").cool_down_until is None
    await two.fail()
    await two.clock.advance(0.0)
    assert two.calls == [0.0]
    await two.recovery.aclose()


async def test_the_statistics_survive_a_restart() -> None:
    recorder = MemoryRecorder()
    one = Process(recorder, WALL0)
    await one.fail()
    await one.clock.advance(20.0)  # three failed attempts, gave up
    before = one.recovery.stats().as_dict()
    await one.recovery.aclose()

    two = Process(recorder, one.wall() + 200.0, fixes=True)
    after = two.recovery.stats().as_dict()
    assert {k: v for k, v in after.items() if k != "recent_failures"} == {
        k: v for k, v in before.items() if k != "recent_failures"
    }
    # the failures' times in the new process's clock: 220 s of wall time ago for "at" 1
    assert [f["at"] for f in after["recent_failures"]] == pytest.approx([-219.0, -214.0, -205.0])
    assert [f["error"] for f in after["recent_failures"]] == [
        f["error"] for f in before["recent_failures"]
    ]
    await two.fail()
    await two.clock.advance(10.0)  # the cool-down ran out: a new incident, recovered
    stats = two.recovery.stats().as_dict()
    assert stats["total_attempts"] == 4
    assert stats["successful_attempts"] == 1
    assert stats["incidents"] == {"recovered": 1, "recovered_alone": 0, "gave_up": 1}
    assert recorder.events == 8 + 4  # start, end, and a start and a result of each attempt


async def test_an_attempt_cut_short_by_the_stop_counts_as_one_that_did_not_work() -> None:
    recorder = MemoryRecorder()
    one = Process(recorder, WALL0, hangs=True)
    await one.fail()
    await one.clock.advance(2.0)  # the first action is still running (its timeout is 5 s)
    await one.recovery.aclose()
    assert one.calls == [0.0]
    saved = recorder.logs["cache"].saved()
    assert (saved.incident_since, saved.attempts) == (WALL0, 0)
    assert saved.interrupted == RecoveryAttempt(
        "cache", "restart", 1, WALL0, WALL0, WALL0, False, CUT_SHORT
    )

    two = Process(recorder, one.wall() + 1.0)  # restored: attempt 1 is recorded as failed
    assert two.recovery.state("cache").attempts == 1
    cut = recorder.steps[-1]
    assert isinstance(cut, RecoveryAttempt)
    assert (cut.attempt, cut.verified, cut.error) == (1, False, CUT_SHORT)
    assert cut.finished_at == pytest.approx(WALL0 + 3.0)
    assert two.recovery.stats().total.attempts == 1
    await two.fail(1)
    await two.clock.advance(100.0)
    assert two.calls == [4.0, 13.0]  # attempts 2 and 3 after their back-offs; 1 is not run again
    assert two.ended[0].attempts == 3

    # a stop that cuts attempts short again and again never makes more than max_attempts
    many = MemoryRecorder()
    calls = 0
    wall = WALL0
    for _ in range(5):
        run = Process(many, wall, hangs=True)
        await run.fail()
        await run.clock.advance(30.0)
        await run.recovery.aclose()
        calls += len(run.calls)
        wall = run.wall() + 1.0
    assert calls == RULE.max_attempts


async def test_an_incident_whose_end_was_not_recorded_ends_without_another_action() -> None:
    recorder = MemoryRecorder()
    one = Process(recorder, WALL0)
    await one.fail()
    await one.clock.advance(20.0)
    await one.recovery.aclose()
    partial = MemoryRecorder()
    for step in recorder.steps[:-1]:  # the end never reached the store
        partial.record(step)

    two = Process(partial, one.wall() + 1.0)
    assert two.recovery.state("cache").attempts == 3
    await two.fail(1)
    await two.clock.advance(10.0)
    assert two.calls == []
    assert (two.ended[0].outcome, two.ended[0].attempts) == (IncidentOutcome.GAVE_UP, 3)


async def test_a_recorder_that_fails_does_not_stop_the_recovery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(MemoryRecorder):
        def record(self, step: RecoveryStep) -> None:
            raise RuntimeError("the store writer is closed")

    one = Process(Broken(), WALL0, fixes=True)
    await one.fail()
    await one.clock.advance(5.0)
    assert one.ended[0].outcome is IncidentOutcome.RECOVERED
    assert "was not recorded" in caplog.text


async def test_services_no_longer_registered_are_not_restored() -> None:
    recorder = MemoryRecorder()
    recorder.record(IncidentStart("search", WALL0, 3))
    one = Process(recorder, WALL0 + 10.0)
    one.recovery.restore(recorder.load(["search", "cache"]))
    assert one.recovery.services() == ["cache"]
    assert one.recovery.state("cache").incident_since is None
