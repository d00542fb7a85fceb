"""Built-in handlers for the center's own event types.

Each one validates its payload (a bad payload is a PermanentFailure: dead-lettered at once,
never retried), then takes its first step and records why as a decision. The tuning handlers
hand their work to the center's :class:`~eventcenter.handlers.tuning.TuningWorkflow`
(``ctx.services["tuning"]``); a processor without one records that it skipped the work.

| event type           | handler                 | does                                        |
|----------------------|-------------------------|---------------------------------------------|
| `deployment.changed` | DeploymentChangeHandler | records the deployment and queues its       |
|                      |                         | tuning run (load test when no usable        |
|                      |                         | record, frequencies, dispatch: one at a     |
|                      |                         | time, in the workflow's worker)             |
| `latency.spike`      | LatencySpikeHandler     | moves the processor to adjusting, lowers    |
|                      |                         | the frequency as the strategy says and      |
|                      |                         | flags the signature for retest              |
| `stream.failed`      | StreamFailureHandler    | records the failure for root-cause analysis |
| `system.idle`        | IdleSystemHandler       | pauses the agents' traffic and settles an   |
|                      |                         | adjusting processor to stable               |
| `system.active`      | ActiveSystemHandler     | resumes the traffic paused while idle       |
"""

from __future__ import annotations

import contextlib

from pydantic import BaseModel, ConfigDict, Field

from eventcenter.domain.decisions import frequency_factor
from eventcenter.domain.errors import TransitionRefused, TuningRefused
from eventcenter.domain.event import Event
from eventcenter.domain.fsm import ADJUSTING, STABLE
from eventcenter.domain.ports import AgentEndpoint
from eventcenter.domain.priority import Priority
from eventcenter.handlers.base import Handler, parse_payload
from eventcenter.handlers.context import Context
from eventcenter.handlers.tuning import TuningWorkflow


