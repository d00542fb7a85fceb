"""The HTTP dispatcher against real agents on loopback: sample agents (the version rules an
agent keeps) and scripted receivers (tests/integration/webhooks.py: 503, 400, slow answers).

Adjustments come from the real AdjustmentCoordinator. The dispatcher's back-off sleeps on a
function that only notes the waits, and its jitter is fixed, so retries cost no real time and
their delays are exact; only the timeout test waits (a fraction of a second).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Any

import httpx
import pytest

from eventcenter.domain.adjustment import Adjustment, AdjustmentCoordinator, Agent, TuningConfig
from eventcenter.domain.backoff import ReconnectBackoff
from eventcenter.domain.breaker import BreakerConfig
from eventcenter.domain.errors import DispatchRefused
from eventcenter.domain.ports import AgentEndpoint, Dispatcher
from eventcenter.healing.breaker import BreakerRegistry
from eventcenter.pressure.dispatcher import DispatchPolicy, HttpDispatcher
from tests.integration.agents import sample_agents
from tests.integration.webhooks import Receiver, Reply, receiving_webhooks
from tests.servers import closed_port

AT = 1_700_000_000.0
BASE = 0.2  # the back-off's first delay; with jitter 0 each delay is its ceiling


class NotedSleeps:
    """An async sleep that returns at once, noting how long it was asked to wait."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


@pytest.fixture
def sleeps() -> NotedSleeps:
    return NotedSleeps()


POLICY = DispatchPolicy(
    attempts=4,
    timeout=2.0,
    backoff=ReconnectBackoff(base=BASE, cap=5.0, spread=0.5),
    retry_after_max=30.0,
)


def dispatcher(sleeps: NotedSleeps, **changes: Any) -> HttpDispatcher:
    return HttpDispatcher(replace(POLICY, **changes), sleep=sleeps, jitter=lambda: 0.0)


def coordinator() -> AdjustmentCoordinator:
    return AdjustmentCoordinator(TuningConfig())


def measured(control: AdjustmentCoordinator, *weights: tuple[str, float]) -> Adjustment:
    agents = [Agent(name=name, weight=weight) for name, weight in weights]
    return control.capacity_measured("orders", 100.0, at=AT, agents=agents)


def endpoints(*pairs: tuple[str, str]) -> list[AgentEndpoint]:
    return [AgentEndpoint(name, url) for name, url in pairs]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving_webhooks() as state:
        yield state


async def dispatch(
    sender: Dispatcher, adjustment: Adjustment, targets: Sequence[AgentEndpoint]
) -> list[dict[str, object]]:
    outcomes = await sender.dispatch(adjustment, targets, correlation_id="tune-7")
    return [outcome.as_dict() for outcome in outcomes]


# --- reaching the agents -----------------------------------------------------------------------


async def test_every_agent_gets_its_share_of_the_target_and_the_version(
    sleeps: NotedSleeps,
) -> None:
    adjustment = measured(coordinator(), ("a", 1.0), ("b", 1.0), ("c", 2.0))
    async with sample_agents("a", "b", "c") as agents, dispatcher(sleeps) as sender:
        outcomes = await sender.dispatch(
            adjustment,
            endpoints(*((agent.name, agent.url) for agent in reversed(agents))),
            correlation_id="tune-7",
        )
        held = [await agent.held() for agent in agents]

    assert [o.agent for o in outcomes] == ["a", "b", "c"], "the adjustment's order"
    assert all(o.ok and o.attempts == 1 and o.status == 200 and not o.error for o in outcomes)
    assert [o.version for o in outcomes] == [adjustment.version] * 3
    rates = [h["updates"][0]["rate"] for h in held]
    assert rates == pytest.approx(
        [adjustment.target / 4, adjustment.target / 4, adjustment.target / 2]
    )
    assert rates == [f.rate for f in adjustment.agents]
    for h, frequency in zip(held, adjustment.agents, strict=True):
        (update,) = h["updates"]
        assert update["version"] == adjustment.version
        assert update["interval"] == frequency.interval
        assert update["correlation_id"] == "tune-7"
        assert (update["service"], update["agent"], update["paused"]) == (
            "orders",
            frequency.agent,
            False,
        )
    assert sleeps.waits == []


