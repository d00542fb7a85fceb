"""Built-in handlers for the center's own event types.

Each one validates its payload (a bad payload is a PermanentFailure: dead-lettered at once,
never retried), then takes its first step and records why as a decision:

| event type           | handler                 | does                                        |
|----------------------|-------------------------|---------------------------------------------|
| `deployment.changed` | DeploymentChangeHandler | holds the load-test slot (one at a time),   |
|                      |                         | measures with the PressureTester if one is  |
|                      |                         | configured, records the outcome             |
| `latency.spike`      | LatencySpikeHandler     | moves the processor to adjusting and        |
|                      |                         | decides a request-frequency reduction       |
| `stream.failed`      | StreamFailureHandler    | records the failure for root-cause analysis |
| `system.idle`        | IdleSystemHandler       | settles an adjusting processor to stable    |
"""

from __future__ import annotations

import contextlib

from pydantic import BaseModel, ConfigDict, Field

from eventcenter.domain.decisions import frequency_factor
from eventcenter.domain.errors import TransitionRefused
from eventcenter.domain.event import Event
from eventcenter.domain.fsm import ADJUSTING, STABLE
from eventcenter.domain.knee import KneeRule
from eventcenter.domain.ports import LoadTest
from eventcenter.domain.priority import Priority
from eventcenter.handlers.base import Handler, parse_payload
from eventcenter.handlers.context import Context


class _Payload(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class DeploymentChanged(_Payload):
    service: str = Field(min_length=1)
    signature: str = Field("", description="image hash or version of the new deployment")
    target: str = Field("", description="URL the load test should exercise")


class LatencySpike(_Payload):
    service: str = Field(min_length=1)
    observed_ms: float = Field(gt=0)
    threshold_ms: float = Field(gt=0)


class StreamFailed(_Payload):
    stream: str = Field(min_length=1)
    error: str = ""


class SystemIdle(_Payload):
    idle_seconds: float = Field(0, ge=0)


class DeploymentChangeHandler(Handler):
    """A new deployment may change capacity: measure it, one load test at a time."""

    patterns = ("deployment.changed",)
    priority_min = Priority.LOW

    async def handle(self, event: Event, ctx: Context) -> None:
        change = parse_payload(event, DeploymentChanged)
        signature = change.signature or "unknown"
        try:
            async with ctx.state.exclusive(
                "begin_load_test",
                "finish_load_test",
                reason=f"deployment of {change.service} ({signature})",
                correlation_id=event.correlation_id,
            ):
                if ctx.pressure is None or not change.target:
                    await ctx.decide(
                        "load_test.skipped",
                        "no pressure tester configured"
                        if ctx.pressure is None
                        else "the event names no target",
                        event,
                        service=change.service,
                        signature=signature,
                    )
                else:
                    test = LoadTest(
                        change.target,
                        KneeRule(slo_p95=0.2),
                        name=f"{change.service}@{signature}",
                    )
                    capacity = (await ctx.pressure.measure(test)).max_rps
                    await ctx.decide(
                        "throughput.measured",
                        f"load test of {change.service} after deployment",
                        event,
                        service=change.service,
                        signature=signature,
                        max_rps=capacity,
                    )
        except TransitionRefused as refused:
            await ctx.decide(
                "load_test.deferred",
                str(refused),
                event,
                service=change.service,
                signature=signature,
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
        if ctx.state.state == STABLE:
            # Another task may move the processor first (adjusting or testing): that is fine.
            with contextlib.suppress(TransitionRefused):
                await ctx.state.fire(
                    "begin_adjustment",
                    reason=f"latency of {spike.service} at {spike.observed_ms}ms"
                    f" > {spike.threshold_ms}ms",
                    correlation_id=event.correlation_id,
                )
        await ctx.decide(
            "frequency.reduce",
            f"latency {spike.observed_ms}ms over threshold {spike.threshold_ms}ms",
            event,
            service=spike.service,
            factor=factor,
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
    """The system is idle: adjustments have settled, return to stable."""

    patterns = ("system.idle",)

    async def handle(self, event: Event, ctx: Context) -> None:
        idle = parse_payload(event, SystemIdle)
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


BUILTIN_HANDLERS: tuple[type[Handler], ...] = (
    DeploymentChangeHandler,
    LatencySpikeHandler,
    StreamFailureHandler,
    IdleSystemHandler,
)
