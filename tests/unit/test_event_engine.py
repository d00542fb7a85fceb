"""The event engine: admit, then acknowledge; reconnect with back-off; a lost position re-lists."""

from __future__ import annotations

import asyncio
import itertools
import random
from typing import Any

import pytest

from eventcenter.domain.errors import StoreUnavailable
from eventcenter.domain.sources import PositionLost, SourceError, SourceErrorKind
from eventcenter.sources.clock import FakeClock
from eventcenter.sources.event_engine import EventEngine
from tests.unit.source_fakes import (
    SOURCE,
    TENANT,
    FakePushPath,
    FakeSource,
    FixedJitter,
    MemorySink,
    Outcomes,
    connection_lost,
)

RECEIVE_TIMEOUT = 5.0
GUARD_S = 2.0  # turns a hang into a failure; nothing waits on it otherwise


class Rig:
    """A source, its push path, a sink and an engine on a fake clock."""

    def __init__(self, *, batch: int = 10, rng: random.Random | None = None) -> None:
        self.clock = FakeClock()
        self.source = FakeSource()
        self.sink = MemorySink()
        self.path = FakePushPath(self.source, self.clock, self.sink)
        self.outcomes = Outcomes()
        self.lost_calls = 0
        self.engine = EventEngine(
            TENANT,
            SOURCE,
            self.path,
            self.sink,
            self.clock,
            self.outcomes,
            on_position_lost=self._lost,
            batch=batch,
            receive_timeout=RECEIVE_TIMEOUT,
            rng=rng or FixedJitter(0.0),
        )

    def _lost(self) -> None:
        self.lost_calls += 1

    async def run_for(self, seconds: float) -> None:
        self.engine.start()
        await self.clock.advance(seconds)


async def test_each_batch_is_admitted_with_its_position_before_it_is_acknowledged() -> None:
    rig = Rig(batch=2)
    for n in range(3):
        rig.source.change(f"k{n}")

    await rig.run_for(0.0)
    await rig.engine.stop()

    assert rig.sink.journal == ["admit:push:1,2", "ack:1,2", "admit:push:3", "ack:3"]
    assert rig.sink.positions[(TENANT, SOURCE, "push")] == "3"
    assert rig.path.acked_early == []
    assert [(o.ok, o.items) for o in rig.outcomes.seen] == [(True, 2), (True, 1)]


async def test_it_resumes_after_the_stored_position() -> None:
    rig = Rig()
    for n in range(4):
        rig.source.change(f"k{n}")
    rig.sink.positions[(TENANT, SOURCE, "push")] = "2"

    await rig.run_for(0.0)
    await rig.engine.stop()

    assert rig.path.opened == ["2"]
    assert rig.sink.identities() == {("k2", "1"), ("k3", "1")}


async def test_when_admission_fails_nothing_is_acknowledged_and_the_messages_come_again() -> None:
    rig = Rig()
    rig.source.change("a")
    rig.source.change("b")
    rig.sink.fail_before = 1

    await rig.run_for(0.0)
    assert rig.path.acked == []
    (failure,) = rig.outcomes.failures
    assert failure.kind is None
    assert not failure.path_failed  # the store failed, not the push path
    assert failure.retry_in == pytest.approx(0.8)

    await rig.clock.advance(0.8)
    await rig.engine.stop()

    assert rig.path.opened == [None, None]  # reconnected from the same (unstored) position
    assert rig.sink.identities() == {("a", "1"), ("b", "1")}
    assert rig.path.acked == ["1", "2"]
    assert rig.path.acked_early == []


async def test_a_batch_committed_without_an_answer_comes_again_and_is_admitted_once() -> None:
    rig = Rig()
    rig.source.change("a")
    rig.source.change("b")
    rig.sink.fail_after = 1

    await rig.run_for(1.0)
    await rig.engine.stop()

    assert rig.sink.repeats == [(TENANT, SOURCE, "a", "1"), (TENANT, SOURCE, "b", "1")]
    assert len(rig.sink.accepted) == 2
    assert rig.path.acked == ["1", "2"]