async def test_the_body_and_headers_an_agent_receives(
    sleeps: NotedSleeps, receiver: Receiver
) -> None:
    adjustment = measured(coordinator(), ("a", 1.0))
    async with dispatcher(sleeps) as sender:
        await sender.dispatch(adjustment, endpoints(("a", receiver.url)), correlation_id="c-1")

    (request,) = receiver.requests
    assert request.headers["idempotency-key"] == f"orders:a:{adjustment.version}"
    assert request.headers["x-correlation-id"] == "c-1"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.body) == {
        "service": "orders",
        "agent": "a",
        "version": adjustment.version,
        "rate": adjustment.target,
        "interval": adjustment.agents[0].interval,
        "paused": False,
        "target": adjustment.target,
        "reason": adjustment.reason,
        "at": AT,
        "correlation_id": "c-1",
    }


async def test_a_repeated_dispatch_is_harmless(sleeps: NotedSleeps) -> None:
    adjustment = measured(coordinator(), ("a", 1.0))
    async with sample_agents("a") as (agent,), dispatcher(sleeps) as sender:
        targets = endpoints(("a", agent.url))
        first = await dispatch(sender, adjustment, targets)
        again = await dispatch(sender, adjustment, targets)
        held = await agent.held()

    assert first[0]["ok"]
    assert again[0]["ok"]
    assert first[0]["detail"] == ""
    assert again[0]["detail"] == f"unchanged: agent holds version {adjustment.version}"
    assert len(agent.applied) == 1, "applied once"
    assert len(held["updates"]) == 1


async def test_an_older_version_is_answered_409_and_counts_as_taken(sleeps: NotedSleeps) -> None:
    control = coordinator()
    older = measured(control, ("a", 1.0))
    newer = control.set_agents("orders", [Agent(name="a", weight=2.0)], at=AT + 1)
    assert newer.version == older.version + 1
    async with sample_agents("a") as (agent,), dispatcher(sleeps) as sender:
        targets = endpoints(("a", agent.url))
        await dispatch(sender, newer, targets)
        (late,) = await sender.dispatch(older, targets, correlation_id="late")
        held = await agent.held()

    assert late.ok
    assert (late.status, late.attempts) == (409, 1), "never retried"
    assert late.detail == f"stale: agent holds version {newer.version}"
    assert [u["version"] for u in held["updates"]] == [newer.version]
    assert sleeps.waits == []


async def test_a_paused_service_sends_rate_zero_and_no_interval(
    sleeps: NotedSleeps, receiver: Receiver
) -> None:
    control = coordinator()
    measured(control, ("a", 1.0), ("b", 1.0))
    paused = control.pause("orders", at=AT + 5, reason="idle")
    async with sample_agents("a") as (agent,), dispatcher(sleeps) as sender:
        outcomes = await dispatch(sender, paused, endpoints(("a", agent.url), ("b", receiver.url)))
        held = await agent.held()

    assert [o["ok"] for o in outcomes] == [True, True]
    (update,) = held["updates"]
    assert (update["rate"], update["interval"], update["paused"]) == (0.0, None, True)
    body = json.loads(receiver.requests[0].body)
    assert (body["rate"], body["interval"], body["paused"]) == (0.0, None, True)


# --- retries -----------------------------------------------------------------------------------


async def test_503_twice_then_200_is_taken_on_the_third_attempt_after_retry_after(
    sleeps: NotedSleeps, receiver: Receiver
) -> None:
    receiver.script = [Reply(503, {"Retry-After": "2"}, b"busy"), Reply(503, body=b"busy")]
    adjustment = measured(coordinator(), ("a", 1.0))
    async with dispatcher(sleeps) as sender:
        (outcome,) = await sender.dispatch(
            adjustment, endpoints(("a", receiver.url)), correlation_id="c"
        )

    assert (outcome.ok, outcome.attempts, outcome.status) == (True, 3, 200)
    assert sleeps.waits == [2.0, 2 * BASE], "Retry-After, then the back-off of the 2nd retry"
    keys = {request.key for request in receiver.requests}
    assert keys == {f"orders:a:{adjustment.version}"}, "one key for every attempt"


async def test_a_long_retry_after_is_cut_to_the_cap(
    sleeps: NotedSleeps, receiver: Receiver
) -> None:
    receiver.script = [Reply(429, {"Retry-After": "3600"}, b"slow down")]
    adjustment = measured(coordinator(), ("a", 1.0))
    async with dispatcher(sleeps, retry_after_max=7.0) as sender:
        (outcome,) = await sender.dispatch(
            adjustment, endpoints(("a", receiver.url)), correlation_id="c"
        )

    assert (outcome.ok, outcome.attempts) == (True, 2)
    assert sleeps.waits == [7.0]


