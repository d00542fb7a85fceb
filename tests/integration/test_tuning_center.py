"""The deployment-change workflow in a real EventCenter on SQLite and PostgreSQL: what it
records survives a restart, a center stopped in the middle of a load test resumes the search
from the recorded steps, and a signature on record is reused by the next center."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from eventcenter.center.app import EventCenter
from eventcenter.center.settings import CenterSettings
from eventcenter.center.tuning import CenterTuningSettings
from eventcenter.domain.fsm import STABLE
from eventcenter.domain.rca import REDUCE_FREQUENCY
from eventcenter.domain.throughput import ThroughputRecorder
from eventcenter.domain.tuning_run import TUNED, ServiceTuning, TuningRun
from eventcenter.handlers.config import ProcessorSettings
from eventcenter.healing.strategies import ReduceFrequency
from tests.integration.agents import sample_agents
from tests.servers import free_port
from tests.unit.test_tuning_workflow import AGENTS, ScriptedDispatcher, ScriptedTester

WAIT_S = 30.0  # only turns a hang into a failure


def settings(url: str, tmp_path: Path) -> CenterSettings:
    return CenterSettings(
        database_url=url,
        data_dir=tmp_path / "data",
        processor=ProcessorSettings(backoff_base=0.01, backoff_max=0.05),
        tuning=CenterTuningSettings(slo_p95=0.2),
    )


async def wait_for(condition: Callable[[], Any], what: str, seconds: float = WAIT_S) -> None:
    """Until ``condition()`` (awaited) holds; the store is written by the writer thread."""
    for _ in range(int(seconds / 0.02)):
        if await condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"still waiting for {what} after {seconds}s")


async def deploy(center: EventCenter, signature: str, correlation_id: str) -> str:
    return await center.publish(
        "deployment.changed",
        {"service": "api", "signature": signature, "target": "http://t", "agents": AGENTS},
        correlation_id=correlation_id,
    )


async def run_of(center: EventCenter, event_id: str) -> TuningRun:
    run = await center.tuning.store.get(TuningRun.create_id(event_id))
    assert isinstance(run, TuningRun)
    return run


async def tuned(center: EventCenter, event_id: str) -> bool:
    run = await center.tuning.store.get(TuningRun.create_id(event_id))
    return run is not None and run.status == TUNED and not center.tuning.busy


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
async def test_a_center_stopped_during_a_load_test_resumes_it_after_the_restart(
    database_url: str, tmp_path: Path
) -> None:
    config = settings(database_url, tmp_path)
    tester = ScriptedTester({"http://t": 200.0})
    tester.hold_after = 3
    first = EventCenter(config, pressure=tester, dispatcher=ScriptedDispatcher())
    async with first:
        event_id = await deploy(first, "sha-1", "deploy-1")
        await asyncio.wait_for(tester.held.wait(), WAIT_S)
        run = await run_of(first, event_id)
        assert (run.status, len(run.steps)) == ("testing", 3)
    # stopped: the load test was cancelled with the center

    again = ScriptedTester({"http://t": 200.0})
    dispatcher = ScriptedDispatcher()
    second = EventCenter(config, pressure=again, dispatcher=dispatcher)
    async with second:
        await wait_for(lambda: tuned(second, event_id), "the resumed run")
        [resumed] = again.calls
        assert len(resumed.done) == 3, "the search went on from the recorded steps"
        run = await run_of(second, event_id)
        assert run.interruptions == 1
        assert len(run.steps) > 3
        assert second.processor.state.state == STABLE
        [(_, _, correlation)] = dispatcher.sent
        assert correlation == "deploy-1"
        record = await second.tuning.store.get(ThroughputRecorder.create_id("api", "sha-1"))
        assert isinstance(record, ThroughputRecorder)
        assert record.latest is not None
        assert record.latest.max_rps == pytest.approx(200, rel=0.1)
        trail = [
            row
            for row in await asyncio.to_thread(second.decisions)
            if row.correlation_id == "deploy-1"
        ]
        kinds = [row.kind for row in trail]
        assert "tuning.interrupted" in kinds
        assert kinds.count("load_test.step") == len(run.steps), "each step recorded once"
        aborts = [row for row in trail if row.kind == "transition" and "abort" in row.summary]
        assert aborts, "the interrupted test was aborted, and that was recorded"


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
async def test_the_next_center_reuses_the_record_and_tunes_on_from_the_recorded_control(
    database_url: str, tmp_path: Path
) -> None:
    config = settings(database_url, tmp_path)
    tester = ScriptedTester({"http://t": 200.0})
    async with EventCenter(config, pressure=tester, dispatcher=ScriptedDispatcher()) as first:
        event_id = await deploy(first, "sha-1", "deploy-1")
        await wait_for(lambda: tuned(first, event_id), "the first run")
        version = first.tuning.coordinator.control("api").version

    again = ScriptedTester({"http://t": 200.0})
    dispatcher = ScriptedDispatcher()
    async with EventCenter(config, pressure=again, dispatcher=dispatcher) as second:
        assert second.tuning.coordinator.control("api").version == version, "restored"
        event_id = await deploy(second, "sha-1", "deploy-2")
        await wait_for(lambda: tuned(second, event_id), "the second run")
        assert again.calls == [], "the recorded capacity was reused"
        [(adjustment, _, _)] = dispatcher.sent
        assert adjustment.version == version + 1
        tuning = await second.tuning.store.get(ServiceTuning.create_id("api"))
        assert isinstance(tuning, ServiceTuning)
        assert tuning.published_version == version + 1
        assert {agent: d["ok"] for agent, d in tuning.dispatches.items()} == {
            "a1": True,
            "a2": True,
        }


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
async def test_agents_get_their_frequencies_over_http_and_a_dead_agent_opens_an_rca_case(
    database_url: str, tmp_path: Path
) -> None:
    config = settings(database_url, tmp_path)
    tester = ScriptedTester({"http://t": 200.0})
    async with sample_agents("a1", "a2") as (a1, a2):
        dead = f"http://127.0.0.1:{free_port()}/frequency"  # nothing listens there
        agents = [
            {"name": "a1", "url": a1.url, "weight": 3},
            {"name": "a2", "url": a2.url, "weight": 1},
            {"name": "gone", "url": dead, "weight": 1},
        ]
        async with EventCenter(config, pressure=tester) as center:
            event_id = await center.publish(
                "deployment.changed",
                {"service": "api", "signature": "sha-1", "target": "http://t", "agents": agents},
                tenant="acme",
                correlation_id="deploy-1",
            )
            await wait_for(lambda: tuned(center, event_id), "the run")

            [one], [two] = a1.applied, a2.applied
            assert (one.service, one.version, two.version) == ("api", 1, 1)
            assert one.rate == pytest.approx(3 * two.rate)
            assert one.rate + two.rate == pytest.approx(0.8 * 200 * 4 / 5, rel=0.1)
            assert one.correlation_id == "deploy-1"
            tuning = await center.tuning.store.get(ServiceTuning.create_id("api"))
            assert isinstance(tuning, ServiceTuning)
            assert {a: d["ok"] for a, d in tuning.dispatches.items()} == {
                "a1": True,
                "a2": True,
                "gone": False,
            }
            assert tuning.dispatches["gone"]["attempts"] == config.tuning.dispatch_attempts
            run = await run_of(center, event_id)
            assert "sent to 2 of 3 agent(s)" in run.outcome

            async def dispatch_case() -> bool:
                rows = await center.healing.cases.cases()
                return any(row.source == "api:gone" for row in rows)

            await wait_for(dispatch_case, "the dispatch failure's rca case")


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
async def test_healing_reduces_a_tuned_service_through_the_centers_tuning_and_the_hold_is_kept(
    database_url: str, tmp_path: Path
) -> None:
    """The center connects ``reduce_frequency`` to its tuning: a reduction for a source listed
    in ``[tuning] sources`` is the service's adjustment in the store, and the next center
    restores the hold with the control."""
    config = settings(database_url, tmp_path).model_copy(
        update={"tuning": CenterTuningSettings(slo_p95=0.2, sources={"api": ["acme/orders"]})}
    )
    dispatcher = ScriptedDispatcher()
    tester = ScriptedTester({"http://t": 200.0})
    async with EventCenter(config, pressure=tester, dispatcher=dispatcher) as first:
        event_id = await deploy(first, "sha-1", "deploy-1")
        await wait_for(lambda: tuned(first, event_id), "the run")
        strategy = first.healing.runner.strategies.get(REDUCE_FREQUENCY)
        assert isinstance(strategy, ReduceFrequency)
        assert strategy.frequency is not None

        done = await strategy.frequency.reduce(
            "acme", "orders", factor=2.0, reason="429 from orders", correlation_id="rca-1"
        )
        unknown = await strategy.frequency.reduce(
            "acme", "other", factor=2.0, reason="429", correlation_id="rca-2"
        )

        [(measured, _, _), (reduced, _, correlation)] = dispatcher.sent
        assert done is not None
        assert done.startswith(f"api reduced to {reduced.target:.4g} req/s (version 2)")
        assert unknown is None
        assert reduced.target == pytest.approx(measured.target / 2)
        assert correlation == "rca-1"
        tuning = await first.tuning.store.get(ServiceTuning.create_id("api"))
        assert isinstance(tuning, ServiceTuning)
        assert tuning.published_version == 2
        assert tuning.control is not None
        assert tuning.control["hold"] == pytest.approx(reduced.target)

    async with EventCenter(config, pressure=tester, dispatcher=ScriptedDispatcher()) as second:
        assert second.tuning.coordinator.control("api").hold == pytest.approx(reduced.target)
