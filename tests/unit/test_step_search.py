"""The step search the Locust process runs (pressure/step_search.py), driven on a fake clock
with the answers a target of known capacity would give."""

from __future__ import annotations

from typing import Any

import pytest

from eventcenter.domain.knee import KneeRule, Step, find_knee
from eventcenter.domain.step_plan import StepPlan, next_step
from eventcenter.pressure.step_search import SearchSpec, StepSearch

RULE = KneeRule(slo_p95=0.2, latency_growth=2.0)
PLAN = StepPlan(start_rate=50, growth=2, warmup=1, hold=3, resolution=0.1, max_duration=120)


def spec(**changes: Any) -> SearchSpec:
    values: dict[str, Any] = {
        "target": "http://127.0.0.1:8081/orders?x=1",
        "plan": PLAN,
        "rule": RULE,
        "progress": "/nowhere/progress.jsonl",
        "wall_limit": 100.0,
    }
    return SearchSpec(**{**values, **changes})


def run(search: StepSearch, capacity: float, until: float = 200.0) -> list[tuple[int, float]]:
    """Tick once a second; between ticks answer the offered rate as a target of ``capacity``
    would (10 ms below it, queueing beyond). Returns what each tick asked for."""
    asked: list[tuple[int, float]] = []
    now, cpu = 1000.0, 0.0
    while now < 1000.0 + until:
        answer = search.tick(now, cpu)
        if answer is None:
            return asked
        asked.append(answer)
        rate = search.rate or 0.0
        count = int(rate)
        for n in range(count):
            start = now + n / count
            latency = 0.01 if rate <= capacity else 0.5
            search.meter.end(search.meter.begin(start), start + latency, latency, False)
        now += 1.0
        cpu += 0.3
    raise AssertionError("the search did not end")


def test_the_search_finds_the_capacity_and_writes_one_line_per_step() -> None:
    lines: list[dict[str, Any]] = []
    search = StepSearch(spec(), lines.append)

    asked = run(search, capacity=150)

    steps = search.steps
    assert [s.offered for s in steps][:3] == [50, 100, 200]
    knee = find_knee(steps, RULE)
    assert knee.verdict == "capacity"
    assert 100 <= knee.max_rps <= 150 <= (knee.upper or 0)
    step_lines = [line for line in lines if line["event"] == "step"]
    assert [Step.from_dict(line["step"]) for line in step_lines] == steps
    for index, line in enumerate(step_lines):
        decision = next_step(PLAN, RULE, steps[: index + 1])
        assert line["next"] == {
            "rate": decision.rate,
            "phase": decision.phase,
            "reason": decision.reason,
        }
        assert line["users"] >= 1
    assert lines[-1]["event"] == "finished"
    assert asked[0] == (20, 200.0), "50 req/s x 0.2 s x head-room 2 = 20 users"
    assert search.tick(5000.0, 0.0) is None, "over: stays over"


def test_the_users_interval_follows_the_step() -> None:
    search = StepSearch(spec(), lambda line: None)
    users, _ = search.tick(0.0, 0.0) or (0, 0.0)
    assert search.interval == pytest.approx(users / 50)
    assert search.epoch == 1


def test_a_resumed_search_starts_where_the_plan_left_off() -> None:
    done = (Step(50, 50, 0.01, 0.01, 0.01, 0.0, 3.0), Step(100, 100, 0.01, 0.01, 0.01, 0.0, 3.0))
    search = StepSearch(spec(done=done), lambda line: None)
    search.tick(0.0, 0.0)
    assert search.rate == 200
    assert search.new_steps == []


def test_no_step_starts_that_would_end_past_the_wall_limit() -> None:
    lines: list[dict[str, Any]] = []
    search = StepSearch(spec(wall_limit=12.0), lines.append)
    run(search, capacity=10_000)
    assert len(search.steps) == 2  # 0-5 s and 5-10 s; a third would end near 15 s
    assert lines[-1]["event"] == "finished"
    assert "time limit" in lines[-1]["reason"]


def test_a_busy_generator_marks_its_steps() -> None:
    search = StepSearch(spec(), lambda line: None)
    now = 0.0
    search.tick(now, 0.0)
    for tick in range(1, 6):
        if search.tick(float(tick), tick * 0.95) is None:
            break
    assert search.steps[0].generator_saturated


def test_the_spec_travels_as_json() -> None:
    done = (Step(50, 49, 0.01, 0.02, 0.03, 0.0, 3.0),)
    original = spec(done=done, head_room=3.0)
    assert SearchSpec.from_json(original.to_json()) == original
    assert original.host == "http://127.0.0.1:8081"
    assert original.path == "/orders?x=1"
    assert spec(target="http://h:1").path == "/"
