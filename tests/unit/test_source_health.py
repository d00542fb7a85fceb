"""The health score's formula, factor by factor, and the tally the runtime keeps."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventcenter.domain.source_health import HealthTally, health_score
from eventcenter.domain.source_modes import EVENT_ONLY, HYBRID, POLLING_ONLY, TRANSITION

HEALTHY = {
    "mode": EVENT_ONLY,
    "has_push": True,
    "consecutive_failures": 0,
    "failure_threshold": 3,
    "last_success_age": 1.0,
    "expected_interval": 30.0,
    "error_rate": 0.0,
}


def score(**changes: object) -> float:
    return health_score(**(HEALTHY | changes))  # type: ignore[arg-type]


def test_a_source_pushing_steadily_is_perfectly_healthy() -> None:
    assert score() == 1.0


@pytest.mark.parametrize(
    ("mode", "has_push", "expected"),
    [
        (HYBRID, True, 0.8),
        (POLLING_ONLY, True, 0.6),
        (TRANSITION, True, 0.7),
        (POLLING_ONLY, False, 1.0),  # its normal mode: nothing to fall back from
    ],
)
def test_the_mode_factor(mode: str, has_push: bool, expected: float) -> None:
    assert score(mode=mode, has_push=has_push) == pytest.approx(expected)


@pytest.mark.parametrize(("age", "expected"), [(30.0, 1.0), (60.0, 0.5), (300.0, 0.1)])
def test_freshness_falls_as_the_last_success_ages_past_the_expected_interval(
    age: float, expected: float
) -> None:
    assert score(last_success_age=age) == pytest.approx(expected)


@pytest.mark.parametrize(("failures", "expected"), [(3, 0.5), (9, 0.25)])
def test_consecutive_failures_halve_the_score_at_the_threshold(
    failures: int, expected: float
) -> None:
    assert score(consecutive_failures=failures) == pytest.approx(expected)


def test_the_error_rate_takes_its_share() -> None:
    assert score(error_rate=0.25) == pytest.approx(0.75)


@given(
    st.sampled_from([EVENT_ONLY, HYBRID, POLLING_ONLY, TRANSITION]),
    st.booleans(),
    st.integers(0, 10_000),
    st.integers(1, 20),
    st.floats(-10.0, 1e9),
    st.floats(0.001, 1e6),
    st.floats(-1.0, 2.0),
)
def test_the_score_is_always_between_0_and_1(
    mode: str,
    has_push: bool,
    failures: int,
    threshold: int,
    age: float,
    interval: float,
    error_rate: float,
) -> None:
    value = health_score(
        mode=mode,
        has_push=has_push,
        consecutive_failures=failures,
        failure_threshold=threshold,
        last_success_age=age,
        expected_interval=interval,
        error_rate=error_rate,
    )
    assert 0.0 <= value <= 1.0


def health(tally: HealthTally, now: float, mode: str = EVENT_ONLY, has_push: bool = True):
    return tally.health(
        now=now,
        mode=mode,
        has_push=has_push,
        failure_threshold=3,
        event_timeout=30.0,
        polling_interval=300.0,
    )


def test_the_tally_counts_items_by_path_polls_and_the_mean_lag() -> None:
    tally = HealthTally(registered_at=0.0)
    tally.succeeded("push", 1.0, items=3, lags=(0.5, 1.0, 1.5))
    tally.succeeded("poll", 2.0, items=2, lags=(10.0, 20.0))
    tally.failed("poll", 3.0)

    seen = health(tally, 4.0, mode=HYBRID)

    assert (seen.items_pushed, seen.items_polled, seen.polls) == (3, 2, 2)
    assert (seen.successes, seen.failures) == (2, 1)
    assert (seen.last_success, seen.last_failure) == (2.0, 3.0)
    assert seen.mean_lag == pytest.approx(6.6)
    assert seen.error_rate == pytest.approx(0.1)


def test_a_push_only_source_whose_push_keeps_failing_is_unhealthy() -> None:
    tally = HealthTally(registered_at=0.0)
    tally.succeeded("push", 1.0)
    for n in range(10):
        tally.failed("push", 10.0 + n)

    seen = health(tally, 120.0)

    assert seen.mode == EVENT_ONLY
    assert seen.consecutive_failures == 10
    assert seen.score < 0.5


def test_in_polling_only_the_poll_path_is_what_counts() -> None:
    tally = HealthTally(registered_at=0.0)
    for n in range(10):
        tally.failed("push", float(n))  # push is being probed and still fails
    for n in range(20):
        tally.succeeded("poll", 10.0 + n)

    seen = health(tally, 40.0, mode=POLLING_ONLY)

    assert seen.consecutive_failures == 0
    assert seen.score == pytest.approx(0.6 * (1 - seen.error_rate))


def test_a_source_that_never_succeeded_ages_from_its_registration() -> None:
    tally = HealthTally(registered_at=100.0)

    assert health(tally, 130.0).score == 1.0
    assert health(tally, 160.0).score == pytest.approx(0.5)


def test_an_unknown_path_is_refused() -> None:
    with pytest.raises(ValueError, match="path must be 'push' or 'poll'"):
        HealthTally(registered_at=0.0).failed("reconcile", 1.0)
