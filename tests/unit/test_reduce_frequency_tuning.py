"""``reduce_frequency`` on a source whose polling follows a tuned service: the healing lowers
the service's frequency through the tuning port, in the tuning's own record, instead of
turning the source's load factor behind the tuning's back.

One fake clock drives a real SourceManager (fake paths), a real EventProcessor with the
built-in tuning handlers and the TuningWorkflow on memory stores; the service's one agent is
the sample agent, served in process through httpx's ASGI transport and reached by the real
HTTP dispatcher. The deployment's load test is the scripted tester of the workflow's tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from eventcenter.center.tuning import CenterTuningSettings, SourceKnobs, TunedFrequency
from eventcenter.domain.fsm import ADJUSTING, STABLE
from eventcenter.domain.rca import CaseSummary
from eventcenter.domain.source_modes import HYBRID
from eventcenter.domain.tuning_run import ServiceTuning
from eventcenter.handlers.builtin import BUILTIN_HANDLERS
from eventcenter.handlers.config import ProcessorSettings
from eventcenter.handlers.memory import MemoryDeadLetters, MemoryDecisionLog, MemoryTuningStore
from eventcenter.handlers.processor import EventProcessor
from eventcenter.handlers.tuning import TuningWorkflow
from eventcenter.healing.strategies import ReduceFrequency
from eventcenter.pressure.dispatcher import DispatchPolicy, HttpDispatcher
from eventcenter.pressure.sample_agent import FrequencyUpdate, create_agent_app
from eventcenter.sources.clock import FakeClock
from tests.unit.looping import GUARD_S, until
from tests.unit.source_fakes import SOURCE, TENANT
from tests.unit.test_source_manager import World, world
from tests.unit.test_tuning_workflow import ScriptedTester

START = 1_000_000.0
AGENT_URL = "http://agent-1.test/frequency"


def limited() -> CaseSummary:
    """A case of 429s on the source's poll path."""
    return CaseSummary(
        case_id="c-1",
        tenant=TENANT,
        source=SOURCE,
        category="rate_limited",
        status="healing",
        confidence=0.9,
        evidence=(),
        strategies=(),
        opened_at=START,
        failures=3,
        first_failure={"component": "source_poll"},
        last_failure={"component": "source_poll"},
        correlation_id="rca-c-1",
    )


async def no_wait(seconds: float) -> None:
    await asyncio.sleep(0)


@dataclass
class Rig:
    w: World
    processor: EventProcessor
    workflow: TuningWorkflow
    log: MemoryDecisionLog
    store: MemoryTuningStore
    applied: list[FrequencyUpdate]
    strategy: ReduceFrequency

    @property
    def clock(self) -> FakeClock:
        return self.w.clock

    async def publish(self, type_: str, payload: dict[str, Any], correlation_id: str) -> None:
        await self.processor.publish(type_, payload, correlation_id=correlation_id)
        await asyncio.wait_for(self.processor.join(), GUARD_S)

    async def tuned(self) -> float:
        """Deploy the service (capacity about 200 req/s) and wait until it is tuned; its
        target."""
        agents = [{"name": "agent-1", "url": AGENT_URL}]
        await self.publish(
            "deployment.changed",
            {"service": "api", "signature": "sha-1", "target": "http://t", "agents": agents},
            "deploy-1",
        )
        await asyncio.wait_for(self._tuned(), GUARD_S)
        return self.applied[-1].target

    async def _tuned(self) -> None:
        while True:
            if self.applied and not self.workflow.busy and not await self.store.open_runs():
                return
            await asyncio.sleep(0)

    def decisions(self, kind: str, correlation_id: str) -> list[dict[str, Any]]:
        return [
            d.details
            for d in self.log.decisions
            if d.kind == kind and d.correlation_id == correlation_id
        ]

    def recorded(self) -> dict[str, Any]:
        tuning = self.store.aggregates[ServiceTuning.create_id("api")]
        assert isinstance(tuning, ServiceTuning)
        assert tuning.adjustment is not None
        return tuning.adjustment