async def test_an_agent_that_is_down_fails_after_every_attempt_and_the_others_are_reached(
    sleeps: NotedSleeps, caplog: pytest.LogCaptureFixture
) -> None:
    down = f"http://127.0.0.1:{closed_port()}/frequency"
    adjustment = measured(coordinator(), ("a", 1.0), ("down", 1.0), ("b", 1.0))
    caplog.set_level(logging.INFO, logger="eventcenter.pressure.dispatch")
    async with sample_agents("a", "b") as (a, b), dispatcher(sleeps, attempts=3) as sender:
        outcomes = await sender.dispatch(
            adjustment,
            endpoints(("a", a.url), ("b", b.url), ("down", down)),
            correlation_id="tune-9",
        )

    assert [(o.agent, o.ok) for o in outcomes] == [("a", True), ("down", False), ("b", True)]
    failed = outcomes[1]
    assert failed.attempts == 3
    assert failed.status is None
    assert failed.error.startswith("connection failed")
    assert failed.error.endswith("(gave up after 3 attempts)")
    assert sleeps.waits == [BASE, 2 * BASE]
    assert len(a.applied) == len(b.applied) == 1
    lines = [r.getMessage() for r in caplog.records if "orders/down" in r.getMessage()]
    assert len(lines) == 1
    assert "tune-9" in lines[0]
    assert f"version {adjustment.version}" in lines[0]
    assert [r.levelno for r in caplog.records if "orders/down" in r.getMessage()] == [
        logging.WARNING
    ]
    assert sum(r.levelno == logging.INFO for r in caplog.records) == 2, "one line per outcome"


async def test_a_400_fails_at_once_with_the_agents_reason(
    sleeps: NotedSleeps, receiver: Receiver
) -> None:
    receiver.script = [
        Reply(400, {"Content-Type": "application/json"}, b'{"detail": "no such service"}')
    ]
    adjustment = measured(coordinator(), ("a", 1.0))
    async with dispatcher(sleeps) as sender:
        (outcome,) = await sender.dispatch(
            adjustment, endpoints(("a", receiver.url)), correlation_id="c"
        )

    assert (outcome.ok, outcome.attempts, outcome.status) == (False, 1, 400)
    assert "no such service" in outcome.error
    assert "not retried" in outcome.error
    assert len(receiver.requests) == 1
    assert sleeps.waits == []


async def test_an_endpoint_pointing_at_another_agent_is_refused_by_it(
    sleeps: NotedSleeps,
) -> None:
    adjustment = measured(coordinator(), ("a", 1.0))
    async with sample_agents("b") as (other,), dispatcher(sleeps) as sender:
        (outcome,) = await sender.dispatch(
            adjustment, endpoints(("a", other.url)), correlation_id="c"
        )

    assert (outcome.ok, outcome.status, outcome.attempts) == (False, 400, 1)
    assert "this is agent 'b'" in outcome.error
    assert other.applied == []


async def test_an_attempt_without_an_answer_in_time_is_retried_then_fails(
    sleeps: NotedSleeps, receiver: Receiver
) -> None:
    receiver.script = [Reply(delay=0.5), Reply(delay=0.5)]
    adjustment = measured(coordinator(), ("a", 1.0))
    async with dispatcher(sleeps, attempts=2, timeout=0.2) as sender:
        (outcome,) = await sender.dispatch(
            adjustment, endpoints(("a", receiver.url)), correlation_id="c"
        )

    assert (outcome.ok, outcome.attempts) == (False, 2)
    assert outcome.error.startswith("no answer within 0.2 s")


# --- circuit breakers --------------------------------------------------------------------------


async def test_repeated_failures_open_the_agents_breaker_and_then_no_request_is_sent(
    sleeps: NotedSleeps, receiver: Receiver
) -> None:
    receiver.script = [Reply(503, body=b"down")] * 20
    config = BreakerConfig(window_size=4, minimum_calls=4, wait_in_open=60.0)
    registry = BreakerRegistry()
    adjustment = measured(coordinator(), ("a", 1.0), ("b", 1.0))
    async with sample_agents("b") as (b,):
        sender = HttpDispatcher(
            DispatchPolicy(attempts=4),
            breaker_for=lambda name: registry.get_or_create(name, config),
            sleep=sleeps,
            jitter=lambda: 0.0,
        )
        async with sender:
            targets = endpoints(("a", receiver.url), ("b", b.url))
            first = await sender.dispatch(adjustment, targets, correlation_id="c1")
            sent = len(receiver.requests)
            second = await sender.dispatch(adjustment, targets, correlation_id="c2")

    assert (first[0].ok, first[0].attempts, first[0].status) == (False, 4, 503)
    assert sent == 4
    assert registry.names() == ["dispatch:orders:a", "dispatch:orders:b"]
    assert registry.get("dispatch:orders:a").state == "open"
    assert (second[0].ok, second[0].attempts) == (False, 0)
    assert second[0].error.startswith("circuit open")
    assert "dispatch:orders:a" in second[0].error
    assert len(receiver.requests) == sent, "no request reached the agent"
    assert first[1].ok, "the other agent's breaker is its own"
    assert second[1].ok
    assert registry.get("dispatch:orders:b").state == "closed"


