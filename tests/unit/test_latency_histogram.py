"""The latency window's histogram: each sample in the first bucket whose bound it does not
exceed, cumulative counts, a sum over every sample (the ring forgets, the histogram does not)."""

from __future__ import annotations

import pytest

from eventcenter.handlers.metrics import LATENCY_BUCKETS, LatencyWindow

INF = float("inf")


def test_a_sample_on_a_bound_counts_in_that_bound_and_every_larger_one() -> None:
    window = LatencyWindow()
    for seconds in (0.0005, 0.001, 0.003, 0.3, 100.0):
        window.add(seconds)

    cumulative, total = window.histogram()

    counts = dict(cumulative)
    assert list(counts) == [*LATENCY_BUCKETS, INF]
    assert counts[0.001] == 2  # 0.0005 and 0.001 itself (le: less than or equal)
    assert counts[0.0025] == 2
    assert counts[0.005] == 3
    assert counts[0.25] == 3
    assert counts[0.5] == 4
    assert counts[60.0] == 4  # 100 s exceeds every bound
    assert counts[INF] == 5 == window.count
    assert total == pytest.approx(0.0005 + 0.001 + 0.003 + 0.3 + 100.0)


def test_the_histogram_keeps_every_sample_the_ring_forgot() -> None:
    window = LatencyWindow(size=4)
    for _ in range(10):
        window.add(0.02)

    cumulative, total = window.histogram()

    assert dict(cumulative)[INF] == 10
    assert dict(cumulative)[0.01] == 0
    assert dict(cumulative)[0.025] == 10
    assert total == pytest.approx(0.2)
    assert window.summary()["count"] == 10


def test_an_empty_window_has_zero_counts_and_sum() -> None:
    cumulative, total = LatencyWindow().histogram()
    assert {count for _, count in cumulative} == {0}
    assert total == 0.0
