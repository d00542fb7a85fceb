"""Pausing and resuming a running source on a fake clock: every engine stops, nothing is
admitted or decided while paused (however long), resuming reads on from the stored positions in
the recorded mode, and a pause outlives a restart. No sleeps: time is advanced."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from eventcenter.domain.errors import InvalidPauseRequest, SourceModeRefused
from eventcenter.domain.hysteresis import HysteresisConfig, Outcome
from eventcenter.domain.simulate import simulate
from eventcenter.domain.source_modes import EVENT_ONLY, HYBRID
from eventcenter.domain.source_pause import PauseState
from eventcenter.domain.sources import Received
from eventcenter.sources.clock import FakeClock, settle
from eventcenter.sources.manager import SourceManager, SourceNotFound, SourceRunner
from eventcenter.sources.source import DataSource
from tests.unit.source_fakes import (
    SOURCE,
    TENANT,
    FakeListing,
    FakePoll,
    FakePushPath,
    FakeSource,
    FixedJitter,
    MemoryRecorder,
    MemorySink,
    connection_lost,
)

POLICY: dict[str, Any] = {
    "event_timeout": 30,
    "polling_interval": 60,
    "reconciliation_interval": 90,
}


class World:
    """One source with push, poll and a listing over a fake source, run by a manager."""

    def __init__(self, clock: FakeClock, recorder: MemoryRecorder | None = None) -> None:
        self.clock = clock
        self.source = FakeSource()
        self.sink = MemorySink()
        self.recorder = recorder or MemoryRecorder()
        self.push = FakePushPath(self.source, clock, self.sink)
        self.poll = FakePoll(self.source)
        self.listing = FakeListing(self.source)
        self.manager, self.runner = self.build()

    def build(self) -> tuple[SourceManager, SourceRunner]:
        """A manager (a center's) over the same source, sink and store."""
        manager = SourceManager(
            self.sink, self.recorder, clock=self.clock, wall=self.clock.now, rng=FixedJitter()
        )
        spec = DataSource(
            tenant=TENANT,
            name=SOURCE,
            events=self.push,
            poll=self.poll,
            reconcile=self.listing,
            **POLICY,
        )
        return manager, manager.register(spec)

    async def run(self, seconds: float, step: float = 0.5) -> None:
        elapsed = 0.0
        while elapsed < seconds:
            await self.clock.advance(step)
            elapsed += step

    def rows(self) -> list[tuple[Any, ...]]:
        self.runner._flush_outcomes()
        return self.recorder.rows.get((TENANT, SOURCE), [])

    def engines_running(self) -> dict[str, bool]:
        runner = self.runner
        assert runner.push is not None
        assert runner.polling is not None
        assert runner.reconciler is not None
        return {
            "push": runner.push.running,
            "poll": runner.polling.running,
            "reconcile": runner.reconciler.running,
        }


@pytest.fixture
async def w() -> AsyncIterator[World]:
    world = World(FakeClock(2_000_000.0))
    await world.manager.start()
    yield world
    await world.manager.stop()


async def test_pausing_stops_every_engine_and_admits_nothing(w: World) -> None:
    w.source.change("before")
    await w.run(5)
    assert w.sink.identities() == {("before", "1")}

    result = await w.manager.pause(TENANT, SOURCE, reason="broker upgrade", by="alice")

    assert (result.changed, result.outcome, result.mode) == (True, "paused", EVENT_ONLY)
    assert result.paused == PauseState(w.clock.now(), "broker upgrade", "alice")
    assert w.engines_running() == {"push": False, "poll": False, "reconcile": False}
    assert not w.push.is_open, "the subscription is closed"
    listed, polled = w.listing.calls, len(w.poll.cursors)
    for n in range(20):
        w.source.change(f"during-{n}")
    await w.run(600)  # twenty event timeouts, several polling and reconciliation intervals
    assert w.sink.identities() == {("before", "1")}, "nothing is admitted while paused"
    assert (w.listing.calls, len(w.poll.cursors)) == (listed, polled)
    assert w.runner.recent == [], "silence while paused is no push failure"
    assert w.recorder.events()[-1] == "Paused"


async def test_resuming_reads_on_from_the_stored_position_and_admits_each_item_once(
    w: World,
) -> None:
    for n in range(3):
        w.source.change(f"before-{n}")
    await w.run(5)
    stored = w.sink.positions[(TENANT, SOURCE, "push")]
    await w.manager.pause(TENANT, SOURCE, reason="maintenance", by="alice")
    for n in range(30):
        w.source.change(f"during-{n}")
    await w.run(300)

    result = await w.manager.resume(TENANT, SOURCE, reason="done", by="bob")
    await w.run(10)

    assert (result.changed, result.outcome, result.paused) == (True, "resumed", None)
    assert w.push.opened[-1] == stored, "the push path opens at the stored position"
    assert w.sink.identities() == w.source.produced()
    assert w.sink.repeats == []
    assert w.push.acked_early == []
    assert w.runner.mode == EVENT_ONLY
    assert w.engines_running() == {"push": True, "poll": False, "reconcile": True}
    events = w.recorder.events()
    assert events[events.index("Paused") + 1] == "Resumed"


async def test_pausing_twice_and_resuming_a_running_source_record_nothing(w: World) -> None:
    not_paused = await w.manager.resume(TENANT, SOURCE, by="bob")
    first = await w.manager.pause(TENANT, SOURCE, reason="first", by="alice")
    second = await w.manager.pause(TENANT, SOURCE, reason="second", by="bob")

    assert (not_paused.changed, not_paused.outcome) == (False, "not paused: nothing to resume")
    assert first.changed
    assert (second.changed, second.outcome) == (False, "paused already (by alice: first)")
    assert second.paused == first.paused
    assert w.recorder.events().count("Paused") == 1
    assert "Resumed" not in w.recorder.events()


async def test_a_source_paused_in_hybrid_resumes_in_hybrid_with_polling(w: World) -> None:
    w.push.receive_errors.extend([connection_lost()] * 3)
    await w.run(8)
    assert w.runner.mode == HYBRID

    result = await w.manager.pause(TENANT, SOURCE, reason="maintenance", by="alice")
    assert result.mode == HYBRID
    assert w.engines_running() == {"push": False, "poll": False, "reconcile": False}
    w.source.change("during")
    await w.run(300)
    await w.manager.resume(TENANT, SOURCE, by="alice")
    await w.run(1)

    assert w.runner.mode == HYBRID
    assert w.engines_running() == {"push": True, "poll": True, "reconcile": True}
    assert ("during", "1") in w.sink.identities()


async def test_a_paused_source_stays_paused_across_a_restart() -> None:
    clock = FakeClock(3_000_000.0)
    w = World(clock)
    await w.manager.start()
    w.source.change("before")
    await w.run(5)
    await w.manager.pause(TENANT, SOURCE, reason="maintenance", by="alice")
    await w.manager.stop()

    w.manager, w.runner = w.build()  # the next center, same store
    await w.manager.start()
    try:
        w.source.change("while-down")
        await w.run(300)
        assert w.engines_running() == {"push": False, "poll": False, "reconcile": False}
        assert w.sink.identities() == {("before", "1")}
        status = w.runner.status()
        assert status.paused is not None
        assert (status.paused.by, status.mode) == ("alice", EVENT_ONLY)

        await w.manager.resume(TENANT, SOURCE, by="bob")
        await w.run(5)
        assert w.sink.identities() == w.source.produced()
    finally:
        await w.manager.stop()


async def test_a_source_paused_before_its_first_start_never_runs() -> None:
    w = World(FakeClock(4_000_000.0))
    result = await w.manager.pause(TENANT, SOURCE, reason="not yet", by="alice")
    assert result.changed
    assert w.recorder.events() == ["Registered", "Paused"]
    await w.manager.start()
    try:
        w.source.change("early")
        await w.run(60)
        assert w.engines_running() == {"push": False, "poll": False, "reconcile": False}
        assert w.sink.identities() == set()
    finally:
        await w.manager.stop()


async def test_healing_controls_are_refused_while_paused(w: World) -> None:
    await w.manager.pause(TENANT, SOURCE, reason="maintenance", by="alice")
    control = w.manager.control(TENANT, SOURCE)
    with pytest.raises(SourceModeRefused, match="the source is paused"):
        await control.force_mode(HYBRID, "healing")
    with pytest.raises(SourceModeRefused, match="the source is paused"):
        await control.restart_push("healing")
    with pytest.raises(SourceModeRefused, match="the source is paused"):
        await control.reconcile_now()
    assert w.engines_running() == {"push": False, "poll": False, "reconcile": False}


async def test_bad_requests_and_unknown_sources_are_refused(w: World) -> None:
    with pytest.raises(InvalidPauseRequest, match="reason"):
        await w.manager.pause(TENANT, SOURCE, reason="", by="alice")
    with pytest.raises(InvalidPauseRequest, match="by"):
        await w.manager.resume(TENANT, SOURCE, by="")
    with pytest.raises(SourceNotFound, match="no source 'nope' of tenant 'acme'"):
        await w.manager.pause(TENANT, "nope", reason="x", by="alice")
    assert "Paused" not in w.recorder.events()


async def test_the_what_if_replays_a_pause_exactly(w: World) -> None:
    """The pause is a stop and a start in the outcomes: a replay charges no silence for it."""
    w.source.change("a")
    await w.run(40)  # one event timeout of silence: a failure, no switch yet
    await w.manager.pause(TENANT, SOURCE, reason="maintenance", by="alice")
    await w.run(900)
    await w.manager.resume(TENANT, SOURCE, by="alice")
    w.push.receive_errors.extend([connection_lost()] * 3)
    await w.run(10)
    assert w.runner.mode == HYBRID

    rows = w.rows()
    assert [row[1] for row in rows].count("stop") == 1
    assert [row[1] for row in rows].count("start") == 2
    replay = simulate(
        [Outcome.from_row(row[:5]) for row in rows],
        HysteresisConfig(**{"event_timeout": 30}),
        polling_interval=60,
    )
    recorded = [(e["at"], e["previous"], e["to"], e["reason"]) for e in w.runner.recent]
    assert [(s.at, s.previous, s.to, s.reason) for s in replay.switches] == recorded


async def test_a_forced_move_under_way_when_the_source_is_paused_is_refused_not_left_waiting() -> (
    None
):
    clock = FakeClock(5_000_000.0)
    source = FakeSource()
    sink = MemorySink()
    answered = asyncio.Event()  # never set: the first poll of hybrid does not answer

    async def stuck_poll(cursor: str | None) -> tuple[list[Received], str | None]:
        await answered.wait()
        return [], cursor

    manager = SourceManager(sink, MemoryRecorder(), clock=clock, wall=clock.now)
    spec = DataSource(
        tenant=TENANT,
        name=SOURCE,
        events=FakePushPath(source, clock, sink),
        poll=stuck_poll,
        **POLICY,
    )
    runner = manager.register(spec)
    await manager.start()
    try:
        forced = asyncio.create_task(runner.force_mode(HYBRID, "healing"))
        await settle()  # the decider waits for hybrid's first poll
        assert not forced.done()

        await manager.pause(TENANT, SOURCE, reason="maintenance", by="alice")
        await settle()

        assert forced.done(), "the healing strategy is not left waiting"
        with pytest.raises(SourceModeRefused, match="stopped meanwhile"):
            await forced
        assert runner.mode == HYBRID, "the switch was recorded: the source resumes in hybrid"
    finally:
        await manager.stop()
