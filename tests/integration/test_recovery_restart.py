"""The health recovery survives a restart, on SQLite and on PostgreSQL: the recovery manager's
incidents go through the store writer into each service's log, and a new process restores
them: an open incident goes on from the attempts it recorded (never more than max_attempts in
all; one a stop cut short is stored as failed, not run again), a cool-down holds for what is
left of it on the wall clock, the statistics add up, and nothing is recorded twice."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from eventcenter.center.healing import HealingSettings, HealthSettings
from eventcenter.domain.errors import RecoveryRefused
from eventcenter.domain.health import (
    CheckResult,
    IncidentEnd,
    IncidentOutcome,
    IncidentStart,
    RecoveryAttempt,
    SavedRecovery,
    ServiceHealth,
)
from eventcenter.domain.recovery_log import CUT_SHORT, ServiceRecovery
from eventcenter.healing.recovery import RecoveryAction
from eventcenter.storage.application import CenterApplication
from eventcenter.storage.recovery_state import DurableRecoveryRecorder, RecordRecoveryStep
from eventcenter.storage.writer import FlushCommand, StoreWriter
from tests.source_center import START, FakeTimeCenter, center_settings
from tests.store_writer import opened_writer
from tests.unit.test_recovery_manager import RULE, SETTINGS
from tests.unit.test_recovery_restart import Process

WALL_START = 1_700_000_000.0


@dataclass
class Store:
    """One run of a center's store: the application, its writer and the recovery's recorder."""

    app: CenterApplication
    writer: StoreWriter
    recorder: DurableRecoveryRecorder

    async def flush(self) -> None:
        await self.writer.submit(FlushCommand())

    def events(self, center: str = "default", service: str = "cache") -> list[str]:
        log_id = ServiceRecovery.create_id(center, service)
        return [type(e).__name__ for e in self.app.events.get(log_id)]


@asynccontextmanager
async def store(url: str, center: str = "default", snapshots: int = 100) -> AsyncIterator[Store]:
    async with opened_writer(url, center, snapshots) as (app, writer):
        yield Store(app, writer, DurableRecoveryRecorder(writer))


async def restored(recorder: DurableRecoveryRecorder, wall_start: float) -> Process:
    """A process (see the unit tests) whose manager took back what ``recorder`` holds."""
    run = Process(recorder, wall_start)
    run.recovery.restore(await recorder.load(run.recovery.services()))
    return run


async def test_an_incident_and_its_cool_down_go_on_across_restarts(database_url: str) -> None:
    # 1. two of three attempts made (at 0 and 5), the third due at 14: stopped at 10
    async with store(database_url) as one:
        first = await restored(one.recorder, WALL_START)
        await first.fail()
        await first.clock.advance(10.0)
        await first.recovery.aclose()
        assert first.calls == [0.0, 5.0]
        await one.flush()
        stopped = first.wall()

    # 2. down for 30 s: the incident goes on with its third attempt, and no more
    async with store(database_url) as two:
        [saved] = await two.recorder.load(["cache", "search"])
        assert saved == SavedRecovery("cache", WALL_START, 2, None)
        second = await restored(two.recorder, stopped + 30.0)
        assert second.recovery.state("cache").attempts == 2
        await second.fail(1)
        await second.clock.advance(20.0)  # attempt 3 after its 8 s back-off, re-checked at 9
        assert second.calls == [8.0]
        [ended] = second.ended
        assert (ended.outcome, ended.attempts) == (IncidentOutcome.GAVE_UP, 3)
        assert ended.duration == pytest.approx(10.0 + 30.0 + 9.0)
        stats = second.recovery.stats().as_dict()
        assert stats["total_attempts"] == 3
        assert stats["incidents"]["gave_up"] == 1
        await second.recovery.aclose()
        await two.flush()
        stopped = second.wall()  # 11 s after the end: 89 s of cool-down left

    # 3. down for 40 s: 49 s of the cool-down are left, and they hold
    async with store(database_url) as three:
        third = await restored(three.recorder, stopped + 40.0)
        assert third.recovery.state("cache").cool_down_until == pytest.approx(49.0)
        before, after = second.recovery.stats().as_dict(), third.recovery.stats().as_dict()
        failures_before, failures_after = (
            before.pop("recent_failures"),
            after.pop("recent_failures"),
        )
        assert after == before  # counts, rates, mean recovery time, by action, incidents
        assert [f["attempt"] for f in failures_after] == [f["attempt"] for f in failures_before]
        assert [f["at"] for f in failures_after] == pytest.approx(
            [f["at"] - 20.0 - 40.0 for f in failures_before]  # run 2 stopped at 20, then 40 s down
        )
        await third.fail()
        await third.clock.advance(48.0)
        await third.fail()
        assert third.calls == []
        await third.clock.advance(1.0)
        await third.fail(1)
        await third.clock.advance(1.0)  # the new incident's first attempt and its re-check
        assert third.calls == [49.0]
        await third.recovery.aclose()
        await three.flush()

        # each step once, in order
        assert three.events() == [
            "Registered",
            "IncidentOpened",
            *["AttemptStarted", "AttemptRecorded"] * 3,
            "IncidentEnded",
            "IncidentOpened",
            "AttemptStarted",
            "AttemptRecorded",
        ]
        log = three.app.recovery_log(ServiceRecovery.create_id("default", "cache"))
        assert log is not None
        attempts = [e for e in three.app.events.get(log.id) if type(e).__name__.startswith("Att")]
        assert [e.attempt for e in attempts] == [1, 1, 2, 2, 3, 3, 1, 1]  # type: ignore[attr-defined]


async def test_an_attempt_a_stop_cut_short_is_stored_as_failed_and_not_run_again(
    database_url: str,
) -> None:
    async with store(database_url) as one:
        first = Process(one.recorder, WALL_START, hangs=True)
        first.recovery.restore(await one.recorder.load(first.recovery.services()))
        await first.fail()
        await first.clock.advance(2.0)  # attempt 1's action still runs
        await first.recovery.aclose()
        assert first.calls == [0.0]
        await one.flush()
        stopped = first.wall()

    async with store(database_url) as two:
        [saved] = await two.recorder.load(["cache"])
        assert saved.interrupted is not None
        assert (saved.interrupted.attempt, saved.interrupted.error) == (1, CUT_SHORT)
        second = await restored(two.recorder, stopped + 5.0)
        await second.fail(1)
        await second.clock.advance(30.0)
        assert second.calls == [4.0, 13.0]  # attempts 2 and 3; attempt 1 is not run again
        assert second.ended[0].attempts == 3
        await second.recovery.aclose()
        await two.flush()
        assert two.events() == [
            "Registered",
            "IncidentOpened",
            "AttemptStarted",
            "AttemptRecorded",  # attempt 1, recorded as cut short by the restored center
            *["AttemptStarted", "AttemptRecorded"] * 2,
            "IncidentEnded",
        ]


async def test_a_step_written_again_is_stored_once(database_url: str) -> None:
    async with store(database_url) as one:
        opened = IncidentStart("cache", WALL_START, 3, "connection refused")
        attempt = RecoveryAttempt(
            "cache", "restart", 1, WALL_START, WALL_START + 1, WALL_START + 2, False, "down"
        )
        for step in (opened, attempt):
            await one.writer.submit(RecordRecoveryStep(step))
            await one.writer.submit(RecordRecoveryStep(step))  # a retry after a commit in doubt
        one.recorder.record(attempt)
        one.recorder.record(opened)
        await one.flush()
        assert one.events() == ["Registered", "IncidentOpened", "AttemptRecorded"]
        [saved] = await one.recorder.load(["cache"])
        assert (saved.incident_since, saved.attempts, saved.stats.total.attempts) == (
            WALL_START,
            1,
            1,
        )


async def test_a_refused_first_step_leaves_nothing_behind(database_url: str) -> None:
    async with store(database_url) as one:
        stray = RecoveryAttempt(
            "cache", "restart", 1, WALL_START, WALL_START, WALL_START + 1, True, None
        )
        with pytest.raises(RecoveryRefused, match="no incident is open"):
            await one.writer.submit(RecordRecoveryStep(stray))
        assert await one.recorder.load(["cache"]) == []
        await one.writer.submit(RecordRecoveryStep(IncidentStart("cache", WALL_START, 3)))
        assert one.events() == ["Registered", "IncidentOpened"]


async def test_each_center_restores_only_its_own_recovery(database_url: str) -> None:
    async with store(database_url, center="east") as east:
        run = await restored(east.recorder, WALL_START)
        await run.fail()
        await run.clock.advance(2.0)
        await run.recovery.aclose()
        await east.flush()
    async with store(database_url, center="west") as west:
        assert await west.recorder.load(["cache"]) == []
        again = await restored(west.recorder, WALL_START + 10.0)
        assert again.recovery.state("cache").incident_since is None


async def test_a_long_history_is_loaded_from_a_snapshot(database_url: str) -> None:
    async with store(database_url, snapshots=10) as one:
        for number in range(6):  # 6 incidents, the last one open: 17 events
            since = WALL_START + 1_000.0 * number
            one.recorder.record(IncidentStart("cache", since, 3))
            one.recorder.record(
                RecoveryAttempt("cache", "restart", 1, since, since, since + 1, False, "down")
            )
            if number < 5:
                one.recorder.record(
                    IncidentEnd(
                        "cache", since, IncidentOutcome.RECOVERED_ALONE, 1, since + 1, since + 101
                    )
                )
        await one.flush()
        log_id = ServiceRecovery.create_id("default", "cache")
        assert one.app.snapshots is not None
        [snapshot] = list(one.app.snapshots.get(log_id, desc=True, limit=1))
        assert snapshot.originator_version >= 10
        tail = list(one.app.events.get(log_id, gt=snapshot.originator_version))
        assert len(tail) < 10
    async with store(database_url) as two:
        [saved] = await two.recorder.load(["cache"])
        assert saved == SavedRecovery("cache", WALL_START + 5_000.0, 1, WALL_START + 4_101.0)
        assert saved.stats.total.attempts == 6
        assert saved.stats.incidents["recovered_alone"] == 5


async def test_a_restarted_center_restores_the_recovery_of_each_registered_service(
    database_url: str, tmp_path: Path
) -> None:
    """The wiring: CenterHealing records through the center's writer and restores at start.
    Healing is off (no RCA, no scheduled checks): the checks are driven by hand."""
    config = center_settings(database_url, tmp_path).model_copy(
        update={"healing": HealingSettings(enabled=False, health=HealthSettings(recovery=RULE))}
    )
    calls: list[float] = []

    def center(start: float) -> FakeTimeCenter:
        w = FakeTimeCenter(config, start=start)
        healing = w.center.healing

        class Down:
            name = "cache"

            async def check(self) -> CheckResult:
                return CheckResult.failed("connection refused")

        async def restart(record: ServiceHealth) -> None:
            calls.append(w.clock.now())

        healing.monitor.add(Down(), SETTINGS)
        healing.recovery.register("cache", RecoveryAction("restart", restart))
        return w

    async with center(START) as one:
        for _ in range(3):
            await one.center.healing.monitor.check_now("cache")
        await one.run(10.0)  # attempts at 0 and 5; the third is due at 14
        assert calls == [START, START + 5.0]

    async with center(one.clock.now() + 30.0) as two:
        recovery = two.center.healing.recovery
        assert recovery.state("cache").attempts == 2
        assert recovery.stats().total.attempts == 2
        await two.center.healing.monitor.check_now("cache")
        await two.run(20.0)
        assert calls[2:] == [START + 10.0 + 30.0 + 8.0], "one more attempt, after its back-off"
        assert recovery.stats().incidents["gave_up"] == 1
        assert recovery.stats().total.attempts == 3
