"""The breaker's rules on explicit times, case by case after resilience4j's state-machine tests
(CircuitBreakerStateMachineTest: its set-up is :func:`r4j`), plus the growing wait, epochs,
restoring after a restart, the table, the configuration's refusals and the windows' sums."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventcenter.domain.breaker import (
    CLOSED,
    DISABLED,
    FORCED_OPEN,
    HALF_OPEN,
    OPEN,
    STATES,
    Breaker,
    BreakerConfig,
    BreakerState,
    BreakerTransition,
    CountWindow,
    TimeWindow,
    next_state,
)
from eventcenter.domain.errors import BreakerRefused, ConfigurationError

T0 = 1_000.0


def r4j(**changes: Any) -> BreakerConfig:
    """resilience4j's test set-up: failure and slow-call rates 50 %, slow above 4 s, 4 trial
    calls, a 5-second time window needing 5 calls, 5 seconds open (not growing)."""
    values: dict[str, Any] = {
        "window": "time",
        "window_size": 5,
        "minimum_calls": 5,
        "failure_rate_threshold": 50,
        "slow_call_rate_threshold": 50,
        "slow_call_duration": 4,
        "permitted_calls_in_half_open": 4,
        "wait_in_open": 5,
        "wait_multiplier": 1,
        "max_wait_in_open": 5,
    }
    return BreakerConfig(**(values | changes))


class Run:
    """A breaker driven at ``now``, keeping every transition it made."""

    def __init__(self, config: BreakerConfig, now: float = T0) -> None:
        self.breaker = Breaker("testName", config)
        self.now = now
        self.moves: list[BreakerTransition] = []

    @property
    def state(self) -> str:
        return self.breaker.state

    def keep(self, moved: BreakerTransition | None) -> BreakerTransition | None:
        if moved is not None:
            self.moves.append(moved)
        return moved

    def permit(self) -> int | None:
        epoch, moved = self.breaker.acquire(self.now)
        self.keep(moved)
        return epoch

    def permitted(self) -> bool:
        return self.permit() is not None

    def done(self, epoch: int | None, *, failed: bool = False, took: float = 0.0) -> None:
        assert epoch is not None, "the call was not permitted"
        self.keep(self.breaker.record(epoch, failed, took, self.now))

    def call(self, *, failed: bool = False, took: float = 0.0) -> None:
        self.done(self.permit(), failed=failed, took=took)

    def ignored(self) -> None:
        epoch = self.permit()
        assert epoch is not None
        self.breaker.release(epoch)

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def figures(self) -> tuple[float | None, int, int, int]:
        """(failure rate or None below the minimum, successes, calls, failures) like the
        assertCircuitBreakerMetricsEqualTo helper."""
        status = self.breaker.status(self.now)
        return status.failure_rate, status.calls - status.failures, status.calls, status.failures

    def open_it(self) -> None:
        """resilience4j's ``transitionToOpenState``, by failing calls."""
        while self.state != OPEN:
            self.call(failed=True)

    def half_open_it(self) -> None:
        """... and ``transitionToHalfOpenState``: the wait passes, a trial call is asked for
        and given back."""
        self.open_it()
        self.advance(self.breaker.retry_in(self.now) or 0.0)
        self.ignored()
        assert self.state == HALF_OPEN


# resilience4j's cases -----------------------------------------------------------------------------


def test_an_open_breaker_refuses_calls_and_counts_them() -> None:
    run = Run(r4j())
    run.open_it()
    assert not run.permitted()
    assert run.breaker.not_permitted == 1


def test_a_forced_open_breaker_refuses_calls_even_after_the_wait() -> None:
    run = Run(r4j())
    run.keep(run.breaker.force_open(run.now, "maintenance"))
    assert run.state == FORCED_OPEN
    assert not run.permitted()
    run.advance(6)
    assert not run.permitted()
    assert run.state == FORCED_OPEN
    assert run.breaker.not_permitted == 2
    assert run.breaker.force_open(run.now, "again") is None, "asking twice changes nothing"


