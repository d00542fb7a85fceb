"""The state guard: atomic triggers under asyncio, durable transitions, exclusive blocks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventcenter.domain.decisions import Decision, Transition
from eventcenter.domain.errors import RecordingFailed, TransitionRefused
from eventcenter.domain.fsm import ADJUSTING, LOAD_TESTING, STABLE, ProcessorStateMachine
from eventcenter.handlers.memory import MemoryDecisionLog
from eventcenter.handlers.state import StateGuard
from tests.unit.looping import until

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


# --- fire and record are one step: any interleaving leaves machine == log ---------------------


class ScriptedLog:
    """A decision log whose every recording does what the test planned for it.

    The plan travels in the transition's correlation id (``"<name>:<plan>"``): ``ok`` records
    at once, ``fail`` raises RecordingFailed at once, ``hold`` waits until the test calls
    :meth:`settle`. Like the real writer, a held recording is saved or refused by the store
    whatever happens to the caller meanwhile.
    """

    def __init__(self) -> None:
        self.recorded: list[Transition] = []
        self.held: list[tuple[Transition, asyncio.Future[None]]] = []
        self.calls = 0

    async def record_transition(self, transition: Transition) -> None:
        self.calls += 1
        plan = transition.correlation_id.rpartition(":")[2]
        if plan == "fail":
            raise RecordingFailed("event store unavailable")
        if plan == "hold":
            outcome: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.held.append((transition, outcome))
            await outcome
        self.recorded.append(transition)

    async def record_decision(self, decision: Decision) -> None:
        raise AssertionError("the guard records transitions only")

    def settle(self, index: int = 0, *, saved: bool = True) -> None:
        """Let held recording ``index`` finish: saved, or refused with RecordingFailed."""
        _, outcome = self.held.pop(index)
        if saved:
            outcome.set_result(None)
        else:
            outcome.set_exception(RecordingFailed("event store went away"))

    def state_recorded_last(self, initial: str) -> str:
        return self.recorded[-1].dest if self.recorded else initial


def scripted_guard(initial: str = STABLE, cooldown: float = 0.0) -> tuple[StateGuard, ScriptedLog]:
    log = ScriptedLog()
    return StateGuard(ProcessorStateMachine(initial, cooldown), log, FakeClock()), log


def spawn(guard: StateGuard, trigger: str, correlation_id: str) -> asyncio.Task[Transition]:
    return asyncio.create_task(guard.fire(trigger, reason="test", correlation_id=correlation_id))


async def test_a_trigger_waits_for_the_recording_in_flight_and_sees_its_rollback() -> None:
    guard, log = scripted_guard()
    async with asyncio.timeout(HANG_LIMIT_S):
        adjusting = spawn(guard, "begin_adjustment", "spike:hold")
        await until(lambda: bool(log.held))
        settling = spawn(guard, "settle", "idle:ok")
        await until(lambda: log.calls == 1 and not settling.done() and guard.state == ADJUSTING)
        log.settle(saved=False)
        with pytest.raises(RecordingFailed):
            await adjusting
        with pytest.raises(TransitionRefused) as refused:
            await settling
    assert refused.value.state == STABLE  # it saw the rolled-back state, not the tentative one
    assert (guard.state, guard.holder, log.recorded) == (STABLE, None, [])


async def test_a_trigger_fired_during_a_recording_runs_after_it_is_saved() -> None:
    guard, log = scripted_guard()
    async with asyncio.timeout(HANG_LIMIT_S):
        adjusting = spawn(guard, "begin_adjustment", "spike:hold")
        await until(lambda: bool(log.held))
        settling = spawn(guard, "settle", "idle:ok")
        await until(lambda: log.calls == 1 and not settling.done())
        log.settle()
        await asyncio.gather(adjusting, settling)
    assert [(t.source, t.dest) for t in log.recorded] == [(STABLE, ADJUSTING), (ADJUSTING, STABLE)]
    assert guard.state == STABLE


async def test_the_loser_of_a_race_is_refused_while_the_winners_exclusive_block_still_runs() -> (
    None
):
    guard, log = scripted_guard()
    block_may_end = asyncio.Event()
    inside = asyncio.Event()

    async def winner() -> None:
        async with guard.exclusive(
            "begin_load_test", "finish_load_test", reason="measure", correlation_id="a:hold"
        ):
            inside.set()
            await block_may_end.wait()

    async with asyncio.timeout(HANG_LIMIT_S):
        running = asyncio.create_task(winner())
        await until(lambda: bool(log.held))
        loser = spawn(guard, "begin_load_test", "b:ok")
        await until(lambda: log.calls == 1 and not loser.done())
        log.settle()  # the winner's begin is saved; its block now runs until told to end
        with pytest.raises(TransitionRefused, match=r"already running \(correlation id a:hold\)"):
            await loser
        assert inside.is_set()
        assert not running.done()
        block_may_end.set()
        await until(lambda: bool(log.held))
        log.settle()  # finish_load_test
        await running
    assert [t.trigger for t in log.recorded] == ["begin_load_test", "finish_load_test"]
    assert guard.state == ADJUSTING


# --- cancellation ------------------------------------------------------------------------------


async def test_a_caller_cancelled_during_a_recording_that_is_then_saved_keeps_the_transition() -> (
    None
):
    guard, log = scripted_guard()
    async with asyncio.timeout(HANG_LIMIT_S):
        task = spawn(guard, "begin_load_test", "p:hold")
        await until(lambda: bool(log.held))
        task.cancel()
        await until(lambda: task.cancelling() == 1)
        assert not task.done()  # it waits for the store's answer before going away
        log.settle()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert [t.dest for t in log.recorded] == [LOAD_TESTING]
    assert (guard.state, guard.holder) == (LOAD_TESTING, "p:hold")


async def test_a_caller_cancelled_during_a_recording_that_then_fails_is_rolled_back() -> None:
    guard, log = scripted_guard(cooldown=30.0)
    async with asyncio.timeout(HANG_LIMIT_S):
        assert (await guard.fire("begin_load_test", reason="t", correlation_id="p1:ok")).dest
        task = spawn(guard, "finish_load_test", "p1:hold")
        await until(lambda: bool(log.held))
        task.cancel()
        await asyncio.sleep(0)
        log.settle(saved=False)
        with pytest.raises(asyncio.CancelledError):
            await task
    assert (guard.state, guard.holder) == (LOAD_TESTING, "p1:ok")
    # The cool-down clock was rolled back too: no load test has ended yet.
    await guard.fire("abort", reason="t", correlation_id="p1:ok")
    assert [t.trigger for t in log.recorded] == ["begin_load_test", "abort"]


async def test_a_recording_cancelled_by_the_log_is_rolled_back_and_reported() -> None:
    class CancellingLog(MemoryDecisionLog):
        async def record_transition(self, transition: Transition) -> None:
            raise asyncio.CancelledError

    guard = StateGuard(ProcessorStateMachine(), CancellingLog(), FakeClock())
    with pytest.raises(RecordingFailed, match="cancelled by the decision log"):
        await guard.fire("begin_adjustment", reason="spike", correlation_id="e1")
    assert (guard.state, guard.holder) == (STABLE, None)


async def test_a_log_that_raises_before_awaiting_is_rolled_back() -> None:
    class BrokenLog(MemoryDecisionLog):
        def record_transition(self, transition: Transition) -> Any:  # not even a coroutine
            raise RuntimeError("misconfigured")

    guard = StateGuard(ProcessorStateMachine(), BrokenLog(), FakeClock())
    with pytest.raises(RuntimeError, match="misconfigured"):
        await guard.fire("begin_adjustment", reason="spike", correlation_id="e1")
    assert guard.state == STABLE


async def test_a_caller_cancelled_while_waiting_for_the_lock_changes_nothing() -> None:
    guard, log = scripted_guard()
    async with asyncio.timeout(HANG_LIMIT_S):
        first = spawn(guard, "begin_adjustment", "a:hold")
        await until(lambda: bool(log.held))
        second = spawn(guard, "begin_load_test", "b:ok")
        await asyncio.sleep(0)
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        log.settle()
        await first
    assert [t.correlation_id for t in log.recorded] == ["a:hold"]
    assert guard.state == ADJUSTING


async def test_an_exclusive_block_cancelled_while_its_begin_is_saved_is_aborted() -> None:
    guard, log = scripted_guard()
    ran = False

    async def measure() -> None:
        nonlocal ran
        async with guard.exclusive(
            "begin_load_test", "finish_load_test", reason="measure", correlation_id="p:hold"
        ):
            ran = True

    async with asyncio.timeout(HANG_LIMIT_S):
        task = asyncio.create_task(measure())
        await until(lambda: bool(log.held))
        task.cancel()
        await asyncio.sleep(0)
        log.settle()  # begin saved although the caller is going away ...
        await until(lambda: bool(log.held))
        log.settle()  # ... so the abort is fired and saved too
        with pytest.raises(asyncio.CancelledError):
            await task
    assert not ran
    assert [t.trigger for t in log.recorded] == ["begin_load_test", "abort"]
    assert "CancelledError" in log.recorded[1].reason
    assert guard.state == STABLE


async def test_an_exclusive_block_whose_end_cannot_be_recorded_is_aborted() -> None:
    guard, log = scripted_guard()
    async with asyncio.timeout(HANG_LIMIT_S):
        task = asyncio.create_task(_exclusive_block(guard, "p:hold"))
        await until(lambda: bool(log.held))
        log.settle()  # begin_load_test saved
        await until(lambda: bool(log.held))
        log.settle(saved=False)  # finish_load_test refused by the store
        await until(lambda: bool(log.held))
        log.settle()  # the abort is saved
        with pytest.raises(RecordingFailed):
            await task
    assert [t.trigger for t in log.recorded] == ["begin_load_test", "abort"]
    assert "finish_load_test failed" in log.recorded[1].reason
    assert (guard.state, guard.holder) == (STABLE, None)


async def _exclusive_block(guard: StateGuard, correlation_id: str) -> None:
    async with guard.exclusive(
        "begin_load_test", "finish_load_test", reason="measure", correlation_id=correlation_id
    ):
        pass


# --- any interleaving, any failures ------------------------------------------------------------

TRIGGERS = ["begin_adjustment", "begin_load_test", "finish_load_test", "settle", "abort"]
operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("fire"), st.sampled_from(TRIGGERS), st.sampled_from(["ok", "fail", "hold"])
        ),
        st.tuples(st.just("settle"), st.integers(0, 7), st.booleans()),
        st.tuples(st.just("cancel"), st.integers(0, 7), st.just(False)),
        st.tuples(
            st.just("exclusive"), st.just("begin_load_test"), st.sampled_from(["ok", "hold"])
        ),
        st.tuples(st.just("end"), st.integers(0, 7), st.just(False)),
        st.tuples(st.just("tick"), st.integers(0, 7), st.just(False)),
    ),
    max_size=30,
)


def assert_machine_equals_log(guard: StateGuard, log: ScriptedLog, initial: str) -> None:
    assert guard.state == log.state_recorded_last(initial)
    chain = [initial] + [t.dest for t in log.recorded]
    assert [t.source for t in log.recorded] == chain[:-1], (
        "every recorded move starts where the last one ended"
    )
    if guard.state == STABLE or not log.recorded:
        assert guard.holder is None
    else:
        assert guard.holder == log.recorded[-1].correlation_id


async def run_interleaving(initial: str, ops: list[tuple[str, Any, Any]]) -> None:
    clock = FakeClock(0.0)
    log = ScriptedLog()
    guard = StateGuard(ProcessorStateMachine(initial, load_test_cooldown=3.0), log, clock)
    tasks: list[asyncio.Task[Any]] = []
    blocks: dict[asyncio.Task[Any], asyncio.Event] = {}  # tasks inside an exclusive block

    async def exclusive(correlation_id: str) -> None:
        async with guard.exclusive(
            "begin_load_test", "finish_load_test", reason="t", correlation_id=correlation_id
        ):
            gate = asyncio.Event()
            blocks[asyncio.current_task()] = gate  # type: ignore[index]
            await gate.wait()

    def parked(task: asyncio.Task[Any]) -> bool:
        return task.done() or (task in blocks and not blocks[task].is_set())

    def quiet() -> bool:
        """Nothing can move without the test: a recording is held, or every task is parked."""
        return bool(log.held) or all(parked(task) for task in tasks)

    for number, (op, arg, flag) in enumerate(ops):
        if op == "fire":
            tasks.append(spawn(guard, arg, f"c{number}:{flag}"))
        elif op == "exclusive":
            tasks.append(asyncio.create_task(exclusive(f"x{number}:{flag}")))
        elif op == "settle" and log.held:
            log.settle(arg % len(log.held), saved=flag)
        elif op == "cancel" and tasks:
            tasks[arg % len(tasks)].cancel()
        elif op == "end" and blocks:
            list(blocks.values())[arg % len(blocks)].set()
        elif op == "tick":
            clock.now += arg
        await until(quiet)
        if all(parked(task) for task in tasks):  # no recording in flight: they must agree
            assert_machine_equals_log(guard, log, initial)
    for _ in range(100):  # each round settles a recording or ends a block: it terminates
        for gate in blocks.values():
            gate.set()
        await until(quiet)
        if log.held:
            log.settle()
        elif all(task.done() for task in tasks):
            break
    await asyncio.gather(*tasks, return_exceptions=True)
    assert not log.held
    assert_machine_equals_log(guard, log, initial)


@settings(max_examples=250, deadline=None)
@given(initial=st.sampled_from([STABLE, ADJUSTING, LOAD_TESTING]), ops=operations)
def test_after_any_interleaving_of_triggers_and_failures_the_machine_equals_the_log(
    initial: str, ops: list[tuple[str, Any, Any]]
) -> None:
    asyncio.run(asyncio.wait_for(run_interleaving(initial, ops), HANG_LIMIT_S))


# --- restart recovery --------------------------------------------------------------------------


async def test_recovery_aborts_a_load_test_that_a_restart_interrupted() -> None:
    log = MemoryDecisionLog()
    clock = FakeClock(now=500.0)
    guard = StateGuard(ProcessorStateMachine(LOAD_TESTING, load_test_cooldown=60.0), log, clock)
    transition = await guard.recover(correlation_id="start-1")
    assert transition is not None
    assert moves(log) == [(LOAD_TESTING, "abort", STABLE)]
    assert (transition.reason, transition.correlation_id) == ("interrupted by restart", "start-1")
    assert (guard.state, guard.holder) == (STABLE, None)
    with pytest.raises(TransitionRefused, match="cool-down"):  # counted from the recovery
        await guard.fire("begin_load_test", reason="probe", correlation_id="p1")


async def test_recovery_records_the_reason_it_is_given() -> None:
    log = MemoryDecisionLog()
    guard = StateGuard(ProcessorStateMachine(LOAD_TESTING), log, FakeClock())
    await guard.recover(correlation_id="start-2", reason="lease taken over")
    assert log.transitions[0].reason == "lease taken over"


@pytest.mark.parametrize("state", [STABLE, ADJUSTING])
async def test_recovery_leaves_resting_states_alone(state: str) -> None:
    log = MemoryDecisionLog()
    guard = StateGuard(ProcessorStateMachine(state), log, FakeClock())
    assert await guard.recover(correlation_id="start-1") is None
    assert log.transitions == []
    assert guard.state == state


async def test_recovery_that_cannot_be_recorded_raises_and_changes_nothing() -> None:
    guard = StateGuard(ProcessorStateMachine(LOAD_TESTING), FailingDecisionLog(), FakeClock())
    with pytest.raises(RecordingFailed):
        await guard.recover(correlation_id="start-1")
    assert guard.state == LOAD_TESTING
