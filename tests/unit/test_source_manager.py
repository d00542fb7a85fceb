"""The hysteresis manager on a fake clock: when a source switches, what runs in each mode, and
that every item reaches the sink once across the switches. No sleeps: time is advanced."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from eventcenter.domain.hysteresis import Switch
from eventcenter.domain.source_modes import EVENT_ONLY, HYBRID, POLLING_ONLY
from eventcenter.sources.clock import FakeClock
from eventcenter.sources.manager import SourceAlreadyRegistered, SourceManager, SourceRunner
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


@dataclass
class World:
    clock: FakeClock
    source: FakeSource
    sink: MemorySink
    recorder: MemoryRecorder
    push: FakePushPath
    poll: FakePoll
    manager: SourceManager
    runner: SourceRunner

    async def run(self, seconds: float, step: float = 0.5) -> None:
        """Advance the fake time in steps (engines and the decider get to run in between)."""
        elapsed = 0.0
        while elapsed < seconds:
            await self.clock.advance(step)
            elapsed += step

    def switches(self) -> list[tuple[str, str]]:
        return [(entry["previous"], entry["to"]) for entry in self.runner.recent]


async def world(clock: FakeClock, *, push: bool = True, poll: bool = True, **options: Any) -> World:
    source = FakeSource()
    sink = MemorySink()
    recorder = MemoryRecorder()
    push_path = FakePushPath(source, clock, sink)
    poll_path = FakePoll(source)
    settings: dict[str, Any] = {"event_timeout": 30, "polling_interval": 60, **options}
    spec = DataSource(
        tenant=TENANT,
        name=SOURCE,
        events=push_path if push else None,
        poll=poll_path if poll else None,
        **settings,
    )
    manager = SourceManager(sink, recorder, clock=clock, wall=clock.now, rng=FixedJitter(0.0))
    runner = manager.register(spec)
    await manager.start()
    return World(clock, source, sink, recorder, push_path, poll_path, manager, runner)


def push_failures(w: World) -> int:
    w.runner._flush_outcomes()
    rows = w.recorder.rows.get((TENANT, SOURCE), [])
    return sum(1 for row in rows if row[1] == "push" and not row[2])


@pytest.fixture
async def w() -> AsyncIterator[World]:
    built = await world(FakeClock(1_000_000.0))
    yield built
    await built.manager.stop()


async def test_a_new_source_with_push_starts_event_only_and_delivers(w: World) -> None:
    w.source.change("o-1")
    await w.run(5)  # the path's receive waits up to 5 s
    assert w.runner.mode == EVENT_ONLY
    assert w.sink.identities() == {("o-1", "1")}
    assert w.poll.cursors == []  # no polling while push works
    assert w.recorder.events() == ["Registered"]


async def test_push_failures_switch_to_hybrid_after_exactly_the_threshold(w: World) -> None:
    w.push.receive_errors.extend([connection_lost()] * 3)
    await w.run(6.5)  # failures at 5 s (the receive under way ends) and 5.8 s (0.8 s back-off)
    assert push_failures(w) == 2
    assert w.runner.mode == EVENT_ONLY
    assert w.switches() == []
    await w.run(1.5)  # the third, 1.6 s later
    assert push_failures(w) == 3
    assert w.runner.mode == HYBRID
    assert w.switches() == [(EVENT_ONLY, HYBRID)]
    assert w.poll.cursors, "entering hybrid polls at once"
    assert "ModeSwitched" in w.recorder.events()


async def test_silence_counts_as_one_failure_per_event_timeout(w: World) -> None:
    await w.run(89)
    assert w.runner.mode == EVENT_ONLY
    await w.run(2)
    assert w.runner.mode == HYBRID
    [entry] = w.runner.recent
    assert entry["at"] == pytest.approx(1_000_000.0 + 90)


async def test_push_returns_only_on_its_own_successes_not_on_polls(w: World) -> None:
    w.push.receive_errors.extend([connection_lost()] * 3)
    await w.run(8)
    assert w.runner.mode == HYBRID
    w.push.receive_errors.clear()
    w.push.receive_errors.extend([connection_lost()] * 50)  # push stays broken
    for n in range(10):  # polling keeps delivering: no evidence for push
        w.source.change(f"p-{n}")
        await w.run(60)
    assert w.runner.mode in (HYBRID, POLLING_ONLY)
    assert w.runner.mode != EVENT_ONLY


async def test_push_recovering_brings_the_source_back_and_stops_polling(w: World) -> None:
    w.push.receive_errors.extend([connection_lost()] * 3)
    await w.run(8)
    assert w.runner.mode == HYBRID
    for n in range(5):  # five separate push batches
        w.source.change(f"r-{n}")
        await w.run(5)
    assert w.runner.mode == EVENT_ONLY
    assert w.switches() == [(EVENT_ONLY, HYBRID), (HYBRID, EVENT_ONLY)]
    assert w.runner.polling is not None
    assert not w.runner.polling.running
    assert w.sink.identities() == w.source.produced()


async def test_a_mode_that_cannot_start_is_rolled_back_with_the_reason(w: World) -> None:
    w.poll.errors.append(connection_lost("poll endpoint down (test)"))
    w.push.receive_errors.extend([connection_lost()] * 3)
    await w.run(8)
    assert w.runner.mode == EVENT_ONLY
    events = w.recorder.events()
    assert events.count("ModeSwitched") == 1
    assert "SwitchRolledBack" in events
    rows = w.recorder.rows[(TENANT, SOURCE)]
    assert any(row[1] == "rollback" and "poll endpoint down" in row[3] for row in rows)


async def test_a_source_without_push_polls_from_the_start() -> None:
    w = await world(FakeClock(5_000.0), push=False)
    try:
        w.source.change("o-1")
        await w.run(1)
        assert w.runner.mode == POLLING_ONLY
        assert w.sink.identities() == {("o-1", "1")}
    finally:
        await w.manager.stop()


async def test_registering_a_source_twice_is_refused(w: World) -> None:
    again = DataSource(tenant=TENANT, name=SOURCE, poll=w.poll)
    with pytest.raises(SourceAlreadyRegistered, match="source 'orders' of tenant 'acme'"):
        w.manager.register(again)


async def test_a_restart_resumes_in_the_recorded_mode() -> None:
    clock = FakeClock(7_000.0)
    w = await world(clock)
    w.push.receive_errors.extend([connection_lost()] * 3)
    await w.run(8)
    assert w.runner.mode == HYBRID
    await w.manager.stop()
    again = SourceManager(w.sink, w.recorder, clock=clock, wall=clock.now, rng=FixedJitter(0.0))
    spec = DataSource(tenant=TENANT, name=SOURCE, events=w.push, poll=w.poll, event_timeout=30)
    runner = again.register(spec)
    await again.start()
    try:
        await clock.advance(0.5)
        assert runner.mode == HYBRID
        assert runner.polling is not None
        assert runner.polling.running
    finally:
        await again.stop()


async def test_position_lost_triggers_a_re_list_that_fills_the_gap() -> None:
    clock = FakeClock(9_000.0)
    source = FakeSource()
    sink = MemorySink()
    push = FakePushPath(source, clock, sink)
    listing = FakeListing(source)
    spec = DataSource(
        tenant=TENANT, name=SOURCE, events=push, reconcile=listing, reconciliation_interval="1h"
    )
    manager = SourceManager(sink, MemoryRecorder(), clock=clock, wall=clock.now, rng=FixedJitter())
    manager.register(spec)
    await manager.start()
    try:
        source.change("a")
        await clock.advance(5)
        await manager.stop()  # the center is down while the stream is trimmed
        source.change("b")
        source.trim()
        push.forget_consumer()
        manager2 = SourceManager(
            sink, MemoryRecorder(), clock=clock, wall=clock.now, rng=FixedJitter()
        )
        manager2.register(
            DataSource(
                tenant=TENANT,
                name=SOURCE,
                events=push,
                reconcile=listing,
                reconciliation_interval="1h",
            )
        )
        await manager2.start()
        await clock.advance(5)
        assert ("b", "1") in sink.identities()
        await manager2.stop()
    finally:
        if manager.running:
            await manager.stop()


async def test_two_switches_decided_at_once_are_entered_one_rung_at_a_time(w: World) -> None:
    """Silence noticed late can yield event_only -> hybrid -> polling_only in one call."""
    now = w.clock.now()
    assert w.runner.policy is not None
    first = Switch(now, EVENT_ONLY, HYBRID, "silence (test)", 3, 0, 3)
    second = Switch(now, HYBRID, POLLING_ONLY, "silence (test)", 6, 0, 3)
    await w.runner._apply((first, second))
    assert w.runner.mode == POLLING_ONLY
    assert w.recorder.events().count("ModeSwitched") == 2
    assert w.runner.polling is not None
    assert w.runner.polling.running