def test_half_open_permits_exactly_the_trial_calls_each_time() -> None:
    run = Run(r4j())
    run.half_open_it()
    assert [run.permitted() for _ in range(6)] == [True] * 4 + [False] * 2
    # three of them fail, one succeeds: 75 % opens it again; the next trial has 4 permits again
    for _ in range(3):
        run.done(run.breaker.epoch, failed=True)
    run.done(run.breaker.epoch)
    assert run.state == OPEN
    run.advance(5)
    assert [run.permitted() for _ in range(6)] == [True] * 4 + [False] * 2


def test_a_released_permit_can_be_taken_again() -> None:
    run = Run(r4j())
    run.half_open_it()
    epochs = [run.permit() for _ in range(4)]
    assert not run.permitted()
    assert epochs[0] is not None
    run.breaker.release(epochs[0])
    assert run.permitted()


def test_opens_when_the_failure_rate_reaches_its_threshold() -> None:
    run = Run(r4j())
    run.call(failed=True)
    assert (run.state, run.figures()) == (CLOSED, (None, 0, 1, 1))
    run.call(failed=True)
    assert (run.state, run.figures()) == (CLOSED, (None, 0, 2, 2))
    run.call(failed=True)
    assert (run.state, run.figures()) == (CLOSED, (None, 0, 3, 3))
    run.call()
    assert (run.state, run.figures()) == (CLOSED, (None, 1, 4, 3))
    run.call()
    assert run.state == OPEN
    [opened] = run.moves
    assert (opened.previous, opened.state, opened.trigger) == (CLOSED, OPEN, "trip")
    assert (opened.failure_rate, opened.slow_rate, opened.calls) == (60.0, 0.0, 5)
    assert opened.wait == 5.0
    assert "failure rate 60.0% >= 50%" in opened.reason
    assert not run.permitted()
    assert run.breaker.not_permitted == 1


def test_opens_when_the_slow_call_rate_reaches_its_threshold() -> None:
    run = Run(r4j())
    run.call(failed=True, took=5)  # slow
    run.call(took=5)  # slow
    run.call(failed=True, took=0.1)
    run.call(took=0.1)
    assert run.state == CLOSED
    run.call(took=5)  # slow: 3 of 5
    assert run.state == OPEN
    [opened] = run.moves
    assert (opened.failure_rate, opened.slow_rate, opened.calls) == (40.0, 60.0, 5)
    assert "slow-call rate 60.0% >= 50%" in opened.reason


def test_a_call_exactly_as_long_as_the_slow_duration_is_not_slow() -> None:
    run = Run(r4j())
    for _ in range(5):
        run.call(took=4.0)
    assert run.state == CLOSED
    assert run.breaker.status(run.now).slow == 0


def test_half_opens_once_the_wait_is_over() -> None:
    run = Run(r4j())
    run.open_it()
    assert not run.permitted()
    run.advance(3)
    assert not run.permitted()
    assert run.state == OPEN
    assert run.breaker.retry_in(run.now) == 2.0
    run.advance(3)
    assert run.permitted()
    assert run.state == HALF_OPEN
    probe = run.moves[-1]
    assert (probe.previous, probe.state, probe.trigger) == (OPEN, HALF_OPEN, "probe")
    assert run.figures() == (None, 0, 0, 0), "the trial starts with no calls"


def test_the_wait_grows_with_each_opening_in_a_row_and_stops_at_its_maximum() -> None:
    run = Run(r4j(wait_multiplier=1.5, max_wait_in_open=12))
    run.open_it()
    waits = [run.moves[-1].wait]
    for _ in range(3):
        still = run.breaker.retry_in(run.now)
        assert still is not None
        run.advance(still - 0.5)
        assert not run.permitted(), "still open half a second before the wait ends"
        run.advance(0.5)
        for _ in range(4):  # the first call asked for half-opens it; all four trial calls fail
            run.call(failed=True)
        assert run.state == OPEN
        waits.append(run.moves[-1].wait)
    assert waits == [5.0, 7.5, 11.25, 12.0]
    assert [m.reopens for m in run.moves if m.state == OPEN] == [1, 2, 3, 4]