async def test_a_failed_acknowledgement_reconnects_and_the_redelivery_is_dropped() -> None:
    rig = Rig()
    rig.source.change("a")
    rig.path.ack_errors.append(connection_lost("ack refused"))

    await rig.run_for(1.0)
    await rig.engine.stop()

    assert [o.kind for o in rig.outcomes.failures] == [SourceErrorKind.CONNECTION]
    assert rig.path.opened == [None, "1"]  # the unacknowledged message is handed out again
    assert rig.sink.repeats == [(TENANT, SOURCE, "a", "1")]
    assert len(rig.sink.accepted) == 1


async def test_bad_messages_go_to_the_sink_and_the_flow_continues() -> None:
    rig = Rig()
    rig.source.change("a")
    bad = rig.source.bad("{oops")
    rig.source.change("b")

    await rig.run_for(0.0)
    await rig.engine.stop()

    assert rig.sink.dead_letters == [bad]
    assert rig.sink.identities() == {("a", "1"), ("b", "1")}
    assert rig.path.acked == ["1", "2", "3"]
    (outcome,) = rig.outcomes.seen
    assert (outcome.ok, outcome.items, outcome.dead_lettered) == (True, 3, 1)


async def test_reconnects_back_off_from_800_ms_doubling_up_to_30_s() -> None:
    rig = Rig()
    rig.path.open_errors.extend(connection_lost() for _ in range(9))

    await rig.run_for(300.0)
    await rig.engine.stop()

    failures = rig.outcomes.failures
    assert [o.retry_in for o in failures] == pytest.approx(
        [0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0, 30.0]
    )
    # each attempt came exactly when the previous failure said it would
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(failures)]
    assert gaps == pytest.approx([o.retry_in for o in failures[:-1]])
    assert len(rig.path.opened) == 10


async def test_reconnect_delays_are_jittered_within_half_of_each_ceiling() -> None:
    rig = Rig(rng=random.Random(11))
    rig.path.open_errors.extend(connection_lost() for _ in range(12))

    await rig.run_for(600.0)
    await rig.engine.stop()

    ceilings = [0.8, 1.6, 3.2, 6.4, 12.8, 25.6] + [30.0] * 6
    delays = [o.retry_in for o in rig.outcomes.failures]
    assert len(delays) == len(ceilings)
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert delay is not None
        assert ceiling / 2 <= delay <= ceiling
    assert len(set(delays[6:])) > 1  # at the cap, still spread


async def test_a_server_asking_to_wait_longer_is_honoured() -> None:
    rig = Rig()
    rig.path.open_errors.append(
        SourceError(SourceErrorKind.RATE_LIMITED, "slow down", retry_after=45.0)
    )

    await rig.run_for(44.0)
    assert rig.path.opened == [None]
    await rig.clock.advance(1.0)
    await rig.engine.stop()

    assert rig.outcomes.failures[0].retry_in == 45.0
    assert rig.path.opened == [None, None]


async def test_the_back_off_starts_over_once_the_path_answered() -> None:
    rig = Rig()
    rig.path.open_errors.extend([connection_lost(), connection_lost()])
    rig.engine.start()
    await rig.clock.advance(2.5)  # two failures (0.8 + 1.6 s), open at 2.4
    rig.path.receive_errors.append(connection_lost())
    await rig.clock.advance(RECEIVE_TIMEOUT)  # the quiet receive answered, the next one fails
    await rig.engine.stop()

    assert [o.retry_in for o in rig.outcomes.failures] == pytest.approx([0.8, 1.6, 0.8])


async def test_a_lost_position_is_reported_re_listed_and_push_resumes_from_now() -> None:
    rig = Rig()
    for n in range(5):
        rig.source.change(f"old{n}")
    rig.sink.positions[(TENANT, SOURCE, "push")] = "2"
    rig.source.trim()  # the stream no longer has positions 3..5
    rig.source.change("new")

    await rig.run_for(0.0)
    await rig.engine.stop()

    (lost,) = rig.outcomes.failures
    assert lost.kind is SourceErrorKind.POSITION_LOST
    assert lost.path_failed
    assert rig.lost_calls == 1
    assert rig.path.opened == ["2", None]
    assert rig.sink.identities() == {("new", "1")}  # the gap is the reconciliation's
    assert rig.sink.positions[(TENANT, SOURCE, "push")] == "6"


