"""The step plan: ramp, repeat and confirm, bisect, and every way the search ends."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from eventcenter.domain.knee import KneeRule, Step, find_knee
from eventcenter.domain.step_plan import NextStep, StepPlan, next_step
from tests.unit.load_targets import SteppedTarget

RULE = KneeRule(slo_p95=0.2)
PLAN = StepPlan(start_rate=10, growth=2, max_duration=10_000)


def good(rate: float) -> Step:
    return Step(rate, rate, 0.01, 0.02, 0.03, 0.0, 10.0)


def slow(rate: float) -> Step:
    return Step(rate, rate, 0.2, 0.5, 0.7, 0.0, 10.0)


def short(rate: float) -> Step:
    """A step the generator could not offer: little came back, fast and clean."""
    return Step(rate, rate * 0.5, 0.01, 0.02, 0.03, 0.0, 10.0)


class TestRamp:
    def test_the_search_starts_at_the_start_rate(self) -> None:
        assert next_step(PLAN, RULE, []) == NextStep(10, "ramp", "start at 10 req/s")

    def test_it_grows_from_the_highest_rate_while_every_rate_holds(self) -> None:
        move = next_step(PLAN, RULE, [good(10), good(20)])

        assert (move.rate, move.phase) == (40, "ramp")

    def test_it_never_offers_more_than_max_rate_and_ends_there(self) -> None:
        plan = PLAN.model_copy(update={"max_rate": 30})

        assert next_step(plan, RULE, [good(10), good(20)]).rate == 30
        done = next_step(plan, RULE, [good(10), good(20), good(30)])
        assert done.done
        assert "every rate up to max_rate (30 req/s) was sustainable" in done.reason

    def test_a_failing_first_rate_ramps_down_to_min_rate_and_ends_there(self) -> None:
        plan = PLAN.model_copy(update={"min_rate": 4})

        assert next_step(plan, RULE, [slow(10)]) == NextStep(
            5, "ramp", "10 req/s failed (latency) first: offer 5"
        )
        assert next_step(plan, RULE, [slow(10), slow(5)]).rate == 4
        done = next_step(plan, RULE, [slow(10), slow(5), slow(4)])
        assert done.done
        assert "even min_rate (4 req/s) was not sustainable" in done.reason


class TestRepeatAndConfirm:
    def test_every_rate_runs_repeats_times(self) -> None:
        plan = PLAN.model_copy(update={"repeats": 3})

        assert next_step(plan, RULE, [good(10)]) == NextStep(10, "repeat", "run 2 of 3")
        assert next_step(plan, RULE, [good(10), good(10)]).phase == "repeat"
        assert next_step(plan, RULE, [good(10)] * 3).rate == 20

    def test_a_failing_rate_is_confirmed_while_the_majority_can_still_turn(self) -> None:
        plan = PLAN.model_copy(update={"confirm": 2})

        first = next_step(plan, RULE, [good(10), slow(20)])
        assert (first.rate, first.phase) == (20, "confirm")
        second = next_step(plan, RULE, [good(10), slow(20), good(20)])
        assert second.phase == "confirm"
        overruled = next_step(plan, RULE, [good(10), slow(20), good(20), good(20)])
        assert (overruled.rate, overruled.phase) == (40, "ramp")

    def test_confirming_stops_once_no_majority_is_possible(self) -> None:
        plan = PLAN.model_copy(update={"confirm": 2})

        move = next_step(plan, RULE, [good(10), slow(20), slow(20)])

        assert (move.rate, move.phase) == (15, "refine")


class TestRefine:
    def test_it_bisects_between_the_last_good_and_the_first_failing_rate(self) -> None:
        move = next_step(PLAN, RULE, [good(10), good(20), good(40), slow(80)])

        assert move == NextStep(60, "refine", "bisect [40, 80) req/s (80 failed: latency)")

    def test_it_ends_when_the_bracket_is_within_the_resolution(self) -> None:
        steps = [good(100), slow(104)]

        done = next_step(PLAN, RULE, steps)

        assert done.done
        assert "bracket [100, 104) req/s is within the resolution (5%)" in done.reason

    def test_a_generator_limit_ends_the_search_without_refining(self) -> None:
        done = next_step(PLAN, RULE, [good(10), good(20), short(40)])

        assert done.done
        assert "the generator could not offer 40 req/s" in done.reason


class TestBudgets:
    def test_the_step_budget_ends_the_search(self) -> None:
        plan = PLAN.model_copy(update={"max_steps": 2})

        done = next_step(plan, RULE, [good(10), good(20)])

        assert done.done
        assert done.reason == "step budget spent (2 steps)"

    def test_the_time_budget_counts_warmup_and_hold(self) -> None:
        plan = StepPlan(start_rate=10, warmup=2, hold=10, max_duration=30)

        assert not next_step(plan, RULE, [good(10)]).done  # 12 used, 12 more fit in 30
        done = next_step(plan, RULE, [good(10), good(15)])
        assert done.done
        assert done.reason.startswith("time budget spent: 24s used")


class TestSettings:
    def test_durations_read_as_text(self) -> None:
        plan = StepPlan(warmup="500ms", hold="5s", max_duration="2m")

        assert (plan.warmup, plan.hold, plan.max_duration) == (0.5, 5.0, 120.0)
        assert plan.step_seconds == 5.5

    @pytest.mark.parametrize(
        ("values", "message"),
        [
            ({"start_rate": 0}, "start_rate"),
            ({"growth": 1}, "growth"),
            ({"start_rate": 100, "max_rate": 50}, "min_rate <= start_rate <= max_rate"),
            ({"min_rate": 20, "start_rate": 10}, "min_rate <= start_rate <= max_rate"),
            ({"hold": 100, "max_duration": 50}, "leaves no room for one step"),
            ({"resolution": 1}, "resolution"),
            ({"repeats": 0}, "repeats"),
            ({"steps": 3}, "steps"),
        ],
    )
    def test_invalid_plans_say_what_is_wrong(self, values: dict[str, Any], message: str) -> None:
        with pytest.raises(ValidationError, match=message):
            StepPlan(**values)


@settings(max_examples=80, deadline=None)
@given(
    servers=st.integers(1, 16),
    service_time=st.sampled_from([0.001, 0.005, 0.02, 0.1]),
    start=st.sampled_from([1.0, 10.0, 100.0]),
    growth=st.sampled_from([1.25, 1.5, 2.0, 4.0]),
    resolution=st.sampled_from([0.01, 0.05, 0.2]),
)
def test_the_search_ends_within_its_budget_with_a_narrow_bracket(
    servers: int, service_time: float, start: float, growth: float, resolution: float
) -> None:
    target = SteppedTarget(servers, service_time)
    rule = KneeRule(slo_p95=service_time * 10)
    plan = StepPlan(
        start_rate=start,
        growth=growth,
        resolution=resolution,
        min_rate=0.1,
        max_rate=1e6,
        max_steps=200,
        max_duration=1e6,
    )
    steps: list[Step] = []
    while not (move := next_step(plan, rule, steps)).done:
        assert move.rate is not None
        assert plan.min_rate <= move.rate <= plan.max_rate
        steps.append(target.step(move.rate))
        assert next_step(plan, rule, steps) == next_step(plan, rule, list(steps))  # pure

    knee = find_knee(steps, rule)

    assert len(steps) < plan.max_steps
    assert knee.verdict == "capacity"
    assert knee.upper is not None
    assert knee.step_size is not None
    assert knee.step_size <= resolution * knee.offered + 1e-9
    assert knee.offered <= target.slo_rate(rule.slo_p95) < knee.upper