async def test_a_breaker_opening_mid_dispatch_ends_it_with_the_attempts_made(
    sleeps: NotedSleeps, receiver: Receiver
) -> None:
    receiver.script = [Reply(503, body=b"down")] * 5
    config = BreakerConfig(window_size=2, minimum_calls=2, wait_in_open=60.0)
    registry = BreakerRegistry()
    adjustment = measured(coordinator(), ("a", 1.0))
    sender = HttpDispatcher(
        DispatchPolicy(attempts=4),
        breaker_for=lambda name: registry.get_or_create(name, config),
        sleep=sleeps,
        jitter=lambda: 0.0,
    )
    async with sender:
        (outcome,) = await sender.dispatch(
            adjustment, endpoints(("a", receiver.url)), correlation_id="c"
        )

    assert (outcome.ok, outcome.attempts, outcome.status) == (False, 2, 503)
    assert outcome.error.startswith("circuit open")
    assert len(receiver.requests) == 2
    assert len(sleeps.waits) == 2, "the wait before the refused attempt, none after it"


# --- refusals before anything is sent ----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://127.0.0.1/frequency", "not an http(s) URL"),
        ("127.0.0.1:8082/frequency", "not an http(s) URL"),
        ("http:///frequency", "not an http(s) URL"),
        ("http://[::1", "cannot be read"),
    ],
)
async def test_a_bad_url_refuses_the_dispatch_and_sends_nothing(
    sleeps: NotedSleeps, receiver: Receiver, url: str, why: str
) -> None:
    adjustment = measured(coordinator(), ("a", 1.0), ("b", 1.0))
    async with dispatcher(sleeps) as sender:
        with pytest.raises(DispatchRefused, match=re.escape(why)) as refused:
            await sender.dispatch(
                adjustment, endpoints(("a", receiver.url), ("b", url)), correlation_id="c"
            )

    assert refused.value.agent == "b"
    assert receiver.requests == []


async def test_an_agent_without_an_endpoint_refuses_the_dispatch(
    sleeps: NotedSleeps, receiver: Receiver
) -> None:
    adjustment = measured(coordinator(), ("a", 1.0), ("b", 1.0))
    async with dispatcher(sleeps) as sender:
        with pytest.raises(DispatchRefused, match="no endpoint for it") as refused:
            await sender.dispatch(
                adjustment, endpoints(("a", receiver.url), ("x", receiver.url)), correlation_id="c"
            )

    assert refused.value.agent == "b"
    assert "endpoints: a, x" in str(refused.value)
    assert receiver.requests == []


# --- lifecycle ---------------------------------------------------------------------------------


async def test_a_borrowed_client_stays_open_and_a_closed_dispatcher_refuses(
    sleeps: NotedSleeps, receiver: Receiver
) -> None:
    adjustment = measured(coordinator(), ("a", 1.0))
    async with httpx.AsyncClient() as client:
        sender = HttpDispatcher(client=client, sleep=sleeps)
        await sender.aclose()
        assert not client.is_closed
        with pytest.raises(RuntimeError, match="closed"):
            await sender.dispatch(adjustment, endpoints(("a", receiver.url)), correlation_id="c")
    owned = HttpDispatcher(sleep=sleeps)
    async with owned:
        (outcome,) = await owned.dispatch(
            adjustment, endpoints(("a", receiver.url)), correlation_id="c"
        )
    assert outcome.ok
    assert owned._client.is_closed


async def test_a_breakers_fallback_is_not_taken_for_the_agents_answer(
    sleeps: NotedSleeps, receiver: Receiver
) -> None:
    receiver.script = [Reply(503, body=b"down")]
    registry = BreakerRegistry()
    adjustment = measured(coordinator(), ("a", 1.0))
    sender = HttpDispatcher(
        breaker_for=lambda name: registry.get_or_create(name, fallback=lambda error: "cached"),
        sleep=sleeps,
    )
    async with sender:
        (outcome,) = await sender.dispatch(
            adjustment, endpoints(("a", receiver.url)), correlation_id="c"
        )

    assert not outcome.ok
    assert "fallback" in outcome.error