async def test_position_lost_even_from_now_backs_off_instead_of_spinning() -> None:
    rig = Rig()
    rig.path.open_errors.extend([PositionLost("gone"), PositionLost("gone")])

    await rig.run_for(0.8)
    await rig.engine.stop()

    assert [o.retry_in for o in rig.outcomes.failures] == pytest.approx([0.8, 1.6])
    assert rig.lost_calls == 0  # nothing was being resumed: nothing to re-list


async def test_a_quiet_path_reports_nothing_and_keeps_the_last_message_time() -> None:
    rig = Rig()
    rig.source.change("a")
    await rig.run_for(3.0)
    assert rig.engine.last_message_at == 0.0

    await rig.clock.advance(120.0)
    await rig.engine.stop()

    assert len(rig.outcomes.seen) == 1
    assert rig.outcomes.seen[0].last_message_at == 0.0
    assert rig.engine.last_message_at == 0.0


async def test_the_last_message_time_travels_with_later_outcomes() -> None:
    rig = Rig()
    rig.source.change("a")
    await rig.run_for(10.0)
    rig.path.receive_errors.append(connection_lost())

    await rig.clock.advance(RECEIVE_TIMEOUT)
    await rig.engine.stop()

    assert rig.outcomes.failures[0].last_message_at == 0.0


async def test_stop_closes_the_path_and_ends_the_task() -> None:
    rig = Rig()
    task = rig.engine.start()
    await rig.clock.advance(1.0)
    assert rig.engine.connected
    assert rig.engine.start() is task  # already running: the same task

    await rig.engine.stop()

    assert task.done()
    assert not rig.engine.running
    assert not rig.engine.connected
    assert rig.path.closes == 1
    await rig.engine.stop()  # a second stop is harmless


async def test_an_engine_that_died_of_a_bug_says_so_when_stopped() -> None:
    rig = Rig()

    def broken(outcome: object) -> None:
        raise RuntimeError("the manager's callback is broken")

    rig.source.change("a")
    engine = EventEngine(TENANT, SOURCE, rig.path, rig.sink, rig.clock, broken)
    engine.start()
    await rig.clock.advance(0.0)

    with pytest.raises(RuntimeError, match="callback is broken"):
        await engine.stop()
    assert rig.path.closes == 1


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"batch": 0}, "batch"), ({"receive_timeout": 0.0}, "receive_timeout")]
)
def test_settings_that_cannot_work_are_refused(kwargs: dict[str, float], message: str) -> None:
    rig_clock = FakeClock()
    source = FakeSource()
    sink = MemorySink()
    with pytest.raises(ValueError, match=message):
        EventEngine(
            TENANT,
            SOURCE,
            FakePushPath(source, rig_clock, sink),
            sink,
            rig_clock,
            Outcomes(),
            **kwargs,  # type: ignore[arg-type]
        )


async def test_a_store_unreachable_at_start_is_retried_not_fatal() -> None:
    rig = Rig()
    rig.source.change("a")
    failing = rig.sink.position

    calls = 0

    async def position(tenant: str, source: str, path: str) -> str | None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise StoreUnavailable("the store is starting (test)")
        return await failing(tenant, source, path)

    rig.sink.position = position  # type: ignore[method-assign]
    await rig.run_for(1.0)
    await rig.engine.stop()

    (failure,) = rig.outcomes.failures
    assert failure.kind is None
    assert "reading the stored position" in failure.detail
    assert rig.sink.identities() == {("a", "1")}


async def test_a_flooding_source_leaves_the_loop_to_another_tenant_s_engine() -> None:
    clock = FakeClock()
    sink = MemorySink()
    flood, quiet = FakeSource(), FakeSource()
    for n in range(500):
        flood.change(f"f{n}")
    quiet.change("q")
    paths = [FakePushPath(source, clock, sink) for source in (flood, quiet)]
    engines = [
        EventEngine(tenant, SOURCE, path, sink, clock, Outcomes(), batch=10)
        for tenant, path in zip(("flood", "quiet"), paths, strict=True)
    ]
    for engine in engines:
        engine.start()

    await clock.advance(0.0)
    for engine in engines:
        await engine.stop()

    admissions = [entry for entry in sink.journal if entry.startswith("admit")]
    assert len(admissions) == 51
    assert admissions.index("admit:push:1") <= 2  # the quiet tenant's one item did not wait
    assert [path.acked_early for path in paths] == [[], []]


