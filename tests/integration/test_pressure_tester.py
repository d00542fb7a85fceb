"""LocustPressureTester against real sample targets on loopback, Locust in its own process.

The sample target's true capacity is slots / service time (here 2 / 20 ms = 100 req/s); the
search must find it within ±20 % with short steps (1 s warm-up, 3 s hold).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from eventcenter.domain.errors import LoadTestFailed, TargetUnreachable
from eventcenter.domain.knee import KneeRule, Step
from eventcenter.domain.ports import LoadTest, PressureTester
from eventcenter.domain.step_plan import NextStep, StepPlan, next_step
from eventcenter.pressure.tester import LocustPressureTester, rule_for
from tests.sample_targets import gone, sample_target
from tests.servers import closed_port

SLO = KneeRule(slo_p95=0.2)
QUICK = StepPlan(
    start_rate=50, growth=1.5, warmup=1, hold=3, resolution=0.1, max_duration=60, max_steps=8
)
ENDLESS = Path(__file__).with_name("locust_endless.py")


def test_the_tester_is_a_pressure_tester() -> None:
    tester: PressureTester = LocustPressureTester()
    assert tester.measure is not None


async def test_finds_the_capacity_of_a_target_and_reports_each_step() -> None:
    tester = LocustPressureTester()
    seen: list[tuple[Step, NextStep]] = []

    async def on_step(step: Step, nxt: NextStep) -> None:
        seen.append((step, nxt))

    with sample_target(slots=2, service_ms=20) as target:
        measurement = await tester.measure(LoadTest(target.url, SLO, QUICK), on_step)

    assert measurement.verdict == "capacity", measurement
    assert 80 <= measurement.max_rps <= 120, measurement.curve
    assert measurement.upper is not None
    assert measurement.upper <= 1.2 * 100
    # one call per step, in order, each with what the plan decides after it
    assert [s.as_dict() for s, _ in seen] == measurement.curve
    rule = rule_for(SLO)
    for index, (_, nxt) in enumerate(seen):
        assert nxt == next_step(QUICK, rule, [s for s, _ in seen[: index + 1]])
    assert seen[-1][1].done
    assert gone(tester.pid or 0)
    assert measurement.settings["rule"]["latency_growth"] == tester.head_room
    assert len(measurement.settings["generator"]["steps"]) == len(seen)


async def test_a_resumed_test_goes_on_from_the_steps_already_measured() -> None:
    before = Step(offered=50, achieved=50, p50=0.02, p95=0.03, p99=0.04, error_rate=0, duration=3)
    plan = QUICK.model_copy(update={"max_steps": 2})
    offered: list[float] = []

    async def on_step(step: Step, nxt: NextStep) -> None:
        offered.append(step.offered)

    with sample_target(slots=2, service_ms=20) as target:
        measurement = await LocustPressureTester().measure(
            LoadTest(target.url, SLO, plan, done=(before,)), on_step
        )

    assert offered == [75.0], "the ramp goes on from 50 req/s instead of starting over"
    assert measurement.curve[0] == before.as_dict()
    assert [s["offered"] for s in measurement.curve] == [50, 75]
    assert measurement.settings["resumed_steps"] == 1


async def test_a_search_already_finished_answers_without_load() -> None:
    done = (
        Step(offered=50, achieved=50, p50=0.02, p95=0.03, p99=0.04, error_rate=0, duration=3),
        Step(offered=75, achieved=60, p50=0.3, p95=0.5, p99=0.6, error_rate=0, duration=3),
    )
    plan = QUICK.model_copy(update={"max_steps": 2})
    tester = LocustPressureTester()

    measurement = await tester.measure(
        LoadTest(f"http://127.0.0.1:{closed_port()}", SLO, plan, done)
    )

    assert tester.pid is None
    assert (measurement.verdict, measurement.max_rps, measurement.upper) == ("capacity", 50, 75)


async def test_an_unreachable_target_is_refused_before_any_load() -> None:
    tester = LocustPressureTester(preflight_timeout=1.0)
    target = f"http://127.0.0.1:{closed_port()}/"

    with pytest.raises(TargetUnreachable) as caught:
        await tester.measure(LoadTest(target, SLO, QUICK))

    assert caught.value.target == target
    assert target in str(caught.value)
    assert tester.pid is None


async def test_cancelling_the_measurement_stops_the_load_generator() -> None:
    tester = LocustPressureTester()
    measured = asyncio.Event()

    async def on_step(step: Step, nxt: NextStep) -> None:
        measured.set()

    with sample_target(slots=2, service_ms=20) as target:
        task = asyncio.create_task(tester.measure(LoadTest(target.url, SLO, QUICK), on_step))
        await asyncio.wait_for(measured.wait(), 15)  # Locust is up and offering the next step
        assert tester.pid is not None
        assert not gone(tester.pid)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert gone(tester.pid)


async def test_the_hard_time_limit_stops_a_generator_that_does_not_end() -> None:
    tester = LocustPressureTester(locustfile=ENDLESS, grace=1.0, stop_wait=1.0)
    plan = StepPlan(warmup=0.5, hold=1, max_duration=2)
    started = time.monotonic()
    with sample_target(slots=2, service_ms=20) as target, pytest.raises(LoadTestFailed) as caught:
        await tester.measure(LoadTest(target.url, SLO, plan))

    assert "hard time limit of 3s" in caught.value.reason
    assert time.monotonic() - started < 8
    assert caught.value.steps == ()
    assert tester.pid is not None
    assert gone(tester.pid)


async def test_a_generator_that_fails_to_start_is_a_failed_test_with_its_error(
    tmp_path: Path,
) -> None:
    broken = tmp_path / "broken_locustfile.py"
    broken.write_text("raise RuntimeError('no locust here')\n")
    tester = LocustPressureTester(locustfile=broken)
    with sample_target(slots=2, service_ms=20) as target, pytest.raises(LoadTestFailed) as caught:
        await tester.measure(LoadTest(target.url, SLO, QUICK))

    assert "no locust here" in caught.value.reason
    assert tester.pid is not None
    assert gone(tester.pid)
