"""The slow-down healing puts on a source's polling, and how it wears off (pure, no clock)."""

from __future__ import annotations

import pytest

from eventcenter.domain.errors import ConfigurationError
from eventcenter.domain.slowdown import SlowDown


def test_it_multiplies_up_to_its_cap() -> None:
    slow = SlowDown()
    assert [slow.slow(2.0, 8.0, 60.0, now) for now in (0.0, 1.0, 2.0, 3.0)] == [2, 4, 8, 8]


def test_each_quiet_period_takes_one_step_back_down_to_one() -> None:
    slow = SlowDown()
    slow.slow(2.0, 8.0, 60.0, 0.0)
    slow.slow(2.0, 8.0, 60.0, 0.0)
    assert not slow.relax(59.9)  # not quiet long enough
    assert slow.relax(60.0)
    assert slow.factor == 2.0
    assert not slow.relax(100.0)  # the period counts from the last step
    assert slow.relax(120.0)
    assert slow.factor == 1.0
    assert not slow.relax(1_000.0)  # nothing left to relax


def test_a_refusal_starts_the_quiet_period_over() -> None:
    slow = SlowDown()
    slow.slow(3.0, 9.0, 60.0, 0.0)
    slow.rate_limited(50.0)
    assert not slow.relax(100.0)
    assert slow.relax(110.0)
    assert slow.factor == 1.0  # 3 / 3


def test_a_refusal_without_a_slow_down_changes_nothing() -> None:
    slow = SlowDown()
    slow.rate_limited(50.0)
    assert slow.since == 0.0
    assert not slow.relax(1_000.0)


@pytest.mark.parametrize(
    ("by", "cap", "relax_after", "message"),
    [
        (1.0, 8.0, 60.0, "multiply by a number > 1"),
        (float("inf"), 8.0, 60.0, "multiply by a number > 1"),
        (2.0, 0.5, 60.0, "cap must be a number >= 1"),
        (2.0, 8.0, 0.0, "wear off after a number of seconds > 0"),
        (2.0, 8.0, float("nan"), "wear off after a number of seconds > 0"),
    ],
)
def test_settings_that_cannot_work_are_refused(
    by: float, cap: float, relax_after: float, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        SlowDown().slow(by, cap, relax_after, 0.0)