class GatedSink(MemorySink):
    """A sink whose admissions wait until the test opens the gate (a slow commit)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()  # an admission waits at the gate

    async def admit(self, *args: Any, **kwargs: Any) -> list[str | None]:
        self.waiting.set()
        await self.gate.wait()
        return await super().admit(*args, **kwargs)


class GatedRig(Rig):
    def __init__(self, *, batch: int) -> None:
        super().__init__(batch=batch)
        self.gated = GatedSink()
        self.sink = self.path.sink = self.engine._sink = self.gated


async def test_the_next_batch_is_received_while_the_one_before_commits_and_acked_after() -> None:
    rig = GatedRig(batch=2)
    for n in range(5):
        rig.source.change(f"k{n}")

    rig.engine.start()
    await asyncio.wait_for(rig.gated.waiting.wait(), GUARD_S)
    await rig.clock.advance(0.0)
    assert rig.path._cursor == 4  # batch 3,4 was read while batch 1,2 waits for its commit
    assert rig.path.acked == []  # nothing acknowledged before its commit
    rig.gated.gate.set()
    await rig.clock.advance(0.0)
    await rig.engine.stop()

    assert rig.sink.journal == [
        "admit:push:1,2",
        "ack:1,2",
        "admit:push:3,4",
        "ack:3,4",
        "admit:push:5",
        "ack:5",
    ]
    assert rig.path.acked_early == []
    assert rig.sink.positions[(TENANT, SOURCE, "push")] == "5"


async def test_what_was_read_ahead_waits_and_is_admitted_as_one_batch() -> None:
    rig = GatedRig(batch=2)
    rig.source.change("a")

    rig.engine.start()
    await asyncio.wait_for(rig.gated.waiting.wait(), GUARD_S)
    rig.source.change("b")  # arrives while "a" commits: two small reads ahead
    await rig.clock.advance(0.0)
    rig.source.change("c")
    await rig.clock.advance(RECEIVE_TIMEOUT)
    rig.gated.gate.set()
    await rig.clock.advance(0.0)
    await rig.engine.stop()

    assert rig.sink.journal == ["admit:push:1", "ack:1", "admit:push:2,3", "ack:2,3"]


async def test_a_failed_commit_acknowledges_nothing_read_after_it_and_it_all_comes_again() -> None:
    rig = GatedRig(batch=2)
    for n in range(4):
        rig.source.change(f"k{n}")
    rig.sink.fail_before = 1

    rig.engine.start()
    await asyncio.wait_for(rig.gated.waiting.wait(), GUARD_S)
    await rig.clock.advance(0.0)
    assert rig.path._cursor == 4  # the second batch was read ahead
    rig.gated.gate.set()
    await rig.clock.advance(0.0)

    # The first commit failed: the batch read ahead was neither admitted nor acknowledged.
    assert rig.sink.journal == ["admit-failed:push"]
    assert rig.path.acked == []
    assert rig.sink.positions == {}

    await rig.clock.advance(0.8)  # the reconnect hands both batches out again
    await rig.engine.stop()
    assert rig.sink.journal[1:] == ["admit:push:1,2", "ack:1,2", "admit:push:3,4", "ack:3,4"]
    assert rig.sink.identities() == {(f"k{n}", "1") for n in range(4)}
    assert rig.sink.repeats == []
    assert rig.path.acked_early == []


async def test_a_read_ahead_failing_while_a_batch_commits_is_reported_after_that_batch() -> None:
    rig = GatedRig(batch=2)
    for n in range(2):
        rig.source.change(f"k{n}")

    rig.engine.start()
    await asyncio.wait_for(rig.gated.waiting.wait(), GUARD_S)
    rig.path.receive_errors.append(connection_lost("read refused"))
    await rig.clock.advance(RECEIVE_TIMEOUT)  # the next read fails while 1,2 waits
    assert rig.outcomes.failures == []
    rig.gated.gate.set()
    await rig.clock.advance(0.0)  # 1,2 is admitted and acknowledged, then the failure counts
    assert [o.kind for o in rig.outcomes.failures] == [SourceErrorKind.CONNECTION]
    await rig.clock.advance(1.0)
    await rig.engine.stop()

    assert rig.path.opened == [None, "2"]
    assert rig.sink.journal == ["admit:push:1,2", "ack:1,2"]
    assert rig.path.acked_early == []
