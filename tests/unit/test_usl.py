"""The Universal Scalability Law fit: it recovers known laws and cross-checks a knee."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventcenter.domain.errors import InvalidCurve
from eventcenter.domain.knee import KneeRule, Step, find_knee
from eventcenter.domain.step_plan import StepPlan, next_step
from eventcenter.domain.usl import fit_usl, little_points
from tests.unit.load_targets import SteppedTarget


def law(lam: float, sigma: float, kappa: float, ns: Sequence[float]) -> list[tuple[float, float]]:
    return [(n, lam * n / (1 + sigma * (n - 1) + kappa * n * (n - 1))) for n in ns]


NS = [1, 2, 4, 8, 16, 32, 64]


def test_a_law_with_coherency_cost_is_recovered_with_its_peak() -> None:
    fit = fit_usl(law(100, 0.05, 0.002, NS))

    assert fit.lam == pytest.approx(100)
    assert fit.sigma == pytest.approx(0.05)
    assert fit.kappa == pytest.approx(0.002)
    assert fit.peak_n is not None
    assert fit.peak_n == pytest.approx(math.sqrt(0.95 / 0.002))
    assert fit.peak_x == pytest.approx(fit.throughput(fit.peak_n))
    assert fit.r_squared == pytest.approx(1)


def test_contention_alone_levels_off_at_lambda_over_sigma() -> None:
    fit = fit_usl(law(50, 0.1, 0.0, NS))

    assert fit.kappa == 0
    assert fit.peak_n is None
    assert fit.peak_x == pytest.approx(500)


def test_linear_scaling_has_no_ceiling() -> None:
    fit = fit_usl([(n, 10.0 * n) for n in NS])

    assert fit.sigma == pytest.approx(0, abs=1e-9)
    assert (fit.kappa, fit.peak_x) == (0, math.inf)


def test_negative_coefficients_are_never_reported() -> None:
    """Super-linear points would fit best with sigma < 0; the fit holds it at zero instead."""
    fit = fit_usl([(1, 10.0), (2, 21.0), (4, 44.0), (8, 92.0)])

    assert fit.sigma >= 0
    assert fit.kappa >= 0


@pytest.mark.parametrize(
    ("points", "message"),
    [
        ([(1, 10.0), (2, 20.0)], "at least three distinct N"),
        ([(1, 10.0), (1, 11.0), (2, 20.0)], "at least three distinct N"),
        ([(1, 10.0), (2, 0.0), (3, 30.0)], "step #1: field 'point'"),
        ([(1, 10.0), (2, math.nan), (3, 30.0)], "step #1: field 'point'"),
    ],
)
def test_points_that_cannot_be_fitted_are_refused(
    points: list[tuple[float, float]], message: str
) -> None:
    with pytest.raises(InvalidCurve, match=message):
        fit_usl(points)


def test_on_a_clean_knee_the_fit_agrees_with_the_targets_capacity() -> None:
    """4 slots x 20 ms: the law's ceiling (200.3 req/s) matches the target's 200 req/s, and the
    knee the SLO allows (181.5) lies below it."""
    target, rule = SteppedTarget(), KneeRule(slo_p95=0.2)
    plan = StepPlan(start_rate=10, max_duration=3600)
    steps: list[Step] = []
    while not (move := next_step(plan, rule, steps)).done:
        assert move.rate is not None
        steps.append(target.step(move.rate))

    fit = fit_usl(little_points(steps))
    knee = find_knee(steps, rule)

    assert abs(fit.peak_x - target.capacity) / target.capacity < 0.05
    assert knee.max_rps < fit.peak_x


@settings(max_examples=100, deadline=None)
@given(
    lam=st.floats(1, 1000),
    sigma=st.floats(0, 0.5),
    kappa=st.floats(0, 0.01),
)
def test_any_law_is_recovered_from_its_own_points(lam: float, sigma: float, kappa: float) -> None:
    points = law(lam, sigma, kappa, NS)

    fit = fit_usl(points)

    for n, x in points:
        assert fit.throughput(n) == pytest.approx(x, rel=1e-4)
