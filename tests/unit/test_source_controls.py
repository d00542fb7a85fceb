"""What the RCA runner sees of a source (its failures) and what healing can do to it (force
polling, restart the push path, reconcile now, slow polling down), on a fake clock."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from eventcenter.domain.errors import SourceModeRefused
from eventcenter.domain.hysteresis import Outcome
from eventcenter.domain.simulate import simulate
from eventcenter.domain.source_modes import EVENT_ONLY, HYBRID, POLLING_ONLY
from eventcenter.domain.sources import SourceFailure
from eventcenter.sources.clock import FakeClock
from tests.unit.source_fakes import SOURCE, TENANT, connection_lost
from tests.unit.test_source_manager import World, world


@pytest.fixture
async def w() -> AsyncIterator[World]:
    built = await world(FakeClock(1_000_000.0))
    yield built
    await built.manager.stop()


def watch(w: World) -> list[SourceFailure]:
    seen: list[SourceFailure] = []
    w.manager.on_failure = seen.append
    return seen


async def test_each_push_failure_is_reported_with_its_kind_and_mode(w: World) -> None:
    seen = watch(w)
    w.push.receive_errors.extend([connection_lost()] * 3)
    await w.run(8)
    assert [(f.path, f.kind) for f in seen] == [("push", "connection")] * 3
    assert [f.mode for f in seen] == [EVENT_ONLY, EVENT_ONLY, EVENT_ONLY]
    assert {(f.tenant, f.source) for f in seen} == {(TENANT, SOURCE)}


async def test_silence_is_reported_once_per_event_timeout(w: World) -> None:
    seen = watch(w)
    await w.run(61)
    assert [(f.kind, f.detail) for f in seen] == [
        ("silence", "no push outcome for 30s"),
        ("silence", "no push outcome for 60s"),
    ]


async def test_the_silence_of_a_push_path_failing_on_its_own_is_not_reported_again() -> None:
    """A refused connection also leaves the path quiet: its errors say why, and a silence
    reported beside them would open a second RCA case (event_timeout) for the one cause."""
    w = await world(FakeClock(0.0), event_timeout=2, failure_threshold=10)
    try:
        seen = watch(w)
        w.push.receive_errors.extend([connection_lost()] * 5)  # 0.8 + 1.6 + 3.2 + 6.4 s apart
        await w.run(13)
        assert [f.kind for f in seen] == ["connection"] * 5
        await w.run(18)  # connected again at 24.8 s, and nothing comes: that is reported
        assert seen[5:]
        assert {f.kind for f in seen[5:]} == {"silence"}
        assert seen[5].at > 24.8
    finally:
        await w.manager.stop()


async def test_dead_lettered_messages_are_reported_as_bad_data_not_held_against_the_path(
    w: World,
) -> None:
    """A message that is no item is dead-lettered and the flow goes on (the path worked); the
    RCA still hears of it, as a handler's dead letter is heard of."""
    seen = watch(w)
    w.source.change("o-1")
    w.source.bad()
    w.source.change("o-2")
    await w.run(5)  # the receive under way ends, the next one brings the three messages
    assert [(f.path, f.kind) for f in seen] == [("push", "bad_data")]
    assert "1 of 3 message(s)" in seen[0].detail
    assert w.runner.tally.consecutive["push"] == 0
    assert w.runner.path_succeeded_since("push", w.clock.now() - 5)
    assert w.runner.mode == EVENT_ONLY
    assert w.sink.identities() == {("o-1", "1"), ("o-2", "1")}


async def test_a_watcher_that_raises_does_not_stop_the_decisions(w: World) -> None:
    def broken(failure: SourceFailure) -> None:
        raise RuntimeError("bug in the watcher")

    w.manager.on_failure = broken
    w.push.receive_errors.extend([connection_lost()] * 3)
    await w.run(8)
    assert w.runner.mode == HYBRID


async def test_forcing_polling_is_recorded_and_push_successes_bring_it_back(w: World) -> None:
    assert await w.runner.force_mode(POLLING_ONLY, "case 7: force polling") == POLLING_ONLY
    assert w.switches() == [(EVENT_ONLY, HYBRID), (HYBRID, POLLING_ONLY)]
    assert w.poll.cursors, "polling started"
    assert {entry["reason"] for entry in w.runner.recent} == {"forced: case 7: force polling"}
    assert w.runner.path_succeeded_since("poll", w.clock.now())  # the first poll answered
    for n in range(12):  # push delivers: success_threshold (5) per rung brings it back
        w.source.change(f"o-{n}")
        await w.run(5)
    assert w.runner.mode == EVENT_ONLY


async def test_a_forced_move_replays_exactly_in_the_what_if(w: World) -> None:
    await w.runner.force_mode(HYBRID, "force polling")
    w.runner._flush_outcomes()
    rows = w.recorder.rows[(TENANT, SOURCE)]
    outcomes = [Outcome.from_row(tuple(row[:5])) for row in rows]
    assert [o.path for o in outcomes][:2] == ["start", "force"]
    replayed = simulate(outcomes, w.runner.spec.hysteresis, polling_interval=60.0)
    assert [(s.previous, s.to) for s in replayed.switches] == [(EVENT_ONLY, HYBRID)]


async def test_forcing_a_source_without_a_poll_path_is_refused_clearly() -> None:
    w = await world(FakeClock(0.0), poll=False)
    try:
        with pytest.raises(SourceModeRefused, match="cannot be forced down to 'polling_only'"):
            await w.runner.force_mode(POLLING_ONLY, "x")
        with pytest.raises(SourceModeRefused, match="has no poll path"):
            w.runner.set_load_factor(2.0)
        assert w.runner.mode == EVENT_ONLY
    finally:
        await w.manager.stop()


async def test_restarting_the_push_path_reopens_it_and_the_recheck_sees_it_deliver(
    w: World,
) -> None:
    await w.run(1)
    opened = len(w.push.opened)
    before = w.clock.now()
    assert not w.runner.push_delivered_since(before)
    await w.runner.restart_push("case 3: restart the stream")
    w.source.change("o-1")
    await w.run(10)  # the reopened path's first receive waits up to 5 s
    assert len(w.push.opened) == opened + 1
    assert w.runner.push_delivered_since(before)
    assert w.sink.identities() == {("o-1", "1")}


async def test_restarting_the_push_path_starts_its_back_off_over(w: World) -> None:
    w.push.receive_errors.extend([connection_lost()] * 10)
    await w.run(30)  # six failures: the engine waits 25.6 s before its seventh try
    before = len(w.push.opened)
    await w.run(2)
    assert len(w.push.opened) == before, "waiting out its back-off"

    await w.runner.restart_push("case 5: restart the stream")
    await w.run(2)  # reopened at once, failed again: retried after the first step (0.8 s)

    assert len(w.push.opened) == before + 2


async def test_a_push_failure_after_delivering_fails_the_recheck(w: World) -> None:
    before = w.clock.now()
    w.source.change("o-1")
    await w.run(5)
    assert w.runner.push_delivered_since(before)
    w.push.receive_errors.append(connection_lost())
    await w.run(5)
    assert not w.runner.push_delivered_since(before)


async def test_slowing_polling_down_scales_its_interval(w: World) -> None:
    polling = w.runner.polling
    assert polling is not None
    assert polling.current_interval == 60.0
    w.runner.set_load_factor(2.0)
    assert polling.current_interval == 120.0


async def test_controls_of_a_stopped_source_are_refused(w: World) -> None:
    await w.manager.stop()
    with pytest.raises(SourceModeRefused, match="not running"):
        await w.runner.restart_push("x")
