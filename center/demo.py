"""The demo: a realistic event stream through a real center, with a readable summary.

Three tenants publish orders, payments, metrics and alerts at all four priorities. A payment
handler times out now and then (retried with back-off) and cannot handle expired cards or
malformed payloads (dead-lettered with the reason). A latency spike moves the processor to
adjusting. Then a deployment of ``checkout`` is load-tested for real (Locust against a sample
target of known capacity, :mod:`eventcenter.center.demo_tuning`), two sample agents get their
frequencies, and the same signature deployed again is tuned from the record. An idle period
pauses the agents and settles the processor back to stable. Meanwhile a local data source's
push path fails, recovers and flaps, and the source falls back to polling and returns (see
:mod:`eventcenter.center.demo_source`). Every transition and decision is recorded in the event
store.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from eventcenter.center.app import EventCenter
from eventcenter.center.demo_source import SourceDemo, SourceDemoResult
from eventcenter.center.demo_tuning import DEMO_TUNING, TuningDemo, TuningDemoResult
from eventcenter.center.reader import CenterReader
from eventcenter.center.settings import CenterSettings
from eventcenter.domain.errors import PermanentFailure
from eventcenter.domain.event import Event
from eventcenter.domain.priority import Priority
from eventcenter.handlers.base import Handler, parse_payload
from eventcenter.handlers.context import Context
from eventcenter.projections.audit import DeadLetterRow, DecisionRow

TENANTS = ("acme", "globex", "initech")


class Payment(BaseModel):
    order: str
    amount: float = Field(gt=0)
    card: str = "valid"


class PaymentHandler(Handler):
    """Authorises payments against a gateway that sometimes times out."""

    patterns = ("payments.*",)
    max_in_flight = 8

    def __init__(self, rng: random.Random, timeout_rate: float = 0.15) -> None:
        self._rng = rng
        self._timeout_rate = timeout_rate

    async def handle(self, event: Event, ctx: Context) -> None:
        payment = parse_payload(event, Payment)
        await asyncio.sleep(self._rng.uniform(0.001, 0.004))
        if payment.card == "expired":
            raise RuntimeError(f"card for order {payment.order} is expired")
        if self._rng.random() < self._timeout_rate:
            raise TimeoutError("payment gateway timed out")


@dataclass
class DemoCounters:
    orders: int = 0
    samples: int = 0
    alerts: int = 0


def register_demo_handlers(center: EventCenter, seed: int = 7) -> DemoCounters:
    """Subscribe the demo's handlers to ``center`` (also used to replay its dead letters)."""
    rng = random.Random(seed)
    counters = DemoCounters()
    processor = center.processor

    @processor.on("orders.*", name="orders")
    async def record_order(event: Event, ctx: Context) -> None:
        await asyncio.sleep(rng.uniform(0.0005, 0.002))
        counters.orders += 1

    @processor.on("metrics.#", name="metrics", priority_min=Priority.LOW)
    async def sample(event: Event, ctx: Context) -> None:
        counters.samples += 1

    @processor.on("alerts.*", name="alerts", priority_min=Priority.HIGH)
    async def alert(event: Event, ctx: Context) -> None:
        if not event.payload.get("rule"):
            raise PermanentFailure("alert without a rule cannot be routed to anyone")
        counters.alerts += 1

    processor.register(PaymentHandler(rng))
    return counters


@dataclass
class DemoResult:
    published: int
    seconds: float
    snapshot: dict[str, Any]
    dead_letters: list[DeadLetterRow]
    decisions: list[DecisionRow]
    final_state: str
    shutdown_clean: bool
    counters: DemoCounters = field(default_factory=DemoCounters)
    source: SourceDemoResult | None = None
    tuning: TuningDemoResult | None = None


def demo_stream(count: int, rng: random.Random) -> list[dict[str, Any]]:
    """``count`` ordinary events across tenants, types and all four priorities."""
    kinds: list[tuple[str, Priority, float]] = [
        ("orders.created", Priority.NORMAL, 0.35),
        ("orders.shipped", Priority.LOW, 0.15),
        ("payments.authorize", Priority.HIGH, 0.25),
        ("metrics.cpu.sample", Priority.LOW, 0.2),
        ("alerts.fired", Priority.CRITICAL, 0.05),
    ]
    weights = [w for _, _, w in kinds]
    events: list[dict[str, Any]] = []
    for i in range(count):
        type_, priority, _ = rng.choices(kinds, weights)[0]
        tenant = rng.choice(TENANTS)
        payload: dict[str, Any] = {"seq": i}
        if type_.startswith("payments"):
            payload |= {"order": f"o-{i}", "amount": round(rng.uniform(5, 500), 2)}
            if rng.random() < 0.01:
                payload["card"] = "expired"
            if rng.random() < 0.005:
                payload.pop("amount")  # malformed: dead-lettered at once, never retried
        elif type_.startswith("alerts"):
            payload["rule"] = "" if rng.random() < 0.05 else "error-rate"
        elif type_.startswith("orders"):
            payload["order"] = f"o-{i}"
        else:
            payload["cpu"] = round(rng.uniform(0, 1), 3)
        events.append(
            {
                "type": type_,
                "payload": payload,
                "tenant": tenant,
                "priority": priority,
                "source": "demo",
            }
        )
    return events


