"""The processor state machine: the table as designed, refusals that say why, the cool-down."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventcenter.domain.decisions import Transition
from eventcenter.domain.errors import EventCenterError, TransitionRefused
from eventcenter.domain.fsm import ADJUSTING, LOAD_TESTING, STABLE, ProcessorStateMachine

#: The design, written out independently of domain/fsm.py: state -> {trigger: destination}.
DESIGN: dict[str, dict[str, str]] = {
    STABLE: {"begin_adjustment": ADJUSTING, "begin_load_test": LOAD_TESTING},
    ADJUSTING: {"begin_load_test": LOAD_TESTING, "settle": STABLE, "abort": STABLE},
    LOAD_TESTING: {"finish_load_test": ADJUSTING, "abort": STABLE},
}
DESIGN_CYCLE = ["begin_adjustment", "begin_load_test", "finish_load_test", "settle"]
ALL_TRIGGERS = sorted({trigger for moves in DESIGN.values() for trigger in moves})

REFUSED = [
    pytest.param(state, trigger, id=f"{trigger}-from-{state}")
    for state, moves in DESIGN.items()
    for trigger in ALL_TRIGGERS
    if trigger not in moves and (state, trigger) != (LOAD_TESTING, "begin_load_test")
]


def fire(
    machine: ProcessorStateMachine, trigger: str, now: float = 0.0, correlation_id: str = "c"
) -> Transition:
    return machine.fire(trigger, now=now, reason=f"test {trigger}", correlation_id=correlation_id)


def refused(
    machine: ProcessorStateMachine, trigger: str, now: float = 0.0, correlation_id: str = "c"
) -> TransitionRefused:
    with pytest.raises(TransitionRefused) as caught:
        fire(machine, trigger, now, correlation_id)
    return caught.value


def attempt(
    machine: ProcessorStateMachine, trigger: str, now: float, correlation_id: str
) -> Transition | TransitionRefused:
    """The transition, or the refusal as a value (for sequences where either may happen)."""
    try:
        return fire(machine, trigger, now, correlation_id)
    except TransitionRefused as error:
        return error


# --- the table ---------------------------------------------------------------------------------


def test_a_new_machine_is_stable() -> None:
    machine = ProcessorStateMachine()
    assert machine.state == STABLE
    assert machine.holder is None


def test_the_designed_cycle_goes_stable_adjusting_load_testing_adjusting_stable() -> None:
    machine = ProcessorStateMachine()
    walk = [fire(machine, trigger) for trigger in DESIGN_CYCLE]
    assert [(t.source, t.trigger, t.dest) for t in walk] == [
        (STABLE, "begin_adjustment", ADJUSTING),
        (ADJUSTING, "begin_load_test", LOAD_TESTING),
        (LOAD_TESTING, "finish_load_test", ADJUSTING),
        (ADJUSTING, "settle", STABLE),
    ]
    assert machine.state == STABLE


def test_a_load_test_may_start_straight_from_stable() -> None:
    machine = ProcessorStateMachine()
    assert fire(machine, "begin_load_test").dest == LOAD_TESTING


@pytest.mark.parametrize("state", [ADJUSTING, LOAD_TESTING])
def test_abort_returns_to_stable(state: str) -> None:
    machine = ProcessorStateMachine(initial=state)
    transition = fire(machine, "abort")
    assert (transition.source, transition.dest) == (state, STABLE)
    assert machine.state == STABLE


@pytest.mark.parametrize("state", list(DESIGN))
def test_allowed_triggers_are_those_of_the_design(state: str) -> None:
    assert set(ProcessorStateMachine(initial=state).allowed_triggers()) == set(DESIGN[state])


@pytest.mark.parametrize(
    ("state", "trigger", "dest"),
    [(state, trigger, dest) for state, moves in DESIGN.items() for trigger, dest in moves.items()],
)
def test_every_designed_move_lands_where_the_design_says(
    state: str, trigger: str, dest: str
) -> None:
    machine = ProcessorStateMachine(initial=state)
    assert fire(machine, trigger) == Transition(trigger, state, dest, f"test {trigger}", "c")
    assert machine.state == dest


def test_a_transition_carries_the_reason_and_correlation_id_it_was_fired_with() -> None:
    machine = ProcessorStateMachine()
    transition = machine.fire(
        "begin_adjustment", now=0.0, reason="latency spike", correlation_id="evt-1"
    )
    assert (transition.reason, transition.correlation_id) == ("latency spike", "evt-1")


# --- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("state", "trigger"), REFUSED)
def test_an_invalid_trigger_is_refused_naming_the_triggers_allowed_here(
    state: str, trigger: str
) -> None:
    machine = ProcessorStateMachine(initial=state)
    error = refused(machine, trigger)
    assert (error.trigger, error.state) == (trigger, state)
    for allowed in DESIGN[state]:
        assert allowed in error.reason
    assert machine.state == state


def test_a_refusal_is_an_event_center_error_whose_message_says_what_and_where() -> None:
    error = refused(ProcessorStateMachine(), "settle")
    assert isinstance(error, EventCenterError)
    assert "'settle' refused in state 'stable'" in str(error)


def test_an_unknown_trigger_is_refused_naming_the_known_triggers() -> None:
    machine = ProcessorStateMachine()
    error = refused(machine, "explode")
    assert (error.trigger, error.state) == ("explode", STABLE)
    assert "unknown trigger" in error.reason
    for known in ALL_TRIGGERS:
        assert known in error.reason


def test_a_second_load_test_is_refused_naming_the_running_one() -> None:
    machine = ProcessorStateMachine()
    fire(machine, "begin_load_test", correlation_id="load-test-1")
    error = refused(machine, "begin_load_test", correlation_id="load-test-2")
    assert (error.trigger, error.state) == ("begin_load_test", LOAD_TESTING)
    assert "a load test is already running" in error.reason
    assert "load-test-1" in error.reason
    assert machine.holder == "load-test-1"


def test_an_unknown_initial_state_raises_value_error_listing_the_states() -> None:
    with pytest.raises(ValueError, match="stable, adjusting, load_testing"):
        ProcessorStateMachine(initial="panicking")


# --- load-test cool-down -----------------------------------------------------------------------


def test_the_first_load_test_never_waits_for_a_cool_down() -> None:
    machine = ProcessorStateMachine(load_test_cooldown=60.0)
    assert fire(machine, "begin_load_test", now=0.0).dest == LOAD_TESTING


@pytest.mark.parametrize("end", ["finish_load_test", "abort"])
def test_a_load_test_is_refused_during_the_cool_down_and_allowed_after_it(end: str) -> None:
    machine = ProcessorStateMachine(load_test_cooldown=30.0)
    fire(machine, "begin_load_test", now=50.0)
    fire(machine, end, now=100.0)
    error = refused(machine, "begin_load_test", now=110.0)
    assert "cool-down" in error.reason
    assert "20.0s left" in error.reason
    assert machine.state != LOAD_TESTING
    assert fire(machine, "begin_load_test", now=130.0).dest == LOAD_TESTING


def test_aborting_an_adjustment_starts_no_cool_down() -> None:
    machine = ProcessorStateMachine(load_test_cooldown=30.0)
    fire(machine, "begin_adjustment", now=0.0)
    fire(machine, "abort", now=1.0)
    assert fire(machine, "begin_load_test", now=2.0).dest == LOAD_TESTING


def test_the_cool_down_refusal_counts_from_a_load_test_that_ended_at_time_zero() -> None:
    machine = ProcessorStateMachine(load_test_cooldown=10.0)
    fire(machine, "begin_load_test", now=0.0)
    fire(machine, "finish_load_test", now=0.0)
    assert "6.0s left" in refused(machine, "begin_load_test", now=4.0).reason


# --- rollback and holder -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "trigger"),
    [
        ([], "begin_adjustment"),
        (["begin_adjustment"], "begin_load_test"),
        (["begin_load_test"], "finish_load_test"),
        (["begin_load_test"], "abort"),
        (["begin_adjustment"], "settle"),
    ],
)
def test_rollback_returns_the_machine_to_the_source_state(setup: list[str], trigger: str) -> None:
    machine = ProcessorStateMachine()
    for step in setup:
        fire(machine, step)
    transition = fire(machine, trigger)
    machine.rollback(transition)
    assert machine.state == transition.source


def test_after_a_rollback_the_trigger_can_be_fired_again() -> None:
    machine = ProcessorStateMachine()
    machine.rollback(fire(machine, "begin_load_test"))
    assert fire(machine, "begin_load_test").dest == LOAD_TESTING


def test_holder_is_the_correlation_id_that_moved_the_machine_out_of_stable() -> None:
    machine = ProcessorStateMachine()
    fire(machine, "begin_adjustment", correlation_id="spike-1")
    assert machine.holder == "spike-1"
    fire(machine, "begin_load_test", correlation_id="probe-2")
    assert machine.holder == "probe-2"
    fire(machine, "finish_load_test", correlation_id="probe-2")
    assert machine.holder == "probe-2"
    fire(machine, "settle", correlation_id="spike-1")
    assert machine.holder is None


def test_holder_is_cleared_by_abort() -> None:
    machine = ProcessorStateMachine()
    fire(machine, "begin_load_test", correlation_id="probe-1")
    fire(machine, "abort", correlation_id="probe-1")
    assert machine.holder is None


@pytest.mark.parametrize(
    ("setup", "trigger", "holder_after_rollback"),
    [
        pytest.param([], "begin_adjustment", None, id="begin-adjustment-back-to-stable"),
        pytest.param(["begin_adjustment"], "begin_load_test", "setup", id="load-test-back"),
        pytest.param(["begin_load_test"], "abort", "setup", id="abort-back-to-load-testing"),
    ],
)
def test_rollback_restores_the_holder_of_the_state_it_returns_to(
    setup: list[str], trigger: str, holder_after_rollback: str | None
) -> None:
    machine = ProcessorStateMachine()
    for step in setup:
        fire(machine, step, correlation_id="setup")
    machine.rollback(fire(machine, trigger, correlation_id="rolled-back"))
    assert machine.holder == holder_after_rollback


# --- any sequence of triggers ------------------------------------------------------------------

steps = st.lists(
    st.tuples(st.sampled_from([*ALL_TRIGGERS, "explode"]), st.floats(0.0, 20.0)),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(
    initial=st.sampled_from(list(DESIGN)),
    cooldown=st.sampled_from([0.0, 5.0, 30.0]),
    sequence=steps,
)
def test_any_trigger_sequence_keeps_state_equal_to_the_last_successful_destination(
    initial: str, cooldown: float, sequence: list[tuple[str, float]]
) -> None:
    machine = ProcessorStateMachine(initial=initial, load_test_cooldown=cooldown)
    expected, now = initial, 0.0
    for number, (trigger, elapsed) in enumerate(sequence):
        now += elapsed
        outcome = attempt(machine, trigger, now=now, correlation_id=f"c{number}")
        if isinstance(outcome, TransitionRefused):
            assert outcome.state == expected
            assert machine.state == expected
            continue
        transition = outcome
        assert transition.source == expected
        assert transition.dest == DESIGN[expected][trigger]
        expected = transition.dest
        assert machine.state == expected
        assert (machine.holder is None) == (expected == STABLE)
    assert machine.state == expected


def test_only_the_latest_transition_can_be_rolled_back() -> None:
    machine = ProcessorStateMachine()
    older = fire(machine, "begin_adjustment")
    fire(machine, "settle")
    with pytest.raises(ValueError, match="only the latest transition"):
        machine.rollback(older)
    assert machine.state == STABLE


def test_a_transition_is_rolled_back_once() -> None:
    machine = ProcessorStateMachine()
    transition = fire(machine, "begin_adjustment")
    machine.rollback(transition)
    with pytest.raises(ValueError, match="once"):
        machine.rollback(transition)
    assert machine.state == STABLE


def test_rollback_of_a_finished_load_test_restores_the_cool_down_clock() -> None:
    machine = ProcessorStateMachine(load_test_cooldown=30.0)
    fire(machine, "begin_load_test", now=0.0, correlation_id="p1")
    machine.rollback(fire(machine, "finish_load_test", now=10.0, correlation_id="p1"))
    assert (machine.state, machine.holder, machine.last_load_test_end) == (LOAD_TESTING, "p1", None)


@settings(max_examples=150, deadline=None)
@given(
    initial=st.sampled_from(list(DESIGN)),
    sequence=st.lists(
        st.tuples(st.sampled_from(ALL_TRIGGERS), st.floats(0.0, 20.0), st.booleans()),
        max_size=40,
    ),
)
def test_rollback_is_exact_the_machine_equals_one_that_only_saw_the_kept_transitions(
    initial: str, sequence: list[tuple[str, float, bool]]
) -> None:
    machine = ProcessorStateMachine(initial=initial, load_test_cooldown=5.0)
    reference = ProcessorStateMachine(initial=initial, load_test_cooldown=5.0)
    now = 0.0
    for number, (trigger, elapsed, recorded) in enumerate(sequence):
        now += elapsed
        outcome = attempt(machine, trigger, now=now, correlation_id=f"c{number}")
        if isinstance(outcome, TransitionRefused):
            continue
        if recorded:
            fire(reference, trigger, now=now, correlation_id=f"c{number}")
        else:
            machine.rollback(outcome)
        assert (machine.state, machine.holder, machine.last_load_test_end) == (
            reference.state,
            reference.holder,
            reference.last_load_test_end,
        )
        assert machine.allowed_triggers() == reference.allowed_triggers()
