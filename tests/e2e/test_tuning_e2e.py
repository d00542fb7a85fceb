"""The deployment-change workflow end to end, every part real: a sample target of known
capacity (a process of its own), Locust driven by the center's tester, sample agents over HTTP
on loopback, the store on SQLite and PostgreSQL, and the center stopped in the middle of the
load test and started again."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from eventcenter.center.app import EventCenter
from eventcenter.center.settings import CenterSettings
from eventcenter.center.tuning import CenterTuningSettings
from eventcenter.domain.fsm import LOAD_TESTING, STABLE
from eventcenter.domain.step_plan import StepPlan
from eventcenter.domain.throughput import ThroughputRecorder
from eventcenter.domain.tuning_run import FAILED, TUNED, TuningRun
from eventcenter.pressure.tester import LocustPressureTester
from tests.integration.agents import sample_agents
from tests.integration.test_tuning_center import run_of, tuned, wait_for
from tests.sample_targets import sample_target

CAPACITY = 100.0  # 2 slots x 20 ms
LOCUST_WAIT_S = 150.0  # only turns a hang into a failure: Locust starts slowly on a busy machine


def settings(url: str, tmp_path: Path) -> CenterSettings:
    plan = StepPlan(start_rate=25, growth=2, warmup=1, hold=3, resolution=0.1, max_duration=150)
    return CenterSettings(
        database_url=url,
        data_dir=tmp_path / "data",
        tuning=CenterTuningSettings(slo_p95=0.25, plan=plan, dispatch_attempts=2),
    )


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
async def test_a_deployment_is_load_tested_resumed_after_a_restart_and_tuned(
    database_url: str, tmp_path: Path
) -> None:
    config = settings(database_url, tmp_path)
    with sample_target(2, 20) as target:
        async with sample_agents("a1", "a2") as (a1, a2):
            payload = {
                "service": "checkout",
                "signature": "sha256:4f2a",
                "target": target.url,
                "agents": [
                    {"name": "a1", "url": a1.url, "weight": 1},
                    {"name": "a2", "url": a2.url, "weight": 1},
                ],
            }
            first_tester = LocustPressureTester()
            async with EventCenter(config, pressure=first_tester) as first:
                event_id = await first.publish(
                    "deployment.changed", payload, tenant="acme", correlation_id="deploy-1"
                )

                async def two_steps() -> bool:
                    run = await first.tuning.store.get(TuningRun.create_id(event_id))
                    if isinstance(run, TuningRun) and run.status == FAILED:
                        raise AssertionError(f"the run ended before two steps: {run.outcome}")
                    return run is not None and len(run.steps) >= 2

                try:
                    await wait_for(two_steps, "two measured steps", LOCUST_WAIT_S)
                except AssertionError as waited:  # say where the run stood: a hang, or an end
                    run = await first.tuning.store.get(TuningRun.create_id(event_id))
                    where = (
                        "no run"
                        if not isinstance(run, TuningRun)
                        else (
                            f"run {run.status}, {len(run.steps)} step(s), outcome {run.outcome!r}"
                        )
                    )
                    state = first.processor.state.state
                    raise AssertionError(f"{waited}: {where}, processor {state}") from None
                assert first.processor.state.state == LOAD_TESTING
                locust = first_tester.pid
                assert locust is not None
            assert gone(locust), "stopping the center stopped Locust"
            assert a1.applied == [], "nothing was dispatched before the test ended"

            second = EventCenter(config)
            async with second:
                await wait_for(lambda: tuned(second, event_id), "the resumed run", LOCUST_WAIT_S)
                run = await run_of(second, event_id)
                assert run.interruptions == 1
                assert run.status == TUNED
                record = await second.tuning.store.get(
                    ThroughputRecorder.create_id("checkout", "sha256:4f2a")
                )
                assert isinstance(record, ThroughputRecorder)
                measured = record.latest
                assert measured is not None
                assert measured.verdict == "capacity"
                assert measured.max_rps == pytest.approx(CAPACITY, rel=0.2)
                assert len(measured.curve) == len(run.steps) > 2
                assert second.processor.state.state == STABLE
                [one], [two] = a1.applied, a2.applied
                assert one.rate == pytest.approx(two.rate)
                assert one.rate + two.rate == pytest.approx(0.8 * measured.max_rps)
                assert one.correlation_id == "deploy-1"
                trail = await asyncio.to_thread(second.decisions)
                kinds = [row.kind for row in trail if row.correlation_id == "deploy-1"]
                assert kinds.count("load_test.step") == len(run.steps)
                assert "tuning.interrupted" in kinds
                assert kinds[-2:] == ["tuning.done", "transition"]  # then settled
