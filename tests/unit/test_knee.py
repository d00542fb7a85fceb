"""The knee rule: which steps are sustainable and why, and what a curve says about capacity.

Curves come from simulated targets (tests/unit/load_targets.py: a queueing target of known
capacity, optionally behind a load generator with a ceiling, failing past a rate, or noisy)
and from hand-written curves shaped like Locust's output.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from eventcenter.domain.errors import InvalidCurve
from eventcenter.domain.knee import KneeRule, Step, find_knee, judge_curve, judge_step, rate_key
from eventcenter.domain.step_plan import StepPlan, next_step
from tests.unit.load_targets import SteppedTarget

RULE = KneeRule(slo_p95=0.2)


def step(offered: float, achieved: float, p95: float, errors: float = 0.0, **extra) -> Step:
    return Step(offered, achieved, p95 / 2, p95, p95 * 1.5, errors, 10.0, **extra)


def search(target: SteppedTarget, plan: StepPlan, rule: KneeRule = RULE) -> list[Step]:
    """Run the step plan against a simulated target until it is done."""
    steps: list[Step] = []
    while not (move := next_step(plan, rule, steps)).done:
        assert move.rate is not None
        steps.append(target.step(move.rate))
    return steps


class TestRule:
    def test_the_slo_reads_as_a_duration(self) -> None:
        assert KneeRule(slo_p95="200ms").slo_p95 == pytest.approx(0.2)

    @pytest.mark.parametrize(
        ("values", "field"),
        [
            ({}, "slo_p95"),
            ({"slo_p95": 0}, "slo_p95"),
            ({"slo_p95": 0.2, "max_error_rate": 1.5}, "max_error_rate"),
            ({"slo_p95": 0.2, "min_ratio": 0}, "min_ratio"),
            ({"slo_p95": 0.2, "latency_growth": 1.0}, "latency_growth"),
            ({"slo_p95": 0.2, "typo": 1}, "typo"),
        ],
    )
    def test_invalid_settings_name_their_field(self, values: dict[str, Any], field: str) -> None:
        with pytest.raises(ValidationError, match=field):
            KneeRule(**values)


class TestStepVerdicts:
    def test_a_step_within_every_limit_is_sustainable_and_says_so(self) -> None:
        verdict = judge_step(step(100, 99, 0.05), RULE, baseline_p95=0.05)

        assert verdict.sustainable
        assert "p95 50 ms within the SLO 200 ms" in verdict.reasons[0]

    def test_errors_are_named_before_latency(self) -> None:
        verdict = judge_step(step(100, 99, 0.5, errors=0.2), RULE, baseline_p95=0.05)

        assert verdict.cause == "errors"
        assert verdict.reasons[:2] == (
            "error rate 20.00% above 1.00%",
            "p95 500 ms above the SLO 200 ms",
        )

    def test_a_shortfall_within_the_limits_is_the_generators(self) -> None:
        """In an open model, requests that neither queued nor failed were never sent."""
        verdict = judge_step(step(100, 80, 0.15), RULE, baseline_p95=0.05)

        assert verdict.cause == "generator"
        assert "achieved 80 of 100 req/s offered (80.0% < 95%)" in verdict.reasons
        assert "the generator could not offer the rate" in verdict.reasons[-1]

    def test_a_shortfall_at_a_rate_the_generator_reached_elsewhere_is_the_targets(self) -> None:
        """The generator sent at least 195 req/s in one step, so it could send 180 in another."""
        judged = judge_curve(
            [step(100, 100, 0.05), step(180, 168, 0.09), step(200, 195, 0.5)], RULE
        )

        assert judged.steps[1].cause == "shortfall"
        assert "another step achieved 195 req/s" in judged.steps[1].reasons[-1]

    def test_with_a_growth_limit_a_shortfall_with_grown_latency_is_the_targets(self) -> None:
        """For users that wait for answers: sized with 2x head-room, a p95 grown 3x held them."""
        rule = KneeRule(slo_p95=0.2, latency_growth=2)

        assert judge_step(step(100, 80, 0.15), rule, baseline_p95=0.05).cause == "shortfall"
        assert judge_step(step(100, 80, 0.09), rule, baseline_p95=0.05).cause == "generator"

    def test_a_saturated_generator_makes_any_failing_step_its_own(self) -> None:
        slow = step(100, 99, 0.5, generator_saturated=True)

        assert judge_step(slow, RULE, baseline_p95=0.05).cause == "generator"
        fine = step(100, 99, 0.05, generator_saturated=True)
        assert judge_step(fine, RULE, baseline_p95=0.05).sustainable

    def test_the_ratio_limit_is_inclusive(self) -> None:
        assert judge_step(step(100, 95, 0.05), RULE, baseline_p95=0.05).sustainable
        assert not judge_step(step(100, 94.9, 0.05), RULE, baseline_p95=0.05).sustainable


class TestRecordedCurve:
    """A curve as a Locust step test writes it: rates rounded, latencies in whole ms."""

    CURVE = (
        step(20, 19.9, 0.024),
        step(40, 40.1, 0.025),
        step(80, 79.6, 0.031),
        step(160, 158.2, 0.068),
        step(320, 211.0, 1.84),  # overloaded: latency runs away, achieved stalls
        step(240, 236.5, 0.150),  # refining
        step(280, 247.3, 0.720),
        step(260, 255.1, 0.188),
        step(270, 258.0, 0.310),
    )

    def test_the_knee_is_the_highest_sustainable_rate_below_the_first_failure(self) -> None:
        knee = find_knee(self.CURVE, RULE)

        assert knee.verdict == "capacity"
        assert knee.max_rps == pytest.approx(255.1)
        assert (knee.offered, knee.upper, knee.step_size) == (260, 270, 10)
        assert knee.p95 == pytest.approx(0.188)
        assert knee.summary.startswith("maximum sustainable throughput 255.1 req/s")

    def test_each_step_says_why_it_counted(self) -> None:
        knee = find_knee(self.CURVE, RULE)

        causes = [v.cause for v in knee.steps]
        assert causes == [
            "sustainable",
            "sustainable",
            "sustainable",
            "sustainable",
            "latency",
            "sustainable",
            "latency",
            "sustainable",
            "latency",
        ]
        assert len(knee.explain()) == len(self.CURVE) + 1

    def test_the_answer_is_plain_json(self) -> None:
        values = find_knee(self.CURVE, RULE).as_dict()

        assert json.loads(json.dumps(values)) == values
        assert values["steps"][4]["cause"] == "latency"

    def test_the_order_the_steps_ran_in_changes_nothing(self) -> None:
        shuffled = list(self.CURVE)
        random.Random(4).shuffle(shuffled)

        a, b = find_knee(self.CURVE, RULE), find_knee(shuffled, RULE)

        assert (a.verdict, a.max_rps, a.upper) == (b.verdict, b.max_rps, b.upper)


class TestSimulatedTargets:
    def test_a_clean_knee_brackets_the_slo_rate_within_the_resolution(self) -> None:
        """4 slots x 20 ms (200 req/s), SLO p95 200 ms: the highest rate within the SLO is
        185.8 req/s; the search finds 181.5 with 186.9 failing (13 steps)."""
        target = SteppedTarget()
        steps = search(target, StepPlan(start_rate=10, max_duration=3600))

        knee = find_knee(steps, RULE)

        true = target.slo_rate(0.2)
        assert knee.verdict == "capacity"
        assert knee.upper is not None
        assert knee.offered <= true < knee.upper
        assert knee.upper - knee.offered <= 0.05 * knee.offered
        assert abs(knee.max_rps - true) / true < 0.05

    @pytest.mark.parametrize("seed", range(12))
    def test_a_noisy_knee_confirmed_by_repeats_stays_near_the_slo_rate(self, seed: int) -> None:
        """10 % latency noise (1 % on achieved): with failing rates confirmed twice, the knee
        of twelve seeded runs lands at 181.5-186.9 req/s (16-18 steps) for a noise-free SLO
        rate of 185.8."""
        target = SteppedTarget(noise=0.1, seed=seed)
        plan = StepPlan(start_rate=10, confirm=2, max_duration=3600)

        knee = find_knee(search(target, plan), RULE)

        assert knee.verdict == "capacity"
        assert abs(knee.max_rps - target.slo_rate(0.2)) / target.slo_rate(0.2) < 0.05

    def test_errors_before_latency_set_the_knee(self) -> None:
        """A target failing requests past 120 req/s (its latency still fine there)."""
        target = SteppedTarget(error_from=120)

        knee = find_knee(search(target, StepPlan(start_rate=10, max_duration=3600)), RULE)

        assert knee.verdict == "capacity"
        assert knee.upper is not None
        assert knee.offered <= 121.3 < knee.upper  # 1 % errors at 120 / 0.99
        assert knee.p95 < 0.05
        limit = next(v for v in knee.steps if rate_key(v.offered) == knee.upper)
        assert limit.cause == "errors"

    def test_a_generator_bound_run_never_reports_the_generators_ceiling_as_capacity(self) -> None:
        """The generator offers at most 130 req/s to a 200 req/s target."""
        target = SteppedTarget(generator_ceiling=130)

        knee = find_knee(search(target, StepPlan(start_rate=10, max_duration=3600)), RULE)

        assert knee.verdict == "generator_bound"
        assert not knee.is_capacity
        assert knee.max_rps == pytest.approx(130)
        assert knee.upper is None
        assert knee.summary.startswith("generator-bound at 130 req/s")

    def test_a_flat_out_fast_target_is_generator_bound(self) -> None:
        """A 4000 req/s target (1 ms service) behind an 800 req/s generator."""
        target = SteppedTarget(service_time=0.001, generator_ceiling=800)

        knee = find_knee(search(target, StepPlan(start_rate=10, max_duration=3600)), RULE)

        assert knee.verdict == "generator_bound"
        assert knee.max_rps == pytest.approx(800)

    def test_a_target_faster_than_the_plans_range_is_above_range(self) -> None:
        target = SteppedTarget(service_time=0.001)
        plan = StepPlan(start_rate=10, max_rate=1000, max_duration=3600)

        knee = find_knee(search(target, plan), RULE)

        assert knee.verdict == "above_range"
        assert knee.max_rps == pytest.approx(1000)
        assert "at least 1000 req/s" in knee.summary

    def test_a_target_slower_than_the_lowest_rate_is_below_range(self) -> None:
        knee = find_knee([step(50, 20, 2.0)], RULE)

        assert (knee.verdict, knee.max_rps, knee.upper) == ("below_range", 0.0, 50)


class TestNoise:
    def test_a_sustainable_rate_above_a_failing_one_is_ignored(self) -> None:
        curve = [step(50, 50, 0.03), step(100, 100, 0.4), step(150, 150, 0.05)]

        knee = find_knee(curve, RULE)

        assert (knee.verdict, knee.offered, knee.ignored) == ("capacity", 50, (150,))
        assert "rate 150 req/s ignored" in "\n".join(knee.explain())

    def test_a_rate_is_judged_by_the_majority_of_its_runs(self) -> None:
        curve = [
            step(50, 50, 0.03),
            step(100, 100, 0.4),  # one slow run ...
            step(100, 100, 0.05),
            step(100, 99, 0.06),  # ... outvoted
            step(150, 150, 0.5),
        ]

        knee = find_knee(curve, RULE)

        assert (knee.offered, knee.repeats) == (100, 3)
        assert knee.spread == pytest.approx(1)

    def test_a_tie_is_not_sustainable(self) -> None:
        judged = judge_curve([step(50, 50, 0.03), step(100, 100, 0.4), step(100, 100, 0.05)], RULE)

        assert [r.sustainable for r in judged.rates] == [True, False]


class TestInvalidCurves:
    @pytest.mark.parametrize(
        ("bad", "field"),
        [
            (Step(-1, 1, 0.1, 0.1, 0.1, 0, 10), "offered"),
            (Step(0, 1, 0.1, 0.1, 0.1, 0, 10), "offered"),
            (Step(10, math.nan, 0.1, 0.1, 0.1, 0, 10), "achieved"),
            (Step(10, 10, 0.2, 0.1, 0.3, 0, 10), "p95"),
            (Step(10, 10, 0.1, 0.1, 0.1, 1.5, 10), "error_rate"),
            (Step(10, 10, 0.1, 0.1, 0.1, 0, 0), "duration"),
        ],
    )
    def test_an_impossible_step_is_named_with_its_index(self, bad: Step, field: str) -> None:
        with pytest.raises(InvalidCurve, match=f"step #1: field '{field}'") as raised:
            find_knee([step(5, 5, 0.02), bad], RULE)

        assert (raised.value.step, raised.value.field) == (1, field)

    def test_an_empty_curve_is_refused(self) -> None:
        with pytest.raises(InvalidCurve, match="at least one step"):
            find_knee([], RULE)

    def test_a_step_reads_back_from_its_dict(self) -> None:
        original = step(10, 9.9, 0.05, generator_saturated=True)

        assert Step.from_dict(original.as_dict()) == original
        with pytest.raises(InvalidCurve, match="field 'latency': unknown field"):
            Step.from_dict({**original.as_dict(), "latency": 1}, 3)


# properties ---------------------------------------------------------------------------------

targets = st.builds(
    SteppedTarget,
    servers=st.integers(1, 16),
    service_time=st.sampled_from([0.002, 0.005, 0.01, 0.02, 0.05]),
)


@settings(max_examples=60, deadline=None)
@given(target=targets, start=st.sampled_from([1.0, 5.0, 20.0]), growth=st.sampled_from([1.5, 2.0]))
def test_without_a_generator_limit_the_knee_brackets_the_slo_rate(
    target: SteppedTarget, start: float, growth: float
) -> None:
    rule = KneeRule(slo_p95=target.service_time * 10)
    plan = StepPlan(start_rate=start, growth=growth, min_rate=0.5, max_rate=1e5, max_duration=1e5)

    knee = find_knee(search(target, plan, rule), rule)

    true = target.slo_rate(rule.slo_p95)
    if knee.verdict == "below_range":
        assert knee.upper is not None
        assert true < knee.upper
    else:
        assert knee.verdict == "capacity"
        assert knee.upper is not None
        assert knee.offered <= true < knee.upper


@settings(max_examples=60, deadline=None)
@given(target=targets, share=st.floats(0.05, 0.8))
def test_a_generator_well_below_the_target_is_never_taken_for_its_capacity(
    target: SteppedTarget, share: float
) -> None:
    rule = KneeRule(slo_p95=target.service_time * 10)
    target.generator_ceiling = share * target.slo_rate(rule.slo_p95)
    plan = StepPlan(start_rate=min(1.0, target.generator_ceiling), min_rate=0.01, max_duration=1e5)

    knee = find_knee(search(target, plan, rule), rule)

    assert knee.verdict == "generator_bound"
    assert knee.max_rps <= target.generator_ceiling


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([10.0, 20.0, 40.0, 80.0, 160.0]),
            st.floats(0.5, 1.0),
            st.floats(0.001, 1.0),
            st.floats(0.0, 0.05),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_any_curve_gives_a_consistent_answer(rows: list[tuple[float, float, float, float]]) -> None:
    curve = [step(o, o * ratio, p95, errors) for o, ratio, p95, errors in rows]

    knee = find_knee(curve, RULE)

    assert len(knee.steps) == len(curve)
    if knee.upper is not None:
        assert knee.lower <= knee.upper
    if knee.verdict == "capacity":
        judged = judge_curve(curve, RULE)
        failing = min(r.offered for r in judged.rates if not r.sustainable)
        assert knee.offered < failing == knee.upper
        assert all(r.offered > failing for r in judged.ignored())
        assert failing not in knee.ignored