def test_closing_starts_the_wait_over() -> None:
    run = Run(r4j(wait_multiplier=2, max_wait_in_open=100))
    run.half_open_it()
    for _ in range(4):
        run.call(failed=True)
    assert run.moves[-1].wait == 10.0
    run.advance(10)
    for _ in range(4):
        run.call()
    assert run.state == CLOSED
    assert run.moves[-1].reopens == 0
    run.open_it()
    assert run.moves[-1].wait == 5.0


def test_half_open_opens_again_when_the_trial_failure_rate_reaches_the_threshold() -> None:
    run = Run(r4j())
    run.half_open_it()
    run.call(failed=True)
    run.call(failed=True)
    run.call()
    assert run.state == HALF_OPEN
    run.call(failed=True)
    assert run.state == OPEN
    again = run.moves[-1]
    assert (again.previous, again.failure_rate, again.calls) == (HALF_OPEN, 75.0, 4)


def test_half_open_opens_again_when_the_trial_calls_are_slow() -> None:
    run = Run(r4j())
    run.half_open_it()
    for took in (5, 5, 5, 1):
        run.call(took=took)
    assert run.state == OPEN
    again = run.moves[-1]
    assert (again.failure_rate, again.slow_rate) == (0.0, 75.0)


def test_half_open_closes_when_the_trial_goes_well_and_starts_a_fresh_window() -> None:
    run = Run(r4j())
    run.half_open_it()
    run.call(failed=True)
    run.call()
    run.call()
    assert run.state == HALF_OPEN
    run.call()
    assert run.state == CLOSED
    closed = run.moves[-1]
    assert (closed.previous, closed.trigger, closed.failure_rate, closed.calls) == (
        HALF_OPEN,
        "close",
        25.0,
        4,
    )
    assert run.permitted()
    assert run.figures() == (None, 0, 0, 0)
    run.call()
    assert run.figures() == (None, 1, 1, 0)


def test_reset_closes_the_breaker_and_clears_its_figures() -> None:
    run = Run(r4j())
    run.call()
    run.call(failed=True)
    assert run.figures() == (None, 1, 2, 1)
    reset = run.breaker.reset(run.now, "operator")
    assert (reset.previous, reset.state, reset.trigger) == (CLOSED, CLOSED, "reset")
    assert run.figures() == (None, 0, 0, 0)
    run.open_it()
    run.breaker.reset(run.now, "operator")
    assert run.state == CLOSED
    assert run.breaker.not_permitted == 0


def test_a_disabled_breaker_permits_every_call_and_counts_none() -> None:
    run = Run(r4j())
    run.keep(run.breaker.disable(run.now, "maintenance"))
    assert run.state == DISABLED
    for failed in (False, True, True, True, True, True, True):
        run.call(failed=failed)
    assert run.state == DISABLED
    assert run.figures() == (None, 0, 0, 0)
    assert run.breaker.disable(run.now, "again") is None


def test_an_ignored_error_in_half_open_counts_neither_way() -> None:
    run = Run(r4j())
    run.half_open_it()
    for _ in range(3):
        run.call()
        assert run.state == HALF_OPEN
    run.ignored()
    assert run.state == HALF_OPEN
    assert run.figures()[1:] == (3, 3, 0)
    run.call(failed=True)
    assert run.state == CLOSED, "3 successes and 1 failure: 25 % < 50 %"


def test_ignored_errors_alone_never_decide_a_trial() -> None:
    run = Run(r4j())
    run.half_open_it()
    for _ in range(4):
        run.ignored()
    assert run.state == HALF_OPEN
    assert run.figures()[1:] == (0, 0, 0)
    for _ in range(3):
        run.call()
        assert run.state == HALF_OPEN
    run.call()
    assert run.state == CLOSED


