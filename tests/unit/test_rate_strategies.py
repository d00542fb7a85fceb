"""The rate strategies: each rule on its own, and each strategy closing the loop around a
simulated queueing target of known capacity (tests/unit/load_targets.py: ``QueueingPlant``).

The closed-loop figures (600 one-second periods, 5 % latency noise, seed 7; rates as a share
of the target's capacity C = slots / service time; the strategies are handed the capacity a
load test with the same latency limit measures: 0.971 C and 0.992 C):

| target                           | strategy | last 150 periods | overshoot | settled after |
|----------------------------------|----------|------------------|-----------|---------------|
| 4 x 20 ms (C 200/s), limit 500ms | headroom | 0.922            | -7.8 %    | 0 periods     |
|                                  | aimd     | 0.923 - 0.982    | -1.8 %    | 43            |
|                                  | gradient | 0.922 - 0.980    | -1.9 %    | 79            |
|                                  | pid      | 0.916 - 1.018    | +1.8 %    | 9             |
| 16 x 5 ms (C 3200/s), limit 125ms| headroom | 0.943            | -5.7 %    | 0             |
|                                  | aimd     | 0.925 - 1.032    | +3.4 %    | 41            |
|                                  | gradient | 0.942 - 1.025    | +2.5 %    | 75            |
|                                  | pid      | 0.925 - 1.049    | +5.0 %    | 8             |

("settled after": the first period from which every rate stays within 10 % of C.) No errors
in the last 150 periods; their mean latency is at most the limit (the PID holds it there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from eventcenter.domain.rate_strategies import (
    Aimd,
    Bounds,
    Gradient,
    Headroom,
    Move,
    Observation,
    Pid,
    RateState,
    RateStrategy,
)
from tests.unit.load_targets import QueueingPlant

BOUNDS = Bounds(capacity=100.0, low=1.0, high=125.0)
STRATEGY: TypeAdapter[RateStrategy] = TypeAdapter(RateStrategy)


def seen(at: float, latency: float, throughput: float = 1e9, errors: float = 0.0) -> Observation:
    return Observation(at, throughput, latency, errors)


@dataclass
class Loop:
    """A closed loop's record: the rate after each period, and what each period showed."""

    rates: list[float]
    seen: list[Observation]
    capacity: float

    def tail(self, share: float = 0.25) -> list[float]:
        return self.rates[-int(len(self.rates) * share) :]

    @property
    def overshoot(self) -> float:
        return max(self.rates) / self.capacity - 1

    def settled_after(self, band: float = 0.1) -> int:
        c = self.capacity
        inside = [abs(rate / c - 1) <= band for rate in self.rates]
        return next(i for i in range(len(inside)) if all(inside[i:]))


def close_loop(
    strategy: RateStrategy, plant: QueueingPlant, limit: float, periods: int = 600
) -> Loop:
    """Run ``strategy`` against ``plant`` the way the coordinator does: bounds from the
    capacity a load test with ``limit`` as its SLO measures, a 1.25 ceiling, 1 s periods."""
    measured = QueueingPlant(plant.servers, plant.service_time).slo_rate(limit)
    bounds = Bounds(measured, 0.1, measured * 1.25)
    state = strategy.start(strategy.initial_rate(bounds), 0.0, bounds)
    rates, observations = [state.rate], []
    for period in range(1, periods + 1):
        observation = plant.run(state.rate, 1.0, float(period))
        state = strategy.update(state, observation, bounds).state
        rates.append(state.rate)
        observations.append(observation)
    return Loop(rates, observations, plant.capacity)


PLANTS = {
    "4 x 20 ms": (4, 0.02, 0.5),
    "16 x 5 ms": (16, 0.005, 0.125),
}


def strategy_for(name: str, limit: float) -> RateStrategy:
    strategies: dict[str, RateStrategy] = {
        "headroom": Headroom(utilisation=0.95),
        "aimd": Aimd(latency_limit=limit),
        "gradient": Gradient(latency_limit=limit),
        "pid": Pid(latency_target=limit),
    }
    return strategies[name]


