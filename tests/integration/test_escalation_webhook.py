"""The webhook sink against a real HTTP server the test runs on loopback (uvicorn, see
tests/integration/webhooks.py).

The server answers each request from a script (status, headers, body, delay) and keeps what it
received. The sink's back-off sleeps on a clock that only notes the waits, so retries cost no
real time; only the timeout test waits (a fraction of a second) for a slow answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from email.utils import formatdate
from typing import Any

import pytest

from eventcenter.domain.escalation import Attempt, EscalationNotice
from eventcenter.healing.escalation import (
    ATTEMPT_HEADER,
    SIGNATURE_HEADER,
    CallbackSink,
    Escalator,
    LogSink,
    WebhookSink,
    verify_signature,
)
from eventcenter.healing.escalation_config import WebhookSinkSettings
from tests.integration.webhooks import Receiver, Reply, receiving_webhooks
from tests.servers import closed_port

SECRET = "a-long-secret-shared-with-the-receiver"
NOW = time.time()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving_webhooks() as state:
        yield state


class NotedWaits:
    """A clock whose sleep returns at once, noting how long it was asked to wait."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def now(self) -> float:
        return sum(self.waits)

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


def notice(case_id: str = "case-1") -> EscalationNotice:
    return EscalationNotice(
        case_id=case_id,
        tenant="acme",
        source="orders",
        category="connection_failure",
        severity="high",
        summary="orders API refuses connections",
        evidence=["connect to 10.0.0.7:443 refused x12"],
        attempts=[Attempt("reconnect", "failed: still refused after 3 tries")],
        opened_at=NOW - 600.0,
        escalated_at=NOW,
        correlation_id="deploy-9",
    )


def sink(url: str, waits: NotedWaits, *, wall_time: Any = time.time, **changes: Any) -> WebhookSink:
    values: dict[str, Any] = {
        "name": "ops",
        "url": url,
        "secret": SECRET,
        "retries": 3,
        "backoff_base": 0.5,
        "backoff_max": 8.0,
        "timeout": 5.0,
        "connect_timeout": 2.0,
    }
    values.update(changes)
    settings = WebhookSinkSettings.model_validate(values)
    return WebhookSink(settings, clock=waits, wall_time=wall_time, jitter=lambda: 0.0)


async def test_the_notice_arrives_signed_and_verifies(receiver: Receiver) -> None:
    waits = NotedWaits()
    webhook = sink(receiver.url, waits)
    sent = notice()

    delivery = await webhook.send(sent)
    await webhook.aclose()

    assert delivery.ok
    assert (delivery.attempts, delivery.status, delivery.reason) == (1, 200, "")
    [request] = receiver.requests
    header = request.headers[SIGNATURE_HEADER.lower()]
    verify_signature(SECRET, header, request.body, now=request.at)
    assert request.body == sent.body()
    assert EscalationNotice.from_body(request.body) == sent
    assert request.key == sent.notice_id
    assert request.headers["content-type"] == "application/json"
    assert waits.waits == []


async def test_two_503_answers_then_200_make_one_delivery_after_retries_with_one_key(
    receiver: Receiver,
) -> None:
    receiver.script = [Reply(503, body=b"busy"), Reply(503, body=b"busy")]
    waits = NotedWaits()
    webhook = sink(receiver.url, waits)
    sent = notice()

    delivery = await webhook.send(sent)
    await webhook.aclose()

    assert delivery.ok
    assert (delivery.attempts, delivery.status) == (3, 200)
    assert [r.key for r in receiver.requests] == [sent.notice_id] * 3
    assert [r.headers[ATTEMPT_HEADER.lower()] for r in receiver.requests] == ["1", "2", "3"]
    assert {r.body for r in receiver.requests} == {sent.body()}
    for request in receiver.requests:  # each try is signed anew, and each verifies
        verify_signature(
            SECRET, request.headers[SIGNATURE_HEADER.lower()], request.body, now=request.at
        )
    assert waits.waits == [0.5, 1.0]  # exponential (the jitter drawn at 0 takes nothing off)


async def test_a_429_waits_at_least_what_retry_after_says(receiver: Receiver) -> None:
    receiver.script = [Reply(429, {"Retry-After": "7"}, b"slow down")]
    waits = NotedWaits()
    webhook = sink(receiver.url, waits)

    delivery = await webhook.send(notice())
    await webhook.aclose()

    assert delivery.ok
    assert delivery.attempts == 2
    assert waits.waits == [7.0]