def test_the_table_refuses_moves_it_does_not_have() -> None:
    with pytest.raises(BreakerRefused, match="'probe' refused in state 'closed'"):
        next_state("testName", "probe", CLOSED)
    with pytest.raises(BreakerRefused, match="not a move from closed"):
        next_state("testName", "close", CLOSED)
    with pytest.raises(BreakerRefused, match="unknown trigger"):
        next_state("testName", "explode", OPEN)
    assert next_state("testName", "reset", FORCED_OPEN) == CLOSED
    assert {next_state("x", "reset", state) for state in STATES} == {CLOSED}


# our additions ------------------------------------------------------------------------------------


def test_nothing_opens_below_the_minimum_number_of_calls() -> None:
    run = Run(BreakerConfig(window_size=20, minimum_calls=10))
    for _ in range(9):
        run.call(failed=True)
    assert run.state == CLOSED
    assert run.figures()[0] is None
    run.call(failed=True)
    assert run.state == OPEN


def test_a_count_window_needs_at_most_its_size_in_calls() -> None:
    config = BreakerConfig(window_size=5, minimum_calls=100)
    assert config.effective_minimum_calls == 5
    run = Run(config)
    for _ in range(5):
        run.call(failed=True)
    assert run.state == OPEN


def test_a_count_window_forgets_its_oldest_calls() -> None:
    run = Run(BreakerConfig(window_size=4, minimum_calls=4, failure_rate_threshold=75))
    run.call(failed=True)
    run.call(failed=True)
    run.call()
    run.call()
    assert run.figures() == (50.0, 2, 4, 2)
    run.call()  # the first failure slides out
    assert run.figures() == (25.0, 3, 4, 1)
    run.call(failed=True)
    run.call(failed=True)
    assert run.state == CLOSED, "3 failures were never in the window together with a 4th"
    run.call(failed=True)
    assert run.state == OPEN


def test_a_time_window_forgets_calls_older_than_its_seconds() -> None:
    run = Run(r4j(window_size=5, minimum_calls=3))
    run.call(failed=True)
    run.call(failed=True)
    run.advance(4.9)  # still inside the window (seconds T0 .. T0+4)
    assert run.figures()[2:] == (2, 2)
    run.advance(0.1)  # second T0+5: the bucket of T0 is gone
    assert run.figures()[2:] == (0, 0)
    run.call(failed=True)
    assert run.state == CLOSED, "one failure in the window, not three"
    run.advance(1)
    run.call(failed=True)
    run.call(failed=True)
    assert run.state == OPEN


def test_an_outcome_from_an_earlier_state_does_not_count() -> None:
    run = Run(r4j())
    slow_call = run.permit()  # permitted while closed, comes back much later
    run.half_open_it()
    run.done(slow_call, failed=True)
    assert run.figures()[1:] == (0, 0, 0), "not a trial call"
    assert run.state == HALF_OPEN


def test_a_trial_that_does_not_complete_in_time_opens_the_breaker_again() -> None:
    run = Run(r4j(max_wait_in_half_open=30))
    run.half_open_it()
    stuck = [run.permit() for _ in range(4)]
    assert all(epoch is not None for epoch in stuck)
    run.advance(29)
    assert not run.permitted()
    assert run.state == HALF_OPEN
    run.advance(1)
    assert not run.permitted()
    assert run.state == OPEN
    assert "did not all complete within 30s" in run.moves[-1].reason
    run.done(stuck[0], failed=True)  # the stuck calls end late: they no longer count
    assert run.state == OPEN


def test_operators_can_force_open_disable_and_reset_from_any_state() -> None:
    run = Run(r4j())
    run.half_open_it()
    assert run.keep(run.breaker.force_open(run.now, "ops")) is not None
    assert run.keep(run.breaker.disable(run.now, "ops")) is not None
    assert run.keep(run.breaker.force_open(run.now, "ops")) is not None
    run.keep(run.breaker.reset(run.now, "ops"))
    assert [(m.previous, m.state) for m in run.moves[-4:]] == [
        (HALF_OPEN, FORCED_OPEN),
        (FORCED_OPEN, DISABLED),
        (DISABLED, FORCED_OPEN),
        (FORCED_OPEN, CLOSED),
    ]


