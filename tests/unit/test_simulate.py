"""The what-if: a replay of a run's recorded outcomes through its own configuration gives back
its switches exactly; through another one, what that one would have done."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventcenter.domain.hysteresis import (
    Hysteresis,
    HysteresisConfig,
    HysteresisDecision,
    Outcome,
    Switch,
)
from eventcenter.domain.simulate import simulate
from eventcenter.domain.source_log import SourceLog
from eventcenter.domain.source_modes import (
    EVENT_ONLY,
    HYBRID,
    POLLING_ONLY,
    SourceModeMachine,
)

DEFAULT = HysteresisConfig()


class Runtime:
    """What the sources runtime does with the pure parts, minus the I/O: feed outcomes to the
    policy (recording each), check silence whenever it likes, move the mode machine for each
    switch, roll back a mode that would not start, record every decision in the source log,
    and after a restart resume the policy from that log."""

    def __init__(self, config: HysteresisConfig) -> None:
        self.config = config
        self.log = SourceLog.register(
            "acme", "orders", at=0.0, has_push=True, has_poll=True, config=config
        )
        self.policy = Hysteresis.start(config, now=0.0)
        self.fsm = SourceModeMachine(has_push=True, has_poll=True)
        self.outcomes: list[Outcome] = []
        self.switches: list[Switch] = []
        self.rollbacks: list[tuple[float, str]] = []
        self.now = 0.0

    def push(self, now: float, ok: bool, *, starts: bool = True, previous_works: bool = True):
        self.outcomes.append(Outcome(now, "push", ok, "" if ok else "refused"))
        made = self.policy.push_succeeded(now) if ok else self.policy.push_failed(now, "refused")
        self._apply(now, made, starts, previous_works)

    def poll(self, now: float, ok: bool, *, starts: bool = True, previous_works: bool = True):
        self.outcomes.append(Outcome(now, "poll", ok))
        self._apply(now, self.policy.observe(self.outcomes[-1]), starts, previous_works)

    def check(self, now: float, *, starts: bool = True, previous_works: bool = True):
        self._apply(now, self.policy.silence_check(now), starts, previous_works)

    def restart(self, stopped: float, started: float) -> None:
        self.outcomes.append(Outcome(stopped, "stop"))
        self._apply(stopped, self.policy.silence_check(stopped), True, True)
        self.outcomes.append(Outcome(started, "start"))
        self.policy = Hysteresis(self.config, self.log.hysteresis_state(started))
        self.fsm = SourceModeMachine(has_push=True, has_poll=True, initial=self.log.mode)
        self.now = started

    def _apply(
        self, now: float, made: tuple[HysteresisDecision, ...], starts: bool, previous_works: bool
    ) -> None:
        self.now = now
        for decision in made:
            self.log.record(decision)
        decided = [d for d in made if isinstance(d, Switch)]
        for number, switch in enumerate(decided, start=1):
            self.switches.append(switch)
            self.fsm.begin(switch.to)
            if number < len(decided) or starts:
                self.fsm.complete()
                continue
            landed = self.fsm.roll_back(previous_works=previous_works)
            self.policy.rolled_back(now, landed, "would not start")
            self.log.roll_back(at=now, attempted=switch.to, landed=landed, reason="no start")
            self.outcomes.append(Outcome(now, "rollback", False, "would not start", landed))
            self.rollbacks.append((now, landed))


configs = st.builds(
    HysteresisConfig,
    failure_threshold=st.integers(1, 4),
    success_threshold=st.integers(1, 5),
    max_hysteresis=st.integers(5, 8),
    event_timeout=st.floats(1.0, 40.0),
    flap_window=st.floats(5.0, 300.0),
    flap_switches=st.integers(2, 5),
    cool_down=st.floats(1.0, 60.0),
    decay_period=st.floats(5.0, 300.0),
)
KINDS = ("push_ok", "push_fail", "poll_ok", "poll_fail", "check", "restart")
steps = st.lists(
    st.tuples(st.floats(0.0, 50.0), st.sampled_from(KINDS), st.booleans(), st.booleans()),
    min_size=1,
    max_size=200,
)


def drive(runtime: Runtime, plan: list[tuple[float, str, bool, bool]]) -> float:
    now = 0.0
    for gap, kind, starts, previous_works in plan:
        now += gap
        # a mode fails to start now and then, not at every step
        flags = {"starts": starts or previous_works, "previous_works": previous_works}
        if kind == "restart":
            runtime.restart(now, now + 100.0)
            now += 100.0
        elif kind.startswith("push"):
            runtime.push(now, kind == "push_ok", **flags)
        elif kind.startswith("poll"):
            runtime.poll(now, kind == "poll_ok", **flags)
        else:
            runtime.check(now, **flags)
    runtime.check(now)
    return now


@settings(deadline=None)
@given(configs, steps)
def test_a_replay_through_the_same_configuration_reproduces_the_run_exactly(
    config: HysteresisConfig, plan: list[tuple[float, str, bool, bool]]
) -> None:
    runtime = Runtime(config)
    end = drive(runtime, plan)

    replay = simulate(runtime.outcomes, config, polling_interval=5.0, start=0.0, until=end)

    assert list(replay.switches) == runtime.switches
    assert list(replay.rollbacks) == runtime.rollbacks
    assert (replay.final.mode, replay.final.level) == (runtime.log.mode, runtime.log.level)
    assert sum(replay.time_in_mode.values()) == pytest.approx(end)


def test_the_same_run_through_another_configuration_shows_what_it_would_have_done() -> None:
    runtime = Runtime(DEFAULT)
    for second in range(600):  # flapping every second, ten outcomes a second
        for k in range(10):
            runtime.push(second + k / 10, ok=second % 2 == 1)
    runtime.check(600.0)

    same = simulate(runtime.outcomes, DEFAULT, polling_interval=5.0, start=0.0, until=600.0)
    calmer = simulate(
        runtime.outcomes,
        replace(DEFAULT, cool_down=300.0),
        polling_interval=5.0,
        start=0.0,
        until=600.0,
    )

    assert list(same.switches) == runtime.switches
    assert len(same.switches) == 24
    assert len(calmer.switches) < len(same.switches)
    assert calmer.time_in_mode[POLLING_ONLY] >= same.time_in_mode[POLLING_ONLY]


def test_time_in_each_mode_and_the_polls_it_would_have_made() -> None:
    outcomes = [Outcome(float(t), "push", False, "down") for t in (1, 2, 3)]
    outcomes += [Outcome(float(t), "push", True) for t in (10, 11, 12, 13, 14)]

    result = simulate(outcomes, DEFAULT, polling_interval=5.0, start=0.0, until=20.0)

    assert [(s.at, s.previous, s.to) for s in result.switches] == [
        (3.0, EVENT_ONLY, HYBRID),
        (14.0, HYBRID, EVENT_ONLY),
    ]
    assert result.time_in_mode == {EVENT_ONLY: 9.0, HYBRID: 11.0, POLLING_ONLY: 0.0}
    assert result.polls == 3  # at 3, 8 and 13 while polling ran from 3 to 14


def test_poll_successes_do_not_bring_a_replayed_source_back() -> None:
    outcomes = [Outcome(float(t), "push", False, "down") for t in (1, 2, 3)]
    outcomes += [Outcome(float(t), "poll", True) for t in range(4, 29)]

    result = simulate(outcomes, DEFAULT, polling_interval=5.0)

    assert [s.to for s in result.switches] == [HYBRID]


def test_silence_is_derived_from_the_gaps() -> None:
    result = simulate([], DEFAULT, polling_interval=10.0, start=0.0, until=200.0)

    assert [(s.at, s.to) for s in result.switches] == [(90.0, HYBRID), (180.0, POLLING_ONLY)]
    assert result.polls == 11  # 90, 100, ..., 190


def test_a_source_without_a_push_path_polls_all_along() -> None:
    result = simulate([], DEFAULT, polling_interval=30.0, start=0.0, until=100.0, has_push=False)

    assert result.switches == ()
    assert result.time_in_mode[POLLING_ONLY] == 100.0
    assert result.polls == 4  # at 0, 30, 60 and 90


def test_a_rollback_with_no_replayed_switch_to_undo_only_marks_time() -> None:
    outcomes = [
        Outcome(1.0, "push", False, "down"),
        Outcome(1.5, "rollback", False, "would not start", POLLING_ONLY),
    ]

    result = simulate(outcomes, DEFAULT, polling_interval=5.0)

    assert result.rollbacks == ()
    assert result.final.mode == EVENT_ONLY


def test_a_replay_can_start_from_a_state_mid_life_without_changing_it() -> None:
    policy = Hysteresis.start(DEFAULT, now=0.0)
    policy.state.mode = POLLING_ONLY
    before = policy.state.copy()
    outcomes = [Outcome(float(t), "push", True) for t in range(1, 6)]

    result = simulate(outcomes, DEFAULT, polling_interval=5.0, initial=policy.state)

    assert [(s.previous, s.to) for s in result.switches] == [(POLLING_ONLY, HYBRID)]
    assert policy.state == before


def test_outcomes_are_plain_rows() -> None:
    outcome = Outcome(12.5, "rollback", False, "would not start", HYBRID)

    assert Outcome.from_row(outcome.row()) == outcome
    with pytest.raises(ValueError, match="outcome path must be one of"):
        Outcome(1.0, "reconcile")  # type: ignore[arg-type]
