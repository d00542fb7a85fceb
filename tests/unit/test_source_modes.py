"""The source mode machine: the ladder as designed, every move through transition, rollbacks,
sources with one path, and refusals that say why."""

from __future__ import annotations

import pytest

from eventcenter.domain.errors import EventCenterError, SourceModeRefused
from eventcenter.domain.source_modes import (
    EVENT_ONLY,
    HYBRID,
    POLLING_ONLY,
    TRANSITION,
    WORKING_MODES,
    SourceModeMachine,
)

#: The design, written out independently of the table: mode -> the modes one rung away.
LADDER: dict[str, set[str]] = {
    EVENT_ONLY: {HYBRID},
    HYBRID: {EVENT_ONLY, POLLING_ONLY},
    POLLING_ONLY: {HYBRID},
}


def machine(initial: str | None = None, *, push: bool = True, poll: bool = True):
    return SourceModeMachine(has_push=push, has_poll=poll, initial=initial, name="acme/orders")


def refused(action) -> SourceModeRefused:
    with pytest.raises(SourceModeRefused) as caught:
        action()
    return caught.value


# --- the ladder ------------------------------------------------------------------------------


def test_a_source_with_both_paths_starts_push_first() -> None:
    assert machine().mode == EVENT_ONLY


@pytest.mark.parametrize(
    ("start", "to"), [(m, t) for m, targets in LADDER.items() for t in sorted(targets)]
)
def test_each_rung_goes_through_transition_and_completes_in_the_target(start: str, to: str) -> None:
    fsm = machine(start)

    fsm.begin(to)
    assert (fsm.mode, fsm.target, fsm.previous) == (TRANSITION, to, start)

    assert fsm.complete() == to
    assert (fsm.mode, fsm.target, fsm.previous) == (to, None, None)


@pytest.mark.parametrize(
    ("start", "to"),
    [(m, t) for m in WORKING_MODES for t in WORKING_MODES if t not in LADDER[m]],
)
def test_moves_off_the_ladder_are_refused_naming_the_allowed_ones(start: str, to: str) -> None:
    fsm = machine(start)

    error = refused(lambda: fsm.begin(to))

    assert fsm.mode == start
    assert error.mode == start
    assert error.trigger == f"enter_{to}"
    allowed = str(error).split("allowed here: ")[1].rstrip(")").split(", ")
    assert sorted(allowed) == sorted(f"enter_{t}" for t in LADDER[start])
    assert str(error).startswith("source 'acme/orders': ")


def test_the_whole_ladder_down_and_up() -> None:
    fsm = machine()
    for to in (HYBRID, POLLING_ONLY, HYBRID, EVENT_ONLY):
        fsm.begin(to)
        fsm.complete()
        assert fsm.mode == to


# --- roll back -------------------------------------------------------------------------------


def test_a_mode_that_could_not_start_rolls_back_to_the_previous_one() -> None:
    fsm = machine(HYBRID)
    fsm.begin(EVENT_ONLY)  # the push path would not open

    assert fsm.roll_back() == HYBRID
    assert fsm.target is None


@pytest.mark.parametrize(
    ("start", "to", "landed"),
    [
        (EVENT_ONLY, HYBRID, POLLING_ONLY),  # push broken and hybrid would not start: poll only
        (HYBRID, EVENT_ONLY, POLLING_ONLY),
        (HYBRID, POLLING_ONLY, EVENT_ONLY),  # polling itself cannot start: push is all there is
        (POLLING_ONLY, HYBRID, EVENT_ONLY),
    ],
)
def test_when_the_previous_mode_fails_too_the_safest_other_one_is_taken(
    start: str, to: str, landed: str
) -> None:
    fsm = machine(start)
    fsm.begin(to)

    assert fsm.roll_back(previous_works=False) == landed


def test_after_a_roll_back_the_source_can_try_again() -> None:
    fsm = machine(HYBRID)
    fsm.begin(EVENT_ONLY)
    fsm.roll_back()

    fsm.begin(EVENT_ONLY)
    assert fsm.complete() == EVENT_ONLY


# --- sources with one path -------------------------------------------------------------------


def test_a_source_without_a_push_path_starts_and_stays_polling_only() -> None:
    fsm = machine(push=False)
    assert fsm.mode == POLLING_ONLY

    error = refused(lambda: fsm.begin(HYBRID))

    assert "no push path" in str(error)
    assert fsm.mode == POLLING_ONLY


def test_a_source_without_a_poll_path_can_only_be_event_only() -> None:
    """On push failure it stays event_only and keeps retrying (its health says so)."""
    fsm = machine(poll=False)
    assert fsm.mode == EVENT_ONLY

    error = refused(lambda: fsm.begin(HYBRID))

    assert "no poll path" in str(error)
    assert fsm.mode == EVENT_ONLY


@pytest.mark.parametrize(
    ("initial", "push", "poll", "why"),
    [
        (EVENT_ONLY, False, True, "no push path"),
        (HYBRID, False, True, "no push path"),
        (HYBRID, True, False, "no poll path"),
        (POLLING_ONLY, True, False, "no poll path"),
        (TRANSITION, True, True, "can run in"),
    ],
)
def test_resuming_in_a_mode_the_paths_do_not_allow_is_refused(
    initial: str, push: bool, poll: bool, why: str
) -> None:
    error = refused(lambda: machine(initial, push=push, poll=poll))

    assert why in str(error)


def test_a_source_needs_a_path() -> None:
    with pytest.raises(ValueError, match="push path, a poll path, or both"):
        machine(push=False, poll=False)


# --- invalid triggers ------------------------------------------------------------------------


def test_complete_and_roll_back_outside_a_transition_are_refused() -> None:
    fsm = machine()

    for action in (fsm.complete, fsm.roll_back):
        error = refused(action)
        assert error.mode == EVENT_ONLY
        assert "not a move from event_only" in str(error)
    assert fsm.mode == EVENT_ONLY


def test_a_second_move_during_a_transition_is_refused() -> None:
    fsm = machine()
    fsm.begin(HYBRID)

    error = refused(lambda: fsm.begin(POLLING_ONLY))

    assert "entering hybrid: complete or roll_back first" in str(error)
    assert fsm.mode == TRANSITION


def test_an_unknown_mode_is_refused_with_the_known_ones() -> None:
    error = refused(lambda: machine().begin("turbo"))

    assert "unknown mode; modes are event_only, hybrid, polling_only" in str(error)


def test_refusals_are_eventcenter_errors() -> None:
    assert issubclass(SourceModeRefused, EventCenterError)