def test_every_move_is_a_move_of_the_table_and_starts_an_epoch() -> None:
    run = Run(r4j(wait_multiplier=2, max_wait_in_open=40))
    epochs = [run.breaker.epoch]
    for round_ in range(6):
        run.half_open_it() if run.state == CLOSED else None
        for _ in range(4):
            run.call(failed=round_ % 3 != 2)
        run.advance(run.breaker.retry_in(run.now) or 0.0)
        epochs.append(run.breaker.epoch)
    for move in run.moves:
        assert next_state(move.name, move.trigger, move.previous) == move.state
    assert [m.state for m in run.moves[:2]] == [OPEN, HALF_OPEN]
    assert epochs == sorted(set(epochs)), "each round moved the breaker on"
    assert len(run.moves) == run.breaker.epoch


# restoring after a restart ------------------------------------------------------------------------


def test_an_open_breaker_restored_keeps_the_rest_of_its_wait_on_the_wall_clock() -> None:
    saved = BreakerState("testName", OPEN, open_until=50_030.0, reopens=2)
    breaker = Breaker.restore(saved, r4j(wait_multiplier=2, max_wait_in_open=60), now=7.0,
                              wall=50_010.0)  # fmt: skip
    assert breaker.state == OPEN
    assert breaker.retry_in(7.0) == 20.0
    assert breaker.acquire(26.9)[0] is None
    epoch, probe = breaker.acquire(27.0)
    assert epoch is not None
    assert probe is not None
    assert (probe.previous, probe.state) == (OPEN, HALF_OPEN)
    for _ in range(4):
        moved = breaker.record(epoch, True, 0.0, 27.0)
    assert moved is not None
    assert (moved.state, moved.reopens, moved.wait) == (OPEN, 3, 20.0), "5 * 2**2: still grows"


def test_a_breaker_whose_wait_ended_while_down_half_opens_on_the_next_call() -> None:
    saved = BreakerState("testName", OPEN, open_until=100.0, reopens=1)
    breaker = Breaker.restore(saved, r4j(), now=0.0, wall=500.0)
    assert breaker.retry_in(0.0) == 0.0
    epoch, probe = breaker.acquire(0.0)
    assert epoch is not None
    assert probe is not None
    assert probe.state == HALF_OPEN


def test_a_restored_wait_is_never_longer_than_the_maximum() -> None:
    """A wall clock stepped back (or a log from a slower configuration) cannot keep a breaker
    open longer than the configuration allows."""
    saved = BreakerState("testName", OPEN, open_until=10_000.0, reopens=1)
    breaker = Breaker.restore(saved, r4j(), now=0.0, wall=0.0)
    assert breaker.retry_in(0.0) == 5.0


@pytest.mark.parametrize("state", [CLOSED, HALF_OPEN, FORCED_OPEN, DISABLED])
def test_other_states_are_restored_as_they_were(state: str) -> None:
    breaker = Breaker.restore(BreakerState("testName", state, None, 1), r4j(), now=0, wall=0)
    assert breaker.state == state
    if state == HALF_OPEN:
        assert [breaker.acquire(0.0)[0] is not None for _ in range(5)] == [True] * 4 + [False]


def test_an_unknown_state_is_not_restored() -> None:
    with pytest.raises(BreakerRefused, match="not a breaker state"):
        Breaker.restore(BreakerState("testName", "ajar"), r4j(), now=0.0, wall=0.0)


