"""The deployment-change workflow on a real EventProcessor, in memory, on a fake clock.

The tester and the dispatcher are scripted ports (what the Locust tester and the HTTP
dispatcher are tested for is in tests/integration); here the workflow's own rules: one run at a
time in order, a usable record reused, each step recorded with the deployment's correlation id,
a regression published, a spike lowering the rate and settling by itself, idle pausing, a
failure ending the run cleanly, a restart resuming the search from its steps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from eventcenter.domain.adjustment import Adjustment
from eventcenter.domain.deployments import ServiceDeployments
from eventcenter.domain.errors import TargetUnreachable
from eventcenter.domain.event import Event
from eventcenter.domain.fsm import ADJUSTING, LOAD_TESTING, STABLE
from eventcenter.domain.knee import Step, find_knee
from eventcenter.domain.ports import (
    AgentEndpoint,
    DispatchOutcome,
    LoadTest,
    StepMeasured,
)
from eventcenter.domain.step_plan import next_step
from eventcenter.domain.throughput import Measurement, ThroughputRecorder
from eventcenter.domain.tuning_run import FAILED, TUNED, ServiceTuning, TuningRun
from eventcenter.handlers.builtin import BUILTIN_HANDLERS
from eventcenter.handlers.config import ProcessorSettings
from eventcenter.handlers.memory import MemoryDeadLetters, MemoryDecisionLog, MemoryTuningStore
from eventcenter.handlers.processor import EventProcessor
from eventcenter.handlers.tuning import DispatchFailure, TuningSettings, TuningWorkflow
from eventcenter.sources.clock import FakeClock
from tests.unit.looping import GUARD_S, until

AGENTS = [
    {"name": "a1", "url": "http://127.0.0.1:1/frequency", "weight": 3},
    {"name": "a2", "url": "http://127.0.0.1:2/frequency", "weight": 1},
]


def plant_step(rate: float, capacity: float) -> Step:
    """What a target of ``capacity`` req/s shows when offered ``rate`` for 10 s."""
    if rate <= capacity:
        return Step(rate, rate, 0.02, 0.05, 0.08, 0.0, 10.0)
    return Step(rate, capacity, 0.3, 0.9, 1.2, 0.0, 10.0)


class ScriptedTester:
    """Runs the real step plan against a simulated target of a given capacity per target URL;
    ``hold`` pauses it after ``hold_after`` steps until released."""

    def __init__(self, capacities: dict[str, float]) -> None:
        self.capacities = capacities
        self.calls: list[LoadTest] = []
        self.running = 0
        self.most_at_once = 0
        self.hold_after: int | None = None
        self.held = asyncio.Event()
        self.release = asyncio.Event()
        self.fail_with: BaseException | None = None

    async def measure(self, test: LoadTest, on_step: StepMeasured | None = None) -> Measurement:
        self.calls.append(test)
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            if self.fail_with is not None:
                raise self.fail_with
            capacity = self.capacities[test.target]
            steps = list(test.done)
            while True:
                plan = next_step(test.plan, test.rule, steps)
                if plan.done or plan.rate is None:
                    break
                if self.hold_after is not None and len(steps) >= self.hold_after:
                    self.held.set()
                    await self.release.wait()
                steps.append(plant_step(plan.rate, capacity))
                if on_step is not None:
                    await on_step(steps[-1], next_step(test.plan, test.rule, steps))
            knee = find_knee(steps, test.rule)
            return Measurement.from_knee(knee, steps, duration=1.0, settings={})
        finally:
            self.running -= 1


@dataclass
class ScriptedDispatcher:
    """Takes every dispatch (or fails the agents named in ``failing``) and keeps them."""

    failing: set[str] = field(default_factory=set)
    sent: list[tuple[Adjustment, tuple[AgentEndpoint, ...], str]] = field(default_factory=list)

    async def dispatch(
        self, adjustment: Adjustment, endpoints: Sequence[AgentEndpoint], *, correlation_id: str
    ) -> list[DispatchOutcome]:
        self.sent.append((adjustment, tuple(endpoints), correlation_id))
        urls = {e.name: e.url for e in endpoints}
        return [
            DispatchOutcome(
                a.agent,
                urls[a.agent],
                adjustment.version,
                ok=a.agent not in self.failing,
                attempts=1 if a.agent not in self.failing else 4,
                status=200 if a.agent not in self.failing else 503,
                error="" if a.agent not in self.failing else "503 Service Unavailable",
            )
            for a in adjustment.agents
        ]


@dataclass
class Rig:
    processor: EventProcessor
    workflow: TuningWorkflow
    log: MemoryDecisionLog
    store: MemoryTuningStore
    tester: ScriptedTester
    dispatcher: ScriptedDispatcher
    clock: FakeClock
    published: list[Event]
    failures: list[DispatchFailure]
    deployments: list[Event] = field(default_factory=list)

    async def publish(self, type_: str, payload: dict[str, Any], correlation_id: str) -> None:
        await self.processor.publish(type_, payload, correlation_id=correlation_id)

    async def deploy(self, signature: str, correlation_id: str, target: str = "http://t") -> None:
        await self.publish(
            "deployment.changed",
            {"service": "api", "signature": signature, "target": target, "agents": AGENTS},
            correlation_id,
        )

    async def idle(self) -> None:
        """Until the processor is drained and the worker has no open run."""

        async def drained() -> None:
            while True:
                await self.processor.join()
                if not self.workflow.busy and not await self.store.open_runs():
                    await asyncio.sleep(0)
                    if not self.workflow.busy:
                        return
                await asyncio.sleep(0)

        await asyncio.wait_for(drained(), GUARD_S)

    def moves(self) -> list[tuple[str, str, str]]:
        return [(t.trigger, t.source, t.dest) for t in self.log.transitions]

    def kinds(self, correlation_id: str | None = None) -> list[str]:
        return [
            d.kind
            for d in self.log.decisions
            if correlation_id is None or d.correlation_id == correlation_id
        ]

    def runs(self) -> list[TuningRun]:
        found = [a for a in self.store.aggregates.values() if isinstance(a, TuningRun)]
        return sorted(found, key=lambda r: r.requested_at)

    def tuning(self) -> ServiceTuning:
        found = self.store.aggregates[ServiceTuning.create_id("api")]
        assert isinstance(found, ServiceTuning)
        return found


Build = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def build() -> AsyncIterator[Build]:
    made: list[Rig] = []

    async def make(
        *,
        store: MemoryTuningStore | None = None,
        tester: ScriptedTester | None = None,
        settings: TuningSettings | None = None,
        failing: set[str] | None = None,
    ) -> Rig:
        log = MemoryDecisionLog()
        clock = FakeClock(1_000.0)
        processor = EventProcessor(
            ProcessorSettings(backoff_base=0.001, backoff_max=0.002),
            decisions=log,
            dead_letters=MemoryDeadLetters(),
        )
        published: list[Event] = []

        async def keep(event: Event, ctx: object) -> None:
            published.append(event)

        processor.subscribe("capacity.regressed", keep, name="regressions")
        deployments: list[Event] = []

        async def seen(event: Event, ctx: object) -> None:
            deployments.append(event)

        processor.subscribe("deployment.changed", seen, name="deployments")
        for handler in BUILTIN_HANDLERS:
            processor.register(handler())
        store = store or MemoryTuningStore()
        tester = tester or ScriptedTester({"http://t": 200.0, "http://slow": 100.0})
        dispatcher = ScriptedDispatcher(failing or set())
        failures: list[DispatchFailure] = []
        workflow = TuningWorkflow(
            store=store,
            state=processor.state,
            decisions=log,
            publish=processor.publish,
            settings=settings or TuningSettings(slo_p95=0.2, settle_after=60),
            tester=tester,
            dispatcher=dispatcher,
            clock=clock,
            wall=clock.now,
            on_dispatch_failed=failures.append,
        )
        processor.context.services["tuning"] = workflow
        await processor.start()
        await workflow.start()
        rig = Rig(
            processor,
            workflow,
            log,
            store,
            tester,
            dispatcher,
            clock,
            published,
            failures,
            deployments,
        )
        made.append(rig)
        return rig

    yield make
    for rig in made:
        await rig.workflow.stop()
        await rig.processor.stop(timeout=0)


# --- a deployment, measured and tuned ------------------------------------------------------------


async def test_a_new_signature_is_measured_recorded_tuned_dispatched_and_back_to_stable(
    build: Build,
) -> None:
    rig = await build()

    await rig.deploy("sha-1", "deploy-1")
    await rig.idle()

    assert rig.moves() == [
        ("begin_load_test", STABLE, LOAD_TESTING),
        ("finish_load_test", LOAD_TESTING, ADJUSTING),
        ("settle", ADJUSTING, STABLE),
    ]
    assert all(t.correlation_id == "deploy-1" for t in rig.log.transitions)
    kinds = rig.kinds("deploy-1")
    assert kinds[:2] == ["tuning.requested", "load_test.started"]
    steps = [k for k in kinds if k == "load_test.step"]
    assert len(steps) == len(rig.tester.calls[0].done) + len(rig.runs()[0].steps) > 3
    assert kinds[-5:] == [
        "throughput.measured",
        "frequency.adjusted",
        "frequency.dispatched",
        "frequency.dispatched",
        "tuning.done",
    ]
    assert set(kinds) <= set(rig.kinds())  # every decision carries the deployment's id
    record = rig.store.aggregates[ThroughputRecorder.create_id("api", "sha-1")]
    assert isinstance(record, ThroughputRecorder)
    assert record.latest is not None
    capacity = record.latest.max_rps
    assert capacity == pytest.approx(200, rel=0.1)
    [(adjustment, endpoints, correlation)] = rig.dispatcher.sent
    assert correlation == "deploy-1"
    assert [e.name for e in endpoints] == ["a1", "a2"]
    assert adjustment.target == pytest.approx(0.8 * capacity)  # headroom at 80 %
    a1, a2 = adjustment.agents
    assert a1.rate == pytest.approx(3 * a2.rate)  # split by weight 3 : 1
    assert a2.interval == pytest.approx(1 / a2.rate)  # one request per poll
    assert a1.interval == 0.01, "never below min_interval"
    [run] = rig.runs()
    assert (run.status, run.capacity_source) == (TUNED, "measured")
    assert rig.tuning().dispatches["a1"]["ok"] is True


async def test_a_signature_on_record_is_reused_without_a_load_test(build: Build) -> None:
    rig = await build()
    await rig.deploy("sha-1", "deploy-1")
    await rig.idle()
    await rig.deploy("sha-2", "deploy-2")
    await rig.idle()

    await rig.deploy("sha-1", "deploy-3")  # a rollback to a measured image
    await rig.idle()

    assert len(rig.tester.calls) == 2
    assert "load_test.started" not in rig.kinds("deploy-3")
    assert "tuning.capacity_reused" in rig.kinds("deploy-3")
    third = [(t.trigger, t.correlation_id) for t in rig.log.transitions][-2:]
    assert third == [("begin_adjustment", "deploy-3"), ("settle", "deploy-3")]
    assert rig.runs()[-1].capacity_source == "recorded"
    assert rig.dispatcher.sent[-1][0].version == 3


async def test_deployments_during_a_load_test_wait_their_turn_and_never_overlap(
    build: Build,
) -> None:
    rig = await build()
    rig.tester.hold_after = 2

    await rig.deploy("sha-1", "deploy-1")
    await asyncio.wait_for(rig.tester.held.wait(), GUARD_S)
    await rig.deploy("sha-2", "deploy-2")
    await rig.deploy("sha-3", "deploy-3")
    await rig.processor.join()
    assert len(rig.tester.calls) == 1, "the others are queued, not started"
    assert rig.processor.state.state == LOAD_TESTING

    rig.tester.release.set()
    await rig.idle()

    assert [t.name for t in rig.tester.calls] == ["api@sha-1", "api@sha-2", "api@sha-3"]
    assert rig.tester.most_at_once == 1
    assert [r.status for r in rig.runs()] == [TUNED, TUNED, TUNED]
    assert rig.processor.state.state == STABLE


async def test_a_capacity_regression_is_recorded_and_published(build: Build) -> None:
    rig = await build()
    await rig.deploy("sha-1", "deploy-1")  # 200 req/s
    await rig.idle()

    await rig.deploy("sha-2", "deploy-2", target="http://slow")  # 100 req/s
    await rig.idle()
    await until(lambda: len(rig.published) == 1)

    [event] = rig.published
    assert (event.type, event.correlation_id) == ("capacity.regressed", "deploy-2")
    assert event.payload["previous_signature"] == "sha-1"
    assert event.payload["previous_rps"] == pytest.approx(200, rel=0.1)
    assert event.payload["max_rps"] == pytest.approx(100, rel=0.1)
    assert event.payload["drop"] > 0.4
    record = rig.store.aggregates[ThroughputRecorder.create_id("api", "sha-2")]
    assert isinstance(record, ThroughputRecorder)
    assert record.regression is not None
    assert "capacity.regressed" in rig.kinds("deploy-2")


async def test_a_faster_signature_is_no_regression(build: Build) -> None:
    rig = await build()
    await rig.deploy("sha-1", "deploy-1", target="http://slow")
    await rig.idle()
    await rig.deploy("sha-2", "deploy-2")
    await rig.idle()

    assert rig.published == []
    assert "capacity.regressed" not in rig.kinds()


# --- latency spikes, idle ------------------------------------------------------------------------


async def test_a_spike_lowers_the_rate_flags_a_retest_and_settles_by_itself(build: Build) -> None:
    rig = await build()
    await rig.deploy("sha-1", "deploy-1")
    await rig.idle()
    before = rig.dispatcher.sent[-1][0].target

    await rig.publish(
        "latency.spike", {"service": "api", "observed_ms": 800, "threshold_ms": 200}, "spike-1"
    )
    await rig.processor.join()

    lowered = rig.dispatcher.sent[-1][0]
    assert lowered.target == pytest.approx(before * 0.25)  # 200/800, at most the floor
    assert rig.processor.state.state == ADJUSTING
    record = rig.store.aggregates[ThroughputRecorder.create_id("api", "sha-1")]
    assert isinstance(record, ThroughputRecorder)
    assert record.flag is not None
    assert "frequency.reduce" in rig.kinds("spike-1")

    await rig.clock.advance(59)
    assert rig.processor.state.state == ADJUSTING, "still within the quiet period"
    await rig.clock.advance(2)
    await until(lambda: rig.processor.state.state == STABLE)

    assert rig.dispatcher.sent[-1][0].target == pytest.approx(before)
    assert rig.moves()[-2:] == [
        ("begin_adjustment", STABLE, ADJUSTING),
        ("settle", ADJUSTING, STABLE),
    ]


async def test_a_flagged_signature_is_measured_again_at_its_next_deployment(build: Build) -> None:
    rig = await build()
    await rig.deploy("sha-1", "deploy-1")
    await rig.idle()
    await rig.publish(
        "latency.spike", {"service": "api", "observed_ms": 800, "threshold_ms": 200}, "spike-1"
    )
    await rig.processor.join()

    await rig.deploy("sha-1", "deploy-2")
    await rig.idle()

    assert len(rig.tester.calls) == 2
    assert "load_test.started" in rig.kinds("deploy-2")


async def test_idle_pauses_the_agents_and_active_resumes_them(build: Build) -> None:
    rig = await build()
    await rig.deploy("sha-1", "deploy-1")
    await rig.idle()
    rate = rig.dispatcher.sent[-1][0].target

    await rig.publish("system.idle", {"idle_seconds": 600}, "idle-1")
    await rig.processor.join()
    paused = rig.dispatcher.sent[-1][0]
    assert (paused.paused, paused.target) == (True, 0.0)
    assert all(a.interval is None for a in paused.agents)

    await rig.publish("system.active", {}, "active-1")
    await rig.processor.join()
    resumed = rig.dispatcher.sent[-1][0]
    assert resumed.paused is False
    assert resumed.target == pytest.approx(rate)


# --- failures and restarts -----------------------------------------------------------------------


async def test_an_unreachable_target_fails_the_run_and_returns_to_stable(build: Build) -> None:
    rig = await build()
    rig.tester.fail_with = TargetUnreachable("http://t", "connection refused")

    await rig.deploy("sha-1", "deploy-1")
    await rig.idle()

    [run] = rig.runs()
    assert run.status == FAILED
    assert "connection refused" in run.outcome
    assert rig.processor.state.state == STABLE
    assert rig.moves()[-1] == ("abort", LOAD_TESTING, STABLE)
    assert "tuning.failed" in rig.kinds("deploy-1")
    assert rig.dispatcher.sent == []


async def test_a_failed_dispatch_is_recorded_and_reported(build: Build) -> None:
    rig = await build(failing={"a2"})

    await rig.deploy("sha-1", "deploy-1")
    await rig.idle()

    assert rig.tuning().dispatches["a2"]["ok"] is False
    assert "frequency.dispatch_failed" in rig.kinds("deploy-1")
    [failure] = rig.failures
    assert (failure.service, failure.outcome.agent) == ("api", "a2")
    [run] = rig.runs()
    assert "sent to 1 of 2 agent(s)" in run.outcome


async def test_a_restart_during_the_load_test_resumes_the_search_from_its_steps(
    build: Build,
) -> None:
    first = await build()
    first.tester.hold_after = 3
    await first.deploy("sha-1", "deploy-1")
    await asyncio.wait_for(first.tester.held.wait(), GUARD_S)
    await first.workflow.stop()  # the center stops in the middle of the test
    [run] = first.runs()
    assert (run.status, len(run.steps)) == ("testing", 3)

    second = await build(store=first.store)
    await second.idle()

    [resumed] = second.tester.calls
    assert len(resumed.done) == 3, "the search went on from the recorded steps"
    [run] = second.runs()
    assert run.status == TUNED
    assert run.interruptions == 1
    assert "tuning.interrupted" in second.kinds("deploy-1")
    assert len(run.steps) > 3


async def test_a_redelivered_deployment_event_records_nothing_twice(build: Build) -> None:
    rig = await build()
    await rig.deploy("sha-1", "deploy-1")
    await rig.idle()
    await rig.deploy("sha-2", "deploy-2")
    await rig.idle()
    first = rig.log.decisions[0]
    assert first.kind == "tuning.requested"
    [event] = [e for e in rig.deployments if e.correlation_id == "deploy-1"]

    again = await rig.workflow.request(
        event, service="api", signature="sha-1", target="http://t", agents=[]
    )

    assert again.id == TuningRun.create_id(str(event.id))
    deployments = rig.store.aggregates[ServiceDeployments.create_id("api")]
    assert isinstance(deployments, ServiceDeployments)
    assert (deployments.current, deployments.deployments) == ("sha-2", 2)
    assert len(rig.runs()) == 2


async def test_a_running_load_test_can_be_cancelled_and_the_next_run_goes_on(
    build: Build,
) -> None:
    rig = await build()
    rig.tester.hold_after = 2
    await rig.deploy("sha-1", "deploy-1")
    await asyncio.wait_for(rig.tester.held.wait(), GUARD_S)
    await rig.deploy("sha-2", "deploy-2")
    await rig.processor.join()

    cancelled = await rig.workflow.cancel("the target is being migrated")
    rig.tester.release.set()
    await rig.idle()

    assert cancelled is not None
    assert cancelled.status == FAILED
    assert cancelled.outcome == "cancelled: the target is being migrated"
    assert ("abort", LOAD_TESTING, STABLE) in rig.moves()
    first, second = rig.runs()
    assert (first.status, second.status) == (FAILED, TUNED)
    assert rig.tester.most_at_once == 1
    assert "tuning.failed" in rig.kinds("deploy-1")
    assert await rig.workflow.cancel("nothing runs") is None


async def test_a_run_the_state_machine_refuses_is_deferred_and_tried_again(build: Build) -> None:
    """Another load test holds the processor (a user's handler): begin_load_test is refused,
    the run is deferred, and tried again ``retry_after`` seconds later, never at once."""
    rig = await build()
    release = asyncio.Event()

    async def someone_elses_test() -> None:
        async with rig.processor.state.exclusive(
            "begin_load_test", "finish_load_test", reason="a user's test", correlation_id="u-1"
        ):
            await release.wait()

    holder = asyncio.create_task(someone_elses_test())
    await until(lambda: rig.processor.state.state == LOAD_TESTING)
    await rig.deploy("sha-1", "deploy-1")
    await until(lambda: "tuning.deferred" in rig.kinds("deploy-1"), turns=2000)
    assert rig.tester.calls == []
    [deferred] = [d for d in rig.log.decisions if d.kind == "tuning.deferred"]
    assert "tried again in 30s" in deferred.reason

    release.set()
    await holder
    await rig.clock.advance(29)
    assert rig.tester.calls == [], "not before retry_after"
    await rig.clock.advance(1)
    await rig.idle()

    assert len(rig.tester.calls) == 1
    [run] = rig.runs()
    assert run.status == TUNED