class _Payload(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class AgentSpec(BaseModel):
    """An agent of the deployed service: where it takes frequency updates, its share."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    url: str = Field(pattern=r"^https?://", description="http(s) URL of its frequency endpoint")
    weight: float = Field(1.0, gt=0, le=1e6)


class DeploymentChanged(_Payload):
    service: str = Field(min_length=1, max_length=200)
    signature: str = Field(
        min_length=1, max_length=300, description="image digest or version of the deployment"
    )
    target: str = Field("", description="URL the load test should exercise")
    agents: list[AgentSpec] = Field(default_factory=list, max_length=1000)


class LatencySpike(_Payload):
    service: str = Field(min_length=1)
    observed_ms: float = Field(gt=0)
    threshold_ms: float = Field(gt=0)


class StreamFailed(_Payload):
    stream: str = Field(min_length=1)
    error: str = ""


class SystemIdle(_Payload):
    idle_seconds: float = Field(0, ge=0)
    service: str | None = Field(None, min_length=1)


class SystemActive(_Payload):
    service: str | None = Field(None, min_length=1)


def _workflow(ctx: Context) -> TuningWorkflow | None:
    workflow = ctx.services.get("tuning")
    return workflow if isinstance(workflow, TuningWorkflow) else None


class DeploymentChangeHandler(Handler):
    """A new deployment may change capacity: queue its tuning run (see handlers/tuning.py)."""

    patterns = ("deployment.changed",)
    priority_min = Priority.LOW

    async def handle(self, event: Event, ctx: Context) -> None:
        change = parse_payload(event, DeploymentChanged)
        workflow = _workflow(ctx)
        if workflow is None:
            await ctx.decide(
                "load_test.skipped",
                "no tuning workflow is configured",
                event,
                service=change.service,
                signature=change.signature,
            )
            return
        run = await workflow.request(
            event,
            service=change.service,
            signature=change.signature,
            target=change.target,
            agents=[AgentEndpoint(a.name, a.url, a.weight) for a in change.agents],
        )
        previous = run.previous_signature or "none"
        await ctx.decide(
            "tuning.requested",
            f"deployment of {change.service} {change.signature} (previous: {previous}):"
            " queued for the tuning worker",
            event,
            service=change.service,
            signature=change.signature,
            previous_signature=run.previous_signature,
            run=str(run.id),
        )


class LatencySpikeHandler(Handler):
    """Latency over its threshold: start adjusting and reduce the request frequency."""

    patterns = ("latency.spike",)

    async def handle(self, event: Event, ctx: Context) -> None:
        spike = parse_payload(event, LatencySpike)
        factor = frequency_factor(spike.observed_ms, spike.threshold_ms)
        if factor >= 1.0:
            await ctx.decide(
                "frequency.unchanged",
                f"{spike.observed_ms}ms is within the {spike.threshold_ms}ms threshold",
                event,
                service=spike.service,
            )
            return
        workflow = _workflow(ctx)
        adjustment = None
        if workflow is not None:  # it moves the processor to adjusting itself
            adjustment = await workflow.latency_spike(
                event,
                service=spike.service,
                observed=spike.observed_ms / 1000,
                threshold=spike.threshold_ms / 1000,
            )
        elif ctx.state.state == STABLE:
            # Another task may move the processor first (adjusting or testing): that is fine.
            with contextlib.suppress(TransitionRefused):
                await ctx.state.fire(
                    "begin_adjustment",
                    reason=f"latency of {spike.service} at {spike.observed_ms}ms"
                    f" > {spike.threshold_ms}ms",
                    correlation_id=event.correlation_id,
                )
        why = f"latency {spike.observed_ms}ms over threshold {spike.threshold_ms}ms"
        if adjustment is None:  # no capacity measured: the proportional factor alone
            await ctx.decide("frequency.reduce", why, event, service=spike.service, factor=factor)
            return
        await ctx.decide(
            "frequency.reduce",
            f"{why}: {adjustment.reason}",
            event,
            service=spike.service,
            target=adjustment.target,
            version=adjustment.version,
        )


class StreamFailureHandler(Handler):
    """A stream failed: record it so root-cause analysis can pick it up."""

    patterns = ("stream.failed",)

    async def handle(self, event: Event, ctx: Context) -> None:
        failure = parse_payload(event, StreamFailed)
        await ctx.decide(
            "failure.queued_for_rca",
            f"stream {failure.stream} failed: {failure.error or 'no error given'}",
            event,
            stream=failure.stream,
        )


class IdleSystemHandler(Handler):
    """The system is idle: pause the agents' traffic; adjustments have settled: stable."""

    patterns = ("system.idle",)

    async def handle(self, event: Event, ctx: Context) -> None:
        idle = parse_payload(event, SystemIdle)
        workflow = _workflow(ctx)
        if workflow is not None:
            try:
                paused = await workflow.system_idle(
                    event, idle_seconds=idle.idle_seconds, service=idle.service
                )
            except TuningRefused as refused:
                await ctx.decide("frequency.unchanged", str(refused), event, service=idle.service)
                paused = []
            if paused:
                await ctx.decide(
                    "frequency.paused",
                    f"system idle for {idle.idle_seconds:.0f}s: traffic paused",
                    event,
                    services=[a.service for a in paused],
                )
        if ctx.state.state != ADJUSTING:
            return
        try:
            await ctx.state.fire(
                "settle",
                reason=f"system idle for {idle.idle_seconds:.0f}s",
                correlation_id=event.correlation_id,
            )
        except TransitionRefused:
            return  # moved on meanwhile (e.g. a load test started): nothing to settle
        await ctx.decide("frequency.restore", "adjustment settled while idle", event)


class ActiveSystemHandler(Handler):
    """The system is busy again: resume the traffic paused while idle."""

    patterns = ("system.active",)

    async def handle(self, event: Event, ctx: Context) -> None:
        active = parse_payload(event, SystemActive)
        workflow = _workflow(ctx)
        if workflow is None:
            return
        try:
            resumed = await workflow.system_active(event, service=active.service)
        except TuningRefused as refused:
            await ctx.decide("frequency.unchanged", str(refused), event, service=active.service)
            return
        if resumed:
            await ctx.decide(
                "frequency.resumed",
                "system active: traffic resumed",
                event,
                services=[a.service for a in resumed],
            )


BUILTIN_HANDLERS: tuple[type[Handler], ...] = (
    DeploymentChangeHandler,
    LatencySpikeHandler,
    StreamFailureHandler,
    IdleSystemHandler,
    ActiveSystemHandler,
)