async def test_retry_after_as_an_http_date_is_honoured(receiver: Receiver) -> None:
    receiver.script = [Reply(503, {"Retry-After": formatdate(NOW + 20, usegmt=True)})]
    waits = NotedWaits()
    webhook = sink(receiver.url, waits, wall_time=lambda: NOW)

    delivery = await webhook.send(notice())
    await webhook.aclose()

    assert delivery.ok
    assert len(waits.waits) == 1
    assert 19.0 <= waits.waits[0] <= 20.0  # the date has whole seconds


async def test_a_retry_after_beyond_the_limit_ends_the_sending_with_the_reason(
    receiver: Receiver,
) -> None:
    receiver.script = [Reply(503, {"Retry-After": "3600"}, b"maintenance")]
    waits = NotedWaits()
    webhook = sink(receiver.url, waits, retry_after_max=300)

    delivery = await webhook.send(notice())
    await webhook.aclose()

    assert not delivery.ok
    assert len(receiver.requests) == 1
    assert "HTTP 503 Service Unavailable: maintenance" in delivery.reason
    assert "asked to wait 3600 s, more than retry_after_max (300 s)" in delivery.reason
    assert waits.waits == []


async def test_a_400_is_not_retried_and_is_reported_with_the_reason(receiver: Receiver) -> None:
    receiver.script = [Reply(400, body=b"unknown tenant acme")]
    waits = NotedWaits()
    webhook = sink(receiver.url, waits)

    delivery = await webhook.send(notice())
    await webhook.aclose()

    assert not delivery.ok
    assert (delivery.attempts, delivery.status) == (1, 400)
    assert delivery.reason == "HTTP 400 Bad Request: unknown tenant acme (refused: not retried)"
    assert len(receiver.requests) == 1
    assert waits.waits == []


async def test_a_redirect_is_not_followed_nor_retried(receiver: Receiver) -> None:
    receiver.script = [Reply(302, {"Location": "http://127.0.0.1:1/elsewhere"}, b"")]
    waits = NotedWaits()
    webhook = sink(receiver.url, waits)

    delivery = await webhook.send(notice())
    await webhook.aclose()

    assert not delivery.ok
    assert delivery.status == 302
    assert len(receiver.requests) == 1


async def test_a_refused_port_fails_after_the_retry_budget_without_raising(
    caplog: pytest.LogCaptureFixture,
) -> None:
    waits = NotedWaits()
    webhook = sink(f"http://127.0.0.1:{closed_port()}/hooks", waits, retries=3)

    with caplog.at_level(logging.INFO, logger="eventcenter.escalation"):
        delivery = await webhook.send(notice())
    await webhook.aclose()

    assert not delivery.ok
    assert delivery.attempts == 4
    assert delivery.status is None
    assert delivery.reason.startswith("connection failed: ")
    assert delivery.reason.endswith("(gave up after 4 tries)")
    assert waits.waits == [0.5, 1.0, 2.0]
    [final] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert final.case_id == "case-1"  # type: ignore[attr-defined]
    assert SECRET not in caplog.text


async def test_an_answer_slower_than_the_timeout_is_retried(receiver: Receiver) -> None:
    receiver.script = [Reply(200, delay=0.6)]
    waits = NotedWaits()
    webhook = sink(receiver.url, waits, timeout=0.2, connect_timeout=0.2)

    delivery = await webhook.send(notice())
    await webhook.aclose()

    assert delivery.ok
    assert delivery.attempts == 2
    assert len(receiver.requests) == 2
    assert receiver.requests[0].key == receiver.requests[1].key  # the receiver can drop one


async def test_the_escalator_reports_which_sinks_took_the_notice(receiver: Receiver) -> None:
    receiver.script = [Reply(400, body=b"no such hook")]
    got: list[str] = []
    waits = NotedWaits()
    other = sink(receiver.url, waits, name="ops-b")
    escalator = Escalator(
        [
            sink(receiver.url, waits),
            other,
            LogSink(),
            CallbackSink("mine", lambda n: got.append(n.case_id)),
        ],
        default=["ops", "ops-b", "log", "mine"],
    )

    report = await escalator.escalate(notice())
    await escalator.aclose()

    assert set(report.delivered) == {"log", "mine", "ops", "ops-b"} - {report.failed[0].sink}
    [failed] = report.failed
    assert failed.sink in {"ops", "ops-b"}
    assert "HTTP 400" in failed.reason
    assert got == ["case-1"]
    assert len(receiver.requests) == 2