# configuration ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"window": "calls"}, "window must be 'count'"),
        ({"window_size": 0}, "window_size must be between 1 and 100000"),
        ({"window": "time", "window_size": 7200}, "window_size must be between 1 and 3600"),
        ({"minimum_calls": 0}, "minimum_calls must be at least 1"),
        ({"minimum_calls": 2.5}, "minimum_calls must be a whole number"),
        ({"failure_rate_threshold": 0}, "failure_rate_threshold must be above 0"),
        ({"slow_call_rate_threshold": 101}, "at most 100"),
        ({"slow_call_duration": -1}, "slow_call_duration must be a positive"),
        ({"permitted_calls_in_half_open": 0}, "permitted_calls_in_half_open must be at least"),
        ({"wait_in_open": float("nan")}, "wait_in_open must be a number of seconds"),
        ({"wait_multiplier": 0.5}, "wait_multiplier must be at least 1"),
        ({"wait_in_open": 60, "max_wait_in_open": 30}, "max_wait_in_open .30. must be at least"),
        ({"max_wait_in_half_open": -1}, "max_wait_in_half_open must be 0"),
        ({"window_size": True}, "window_size must be a whole number"),
    ],
)
def test_bad_configuration_is_refused_with_the_field_named(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        BreakerConfig(**changes)


def test_the_configuration_round_trips_through_a_dict() -> None:
    config = r4j(wait_multiplier=3, max_wait_in_open=500)
    assert BreakerConfig.from_dict(config.as_dict()) == config
    assert [config.wait(n) for n in (1, 2, 3, 4, 5000)] == [5.0, 15.0, 45.0, 135.0, 500.0]


# the windows' sums --------------------------------------------------------------------------------

outcomes = st.lists(st.tuples(st.booleans(), st.booleans()), max_size=300)


@given(size=st.integers(1, 40), calls=outcomes)
def test_a_count_window_sums_exactly_its_last_calls(
    size: int, calls: list[tuple[bool, bool]]
) -> None:
    window = CountWindow(size)
    for n, (failed, slow) in enumerate(calls):
        window.add(failed, slow, 0.0)
        last = calls[max(0, n + 1 - size) : n + 1]
        assert window.totals(0.0) == (
            len(last),
            sum(f for f, _ in last),
            sum(s for _, s in last),
        )


@given(
    seconds=st.integers(1, 10),
    calls=st.lists(
        st.tuples(st.floats(0, 4, allow_nan=False), st.booleans(), st.booleans()), max_size=200
    ),
)
def test_a_time_window_sums_exactly_the_calls_of_its_last_seconds(
    seconds: int, calls: list[tuple[float, bool, bool]]
) -> None:
    window = TimeWindow(seconds)
    now = 100.0
    seen: list[tuple[float, bool, bool]] = []
    for gap, failed, slow in calls:
        now += gap
        window.add(failed, slow, now)
        seen.append((now, failed, slow))
        # a bucket is one whole second: the window holds the seconds floor(now) - size + 1 ..
        first = int(now) - seconds + 1
        inside = [c for c in seen if int(c[0]) >= first]
        assert window.totals(now) == (
            len(inside),
            sum(f for _, f, _ in inside),
            sum(s for _, _, s in inside),
        )


@settings(max_examples=200)
@given(
    size=st.integers(1, 12),
    minimum=st.integers(1, 12),
    threshold=st.sampled_from([10.0, 25.0, 50.0, 100.0]),
    calls=st.lists(st.booleans(), max_size=60),
)
def test_a_closed_breaker_trips_exactly_when_the_naive_rate_reaches_the_threshold(
    size: int, minimum: int, threshold: float, calls: list[bool]
) -> None:
    config = BreakerConfig(window_size=size, minimum_calls=minimum,
                           failure_rate_threshold=threshold)  # fmt: skip
    breaker = Breaker("p", config)
    for n, failed in enumerate(calls):
        epoch, _ = breaker.acquire(0.0)
        assert epoch is not None
        moved = breaker.record(epoch, failed, 0.0, 0.0)
        last = calls[max(0, n + 1 - size) : n + 1]
        due = len(last) >= min(minimum, size) and 100 * sum(last) / len(last) >= threshold
        assert (moved is not None) == due
        if due:
            assert moved is not None
            assert moved.failure_rate == pytest.approx(100 * sum(last) / len(last))
            return


def test_a_transition_says_when_its_wait_ends() -> None:
    moved = BreakerTransition("p", "trip", CLOSED, OPEN, "why", at=100.0, wait=30.0)
    assert moved.open_until == 130.0
    assert replace(moved, state=HALF_OPEN, wait=None).open_until is None
