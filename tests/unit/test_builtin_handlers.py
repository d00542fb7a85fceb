"""The built-in handlers run on a real EventProcessor and record what they decided, and why.

Each test registers all four built-ins (BUILTIN_HANDLERS) on a processor with a
MemoryDecisionLog and asserts on the transitions and decisions it recorded, including that
they carry the correlation id of the event that caused them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from eventcenter.domain.decisions import Decision
from eventcenter.domain.errors import PermanentFailure
from eventcenter.domain.fsm import ADJUSTING, STABLE
from eventcenter.handlers.builtin import BUILTIN_HANDLERS
from eventcenter.handlers.config import ProcessorSettings
from eventcenter.handlers.memory import MemoryDeadLetters, MemoryDecisionLog
from eventcenter.handlers.processor import EventProcessor
from tests.unit.looping import GUARD_S


@dataclass
class Center:
    processor: EventProcessor
    log: MemoryDecisionLog
    dead_letters: MemoryDeadLetters

    async def publish(self, type_: str, payload: dict[str, Any], correlation_id: str) -> None:
        await self.processor.publish(type_, payload, correlation_id=correlation_id)

    async def settled(self) -> None:
        await asyncio.wait_for(self.processor.join(), GUARD_S)

    def moves(self) -> list[tuple[str, str, str, str]]:
        return [(t.trigger, t.source, t.dest, t.correlation_id) for t in self.log.transitions]

    def kinds(self) -> list[str]:
        return [d.kind for d in self.log.decisions]


Build = Callable[..., Awaitable[Center]]


@pytest.fixture
async def build() -> AsyncIterator[Build]:
    """Builds a started processor with every built-in registered; stops each at teardown."""
    made: list[EventProcessor] = []

    async def make(*, state: str = STABLE) -> Center:
        log = MemoryDecisionLog()
        letters = MemoryDeadLetters()
        processor = EventProcessor(
            ProcessorSettings(backoff_base=0.001, backoff_max=0.002),
            decisions=log,
            dead_letters=letters,
            initial_state=state,
        )
        for handler in BUILTIN_HANDLERS:
            processor.register(handler())
        await processor.start()
        made.append(processor)
        return Center(processor, log, letters)

    yield make
    for processor in made:
        await processor.stop(timeout=0)


def only(decisions: list[Decision], kind: str) -> Decision:
    [decision] = [d for d in decisions if d.kind == kind]
    return decision


# --- latency.spike -------------------------------------------------------------------------------


async def test_a_latency_spike_over_threshold_starts_adjusting_and_reduces_frequency(
    build: Build,
) -> None:
    center = await build()

    await center.publish(
        "latency.spike", {"service": "api", "observed_ms": 400, "threshold_ms": 200}, "spike-1"
    )
    await center.settled()

    assert center.moves() == [("begin_adjustment", STABLE, ADJUSTING, "spike-1")]
    assert center.processor.state.state == ADJUSTING
    [decision] = center.log.decisions
    assert decision.kind == "frequency.reduce"
    assert decision.correlation_id == "spike-1"
    assert decision.details == {"service": "api", "factor": 0.5}


async def test_a_latency_spike_within_threshold_changes_neither_frequency_nor_state(
    build: Build,
) -> None:
    center = await build()

    await center.publish(
        "latency.spike", {"service": "api", "observed_ms": 150, "threshold_ms": 200}, "calm-1"
    )
    await center.settled()

    assert center.log.transitions == []
    assert center.processor.state.state == STABLE
    [decision] = center.log.decisions
    assert (decision.kind, decision.correlation_id) == ("frequency.unchanged", "calm-1")


# --- deployment.changed --------------------------------------------------------------------------


async def test_a_deployment_without_a_tuning_workflow_is_recorded_as_skipped(
    build: Build,
) -> None:
    center = await build()

    await center.publish(
        "deployment.changed",
        {"service": "api", "signature": "sha-1", "target": "http://api.local"},
        "deploy-1",
    )
    await center.settled()

    assert center.moves() == []
    [decision] = center.log.decisions
    assert (decision.kind, decision.correlation_id) == ("load_test.skipped", "deploy-1")
    assert decision.reason == "no tuning workflow is configured"


# --- system.idle and stream.failed ---------------------------------------------------------------


async def test_system_idle_while_adjusting_settles_to_stable_and_restores_frequency(
    build: Build,
) -> None:
    center = await build(state=ADJUSTING)

    await center.publish("system.idle", {"idle_seconds": 30}, "idle-1")
    await center.settled()

    assert center.moves() == [("settle", ADJUSTING, STABLE, "idle-1")]
    [decision] = center.log.decisions
    assert (decision.kind, decision.correlation_id) == ("frequency.restore", "idle-1")


async def test_system_idle_while_stable_does_nothing(build: Build) -> None:
    center = await build()

    await center.publish("system.idle", {"idle_seconds": 30}, "idle-1")
    await center.settled()

    assert center.log.transitions == []
    assert center.log.decisions == []
    assert center.processor.snapshot().totals["handled"] == 1


async def test_a_stream_failure_is_queued_for_root_cause_analysis(build: Build) -> None:
    center = await build()

    await center.publish(
        "stream.failed", {"stream": "orders", "error": "broker went away"}, "stream-1"
    )
    await center.settled()

    assert center.log.transitions == []
    [decision] = center.log.decisions
    assert (decision.kind, decision.correlation_id) == ("failure.queued_for_rca", "stream-1")
    assert decision.details == {"stream": "orders"}
    assert "broker went away" in decision.reason


# --- malformed payloads --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_", "payload", "handler"),
    [
        ("deployment.changed", {"signature": "sha-1"}, "DeploymentChangeHandler"),
        ("latency.spike", {"service": "api", "observed_ms": -5}, "LatencySpikeHandler"),
        ("stream.failed", {"stream": ""}, "StreamFailureHandler"),
        ("system.idle", {"idle_seconds": "a while"}, "IdleSystemHandler"),
    ],
    ids=["deployment", "latency", "stream", "idle"],
)
async def test_a_malformed_payload_is_dead_lettered_at_once(
    build: Build, type_: str, payload: dict[str, Any], handler: str
) -> None:
    center = await build(state=ADJUSTING)

    await center.publish(type_, payload, "bad-1")
    await center.settled()

    [letter] = center.dead_letters.letters
    assert letter.subscription == handler
    assert letter.attempts == 1
    assert isinstance(letter.error, PermanentFailure)
    assert center.log.transitions == []
    assert center.log.decisions == []
    assert center.processor.snapshot().totals["retried"] == 0
