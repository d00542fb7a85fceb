"""Sizing, pacing and measuring one load-test step (pressure/step_meter.py), on fake clocks."""

from __future__ import annotations

import heapq
import random

import pytest

from eventcenter.pressure.step_meter import (
    MAX_BACKLOG,
    Pacer,
    StepMeter,
    generator_saturated,
    interval_for,
    lag_limit,
    users_for,
)


class TestSizing:
    def test_users_cover_the_rate_for_answers_up_to_head_room_times_the_slo(self) -> None:
        assert users_for(100, 0.2, 2.0, max_users=5000) == 40
        assert users_for(101, 0.2, 2.0, max_users=5000) == 41  # rounded up

    def test_at_least_one_user_and_at_most_the_cap(self) -> None:
        assert users_for(1, 0.01, 2.0, max_users=5000) == 1
        assert users_for(10_000, 1.0, 2.0, max_users=500) == 500

    def test_each_user_starts_one_request_per_users_over_rate_seconds(self) -> None:
        assert interval_for(100, 40) == pytest.approx(0.4)

    def test_nonsense_is_refused(self) -> None:
        with pytest.raises(ValueError, match="positive"):
            users_for(0, 0.2, 2.0, max_users=10)


class TestPacer:
    def test_the_first_start_of_a_step_falls_within_one_interval(self) -> None:
        delays = [Pacer(random.Random(seed)).delay(100.0, 0.5, epoch=1) for seed in range(50)]
        assert all(0 <= d < 0.5 for d in delays)
        assert max(delays) - min(delays) > 0.3, "phases spread over the interval"

    def test_starts_follow_the_schedule_whatever_the_answers_took(self) -> None:
        pacer = Pacer(random.Random(1))
        first = 10.0 + pacer.delay(10.0, 0.5, epoch=1)
        # a fast answer: wait for the next slot
        assert first + 0.01 + pacer.delay(first + 0.01, 0.5, 1) == pytest.approx(first + 0.5)
        # a slow answer (0.7 s > interval): start at once, still on the schedule's count
        now = first + 0.5 + 0.7
        assert pacer.delay(now, 0.5, 1) == 0.0
        assert now + pacer.delay(now, 0.5, 1) == pytest.approx(first + 1.5)

    def test_a_long_stall_catches_up_a_bounded_number_of_starts(self) -> None:
        pacer = Pacer(random.Random(1))
        pacer.delay(0.0, 0.1, epoch=1)
        now = 100.0  # stalled for 100 s: 1000 starts missed
        immediate = 0
        while pacer.delay(now, 0.1, 1) == 0.0:
            immediate += 1
        assert immediate <= MAX_BACKLOG + 1

    def test_a_new_step_restarts_the_schedule_at_its_rate(self) -> None:
        pacer = Pacer(random.Random(2))
        pacer.delay(0.0, 1.0, epoch=1)
        assert pacer.delay(5.0, 0.2, epoch=2) < 0.2

    def test_users_together_offer_the_rate_when_answers_are_fast(self) -> None:
        assert offered(rate=200, users=80, latency=0.02) == pytest.approx(200, rel=0.03)

    def test_the_rate_holds_while_answers_stay_within_the_interval_of_a_user(self) -> None:
        # 80 users at 200 req/s: one start each 0.4 s; answers of 0.35 s do not slow them
        assert offered(rate=200, users=80, latency=0.35) == pytest.approx(200, rel=0.03)

    def test_answers_slower_than_the_users_can_absorb_lower_the_rate(self) -> None:
        # a closed-model limit: 80 users, 1 s answers: at most 80 req/s
        assert offered(rate=200, users=80, latency=1.0) == pytest.approx(80, rel=0.05)


def offered(rate: float, users: int, latency: float, seconds: float = 10.0) -> float:
    """Starts per second of ``users`` paced users over [1, 1 + seconds] (event simulation)."""
    interval = interval_for(rate, users)
    rng = random.Random(7)
    pacers = [Pacer(rng) for _ in range(users)]
    queue = [(pacer.delay(0.0, interval, 1), i) for i, pacer in enumerate(pacers)]
    heapq.heapify(queue)
    starts = 0
    while queue:
        start, i = heapq.heappop(queue)
        if start > 1 + seconds:
            break
        starts += start >= 1
        answered = start + latency
        heapq.heappush(queue, (answered + pacers[i].delay(answered, interval, 1), i))
    return starts / seconds


class TestStepMeter:
    def test_achieved_counts_answers_inside_the_window_and_percentiles_those_started_in_it(
        self,
    ) -> None:
        meter = StepMeter()
        for n in range(100):  # 10 req/s from t=0 to t=10, each answered in 50 ms
            start = n * 0.1
            meter.end(meter.begin(start), start + 0.05, 0.05, failed=n % 10 == 0)
        step = meter.measure(10.0, start=2.0, end=7.0, now=7.5)
        assert step.achieved == pytest.approx(10.0, abs=0.2)
        assert (step.p50, step.p95, step.p99) == (0.05, 0.05, 0.05)
        assert step.error_rate == pytest.approx(0.1, abs=0.02)
        assert step.duration == 5.0
        assert not step.generator_saturated

    def test_unanswered_requests_count_with_the_time_they_have_waited(self) -> None:
        meter = StepMeter()
        for n in range(50):
            start = 1.0 + n * 0.1
            token = meter.begin(start)
            if n < 25:  # the first half answers fast, the rest never does
                meter.end(token, start + 0.01, 0.01, failed=False)
        step = meter.measure(10.0, start=1.0, end=6.0, now=6.5)
        assert step.p95 >= 1.0, "the waiting half drives the p95"
        assert step.achieved == pytest.approx(5.0, abs=0.2)
        assert step.error_rate == 0.0

    def test_a_new_step_ignores_the_last_steps_requests(self) -> None:
        meter = StepMeter()
        old = meter.begin(0.5)
        meter.reset()
        meter.end(old, 1.2, 0.7, failed=True)
        step = meter.measure(10.0, start=1.0, end=2.0, now=2.1)
        assert (step.achieved, step.error_rate, step.p95) == (0.0, 0.0, 0.0)

    def test_the_loop_lateness_of_the_window_is_kept(self) -> None:
        meter = StepMeter()
        for n in range(100):
            meter.lagged(n * 0.05, 0.05 if n >= 90 else 0.001)
        assert meter.lag_p95(0.0, 5.0) == 0.05
        assert meter.lag_p95(0.0, 4.0) == 0.001

    def test_the_window_must_last(self) -> None:
        with pytest.raises(ValueError, match="positive"):
            StepMeter().measure(10, start=2.0, end=2.0, now=3.0)


class TestGeneratorSaturation:
    def test_a_generator_busy_past_ninety_percent_of_a_core(self) -> None:
        assert generator_saturated(2.8, 3.0, lag_p95=0.0, slo_p95=0.2)
        assert not generator_saturated(2.5, 3.0, lag_p95=0.0, slo_p95=0.2)

    def test_a_generator_whose_loop_wakes_late(self) -> None:
        assert lag_limit(0.2) == pytest.approx(0.02)
        assert lag_limit(0.02) == 0.01  # never below 10 ms
        assert generator_saturated(0.5, 3.0, lag_p95=0.03, slo_p95=0.2)
        assert not generator_saturated(0.5, 3.0, lag_p95=0.01, slo_p95=0.2)
