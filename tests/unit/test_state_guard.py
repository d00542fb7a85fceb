"""The state guard: atomic triggers under asyncio, durable transitions, exclusive blocks."""

from __future__ import annotations

import asyncio

import pytest

from eventcenter.domain.decisions import Transition
from eventcenter.domain.errors import RecordingFailed, TransitionRefused
from eventcenter.domain.fsm import ADJUSTING, LOAD_TESTING, STABLE, ProcessorStateMachine
from eventcenter.handlers.memory import MemoryDecisionLog
from eventcenter.handlers.state import StateGuard

#: A safety net only: the tests never wait on time, but a bug must not hang the run.
HANG_LIMIT_S = 5.0


class FakeClock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class GatedDecisionLog(MemoryDecisionLog):
    """Holds every transition recording until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.recording_started = asyncio.Event()
        self.gate = asyncio.Event()

    async def record_transition(self, transition: Transition) -> None:
        self.recording_started.set()
        await self.gate.wait()
        await super().record_transition(transition)


class FailingDecisionLog(MemoryDecisionLog):
    """Fails the next ``failures`` transition recordings, like a database that is down."""

    def __init__(self, failures: int = 1) -> None:
        super().__init__()
        self.failures = failures

    async def record_transition(self, transition: Transition) -> None:
        if self.failures:
            self.failures -= 1
            raise RecordingFailed("event store unavailable")
        await super().record_transition(transition)


@pytest.fixture
def log() -> MemoryDecisionLog:
    return MemoryDecisionLog()


@pytest.fixture
def guard(log: MemoryDecisionLog) -> StateGuard:
    return StateGuard(ProcessorStateMachine(), log, FakeClock())


def moves(log: MemoryDecisionLog) -> list[tuple[str, str, str]]:
    return [(t.source, t.trigger, t.dest) for t in log.transitions]


# --- firing ------------------------------------------------------------------------------------


async def test_fire_returns_the_transition_once_it_is_recorded(
    guard: StateGuard, log: MemoryDecisionLog
) -> None:
    transition = await guard.fire("begin_adjustment", reason="latency spike", correlation_id="e1")
    assert log.transitions == [transition]
    assert (guard.state, guard.holder) == (ADJUSTING, "e1")
    assert set(guard.allowed_triggers()) == {"begin_load_test", "settle", "abort"}


async def test_a_refused_trigger_records_nothing(guard: StateGuard, log: MemoryDecisionLog) -> None:
    with pytest.raises(TransitionRefused):
        await guard.fire("settle", reason="nothing to settle", correlation_id="e1")
    assert log.transitions == []
    assert guard.state == STABLE


async def test_two_simultaneous_load_tests_get_one_transition_and_one_refusal() -> None:
    log = GatedDecisionLog()
    guard = StateGuard(ProcessorStateMachine(), log, FakeClock())
    async with asyncio.timeout(HANG_LIMIT_S):
        both = asyncio.gather(
            guard.fire("begin_load_test", reason="probe", correlation_id="probe-a"),
            guard.fire("begin_load_test", reason="probe", correlation_id="probe-b"),
            return_exceptions=True,
        )
        await log.recording_started.wait()
        assert log.transitions == []  # one recording is in flight, held at the gate
        assert guard.state == LOAD_TESTING  # ... yet the machine switched before any await
        log.gate.set()
        results = await both

    transitions = [r for r in results if isinstance(r, Transition)]
    refusals = [r for r in results if isinstance(r, TransitionRefused)]
    assert len(transitions) == 1
    assert len(refusals) == 1
    winner, loser = transitions[0], refusals[0]
    assert loser.trigger == "begin_load_test"
    assert loser.state == LOAD_TESTING
    assert "a load test is already running" in loser.reason
    assert winner.correlation_id in loser.reason
    assert log.transitions == [winner]
    assert (guard.state, guard.holder) == (LOAD_TESTING, winner.correlation_id)


async def test_a_failed_recording_rolls_the_machine_back_and_reaches_the_caller() -> None:
    log = FailingDecisionLog(failures=1)
    guard = StateGuard(ProcessorStateMachine(), log, FakeClock())
    with pytest.raises(RecordingFailed, match="event store unavailable"):
        await guard.fire("begin_load_test", reason="probe", correlation_id="probe-1")
    assert guard.state == STABLE
    assert log.transitions == []


async def test_after_a_failed_recording_the_same_trigger_can_be_fired_again() -> None:
    log = FailingDecisionLog(failures=1)
    guard = StateGuard(ProcessorStateMachine(), log, FakeClock())
    with pytest.raises(RecordingFailed):
        await guard.fire("begin_load_test", reason="probe", correlation_id="probe-1")
    transition = await guard.fire("begin_load_test", reason="probe", correlation_id="probe-1")
    assert log.transitions == [transition]
    assert guard.state == LOAD_TESTING


async def test_fire_passes_the_clock_to_the_cool_down_guard() -> None:
    clock = FakeClock(now=100.0)
    guard = StateGuard(ProcessorStateMachine(load_test_cooldown=30.0), MemoryDecisionLog(), clock)
    await guard.fire("begin_load_test", reason="probe", correlation_id="p1")
    await guard.fire("finish_load_test", reason="done", correlation_id="p1")
    clock.now = 110.0
    with pytest.raises(TransitionRefused, match="cool-down"):
        await guard.fire("begin_load_test", reason="probe", correlation_id="p2")
    clock.now = 130.0
    assert (await guard.fire("begin_load_test", reason="probe", correlation_id="p2")).dest == (
        LOAD_TESTING
    )


# --- exclusive blocks --------------------------------------------------------------------------


async def test_exclusive_fires_begin_before_the_block_and_end_after_it(
    guard: StateGuard, log: MemoryDecisionLog
) -> None:
    async with guard.exclusive(
        "begin_load_test", "finish_load_test", reason="measure orders", correlation_id="p1"
    ) as entered:
        assert entered.dest == LOAD_TESTING
        assert guard.state == LOAD_TESTING
        assert moves(log) == [(STABLE, "begin_load_test", LOAD_TESTING)]
    assert moves(log) == [
        (STABLE, "begin_load_test", LOAD_TESTING),
        (LOAD_TESTING, "finish_load_test", ADJUSTING),
    ]
    assert [t.correlation_id for t in log.transitions] == ["p1", "p1"]
    assert log.transitions[1].reason == "begin_load_test done"
    assert guard.state == ADJUSTING


async def test_exclusive_aborts_with_the_error_in_the_reason_and_re_raises(
    guard: StateGuard, log: MemoryDecisionLog
) -> None:
    with pytest.raises(ConnectionError, match="target down"):
        async with guard.exclusive(
            "begin_load_test", "finish_load_test", reason="measure orders", correlation_id="p1"
        ):
            raise ConnectionError("target down")
    assert moves(log) == [
        (STABLE, "begin_load_test", LOAD_TESTING),
        (LOAD_TESTING, "abort", STABLE),
    ]
    abort = log.transitions[1]
    assert abort.correlation_id == "p1"
    assert "begin_load_test failed" in abort.reason
    assert "target down" in abort.reason
    assert guard.state == STABLE


async def test_a_second_exclusive_block_is_refused_while_the_first_runs(
    guard: StateGuard, log: MemoryDecisionLog
) -> None:
    async with guard.exclusive(
        "begin_load_test", "finish_load_test", reason="first", correlation_id="p1"
    ):
        with pytest.raises(TransitionRefused, match="already running"):
            async with guard.exclusive(
                "begin_load_test", "finish_load_test", reason="second", correlation_id="p2"
            ):
                pytest.fail("the second block must not run")
    assert [t.correlation_id for t in log.transitions] == ["p1", "p1"]
