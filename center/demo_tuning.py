"""The demo's deployment change: a real load test, frequencies sent to real agents.

A sample target of known capacity (4 slots of 20 ms: 200 req/s) and two sample agents run in
the demo's process on loopback ports; Locust runs in its own process, driven by the center's
tester. ``deployment.changed`` for ``checkout`` is load-tested (a short step plan), recorded,
and each agent is sent its frequency; the same signature deployed again is tuned from the
record without a test.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eventcenter.center.tuning import CenterTuningSettings
from eventcenter.domain.step_plan import StepPlan
from eventcenter.domain.throughput import ThroughputRecorder
from eventcenter.domain.tuning_run import TuningRun
from eventcenter.pressure.sample_agent import FrequencyUpdate, create_agent_app, serving
from eventcenter.pressure.sample_target import SampleTarget, server_port, start_sample_target

SLOTS = 4
SERVICE_MS = 20.0
SERVICE = "checkout"
SIGNATURE = "sha256:4f2a9c"
RUN_WAIT_S = 90.0  # only turns a hang into an error

#: Settings of the demo's load test: short steps, a bracket of 10 %.
DEMO_TUNING = CenterTuningSettings(
    slo_p95=0.1,
    plan=StepPlan(start_rate=50, growth=2, warmup=0.5, hold=2, resolution=0.1, max_duration=50),
    dispatch_attempts=2,
)


@dataclass
class TuningDemoResult:
    """What the demo's deployment came to (plain values for the summary)."""

    true_capacity: float
    measured: dict[str, Any] | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    outcome: str = ""
    agents: dict[str, FrequencyUpdate] = field(default_factory=dict)
    reused: str = ""
    seconds: float = 0.0


class TuningDemo:
    """Serves the target and the agents, publishes the deployments, reads back the runs."""

    def __init__(self, center: Any) -> None:
        self.center = center

    async def play(self, clock: Callable[[], float]) -> TuningDemoResult:
        started = clock()
        result = TuningDemoResult(true_capacity=SLOTS / (SERVICE_MS / 1000))
        received: dict[str, FrequencyUpdate] = {}
        target = SampleTarget(SLOTS, SERVICE_MS)
        server = await start_sample_target(target)
        try:
            async with contextlib.AsyncExitStack() as stack:
                agents = []
                for name in ("agent-eu", "agent-us"):
                    app = create_agent_app(name, on_update=_keep(received, name))
                    url = await stack.enter_async_context(serving(app))
                    agents.append({"name": name, "url": f"{url}/frequency", "weight": 1})
                payload = {
                    "service": SERVICE,
                    "signature": SIGNATURE,
                    "target": f"http://127.0.0.1:{server_port(server)}/",
                    "agents": agents,
                }
                first = await self._deploy(payload, "demo-deploy-1")
                result.steps = [dict(step) for step in first.steps]
                result.outcome = first.outcome
                record = await self.center.tuning.store.get(
                    ThroughputRecorder.create_id(SERVICE, SIGNATURE)
                )
                if record is not None and record.latest is not None:
                    result.measured = record.latest.as_dict()
                result.agents = dict(received)
                again = await self._deploy(payload, "demo-deploy-2")
                result.reused = again.outcome if again.capacity_source == "recorded" else ""
        finally:
            server.close()
            await server.wait_closed()
        result.seconds = clock() - started
        return result

    async def _deploy(self, payload: dict[str, Any], correlation_id: str) -> TuningRun:
        event_id = await self.center.publish(
            "deployment.changed", payload, tenant="acme", correlation_id=correlation_id
        )
        run_id = TuningRun.create_id(event_id)
        async with asyncio.timeout(RUN_WAIT_S):
            while True:
                run = await self.center.tuning.store.get(run_id)
                if run is not None and not run.is_open and not self.center.tuning.busy:
                    assert isinstance(run, TuningRun)
                    return run
                await asyncio.sleep(0.1)


def _keep(received: dict[str, FrequencyUpdate], name: str) -> Callable[[FrequencyUpdate], None]:
    def keep(update: FrequencyUpdate) -> None:
        received[name] = update

    return keep