@pytest.mark.parametrize("plant", PLANTS)
@pytest.mark.parametrize("name", ["headroom", "aimd", "gradient", "pid"])
def test_each_strategy_settles_within_10_percent_of_capacity_overshooting_at_most_10(
    name: str, plant: str
) -> None:
    """The figures are in the module docstring."""
    servers, service_time, limit = PLANTS[plant]
    target = QueueingPlant(servers, service_time, noise=0.05, seed=7)

    loop = close_loop(strategy_for(name, limit), target, limit)

    tail = loop.tail()
    assert min(tail) >= 0.9 * loop.capacity
    assert max(tail) <= 1.1 * loop.capacity
    assert loop.overshoot <= 0.10
    assert loop.settled_after() <= 100
    recent = loop.seen[-len(tail) :]
    assert all(o.error_rate == 0 for o in recent)
    assert sum(o.latency for o in recent) / len(recent) <= 1.05 * limit


def test_without_the_latency_limit_gradient2_runs_into_a_full_backlog() -> None:
    """Why Gradient takes a latency limit: on a rate, Gradient2's long average follows a latency
    that climbs slowly enough, so it ran 21 % past capacity and left 30 s of backlog."""
    target = QueueingPlant(noise=0.0)

    loop = close_loop(Gradient(latency_limit=1e9), target, limit=0.5)

    assert loop.overshoot > 0.2
    assert max(o.latency for o in loop.seen[-150:]) > 20


class TestHeadroom:
    def test_it_targets_the_configured_share_of_capacity(self) -> None:
        move = Headroom(utilisation=0.8).update(RateState(10, 0), seen(1, 0.01), BOUNDS)

        assert move.rate == 80
        assert move.reason == "80% of the capacity 100 req/s"

    def test_latency_over_its_limit_scales_it_down_at_most_to_the_floor(self) -> None:
        strategy = Headroom(utilisation=0.8, latency_limit=0.2, floor=0.25)

        assert strategy.update(RateState(80, 0), seen(1, 0.4), BOUNDS).rate == 40
        assert strategy.update(RateState(80, 0), seen(1, 10.0), BOUNDS).rate == 20


class TestAimd:
    strategy = Aimd(latency_limit=0.2, increase=0.02, backoff=0.9)

    def test_within_the_limits_it_adds_a_share_of_capacity(self) -> None:
        assert self.strategy.update(RateState(50, 0), seen(1, 0.1), BOUNDS).rate == 52

    @pytest.mark.parametrize(("latency", "errors"), [(0.3, 0.0), (0.1, 0.05)])
    def test_latency_or_errors_over_the_limit_multiply_it_down(
        self, latency: float, errors: float
    ) -> None:
        move = self.strategy.update(RateState(50, 0), seen(1, latency, errors=errors), BOUNDS)

        assert move.rate == pytest.approx(45)

    def test_it_holds_while_the_agents_use_less_than_half_the_allowance(self) -> None:
        move = self.strategy.update(RateState(50, 0), seen(1, 0.1, throughput=20), BOUNDS)

        assert move.rate == 50
        assert "less than half" in move.reason

    def test_it_stays_within_the_bounds(self) -> None:
        assert self.strategy.update(RateState(124.5, 0), seen(1, 0.1), BOUNDS).rate == 125
        assert self.strategy.update(RateState(1.05, 0), seen(1, 0.3), BOUNDS).rate == 1


