"""Load-test driven tuning: the deployment-change workflow, latency spikes and idle periods.

A ``deployment.changed`` event (service, signature, target, agents) becomes a
:class:`~eventcenter.domain.tuning_run.TuningRun`, recorded at once by the handler; the center's
one tuning worker takes the runs in the order they were requested, so two never overlap and a
deployment that arrives during a load test waits its turn. For each run the worker:

1. asks the ThroughputRecorder for the signature: a usable record (measured, not flagged for
   retest, not older than ``max_age``) is reused, the processor only passes through
   ``adjusting``;
2. otherwise holds ``load_testing`` (the FSM guard: ``begin_load_test`` is refused while another
   test runs or during the cool-down) and runs the PressureTester, recording each step; the test
   is supervised work of the worker, not of the handler, so it outlives the handler's timeout;
   a center that stops during the test aborts the FSM state (recorded) and, when it starts
   again, records the run ``Interrupted`` and resumes the search from the steps it measured;
3. records the measurement; the regression gate compares it with the previous signature of the
   service and, on a regression, records ``CapacityRegressed`` and publishes
   ``capacity.regressed`` (service, both signatures, both figures, the drop);
4. has the AdjustmentCoordinator compute each agent's frequency and polling interval, records
   it (``Adjusted``), has the Dispatcher send it and records each agent's outcome; a failed
   dispatch is reported to ``on_dispatch_failed`` (the center opens an RCA case);
5. returns the processor to ``stable``.

Each step is also a decision (``tuning.*``) with the deployment event's correlation id, once
per cause, so the audit trail tells the story and a resumed run records nothing twice.

``latency.spike`` makes the service's strategy observe the latency at once (the strategy says
how far the rate comes down), dispatches the result and flags the running signature for retest;
after ``settle_after`` seconds without another spike the service is observed healthy again and
the processor settles to ``stable`` by itself. ``system.idle`` pauses the agents' traffic
(rate 0, no polling), ``system.active`` resumes it.

Healing lowers a service's frequency through :meth:`TuningWorkflow.reduce_frequency` (a data
source the service drives is rate limited): the strategy starts again from the current rate
divided by a factor and holds at or below it; the adjustment is recorded, decided and
dispatched like any other, and after ``settle_after`` seconds without another spike or
reduction the service is observed recovered and the hold is lifted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from eventcenter.domain.adjustment import (
    Adjustment,
    AdjustmentCoordinator,
    Agent,
    ServiceControl,
    TuningConfig,
)
from eventcenter.domain.decisions import Decision
from eventcenter.domain.deployments import ServiceDeployments
from eventcenter.domain.errors import (
    EventCenterError,
    LeaseLost,
    TransitionRefused,
    TuningRefused,
)
from eventcenter.domain.event import Event
from eventcenter.domain.fsm import ADJUSTING, STABLE
from eventcenter.domain.knee import KneeRule, Seconds, Step
from eventcenter.domain.ports import (
    AgentEndpoint,
    DecisionLog,
    Dispatcher,
    DispatchOutcome,
    LoadTest,
    PressureTester,
    Publisher,
    TuningStore,
)
from eventcenter.domain.rate_strategies import Headroom, Observation
from eventcenter.domain.sources import Clock
from eventcenter.domain.step_plan import NextStep, StepPlan
from eventcenter.domain.throughput import (
    Measurement,
    RegressionGate,
    ThroughputRecorder,
    capacity_regression,
)
from eventcenter.domain.tuning_run import TESTING, ServiceTuning, TuningRun
from eventcenter.handlers.state import StateGuard

log = logging.getLogger("eventcenter.tuning")


class TuningSettings(BaseModel):
    """How the center measures and tunes (the ``[tuning]`` table of the config)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    slo_p95: Seconds = Field(0.2, gt=0, description="p95 latency a sustainable load keeps (s)")
    max_error_rate: float = Field(
        0.01, ge=0, lt=1, description="share of failed requests a sustainable load keeps"
    )
    plan: StepPlan = Field(default_factory=StepPlan, description="the load test's step search")
    regression: RegressionGate = Field(default_factory=RegressionGate)
    adjust: TuningConfig | None = Field(
        None,
        description="strategies and limits (default: headroom at 80 % of the capacity, scaled"
        " down when latency passes the SLO)",
    )
    max_age: Seconds | None = Field(
        None, gt=0, description="a recorded capacity older than this is measured again"
    )
    settle_after: Seconds = Field(
        60.0, gt=0, description="seconds without a latency spike before settling to stable"
    )
    retry_after: Seconds = Field(
        30.0, gt=0, description="seconds before a run the FSM refused is tried again"
    )

    @model_validator(mode="after")
    def _default_adjust(self) -> Self:
        if self.adjust is None:
            config = TuningConfig(strategy=Headroom(latency_limit=self.slo_p95))
            object.__setattr__(self, "adjust", config)
        return self

    @property
    def config(self) -> TuningConfig:
        assert self.adjust is not None
        return self.adjust

    @property
    def rule(self) -> KneeRule:
        return KneeRule(slo_p95=self.slo_p95, max_error_rate=self.max_error_rate)