Build = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def build() -> AsyncIterator[Build]:
    made: list[tuple[Rig, HttpDispatcher]] = []

    async def make(sources: dict[str, list[str]] | None = None) -> Rig:
        clock = FakeClock(START)
        w = await world(clock)
        await w.runner.force_mode(HYBRID, "the poll path carries the data")
        settings = CenterTuningSettings(
            slo_p95=0.2,
            settle_after=60,
            tester="none",
            sources={"api": [f"{TENANT}/{SOURCE}"]} if sources is None else sources,
        )
        log = MemoryDecisionLog()
        processor = EventProcessor(
            ProcessorSettings(backoff_base=0.001, backoff_max=0.002),
            decisions=log,
            dead_letters=MemoryDeadLetters(),
        )
        for handler in BUILTIN_HANDLERS:
            processor.register(handler())
        applied: list[FrequencyUpdate] = []
        agent = create_agent_app("agent-1", on_update=applied.append)
        dispatcher = HttpDispatcher(
            DispatchPolicy(attempts=1),
            transport=httpx.ASGITransport(app=agent),
            sleep=no_wait,
            jitter=lambda: 0.0,
            wall_time=clock.now,
        )
        store = MemoryTuningStore()
        workflow = TuningWorkflow(
            store=store,
            state=processor.state,
            decisions=log,
            publish=processor.publish,
            settings=settings,
            tester=ScriptedTester({"http://t": 200.0}),
            dispatcher=dispatcher,
            clock=clock,
            wall=clock.now,
            on_adjustment=SourceKnobs(settings, w.manager),
        )
        processor.context.services["tuning"] = workflow
        strategy = ReduceFrequency(
            w.manager, clock, clock.now, frequency=TunedFrequency(settings, workflow)
        )
        await processor.start()
        await workflow.start()
        rig = Rig(w, processor, workflow, log, store, applied, strategy)
        made.append((rig, dispatcher))
        return rig

    yield make
    for rig, dispatcher in made:
        await rig.workflow.stop()
        await rig.processor.stop(timeout=0)
        await rig.w.manager.stop()
        await dispatcher.aclose()


async def verified(rig: Rig, seconds: float) -> bool:
    task = asyncio.ensure_future(rig.strategy.verify(limited()))
    elapsed = 0.0
    while not task.done() and elapsed < seconds:
        await rig.clock.advance(0.5)
        elapsed += 0.5
    if not task.done():
        task.cancel()
        return False
    return bool(task.result())


async def test_a_rate_limited_source_lowers_its_tuned_service_in_the_tunings_record(
    build: Build,
) -> None:
    rig = await build()
    target = await rig.tuned()
    assert target == pytest.approx(160, rel=0.1)  # headroom: 80 % of about 200 req/s
    assert rig.w.runner.load_factor == 1.0

    done = await rig.strategy.apply(limited())

    reduced = target / 2
    assert done == f"api reduced to {reduced:.4g} req/s (version 2); polling load factor 2"
    assert rig.recorded()["target"] == pytest.approx(reduced)
    assert rig.recorded()["version"] == 2
    [decided] = rig.decisions("frequency.adjusted", "rca-c-1")
    assert decided["reason"].startswith("reduced 2x to")
    assert "rca case c-1 (rate_limited): reduce frequency" in decided["reason"]
    assert [d["ok"] for d in rig.decisions("frequency.dispatched", "rca-c-1")] == [True]
    assert rig.applied[-1].version == 2
    assert rig.applied[-1].rate == pytest.approx(reduced)
    assert rig.w.runner.load_factor == 2.0, "the source's polling follows the service"
    assert rig.processor.state.state == ADJUSTING
    assert await verified(rig, 5)


async def test_a_later_latency_spike_moves_within_the_healing_and_quiet_lifts_it(
    build: Build,
) -> None:
    rig = await build()
    target = await rig.tuned()
    await rig.strategy.apply(limited())

    # headroom alone would go back to 80 % of the target for a latency at 1.25 x the SLO
    await rig.publish(
        "latency.spike", {"service": "api", "observed_ms": 250, "threshold_ms": 200}, "spike-1"
    )
    [mild] = rig.decisions("frequency.adjusted", "spike-1")
    assert mild["target"] == pytest.approx(target / 2), "not undone: held"
    assert "(held at" in mild["reason"]
    assert rig.w.runner.load_factor == 2.0
    assert rig.applied[-1].version == 2, "nothing new to send"

    # a worse spike may still come down further: the strategy decides, below the hold
    await rig.publish(
        "latency.spike", {"service": "api", "observed_ms": 800, "threshold_ms": 200}, "spike-2"
    )
    assert rig.applied[-1].target == pytest.approx(target / 4)
    assert rig.w.runner.load_factor == 4.0

    await rig.clock.advance(59)
    assert rig.processor.state.state == ADJUSTING, "still within the quiet period"
    await rig.clock.advance(2)
    await until(lambda: rig.processor.state.state == STABLE)

    assert rig.applied[-1].target == pytest.approx(target)
    assert rig.applied[-1].reason.startswith("recovered: the hold at")
    assert rig.w.runner.load_factor == 1.0
    assert rig.workflow.coordinator.control("api").hold is None


async def test_a_source_no_tuned_service_drives_doubles_its_own_load_factor(
    build: Build,
) -> None:
    rig = await build(sources={"api": ["acme/another"]})
    await rig.tuned()

    assert await rig.strategy.apply(limited()) == "polling load factor set to 2"

    assert rig.w.runner.load_factor == 2.0
    assert rig.decisions("frequency.adjusted", "rca-c-1") == []
    assert [u.version for u in rig.applied] == [1]
    assert await verified(rig, 5)


async def test_a_source_of_a_service_not_tuned_yet_doubles_its_own_load_factor(
    build: Build,
) -> None:
    rig = await build()

    assert await rig.strategy.apply(limited()) == "polling load factor set to 2"

    assert rig.w.runner.load_factor == 2.0
    assert rig.processor.state.state == STABLE
    assert rig.decisions("frequency.adjusted", "rca-c-1") == []