class TestGradient:
    strategy = Gradient(latency_limit=1.0, warmup=2, long_window=3, queue=0.0, smoothing=1.0)

    def run(self, latencies: list[float], rate: float = 50.0, **seen_as: float) -> Move:
        state = self.strategy.start(rate, 0.0, BOUNDS)
        move = Move(state, "")
        for i, latency in enumerate(latencies, start=1):
            move = self.strategy.update(move.state, seen(i, latency, **seen_as), BOUNDS)
        return move

    def test_the_long_latency_is_a_plain_mean_during_warmup_then_decays(self) -> None:
        assert self.run([0.1, 0.3]).state.memory["long"] == pytest.approx(0.2)
        # then an exponential average over 3 periods: factor 2 / (3 + 1)
        assert self.run([0.1, 0.3, 0.4]).state.memory["long"] == pytest.approx(0.3)

    def test_latency_within_the_tolerance_keeps_the_gradient_at_one(self) -> None:
        move = self.run([0.1, 0.1, 0.14])  # 1.5 * long >= short

        assert move.rate == 50
        assert move.reason.startswith("gradient 1.000")

    def test_a_climbing_latency_shrinks_the_rate_by_the_gradient(self) -> None:
        move = self.run([0.1, 0.1, 0.3])  # long 0.2, short 0.3: 1.5 * 0.2 / 0.3 = 1

        assert move.rate == pytest.approx(50)
        steeper = self.run([0.1, 0.1, 0.6])  # long 0.35: 1.5 * 0.35 / 0.6 = 0.875
        assert steeper.rate == pytest.approx(50 * 0.875)

    def test_the_gradient_never_goes_below_one_half(self) -> None:
        strategy = Gradient(latency_limit=10, warmup=2, queue=0.0, smoothing=1.0)
        state = strategy.start(50, 0.0, BOUNDS)
        for i, latency in enumerate([0.01, 0.01, 0.9], start=1):
            state = strategy.update(state, seen(i, latency), BOUNDS).state

        assert state.rate == pytest.approx(25)

    def test_latency_over_the_limit_caps_the_gradient(self) -> None:
        move = self.run([0.8, 0.8, 1.25])  # the tolerance allows it, the limit does not

        assert move.rate == pytest.approx(50 * 0.8)

    def test_errors_count_as_the_steepest_gradient(self) -> None:
        assert self.run([0.1], errors=0.5).rate == pytest.approx(25)

    def test_the_queue_allowance_grows_the_rate_by_its_share(self) -> None:
        strategy = Gradient(latency_limit=1.0, queue=0.04, smoothing=0.2)

        move = strategy.update(strategy.start(50, 0, BOUNDS), seen(1, 0.1), BOUNDS)

        assert move.rate == pytest.approx(50 * (0.8 + 0.2 * 1.04))

    def test_a_long_latency_far_above_the_short_one_is_cut(self) -> None:
        move = self.run([1.0, 1.0, 0.1])  # long 0.55 > 2 * 0.1: cut by 5 %

        assert move.state.memory["long"] == pytest.approx(0.55 * 0.95)

    def test_it_holds_while_the_agents_use_less_than_half_the_allowance(self) -> None:
        move = self.run([0.1, 0.1, 0.9], throughput=10.0)

        assert move.rate == 50


class TestPid:
    strategy = Pid(latency_target=0.2, kp=0.1, ki=0.1, kd=0.0)

    def test_it_starts_bumplessly_at_the_rate_it_is_handed(self) -> None:
        state = self.strategy.start(60, 0.0, BOUNDS)

        assert state.memory["integral"] == pytest.approx(0.6)
        assert self.strategy.update(state, seen(1, 0.2), BOUNDS).rate == pytest.approx(60)

    def test_latency_under_the_target_raises_the_rate(self) -> None:
        state = self.strategy.start(60, 0.0, BOUNDS)

        move = self.strategy.update(state, seen(1, 0.1), BOUNDS)  # error +0.5

        assert move.rate == pytest.approx(100 * (0.1 * 0.5 + 0.6 + 0.1 * 0.5))

    def test_the_error_is_clipped_and_errors_count_as_full_overload(self) -> None:
        state = self.strategy.start(60, 0.0, BOUNDS)

        wild = self.strategy.update(state, seen(1, 100.0), BOUNDS)
        failing = self.strategy.update(state, seen(1, 0.01, errors=0.5), BOUNDS)

        assert wild.rate == failing.rate == pytest.approx(100 * (0.6 - 0.1 - 0.1))

    def test_no_time_passed_integrates_nothing(self) -> None:
        state = self.strategy.start(60, 5.0, BOUNDS)

        move = self.strategy.update(state, seen(5.0, 0.1), BOUNDS)

        assert move.state.memory["integral"] == pytest.approx(0.6)

    def test_the_derivative_acts_on_the_measurement(self) -> None:
        strategy = Pid(latency_target=0.2, kp=0.0, ki=0.0, kd=0.1)
        state = strategy.update(strategy.start(60, 0.0, BOUNDS), seen(1, 0.2), BOUNDS).state

        move = strategy.update(state, seen(2, 0.3), BOUNDS)  # rising by 0.5 targets per second

        assert move.rate == pytest.approx(100 * (0.6 - 0.1 * 0.5))

    def test_anti_windup_holds_the_integral_while_the_output_is_saturated(self) -> None:
        """An hour of latency far under the target pins the output at the ceiling; without
        anti-windup the integral would hold 360 capacities and take hours to unwind. Here the
        first overloaded period brings the rate down at once."""
        strategy = Pid(latency_target=0.2, kp=0.1, ki=0.1)
        state = strategy.start(100, 0.0, BOUNDS)
        for second in range(1, 3601):
            state = strategy.update(state, seen(second, 0.01), BOUNDS).state

        assert state.rate == 125
        assert state.memory["integral"] <= 1.25
        move = strategy.update(state, seen(3601, 1.0), BOUNDS)
        assert move.rate < 125 - 10
        assert "integral held" not in move.reason

    def test_the_output_is_clamped_to_the_bounds(self) -> None:
        state = self.strategy.start(2, 0.0, BOUNDS)

        move = self.strategy.update(state, seen(100, 5.0), BOUNDS)

        assert move.rate == 1
        assert "output at its limit: integral held" in move.reason


