"""The hysteresis policy on a fake clock: leaving push, silence, returning on push evidence only,
flapping damped within a stated bound, thresholds that rise and decay, and its properties."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventcenter.domain.errors import ConfigurationError
from eventcenter.domain.hysteresis import (
    Hysteresis,
    HysteresisConfig,
    HysteresisDecision,
    Outcome,
    Switch,
    ThresholdDecayed,
    ThresholdRaised,
)
from eventcenter.domain.source_modes import (
    EVENT_ONLY,
    HYBRID,
    POLLING_ONLY,
    SourceModeMachine,
)

DEFAULT = HysteresisConfig()


def fresh(
    config: HysteresisConfig = DEFAULT, *, has_push: bool = True, has_poll: bool = True
) -> Hysteresis:
    return Hysteresis.start(config, now=0.0, has_push=has_push, has_poll=has_poll)


def switches(decisions: Iterable[HysteresisDecision]) -> list[Switch]:
    return [d for d in decisions if isinstance(d, Switch)]


def moves(decisions: Iterable[HysteresisDecision]) -> list[tuple[str, str]]:
    return [(s.previous, s.to) for s in switches(decisions)]


def in_mode(mode: str, config: HysteresisConfig = DEFAULT) -> Hysteresis:
    policy = fresh(config)
    policy.state.mode = mode
    return policy


def flap(policy: Hysteresis, start: int, seconds: int, per_second: int = 10):
    """The push path flips every second: a second of failures, then a second of successes..."""
    made: list[HysteresisDecision] = []
    for second in range(start, start + seconds):
        up = second % 2 == 1
        for k in range(per_second):
            now = second + k / per_second
            made += policy.push_succeeded(now) if up else policy.push_failed(now, "refused")
    return made


# --- configuration ---------------------------------------------------------------------------


def test_the_defaults_are_those_of_the_issue() -> None:
    assert (DEFAULT.failure_threshold, DEFAULT.success_threshold, DEFAULT.max_hysteresis) == (
        3,
        5,
        10,
    )
    assert DEFAULT.event_timeout == 30.0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"failure_threshold": 0}, "failure_threshold must be at least 1"),
        ({"success_threshold": 0}, "success_threshold must be at least 1"),
        ({"success_threshold": 2.5}, "success_threshold must be a whole number"),
        ({"failure_threshold": True}, "failure_threshold must be a whole number"),
        ({"max_hysteresis": 4}, "max_hysteresis (4) must be at least the larger threshold (5)"),
        ({"event_timeout": 0}, "event_timeout must be a positive number of seconds"),
        ({"cool_down": -1.0}, "cool_down must be a positive number of seconds"),
        ({"decay_period": math.inf}, "decay_period must be a positive number of seconds"),
        ({"flap_window": "5m"}, "flap_window must be a number of seconds"),
        ({"flap_switches": 1}, "flap_switches must be between 2 and 20"),
        ({"flap_switches": 21}, "flap_switches must be between 2 and 20"),
    ],
)
def test_a_configuration_that_cannot_work_is_refused_naming_the_field(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        replace(DEFAULT, **changes)  # type: ignore[arg-type]
    assert message in str(caught.value)


def test_the_configuration_round_trips_as_plain_values() -> None:
    assert HysteresisConfig.from_dict(DEFAULT.as_dict()) == DEFAULT


# --- leaving push ----------------------------------------------------------------------------


@pytest.mark.parametrize("threshold", [1, 3, 7])
def test_a_push_outage_switches_after_exactly_failure_threshold_failures(threshold: int) -> None:
    policy = fresh(replace(DEFAULT, failure_threshold=threshold))

    for n in range(1, threshold):
        assert policy.push_failed(float(n), "connection refused") == ()
    made = policy.push_failed(float(threshold), "connection refused")

    assert made == (
        Switch(
            at=float(threshold),
            previous=EVENT_ONLY,
            to=HYBRID,
            reason=f"{threshold} consecutive push failures (last: connection refused)",
            failures=threshold,
            successes=0,
            threshold=threshold,
        ),
    )
    assert policy.mode == HYBRID


def test_a_success_in_between_starts_the_failure_count_over() -> None:
    policy = fresh()
    policy.push_failed(1.0, "x")
    policy.push_failed(2.0, "x")
    policy.push_succeeded(3.0)

    assert policy.push_failed(4.0, "x") + policy.push_failed(5.0, "x") == ()
    assert moves(policy.push_failed(6.0, "x")) == [(EVENT_ONLY, HYBRID)]


def test_push_that_keeps_failing_in_hybrid_goes_on_to_polling_only() -> None:
    policy = in_mode(HYBRID)

    made = [policy.push_failed(float(n), "cannot connect") for n in (1, 2, 3)]

    assert [moves(m) for m in made] == [[], [], [(HYBRID, POLLING_ONLY)]]


def test_silence_counts_one_failure_per_event_timeout() -> None:
    """No push outcome at all: the switch comes after failure_threshold event_timeouts."""
    policy = fresh()
    timeout = DEFAULT.event_timeout

    assert policy.silence_check(3 * timeout - 0.001) == ()
    assert policy.state.failures == 2
    made = policy.silence_check(3 * timeout)

    assert moves(made) == [(EVENT_ONLY, HYBRID)]
    assert switches(made)[0].at == 3 * timeout
    assert switches(made)[0].reason == "3 consecutive push failures (last: no push outcome for 90s)"


def test_silence_is_charged_at_exact_times_however_late_it_is_noticed() -> None:
    often, late = fresh(), fresh()

    checked: list[HysteresisDecision] = []
    for second in range(1, 200):
        checked += often.silence_check(float(second))
    noticed = late.silence_check(199.0)

    assert checked == list(noticed)
    assert moves(noticed) == [(EVENT_ONLY, HYBRID), (HYBRID, POLLING_ONLY)]
    assert [s.at for s in switches(noticed)] == [90.0, 180.0]


def test_silence_is_measured_from_the_last_push_outcome_failures_included() -> None:
    """A failure and the silence after it are two failures, not three: no double counting."""
    policy = fresh()
    policy.push_failed(10.0, "timeout")

    assert policy.silence_check(39.9) == ()
    assert policy.state.failures == 1
    assert policy.silence_check(40.0) == ()
    assert policy.state.failures == 2


def test_a_long_outage_in_polling_only_is_charged_in_one_step() -> None:
    policy = in_mode(POLLING_ONLY)

    assert policy.silence_check(30.0 * 1_000_000) == ()
    assert policy.state.failures == 1_000_000


# --- returning to push -----------------------------------------------------------------------


def test_return_needs_success_threshold_push_successes() -> None:
    policy = in_mode(HYBRID)

    for n in range(1, DEFAULT.success_threshold):
        assert policy.push_succeeded(float(n)) == ()
    made = policy.push_succeeded(float(DEFAULT.success_threshold))

    assert moves(made) == [(HYBRID, EVENT_ONLY)]
    assert switches(made)[0].threshold == DEFAULT.success_threshold
    assert switches(made)[0].reason == "5 consecutive push successes"


@pytest.mark.parametrize("mode", [HYBRID, POLLING_ONLY])
def test_poll_successes_are_no_evidence_that_push_recovered(mode: str) -> None:
    policy = in_mode(mode)

    made: list[HysteresisDecision] = []
    for n in range(1, 1000):
        made += policy.observe(Outcome(n / 100, "poll", ok=True))

    assert made == []
    assert policy.mode == mode
    assert policy.state.successes == 0


def test_a_push_failure_in_between_starts_the_success_count_over() -> None:
    policy = in_mode(HYBRID)
    for n in range(4):
        policy.push_succeeded(float(n))
    policy.push_failed(4.0, "x")

    made = [policy.push_succeeded(float(n)) for n in range(5, 10)]

    assert [moves(m) for m in made] == [[], [], [], [], [(HYBRID, EVENT_ONLY)]]


def test_from_polling_only_push_comes_back_one_rung_at_a_time() -> None:
    """A probe answering proves less than push carrying traffic: hybrid first, polling kept."""
    policy = in_mode(POLLING_ONLY)

    made = [policy.push_succeeded(float(n)) for n in range(1, 11)]

    assert [moves(m) for m in made if m] == [[(POLLING_ONLY, HYBRID)], [(HYBRID, EVENT_ONLY)]]
    assert [switches(m)[0].at for m in made if m] == [5.0, 10.0]


# --- sources with one path -------------------------------------------------------------------


def test_a_source_without_a_poll_path_stays_event_only_and_counts_its_failures() -> None:
    policy = fresh(has_poll=False)

    made = [policy.push_failed(float(n), "down") for n in range(1, 50)]
    made.append(policy.silence_check(10_000.0))

    assert all(m == () for m in made)
    assert policy.mode == EVENT_ONLY
    assert policy.state.failures > 49


def test_a_source_without_a_push_path_never_decides_and_refuses_push_outcomes() -> None:
    policy = fresh(has_push=False)

    assert policy.mode == POLLING_ONLY
    assert policy.silence_check(1e9) == ()
    with pytest.raises(ValueError, match="without a push path"):
        policy.push_failed(1e9, "x")


# --- flapping --------------------------------------------------------------------------------

#: The figures of the README sentence, for the default configuration.
TEN_MINUTES = 600
FLAP_SWITCHES = 24
FLAP_BOUND = 42


def test_a_source_flapping_every_second_for_ten_minutes_switches_a_bounded_number_of_times() -> (
    None
):
    """With the defaults, a push path that fails for a second and works for the next, ten
    outcomes a second, for 10 minutes, makes the source switch 24 times: at most 42 in any
    10 minutes whatever the push path does (HysteresisConfig.max_switches); without damping it
    would switch about twice a second."""
    policy = fresh()

    made = flap(policy, 0, TEN_MINUTES)

    assert DEFAULT.max_switches(TEN_MINUTES) == FLAP_BOUND
    assert len(switches(made)) == FLAP_SWITCHES <= FLAP_BOUND
    raised = [d for d in made if isinstance(d, ThresholdRaised)]
    assert [r.level for r in raised] == list(range(1, DEFAULT.max_level + 1))
    assert (policy.failure_threshold, policy.success_threshold) == (10, 10)
    assert raised[-1].at < 130.0  # the ceiling is reached in a little over two minutes


def test_flapping_one_outcome_a_second_never_reaches_a_threshold() -> None:
    policy = fresh()

    assert switches(flap(policy, 0, TEN_MINUTES, per_second=1)) == []


def test_during_a_cool_down_the_source_does_not_return_to_push() -> None:
    policy = fresh()
    made = flap(policy, 0, 4)  # four quick switches: flapping, cool-down started
    cooling = switches(made)[-1].cool_down_until
    assert cooling is not None
    assert policy.mode == POLLING_ONLY

    waiting = [policy.push_succeeded(4.0 + n / 10) for n in range(int((cooling - 4.0) * 10))]
    after = policy.push_succeeded(cooling)

    assert all(switches(m) == [] for m in waiting)
    assert policy.state.successes == 0  # the streak was spent on the switch just made
    assert moves(after) == [(POLLING_ONLY, HYBRID)]


def test_leaving_push_is_never_delayed_by_a_cool_down() -> None:
    policy = fresh()
    flap(policy, 0, 2)  # event_only -> hybrid -> polling_only -> hybrid -> event_only
    assert policy.mode == EVENT_ONLY
    assert policy.state.cool_down_until is not None

    made = [policy.push_failed(2.0 + n / 10, "x") for n in range(policy.failure_threshold)]

    assert moves(made[-1]) == [(EVENT_ONLY, HYBRID)]


def test_thresholds_decay_one_step_per_quiet_period_back_to_the_configured_ones() -> None:
    policy = fresh()
    flap(policy, 0, TEN_MINUTES)
    level = policy.state.level

    made: list[HysteresisDecision] = []
    end = TEN_MINUTES + 200 + level * int(DEFAULT.decay_period)
    for second in range(TEN_MINUTES, end):  # push works from now on, once a second
        made += policy.push_succeeded(float(second))
    last_switch = switches(made)[-1].at

    assert policy.mode == EVENT_ONLY
    assert moves(made) == [(POLLING_ONLY, HYBRID), (HYBRID, EVENT_ONLY)]
    decayed = [d for d in made if isinstance(d, ThresholdDecayed)]
    assert [d.level for d in decayed] == list(range(level - 1, -1, -1))
    assert [d.at for d in decayed] == [
        last_switch + k * DEFAULT.decay_period for k in range(1, level + 1)
    ]
    assert (policy.failure_threshold, policy.success_threshold) == (3, 5)


def test_a_switch_restarts_the_quiet_period() -> None:
    policy = in_mode(HYBRID)
    policy.state.level = 2  # raised by flapping before, quiet since 0

    made: list[HysteresisDecision] = []
    for second in range(1, 700):
        made += policy.push_succeeded(float(second))

    assert moves(made) == [(HYBRID, EVENT_ONLY)]
    decayed = [d for d in made if isinstance(d, ThresholdDecayed)]
    assert [(d.at, d.level) for d in decayed] == [(7.0 + DEFAULT.decay_period, 1)]
    assert decayed[0].reason == "no switch for 600s"


# --- rollbacks, restarts, clocks -------------------------------------------------------------


def test_a_rolled_back_switch_starts_the_streaks_over_in_the_mode_landed_in() -> None:
    policy = in_mode(HYBRID)
    for n in range(1, 6):
        policy.push_succeeded(float(n))
    assert policy.mode == EVENT_ONLY

    assert policy.rolled_back(5.5, HYBRID, "push would not open") == ()

    assert (policy.mode, policy.state.successes, policy.state.failures) == (HYBRID, 0, 0)
    assert policy.state.switch_times == (5.0,)  # the attempt still counts for flapping


def test_a_restart_starts_the_streaks_over_and_forgives_the_silence_while_down() -> None:
    policy = fresh()
    policy.push_failed(1.0, "x")
    policy.push_failed(2.0, "x")

    assert policy.restarted(1000.0) == ()
    assert policy.state.failures == 0
    assert policy.mode == EVENT_ONLY
    assert policy.silence_check(1029.0) == ()


def test_a_clock_stepping_back_counts_as_the_latest_time_seen() -> None:
    policy = fresh()
    policy.push_failed(100.0, "x")

    policy.push_failed(50.0, "x")

    assert policy.state.last_push_at == 100.0
    assert policy.state.clock == 100.0


# --- properties ------------------------------------------------------------------------------

configs = st.builds(
    HysteresisConfig,
    failure_threshold=st.integers(1, 5),
    success_threshold=st.integers(1, 6),
    max_hysteresis=st.integers(6, 12),
    event_timeout=st.floats(0.5, 60.0),
    flap_window=st.floats(1.0, 400.0),
    flap_switches=st.integers(2, 6),
    cool_down=st.floats(0.5, 120.0),
    decay_period=st.floats(1.0, 600.0),
)

#: One step of a run: how long after the previous one, and what happened.
KINDS = ("push_ok", "push_fail", "poll_ok", "poll_fail", "check", "extend")
steps = st.lists(st.tuples(st.floats(0.0, 90.0), st.sampled_from(KINDS)), min_size=1, max_size=300)


def step(policy: Hysteresis, now: float, kind: str) -> tuple[HysteresisDecision, ...]:
    if kind == "push_ok":
        return policy.push_succeeded(now)
    if kind == "push_fail":
        return policy.push_failed(now, "x")
    if kind.startswith("poll"):
        return policy.observe(Outcome(now, "poll", ok=kind == "poll_ok"))
    if kind == "extend":
        return policy.observe(Outcome(now, "extend", reason="restart the stream"))
    return policy.silence_check(now)


def run(
    policy: Hysteresis, plan: list[tuple[float, str]], skip: tuple[str, ...] = ()
) -> list[HysteresisDecision]:
    """Drive ``policy`` through ``plan``, leaving out the kinds in ``skip`` (time still passes:
    the run ends with a silence check at the time of the last step)."""
    now, made = 0.0, list[HysteresisDecision]()
    for gap, kind in plan:
        now += gap
        if kind not in skip:
            made += step(policy, now, kind)
    return made + list(policy.silence_check(now))


@settings(deadline=None)
@given(configs, steps)
def test_no_period_holds_more_switches_than_the_bound(
    config: HysteresisConfig, plan: list[tuple[float, str]]
) -> None:
    times = [s.at for s in switches(run(fresh(config), plan))]

    for first in range(len(times)):
        for last in range(first, len(times)):
            assert last - first + 1 <= config.max_switches(times[last] - times[first])


@settings(deadline=None)
@given(configs, steps)
def test_thresholds_stay_between_the_configured_ones_and_the_ceiling(
    config: HysteresisConfig, plan: list[tuple[float, str]]
) -> None:
    policy = fresh(config)
    now = 0.0
    for gap, kind in plan:
        now += gap
        step(policy, now, kind)
        assert 0 <= policy.state.level <= config.max_level
        assert config.failure_threshold <= policy.failure_threshold <= config.max_hysteresis
        assert config.success_threshold <= policy.success_threshold <= config.max_hysteresis


@settings(deadline=None)
@given(configs, steps)
def test_how_often_silence_is_checked_changes_nothing(
    config: HysteresisConfig, plan: list[tuple[float, str]]
) -> None:
    assert run(fresh(config), plan) == run(fresh(config), plan, skip=("check",))


@settings(deadline=None)
@given(configs, steps)
def test_poll_outcomes_change_no_decision(
    config: HysteresisConfig, plan: list[tuple[float, str]]
) -> None:
    assert run(fresh(config), plan) == run(fresh(config), plan, skip=("poll_ok", "poll_fail"))


#: Steps that also say whether a mode decided at that step starts, and if not, whether the
#: mode left still works.
steps_with_starts = st.lists(
    st.tuples(st.floats(0.0, 90.0), st.sampled_from(KINDS), st.booleans(), st.booleans()),
    min_size=1,
    max_size=300,
)


@settings(deadline=None)
@given(configs, steps_with_starts)
def test_the_mode_machine_accepts_every_switch_and_agrees_on_the_mode(
    config: HysteresisConfig, plan: list[tuple[float, str, bool, bool]]
) -> None:
    """Every switch is a move the machine allows from where it is; a switch whose mode fails to
    start is rolled back in both, and both land in the same mode."""
    policy = fresh(config)
    fsm = SourceModeMachine(has_push=True, has_poll=True)
    now = 0.0
    for gap, kind, starts_ok, previous_works in plan:
        now += gap
        decided = switches(step(policy, now, kind))
        for number, switch in enumerate(decided, start=1):
            assert switch.previous == fsm.mode
            fsm.begin(switch.to)
            if number < len(decided) or starts_ok:
                fsm.complete()
            else:
                landed = fsm.roll_back(previous_works=previous_works)
                policy.rolled_back(now, landed, "would not start")
        assert fsm.mode == policy.mode


# --- forced moves (healing, operators) --------------------------------------------------------


def test_forcing_polling_steps_down_one_rung_at_a_time_with_the_reason() -> None:
    policy = fresh()
    made = policy.forced(5.0, POLLING_ONLY, "case c-1: force polling")
    assert moves(made) == [(EVENT_ONLY, HYBRID), (HYBRID, POLLING_ONLY)]
    assert {s.reason for s in switches(made)} == {"forced: case c-1: force polling"}
    assert policy.mode == POLLING_ONLY


def test_a_forced_source_comes_back_only_on_push_successes() -> None:
    policy = fresh(replace(DEFAULT, success_threshold=3))
    policy.forced(1.0, HYBRID, "force polling")
    assert moves(policy.push_succeeded(2.0) + policy.push_succeeded(3.0)) == []
    assert moves(policy.push_succeeded(4.0)) == [(HYBRID, EVENT_ONLY)]


def test_forcing_never_moves_up_and_a_source_already_there_is_left_alone() -> None:
    policy = in_mode(POLLING_ONLY)
    assert policy.forced(1.0, HYBRID, "x") == ()
    assert policy.forced(1.0, POLLING_ONLY, "x") == ()
    assert policy.mode == POLLING_ONLY


@pytest.mark.parametrize(("to", "has_poll"), [(EVENT_ONLY, True), (HYBRID, False), ("x", True)])
def test_forcing_to_a_mode_the_source_cannot_be_forced_to_is_refused(
    to: str, has_poll: bool
) -> None:
    with pytest.raises(ValueError, match="cannot be forced down to"):
        fresh(has_poll=has_poll).forced(1.0, to, "x")


def test_a_forced_move_replays_from_its_outcome_row() -> None:
    live, replay = fresh(), fresh()
    made = live.forced(3.0, POLLING_ONLY, "force polling")
    row = Outcome(3.0, "force", True, "force polling", POLLING_ONLY).row()
    assert replay.observe(Outcome.from_row(row)) == made
    assert replay.state == live.state


# --- a longer event timeout after a restart --------------------------------------------------


def test_an_extension_measures_silence_with_a_longer_timeout_from_the_restart() -> None:
    policy = fresh()
    timeout = DEFAULT.event_timeout
    policy.push_failed(10.0, "refused")
    assert policy.extended(20.0, "restart the stream") == ()
    assert policy.event_timeout == 1.5 * timeout
    assert policy.state.failures == 1  # a restart is no evidence either way: the streak holds

    assert policy.silence_check(20.0 + 1.5 * timeout - 0.001) == ()
    assert policy.state.failures == 1
    made = policy.silence_check(20.0 + 2 * 1.5 * timeout)
    assert moves(made) == [(EVENT_ONLY, HYBRID)]
    assert switches(made)[0].at == 20.0 + 2 * 1.5 * timeout
    assert switches(made)[0].reason.endswith("no push outcome for 90s)")


def test_extensions_grow_by_half_up_to_four_times_and_expire_after_the_decay_period() -> None:
    config = replace(DEFAULT, decay_period=600.0)
    policy = fresh(config)
    seen = []
    for k in range(5):
        policy.extended(10.0 * k, "restart")
        seen.append(policy.event_timeout / config.event_timeout)
    assert seen == [1.5, 2.25, 3.375, 4.0, 4.0]

    policy.push_succeeded(40.0 + 599.0)  # still within the extension: the longer one holds
    assert policy.event_timeout == 4.0 * config.event_timeout
    policy.push_succeeded(40.0 + 600.0)  # measured from after it: the configured one
    assert policy.event_timeout == config.event_timeout
    policy.extended(700.0, "restart")  # a new extension starts from the configured one
    assert policy.event_timeout == 1.5 * config.event_timeout


def test_an_extension_replays_from_its_outcome_row_and_needs_a_push_path() -> None:
    live, replay = fresh(), fresh()
    made = live.extended(5.0, "restart the stream")
    row = Outcome(5.0, "extend", True, "restart the stream").row()
    assert replay.observe(Outcome.from_row(row)) == made
    assert replay.state == live.state
    live.silence_check(500.0)
    replay.silence_check(500.0)
    assert replay.state == live.state

    with pytest.raises(ValueError, match="without a push path"):
        fresh(has_push=False).extended(1.0, "restart")