async def run_demo(
    settings: CenterSettings,
    *,
    events: int = 2000,
    rate: float = 1500.0,
    seed: int = 7,
    progress: Callable[[int, int], None] | None = None,
    load_test: bool = True,
) -> DemoResult:
    """Run the demo on a center built from ``settings``; ``progress(done, total)`` is called
    as deliveries complete. ``load_test``: end with the deployment change of
    :mod:`~eventcenter.center.demo_tuning` (a real Locust run of about 20 s)."""
    rng = random.Random(seed)
    tuning = DEMO_TUNING if load_test else settings.tuning.model_copy(update={"tester": "none"})
    center = EventCenter(settings.model_copy(update={"tuning": tuning}))
    tuning_demo = TuningDemo(center) if load_test else None
    tuning_result: TuningDemoResult | None = None
    counters = register_demo_handlers(center, seed)
    source = SourceDemo(center, seed)
    loop = asyncio.get_running_loop()
    started = loop.time()
    published = 0
    stream = demo_stream(events, rng)
    quarter = max(1, events // 4)
    await center.start()
    script: asyncio.Task[None] | None = None
    try:
        start_position = await asyncio.to_thread(_last_position, center)
        script = asyncio.create_task(source.play(time.time))

        async def report() -> None:
            while True:
                totals = center.processor.snapshot().totals
                done = totals.get("handled", 0) + totals.get("dead_lettered", 0)
                if progress is not None:
                    progress(done, max(done, totals.get("delivered", 0)))
                await asyncio.sleep(0.1)

        reporter = asyncio.create_task(report())
        batch = 50
        for offset in range(0, len(stream), batch):
            ids = await center.publish_batch(stream[offset : offset + batch])
            published += len(ids)
            if offset // quarter != (offset + batch) // quarter:
                published += await _milestone(center, (offset + batch) // quarter)
            await asyncio.sleep(batch / rate)
        await script
        await center.processor.join()
        if tuning_demo is not None:
            await source.runner.stop()  # its script is over: its silence is no failure
            tuning_result = await tuning_demo.play(loop.time)
            published += 2
        await center.publish(
            "system.idle",
            {"idle_seconds": 30},
            tenant="acme",
            priority=Priority.LOW,
            source="demo",
        )
        published += 1
        await center.processor.join()
        reporter.cancel()
        snapshot = center.processor.snapshot().as_dict()
        if progress is not None:
            totals = snapshot["totals"]
            done = totals.get("handled", 0) + totals.get("dead_lettered", 0)
            progress(done, done)
        final_state = center.processor.state.state
    finally:
        if script is not None and not script.done():
            script.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await script
        report_ = await center.stop()
    reader = CenterReader(settings)
    try:
        letters = [row for row in reader.dead_letters() if row.position > start_position]
        decisions = [row for row in reader.decisions() if row.position > start_position]
    finally:
        reader.close()
    source_result = await asyncio.to_thread(source.result, settings.effective_url, start_position)
    return DemoResult(
        published=published,
        seconds=loop.time() - started,
        snapshot=snapshot,
        dead_letters=letters,
        decisions=decisions,
        final_state=final_state,
        shutdown_clean=report_.clean,
        counters=counters,
        source=source_result,
        tuning=tuning_result,
    )


def _last_position(center: EventCenter) -> int:
    return int(center.app.recorder.max_notification_id() or 0)


async def _milestone(center: EventCenter, quarter: int) -> int:
    """The scripted part of the stream: a latency spike, a failed stream."""
    if quarter == 1:
        await center.publish(
            "latency.spike",
            {"service": "checkout", "observed_ms": 840, "threshold_ms": 250},
            tenant="acme",
            priority=Priority.HIGH,
            source="demo",
        )
        return 1
    if quarter == 3:
        await center.publish(
            "stream.failed",
            {"stream": "orders-cdc", "error": "consumer lag > 5 min"},
            tenant="initech",
            priority=Priority.CRITICAL,
            source="demo",
        )
        return 1
    return 0