@dataclass(frozen=True, slots=True)
class DispatchFailure:
    """A dispatch an agent did not take (what ``on_dispatch_failed`` is given)."""

    tenant: str
    service: str
    outcome: DispatchOutcome
    correlation_id: str
    at: float


class TuningWorkflow:
    """Runs the workflow of the module docstring; the built-in handlers call into it."""

    def __init__(
        self,
        *,
        store: TuningStore,
        state: StateGuard,
        decisions: DecisionLog,
        publish: Publisher,
        settings: TuningSettings | None = None,
        tester: PressureTester | None = None,
        dispatcher: Dispatcher | None = None,
        clock: Clock,
        wall: Callable[[], float] = time.time,
        on_dispatch_failed: Callable[[DispatchFailure], None] | None = None,
        on_adjustment: Callable[[Adjustment], None] | None = None,
    ) -> None:
        self.store = store
        self.state = state
        self.decisions = decisions
        self.publish = publish
        self.settings = settings or TuningSettings()
        self.tester = tester
        self.dispatcher = dispatcher
        self.clock = clock
        self.wall = wall
        self.on_dispatch_failed = on_dispatch_failed
        self.on_adjustment = on_adjustment
        self.coordinator = AdjustmentCoordinator(self.settings.config)
        self.endpoints: dict[str, tuple[AgentEndpoint, ...]] = {}
        self.tenants: dict[str, str] = {}
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._settlers: dict[str, asyncio.Task[None]] = {}
        self._busy = False
        self._current: tuple[TuningRun, asyncio.Task[None], asyncio.Event] | None = None
        self._cancel_reason: str | None = None
        self._lock = asyncio.Lock()  # one change of a service's tuning at a time

    # lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Restore what was tuned, mark runs a stopped center was testing as interrupted (they
        resume from their steps) and start the worker. Call after the processor's state
        machine is restored and recovered."""
        controls = []
        for tuning in await self.store.tuned_services():
            if tuning.control is None:
                continue
            controls.append(ServiceControl.from_dict(tuning.control))
            self.endpoints[tuning.service] = tuple(AgentEndpoint(**e) for e in tuning.endpoints)
        self.coordinator = AdjustmentCoordinator(self.settings.config, controls)
        now = self.wall()
        for run in await self.store.open_runs():
            self.tenants[run.service] = run.tenant
            if run.status != TESTING:
                continue
            reason = (
                "the center stopped during the load test: it resumes from the"
                f" {len(run.steps)} step(s) measured"
            )
            await self.store.change(run.id, None, _interrupt(reason, now))
            await self._decide(
                run, f"interrupted/{run.interruptions + 1}", "tuning.interrupted", reason
            )
        if self.state.state == ADJUSTING:
            for service in self.coordinator.services:
                self._schedule_settle(service, "adjusting when the center started")
            if not self.coordinator.services:
                self._schedule_settle("", "adjusting when the center started")
        else:
            for control in controls:
                if control.hold is not None:
                    self._schedule_settle(control.service, "reduction held at the start")
        self._worker = asyncio.create_task(self._work(), name="eventcenter-tuning")

    async def stop(self) -> None:
        """Stop the worker (a running load test is cancelled: the FSM aborts it, the run
        resumes at the next start) and the settle timers."""
        tasks = [t for t in (self._worker, *self._settlers.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(outcome, Exception):
                log.warning("tuning: a task ended with %r", outcome)
        self._worker = None
        self._settlers.clear()

    @property
    def busy(self) -> bool:
        """True while the worker runs a tuning run."""
        return self._busy

    # what the handlers call --------------------------------------------------------------------

    async def request(
        self,
        event: Event,
        *,
        service: str,
        signature: str,
        target: str,
        agents: Sequence[AgentEndpoint],
    ) -> TuningRun:
        """Record the deployment and queue its run (once per event); the worker takes it."""
        run_id = TuningRun.create_id(str(event.id))
        known: TuningRun | None = await self.store.get(run_id)
        if known is not None:  # a redelivery: the deployment was recorded with its run
            self._wake.set()
            return known
        now = self.wall()
        deployments_id = ServiceDeployments.create_id(service)

        def deployed(d: ServiceDeployments) -> str | None:
            d.deployed(signature, at=now, correlation_id=event.correlation_id)
            return d.previous

        previous = await self.store.change(
            deployments_id, lambda: ServiceDeployments.register(service, at=now), deployed
        )
        run: TuningRun = await self.store.change(
            run_id,
            lambda: TuningRun.request(
                event_id=str(event.id),
                correlation_id=event.correlation_id,
                tenant=event.tenant,
                service=service,
                signature=signature,
                previous_signature=previous,
                target=target,
                agents=[_endpoint_dict(a) for a in agents],
                at=now,
            ),
            lambda r: r,
        )
        self.tenants[service] = event.tenant
        self._wake.set()
        return run

    async def latency_spike(
        self, event: Event, *, service: str, observed: float, threshold: float
    ) -> Adjustment | None:
        """Lower the service's frequency as its strategy says, flag its signature for retest
        and settle by itself once the spikes stop. None when the service is not tuned yet."""
        if self.state.state == STABLE:
            with contextlib.suppress(TransitionRefused):
                await self.state.fire(
                    "begin_adjustment",
                    reason=f"latency of {service} at {observed * 1000:.0f}ms"
                    f" > {threshold * 1000:.0f}ms",
                    correlation_id=event.correlation_id,
                )
        await self._flag_running_signature(service, event, observed, threshold)
        self._schedule_settle(service, "latency spike")
        if service not in self.coordinator.services:
            return None
        async with self._lock:
            control = self.coordinator.control(service)
            seen = Observation(
                at=self.wall(),
                throughput=control.published or control.state.rate,
                latency=observed,
            )
            adjustment = self.coordinator.observe(service, seen)
            await self._publish_adjustment(adjustment, event.correlation_id, event.tenant)
        return adjustment

    async def reduce_frequency(
        self,
        service: str,
        *,
        factor: float,
        reason: str,
        correlation_id: str,
        tenant: str,
    ) -> Adjustment | None:
        """Lower ``service`` to its current rate divided by ``factor`` and hold it there until
        it has been quiet for ``settle_after`` (see
        :meth:`~eventcenter.domain.adjustment.AdjustmentCoordinator.reduce`); recorded, decided
        and dispatched like a spike's adjustment. None when the service is not tuned yet."""
        if service not in self.coordinator.services:
            return None
        if self.state.state == STABLE:
            with contextlib.suppress(TransitionRefused):
                await self.state.fire(
                    "begin_adjustment",
                    reason=f"frequency of {service} reduced: {reason}",
                    correlation_id=correlation_id,
                )
        self._schedule_settle(service, "reduction")
        async with self._lock:
            adjustment = self.coordinator.reduce(service, factor, at=self.wall(), reason=reason)
            await self._publish_adjustment(adjustment, correlation_id, tenant, cause="healing")
        return adjustment

    async def system_idle(
        self, event: Event, *, idle_seconds: float, service: str | None
    ) -> list[Adjustment]:
        """Pause the agents of ``service`` (every tuned service when None)."""
        reason = f"system idle for {idle_seconds:.0f}s"
        done = []
        async with self._lock:
            for name in self._services(service):
                adjustment = self.coordinator.pause(name, at=self.wall(), reason=reason)
                if adjustment.changed:
                    await self._publish_adjustment(adjustment, event.correlation_id, event.tenant)
                done.append(adjustment)
        return done

    async def system_active(self, event: Event, *, service: str | None) -> list[Adjustment]:
        """Resume the agents paused while idle."""
        done = []
        async with self._lock:
            for name in self._services(service):
                adjustment = self.coordinator.resume(name, at=self.wall(), reason="system active")
                if adjustment.changed:
                    await self._publish_adjustment(adjustment, event.correlation_id, event.tenant)
                done.append(adjustment)
        return done

    def _services(self, service: str | None) -> tuple[str, ...]:
        if service is None:
            return self.coordinator.services
        if service not in self.coordinator.services:
            raise TuningRefused(service, "no capacity is known for it yet: measure it first")
        return (service,)

    # the worker --------------------------------------------------------------------------------

    async def _work(self) -> None:
        """Take the open runs oldest first, one at a time, until stopped. A run that fails ends
        with its reason; a store that cannot be read is tried again after ``retry_after``; a
        center that lost its lease stops the worker (another process holds the runs now)."""
        while True:
            self._wake.clear()
            try:
                runs = await self.store.open_runs()
            except LeaseLost:
                log.warning("the tuning worker stops: this center lost its lease")
                return
            except EventCenterError as error:
                log.warning("tuning: cannot read the open runs (%s); trying again", error)
                await self.clock.sleep(self.settings.retry_after)
                continue
            if not runs:
                await self._wake.wait()
                continue
            self._busy = True
            taking = asyncio.create_task(self._take(runs[0]))
            ended = asyncio.Event()
            self._current = (runs[0], taking, ended)
            try:
                await taking
            except LeaseLost:
                log.warning("the tuning worker stops: this center lost its lease")
                return
            except asyncio.CancelledError:
                worker = asyncio.current_task()
                if worker is not None and worker.cancelling():  # stopped: the run resumes later
                    taking.cancel()
                    await asyncio.gather(taking, return_exceptions=True)
                    raise
                await self._cancelled(runs[0])
            finally:
                self._busy = False
                self._current = None
                self._cancel_reason = None
                ended.set()

    async def cancel(self, reason: str) -> TuningRun | None:
        """Cancel the run being worked on (its load test is stopped, the state machine
        aborts it, the run ends ``failed`` with ``reason``); the worker takes the next run.
        Returns the cancelled run, None when none was running."""
        current = self._current
        if current is None:
            return None
        run, taking, over = current
        self._cancel_reason = reason or "cancelled"
        taking.cancel()
        await over.wait()  # the worker recorded the end
        ended: TuningRun | None = await self.store.get(run.id)
        return ended

    async def _cancelled(self, run: TuningRun) -> None:
        reason = f"cancelled: {self._cancel_reason or 'by the center'}"
        try:
            await self._end(run, reason, failed=True)
        except EventCenterError as error:
            log.warning("tuning: cannot record the cancel of %s (%s)", run.name, error)

    async def _take(self, run: TuningRun) -> None:
        try:
            await self._run(run)
        except (asyncio.CancelledError, LeaseLost):
            raise
        except TransitionRefused as refused:
            await self._decide(
                run,
                f"deferred/{run.interruptions}",
                "tuning.deferred",
                f"{refused}; tried again in {self.settings.retry_after:g}s",
            )
            await self.clock.sleep(self.settings.retry_after)
        except Exception as error:  # the run ends with the reason; the worker goes on
            log.warning("tuning run of %s failed: %r", run.name, error)
            try:
                await self._end(run, f"failed: {_short(error)}", failed=True)
            except EventCenterError as recording:
                log.warning("tuning: cannot record the end of %s (%s)", run.name, recording)
                await self.clock.sleep(self.settings.retry_after)

    async def _run(self, run: TuningRun) -> None:
        now = self.wall()
        record: ThroughputRecorder | None = await self.store.get(
            ThroughputRecorder.create_id(run.service, run.signature)
        )
        why = (
            "never measured" if record is None else record.retest_reason(now, self.settings.max_age)
        )
        if why is None and record is not None and record.latest is not None:
            measurement = record.latest
            if self.state.state == STABLE:
                await self.state.fire(
                    "begin_adjustment",
                    reason=f"deployment of {run.service} ({run.signature}): recorded capacity",
                    correlation_id=run.correlation_id,
                )
            await self._decide(
                run,
                "reused",
                "tuning.capacity_reused",
                f"{run.signature} was measured before: {measurement.max_rps:.4g} req/s"
                f" ({measurement.verdict}); no load test",
                max_rps=measurement.max_rps,
            )
            await self.store.change(
                run.id,
                None,
                lambda r: r.capacity_known(measurement.max_rps, "recorded", "reused", at=now),
            )
        else:
            measured = await self._measure(run, why or "no usable record")
            if measured is None:
                return
            measurement = measured
        await self._tune(run, measurement)

    async def _measure(self, run: TuningRun, why: str) -> Measurement | None:
        if self.tester is None or not run.target:
            reason = (
                "no pressure tester is configured"
                if self.tester is None
                else "the deployment event names no target to load-test"
            )
            await self._decide(run, "skipped", "load_test.skipped", reason)
            await self._end(run, f"not tuned: {reason}", failed=True)
            return None
        tester = self.tester
        rule = self.settings.rule
        done = tuple(Step.from_dict(_step_fields(s)) for s in run.steps)
        test = LoadTest(
            run.target, rule, self.settings.plan, done=done, name=f"{run.service}@{run.signature}"
        )
        started = self.clock.now()
        async with self.state.exclusive(
            "begin_load_test",
            "finish_load_test",
            reason=f"deployment of {run.service} ({run.signature}): {why}",
            correlation_id=run.correlation_id,
        ):
            resumed = f" (resumed after {len(done)} step(s))" if done else ""
            await self.store.change(
                run.id, None, lambda r: r.start_test(why + resumed, at=self.wall())
            )
            await self._decide(
                run,
                f"started/{run.interruptions}",
                "load_test.started",
                f"{why}: load test of {run.target}{resumed}",
                target=run.target,
                slo_p95=rule.slo_p95,
            )
            count = len(done)

            async def on_step(step: Step, after: NextStep) -> None:
                nonlocal count
                index = count
                count += 1
                at = self.wall()
                values = step.as_dict()
                follow = {"rate": after.rate, "phase": after.phase, "reason": after.reason}
                await self.store.change(
                    run.id, None, lambda r: r.record_step(index, values, follow, at=at)
                )
                await self._decide(
                    run,
                    f"step/{index}",
                    "load_test.step",
                    f"step {index}: {step.offered:.4g} req/s offered, {step.achieved:.4g}"
                    f" achieved, p95 {step.p95 * 1000:.4g}ms, errors {step.error_rate:.1%};"
                    f" next: {after.reason}",
                    step=values,
                )

            measurement = await tester.measure(test, on_step)
        seconds = self.clock.now() - started
        await self._record_measurement(run, measurement, seconds)
        if not measurement.usable:
            await self._end(
                run,
                "not tuned: the capacity is below the lowest rate tried"
                f" ({measurement.upper} req/s)",
                failed=True,
            )
            await self._settle_now(run.correlation_id, "load test found no usable capacity")
            return None
        return measurement

    async def _record_measurement(
        self, run: TuningRun, measurement: Measurement, seconds: float
    ) -> None:
        at = self.wall()
        recorder_id = ThroughputRecorder.create_id(run.service, run.signature)
        await self.store.change(
            recorder_id,
            lambda: ThroughputRecorder.register(run.service, run.signature, at=at),
            lambda r: r.record_measurement(measurement, at=at, correlation_id=run.correlation_id),
        )
        await self.store.change(
            run.id,
            None,
            lambda r: r.capacity_known(measurement.max_rps, "measured", measurement.verdict, at=at),
        )
        await self._decide(
            run,
            "measured",
            "throughput.measured",
            f"{run.service}@{run.signature}: {measurement.max_rps:.4g} req/s"
            f" ({measurement.verdict}) in {seconds:.0f}s",
            service=run.service,
            signature=run.signature,
            max_rps=measurement.max_rps,
            verdict=measurement.verdict,
            p95=measurement.p95,
        )
        if run.previous_signature is None or run.previous_signature == run.signature:
            return
        previous: ThroughputRecorder | None = await self.store.get(
            ThroughputRecorder.create_id(run.service, run.previous_signature)
        )
        if previous is None or previous.latest is None:
            return
        regression = capacity_regression(
            self.settings.regression,
            service=run.service,
            previous_signature=run.previous_signature,
            previous=previous.latest,
            signature=run.signature,
            new=measurement,
        )
        if regression is None:
            return
        await self.store.change(
            recorder_id,
            None,
            lambda r: r.record_regression(regression, at=at, correlation_id=run.correlation_id),
        )
        details = {
            "service": regression.service,
            "signature": regression.signature,
            "previous_signature": regression.previous_signature,
            "max_rps": regression.max_rps,
            "previous_rps": regression.previous_rps,
            "drop": regression.drop,
            "max_drop": regression.max_drop,
        }
        await self._decide(run, "regressed", "capacity.regressed", regression.reason, **details)
        await self.publish(
            "capacity.regressed",
            {**details, "reason": regression.reason},
            tenant=run.tenant,
            correlation_id=run.correlation_id,
            key=f"capacity.regressed/{run.service}/{run.signature}/{run.event_id}",
        )

    async def _tune(self, run: TuningRun, measurement: Measurement) -> None:
        endpoints = tuple(AgentEndpoint(**a) for a in run.agents)
        if not endpoints and run.service in self.endpoints:
            endpoints = self.endpoints[run.service]
        if not endpoints:
            await self._decide(
                run, "no-agents", "tuning.no_agents", "the deployment names no agent to tune"
            )
            await self._end(run, "measured; no agent to send a frequency to", failed=False)
            await self._settle_now(run.correlation_id, "no agent to tune")
            return
        agents = [Agent(name=e.name, weight=e.weight) for e in endpoints]
        async with self._lock:
            adjustment = self.coordinator.capacity_measured(
                run.service, measurement.max_rps, at=self.wall(), agents=agents
            )
            self.endpoints[run.service] = endpoints
            outcomes = await self._publish_adjustment(
                adjustment, run.correlation_id, run.tenant, cause=f"tuning/{run.event_id}"
            )
        ok = sum(1 for o in outcomes if o.ok)
        summary = (
            f"version {adjustment.version}: {adjustment.target:.4g} req/s"
            f" ({adjustment.strategy}) sent to {ok} of {len(outcomes)} agent(s)"
        )
        await self.store.change(
            run.id, None, lambda r: r.tuned(adjustment.version, summary, at=self.wall())
        )
        await self._decide(run, "tuned", "tuning.done", summary, version=adjustment.version)
        await self._settle_now(run.correlation_id, f"deployment of {run.service} tuned")

    async def _publish_adjustment(
        self, adjustment: Adjustment, correlation_id: str, tenant: str, cause: str = ""
    ) -> list[DispatchOutcome]:
        """Record the adjustment and the control after it, dispatch it, record each outcome."""
        service = adjustment.service
        control = self.coordinator.control(service).as_dict()
        endpoints = self.endpoints.get(service, ())
        tuning_id = ServiceTuning.create_id(service)
        now = self.wall()
        await self.store.change(
            tuning_id,
            lambda: ServiceTuning.register(service, at=now),
            lambda t: t.adjusted(
                adjustment.as_dict(),
                control,
                [_endpoint_dict(e) for e in endpoints],
                correlation_id=correlation_id,
            ),
        )
        await self.decisions.record_decision(
            Decision(
                kind="frequency.adjusted",
                reason=adjustment.reason,
                correlation_id=correlation_id,
                tenant=tenant,
                details=adjustment.as_dict(),
                cause=f"{cause or 'tuning'}/{service}/adjusted/{adjustment.version}",
            )
        )
        if adjustment.changed and self.on_adjustment is not None:
            self.on_adjustment(adjustment)
        if not adjustment.changed or self.dispatcher is None or not endpoints:
            return []
        outcomes = await self.dispatcher.dispatch(
            adjustment, endpoints, correlation_id=correlation_id
        )
        at = self.wall()
        for outcome in outcomes:
            values = outcome.as_dict()
            await self.store.change(
                tuning_id,
                None,
                _dispatch_outcome(values, at, correlation_id),
            )
            kind = "frequency.dispatched" if outcome.ok else "frequency.dispatch_failed"
            await self.decisions.record_decision(
                Decision(
                    kind=kind,
                    reason=outcome.detail or outcome.error or "agent took it",
                    correlation_id=correlation_id,
                    tenant=tenant,
                    details=values,
                    cause=f"{service}/{outcome.agent}/{outcome.version}/{kind}",
                )
            )
            if not outcome.ok and self.on_dispatch_failed is not None:
                self.on_dispatch_failed(
                    DispatchFailure(tenant, service, outcome, correlation_id, at)
                )
        return outcomes

    # settling ----------------------------------------------------------------------------------

    def _schedule_settle(self, service: str, why: str) -> None:
        """(Re)start the quiet period after which ``service`` is observed healthy again and the
        processor settles to stable."""
        previous = self._settlers.pop(service, None)
        if previous is not None:
            previous.cancel()
        self._settlers[service] = asyncio.create_task(
            self._settle_later(service, why), name=f"eventcenter-settle-{service}"
        )

    async def _settle_later(self, service: str, why: str) -> None:
        await self.clock.sleep(self.settings.settle_after)
        if self._settlers.get(service) is asyncio.current_task():
            del self._settlers[service]
        quiet = f"no latency spike for {self.settings.settle_after:g}s after the {why}"
        try:
            if service in self.coordinator.services:
                await self._observe_healthy(service, quiet)
            if not self._settlers and not self._busy:
                await self._settle_now("", quiet)
        except EventCenterError as error:  # the next spike or deployment tries again
            log.warning("settling %s failed: %s", service or "the processor", error)

    async def _observe_healthy(self, service: str, why: str) -> None:
        async with self._lock:
            control = self.coordinator.control(service)
            if control.paused and control.hold is None:
                return  # paused with a hold: the hold is lifted (and recorded), nothing sent
            healthy = await self._healthy_latency(service)
            seen = Observation(
                at=self.wall(), throughput=control.published or control.state.rate, latency=healthy
            )
            adjustment = self.coordinator.observe(service, seen, recovered=True)
            correlation = f"settle/{service}/{adjustment.version}"
            await self._publish_adjustment(
                adjustment, correlation, self.tenants.get(service, "default")
            )
        log.info("%s: %s", service, why)

    async def _healthy_latency(self, service: str) -> float:
        """The latency the service showed at its measured capacity (the knee's p50), or half
        the SLO when none was recorded."""
        deployments: ServiceDeployments | None = await self.store.get(
            ServiceDeployments.create_id(service)
        )
        if deployments is not None and deployments.current is not None:
            record: ThroughputRecorder | None = await self.store.get(
                ThroughputRecorder.create_id(service, deployments.current)
            )
            if record is not None and record.latest is not None and record.latest.p50 > 0:
                return record.latest.p50
        return self.settings.slo_p95 / 2

    async def _settle_now(self, correlation_id: str, reason: str) -> None:
        if self.state.state != ADJUSTING or any(
            not t.done() for s, t in self._settlers.items() if s
        ):
            return
        with contextlib.suppress(TransitionRefused):
            await self.state.fire(
                "settle", reason=reason, correlation_id=correlation_id or "tuning/settle"
            )

    async def _flag_running_signature(
        self, service: str, event: Event, observed: float, threshold: float
    ) -> None:
        deployments: ServiceDeployments | None = await self.store.get(
            ServiceDeployments.create_id(service)
        )
        if deployments is None or deployments.current is None:
            return
        signature = deployments.current
        reason = f"latency spike: {observed * 1000:.0f}ms over {threshold * 1000:.0f}ms"
        at = self.wall()
        await self.store.change(
            ThroughputRecorder.create_id(service, signature),
            lambda: ThroughputRecorder.register(service, signature, at=at),
            lambda r: r.flag_for_retest(reason, at=at, correlation_id=event.correlation_id),
        )

    # recording ---------------------------------------------------------------------------------

    async def _decide(
        self, run: TuningRun, cause: str, kind: str, reason: str, **details: Any
    ) -> None:
        await self.decisions.record_decision(
            Decision(
                kind=kind,
                reason=reason,
                correlation_id=run.correlation_id,
                tenant=run.tenant,
                details={"service": run.service, "signature": run.signature, **details},
                cause=f"tuning/{run.event_id}/{cause}",
            )
        )

    async def _end(self, run: TuningRun, reason: str, *, failed: bool) -> None:
        at = self.wall()
        if failed:
            await self.store.change(run.id, None, lambda r: r.fail(reason, at=at))
            await self._decide(run, "failed", "tuning.failed", reason)
        else:
            await self.store.change(run.id, None, lambda r: r.tuned(0, reason, at=at))
            await self._decide(run, "tuned", "tuning.done", reason)
        await self._settle_now(run.correlation_id, reason)


def _interrupt(reason: str, at: float) -> Callable[[TuningRun], None]:
    return lambda run: run.interrupt(reason, at=at)


def _dispatch_outcome(
    values: dict[str, Any], at: float, correlation_id: str
) -> Callable[[ServiceTuning], None]:
    return lambda tuning: tuning.dispatch_outcome(values, at=at, correlation_id=correlation_id)


def _endpoint_dict(endpoint: AgentEndpoint) -> dict[str, Any]:
    return {"name": endpoint.name, "url": endpoint.url, "weight": endpoint.weight}


def _step_fields(recorded: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in recorded.items() if k != "next"}


def _short(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."