class TestConfiguration:
    def test_a_strategy_is_chosen_by_its_name(self) -> None:
        strategy = STRATEGY.validate_python({"strategy": "pid", "latency_target": "250ms"})

        assert isinstance(strategy, Pid)
        assert strategy.latency_target == 0.25

    @pytest.mark.parametrize(
        ("values", "message"),
        [
            ({"strategy": "magic"}, "'headroom', 'aimd', 'gradient', 'pid'"),
            ({"strategy": "aimd"}, "latency_limit"),
            ({"strategy": "aimd", "latency_limit": 0.2, "backoff": 1.0}, "backoff"),
            ({"strategy": "gradient", "latency_limit": 0.2, "tolerance": 0.5}, "tolerance"),
            ({"strategy": "pid", "latency_target": 0.2, "ki": -1}, "ki"),
            ({"strategy": "headroom", "utilisation": 1.5}, "utilisation"),
            ({"strategy": "headroom", "typo": 1}, "typo"),
        ],
    )
    def test_invalid_strategies_name_their_field(
        self, values: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(ValidationError, match=message):
            STRATEGY.validate_python(values)

    @pytest.mark.parametrize(
        ("field", "value"),
        [("latency", -1.0), ("throughput", math.inf), ("error_rate", 2.0), ("at", math.nan)],
    )
    def test_an_impossible_observation_is_refused(self, field: str, value: float) -> None:
        values = {"at": 1.0, "throughput": 1.0, "latency": 0.1, "error_rate": 0.0, field: value}

        with pytest.raises(ValueError, match=field):
            Observation(**values)


# properties -----------------------------------------------------------------------------------

strategies = st.sampled_from(
    [
        Headroom(utilisation=0.9, latency_limit=0.2),
        Aimd(latency_limit=0.2),
        Gradient(latency_limit=0.2),
        Pid(latency_target=0.2, kd=0.05),
    ]
)
observations = st.lists(
    st.tuples(
        st.floats(0.0, 10.0),  # seconds since the previous one
        st.floats(0.0, 1e4),
        st.floats(0.0, 5.0),
        st.floats(0.0, 1.0),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(strategy=strategies, start=st.floats(0, 500), seen_as=observations)
def test_any_sequence_stays_within_the_bounds_and_resumes_from_its_record(
    strategy: RateStrategy, start: float, seen_as: list[tuple[float, float, float, float]]
) -> None:
    state = strategy.start(start, 0.0, BOUNDS)
    at = 0.0
    for gap, throughput, latency, errors in seen_as:
        at += gap
        observation = Observation(at, throughput, latency, errors)
        move = strategy.update(state, observation, BOUNDS)
        restored = strategy.update(RateState.from_dict(state.as_dict()), observation, BOUNDS)
        assert restored == move
        state = move.state
        assert BOUNDS.low <= state.rate <= BOUNDS.high
