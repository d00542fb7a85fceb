"""The engines' reconnect back-off: client-go's 0.8 s doubling to 30 s, jitter within bounds."""

from __future__ import annotations

import random

import pytest

from eventcenter.domain.backoff import ReconnectBackoff, spread_delay

CLIENT_GO_CEILINGS = [0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0, 30.0]


def test_without_jitter_the_delay_doubles_from_800_ms_up_to_30_s() -> None:
    backoff = ReconnectBackoff()
    delays = [backoff.delay(attempt, jitter=0.0) for attempt in range(1, 10)]
    assert delays == pytest.approx(CLIENT_GO_CEILINGS)


def test_jitter_takes_off_at_most_half_and_never_exceeds_the_cap() -> None:
    backoff = ReconnectBackoff()
    rng = random.Random(7)
    for attempt in list(range(1, 12)) * 20:
        ceiling = backoff.ceiling(attempt)
        delay = backoff.delay(attempt, rng.random())
        assert ceiling / 2 <= delay <= ceiling <= 30.0


@pytest.mark.parametrize(("jitter", "expected"), [(0.0, 4.0), (0.5, 3.0), (1.0, 2.0)])
def test_the_jitter_draw_maps_linearly_onto_the_spread(jitter: float, expected: float) -> None:
    assert spread_delay(3, base=1.0, cap=60.0, jitter=jitter, spread=0.5) == pytest.approx(expected)


def test_delays_of_many_reconnects_at_the_cap_still_differ() -> None:
    backoff = ReconnectBackoff()
    rng = random.Random(1)
    delays = {round(backoff.delay(50, rng.random()), 6) for _ in range(20)}
    assert len(delays) > 1


def test_a_very_late_attempt_stays_at_the_cap() -> None:
    assert ReconnectBackoff().delay(5_000, jitter=0.0) == 30.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base": 0.0}, "base must be > 0"),
        ({"base": 2.0, "cap": 1.0}, "must be at least its base"),
        ({"spread": 1.5}, "spread must be in"),
    ],
)
def test_settings_that_cannot_work_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ReconnectBackoff(**kwargs)


@pytest.mark.parametrize(("attempt", "jitter"), [(0, 0.5), (1, -0.1), (1, 1.1)])
def test_an_attempt_or_jitter_out_of_range_is_refused(attempt: int, jitter: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        ReconnectBackoff().delay(attempt, jitter)
