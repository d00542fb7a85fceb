"""The center's self-healing end to end, on SQLite and PostgreSQL: a real EventCenter on a real
store whose source, RCA runner and strategies run on a fake clock (tests/source_center.py).

What a user relies on: a failing push path becomes one RCA case, analysed; a strategy is tried
and counts only when its re-check passes; the next outage picks its first strategy by what
healed before; what cannot be healed reaches a person once, through a signed webhook served on
loopback, who acknowledges and resolves it from the CLI; a restart resumes open cases and
breakers without healing or escalating anything twice; a handler's given-up delivery opens a
case, a retry that worked does not.

Fake time moves in small steps with the store settled in between; real time passes only where
the loopback webhook or a CLI subprocess needs it (bounded waits, never an assertion).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from eventcenter.center.healing import HealingSettings, StrategyLimits
from eventcenter.center.settings import CenterSettings
from eventcenter.domain.breaker import HALF_OPEN, OPEN, BreakerConfig
from eventcenter.domain.errors import CallNotPermitted
from eventcenter.domain.escalation import EscalationNotice
from eventcenter.domain.event import Event
from eventcenter.domain.rca_case import CaseRow, CaseStep
from eventcenter.domain.sources import SourceError, SourceErrorKind
from eventcenter.handlers.config import ProcessorSettings
from eventcenter.healing.escalation import SIGNATURE_HEADER, verify_signature
from eventcenter.healing.escalation_config import (
    EscalationSettings,
    RenotifySettings,
    WebhookSinkSettings,
)
from tests.e2e.test_cli import run
from tests.integration.webhooks import Receiver, receiving_webhooks
from tests.source_center import FakeTimeCenter

SECRET = "a-secret-the-receiver-shares-with-the-center"
VERIFY_S = 10.0  # the verify timeout: a re-check that has not passed by then failed
ANSWERS_S = 1.0  # how often the center applies people's answers
RENOTIFY_S = 120.0  # an unanswered escalated case is reminded after this
REAL_WAIT_S = 20.0  # only turns a hang into a failure (the webhook, the CLI)


def timeouts(count: int) -> list[SourceError]:
    return [SourceError(SourceErrorKind.TIMEOUT, "push receive timed out (test)")] * count


def refused_credentials(count: int) -> list[SourceError]:
    return [SourceError(SourceErrorKind.AUTH, "the stream refused our credentials (test)")] * count


def settings(url: str, tmp_path: Path, webhook: str | None = None) -> CenterSettings:
    """A center whose healing never explores (epsilon 0: the learned rates alone choose),
    with a webhook sink ``ops`` as the only escalation sink when ``webhook`` is given."""
    escalation = EscalationSettings(renotify=RenotifySettings(after=RENOTIFY_S))
    if webhook is not None:
        escalation = EscalationSettings(
            sinks=[WebhookSinkSettings(name="ops", url=webhook, secret=SECRET, retries=0)],
            default=["ops"],
            renotify=RenotifySettings(after=RENOTIFY_S),
        )
    return CenterSettings(
        database_url=url,
        data_dir=tmp_path / "data",
        processor=ProcessorSettings(max_attempts=2, backoff_base=0.01, backoff_max=0.05),
        healing=HealingSettings(
            verify_timeout=VERIFY_S,
            epsilon=0.0,
            answers_every=ANSWERS_S,
            escalation=escalation,
        ),
    )


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving_webhooks() as state:
        yield state


# reading the store -------------------------------------------------------------------------------


async def cases(w: FakeTimeCenter, **filters: Any) -> list[CaseRow]:
    found: list[CaseRow] = await w.center.healing.cases.cases(**filters)
    return found


async def history(w: FakeTimeCenter, case_id: str) -> list[CaseStep]:
    steps: list[CaseStep] = await w.center.healing.cases.history(UUID(case_id))
    return steps


def story(steps: list[CaseStep]) -> list[str]:
    """The case's steps without the failures attached to it (how many depends on timing),
    each with the strategy or sink it names."""
    told = []
    for step in steps:
        if step.name == "FailureAttached":
            continue
        detail = step.fields.get("strategy") or step.fields.get("sink")
        told.append(f"{step.name}:{detail}" if detail else step.name)
    return told


def steps_named(steps: list[CaseStep], name: str) -> list[CaseStep]:
    return [step for step in steps if step.name == name]


# moving time -------------------------------------------------------------------------------------

Check = Callable[[], bool | Awaitable[bool]]


async def holds(check: Check) -> bool:
    found = check()
    return await found if inspect.isawaitable(found) else found


async def run_until(w: FakeTimeCenter, check: Check, what: str, *, within: float) -> None:
    """Advance fake time in half-second steps until ``check`` holds; fail when it does not
    within ``within`` fake seconds."""
    elapsed = 0.0
    while not await holds(check):
        assert elapsed < within, f"{what}: not within {within:g} s of fake time"
        await w.run(0.5)
        elapsed += 0.5


async def real_until(w: FakeTimeCenter, check: Check, what: str) -> None:
    """Wait in real time (the loopback webhook, a CLI subprocess) until ``check`` holds."""
    deadline = time.monotonic() + REAL_WAIT_S
    while not await holds(check):
        assert time.monotonic() < deadline, f"{what}: not within {REAL_WAIT_S:g} s"
        await asyncio.sleep(0.02)
        await w.settled()


async def flowing(w: FakeTimeCenter, seconds: float) -> None:
    """At least ``seconds`` of fake time with an item pushed every 5 s (a quiet push path is
    silence, which the center counts as a failure)."""
    for n in range(math.ceil(seconds / 5)):
        w.fake.change(f"flow-{w.clock.now()}-{n}")
        await w.run(5, step=2.5)


def only_case(rows: list[CaseRow]) -> CaseRow:
    assert len(rows) == 1, [(row.category, row.status) for row in rows]
    return rows[0]


# 1. healed, verified, learned --------------------------------------------------------------------


async def test_push_timeouts_are_healed_by_the_second_strategy_and_the_next_outage_starts_there(
    database_url: str, tmp_path: Path
) -> None:
    async with FakeTimeCenter(settings(database_url, tmp_path)) as w:
        healing = w.center.healing
        await w.deliver(2)

        # the push path times out again and again: restart_stream is tried, and fails
        w.push.receive_errors.extend(timeouts(500))

        async def first_failed() -> bool:
            return healing.runner.stats.failed == 1

        await run_until(w, first_failed, "restart_stream judged", within=60)
        [case] = await cases(w)
        steps = await history(w, case.case_id)
        assert story(steps)[:4] == [
            "Opened",
            "Analysed",
            "HealingAttempted:restart_stream",
            "HealingFailed:restart_stream",
        ]
        [failed] = steps_named(steps, "HealingFailed")
        assert failed.fields["detail"] == f"the re-check did not pass within {VERIFY_S:g}s"

        # the outage ends: reconnect reopens the path, which delivers again
        w.push.receive_errors.clear()

        async def healed() -> bool:
            w.fake.change(f"after-{w.clock.now()}")
            return healing.runner.stats.verified == 1

        await run_until(w, healed, "case 1 healed", within=60)
        first = only_case(await cases(w))
        assert first.failures > 2, "the repeated timeouts were attached to the one case"
        steps = await history(w, first.case_id)
        assert story(steps) == [
            "Opened",
            "Analysed",
            "HealingAttempted:restart_stream",
            "HealingFailed:restart_stream",
            "HealingAttempted:reconnect",
            "HealingVerified:reconnect",
            "Closed",
        ]
        analysed = steps_named(steps, "Analysed")[0].fields["analysis"]
        assert analysed["category"] == "event_timeout"
        assert analysed["rule"] == "push_path_timeout"
        assert analysed["confidence"] >= 0.8
        assert analysed["strategies"] == ["restart_stream", "reconnect", "force_polling"]
        evidence = analysed["evidence"]
        assert evidence[0] == "failure in source_push", evidence
        assert evidence[1].startswith("error kind is timeout (timeout: "), evidence
        assert "push receive timed out (test)" in evidence[1]
        assert steps_named(steps, "Closed")[0].fields["outcome"] == "healed"
        assert (first.category, first.source) == ("event_timeout", "orders")
        stats = await healing.cases.stats("event_timeout")
        assert stats is not None
        assert stats.tally() == {"restart_stream": (0, 1), "reconnect": (1, 1)}

        # past the cool-downs, a second outage: reconnect (2/3) goes before restart_stream (1/3)
        await flowing(w, 70)
        w.push.receive_errors.extend(timeouts(500))

        async def second_attempted() -> bool:
            return healing.runner.stats.attempts == 3

        await run_until(w, second_attempted, "case 2 attempted", within=60)
        w.push.receive_errors.clear()
        [second] = await cases(w, open_only=True)
        assert second.case_id != first.case_id
        [attempted] = steps_named(await history(w, second.case_id), "HealingAttempted")
        assert attempted.fields["strategy"] == "reconnect"
        assert attempted.fields["reason"] == (
            "highest smoothed success rate: reconnect (0.67 = (1+1)/(1+2))"
        )

        async def healed_again() -> bool:
            w.fake.change(f"after-{w.clock.now()}")
            return healing.runner.stats.verified == 2

        await run_until(w, healed_again, "case 2 healed", within=60)
        assert story(await history(w, second.case_id)) == [
            "Opened",
            "Analysed",
            "HealingAttempted:reconnect",
            "HealingVerified:reconnect",
            "Closed",
        ]
        stats = await healing.cases.stats("event_timeout")
        assert stats is not None
        assert stats.tally() == {"restart_stream": (0, 1), "reconnect": (2, 2)}
        assert [row.status for row in await cases(w)] == ["closed", "closed"]


# 2. unhealable: a person is told, answers from the CLI -------------------------------------------


def cli(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``eventcenter ARGS --database-url URL`` as a user runs it (the PostgreSQL URL carries
    the test's schema in its search path)."""
    return run(*args, "--database-url", url, cwd=tmp_path)


async def test_configured_strategy_limits_are_the_ones_the_runner_chooses_with(
    database_url: str, tmp_path: Path
) -> None:
    base = settings(database_url, tmp_path)
    limited = base.healing.model_copy(
        update={
            "strategies": {
                "restart_stream": StrategyLimits(max_attempts=1, cooldown=5.0),
                "recover_service": StrategyLimits(max_attempts=7),
            }
        }
    )
    async with FakeTimeCenter(base.model_copy(update={"healing": limited})) as w:
        chosen = {s.name: s for s in w.center.healing.runner.strategies.for_tenant("acme")}
        limits = {name: (s.max_attempts, s.cooldown) for name, s in chosen.items()}
        assert limits["restart_stream"] == (1, 5.0)
        assert limits["recover_service"] == (7, 30.0)
        assert limits["reconnect"] == (2, 60.0)


async def test_refused_credentials_escalate_once_to_the_webhook_and_are_answered_from_the_cli(
    database_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    async with FakeTimeCenter(settings(database_url, tmp_path, receiver.url)) as w:
        healing = w.center.healing
        await w.deliver(2)
        w.push.receive_errors.extend(refused_credentials(500))

        await run_until(w, lambda: healing.runner.stats.opened == 1, "case opened", within=30)
        await real_until(w, lambda: healing.runner.stats.escalated == 1, "the case escalated")
        case = only_case(await cases(w))
        assert (case.category, case.status) == ("auth_failure", "escalated")

        [request] = receiver.requests
        signed_at = verify_signature(
            SECRET, request.headers[SIGNATURE_HEADER.lower()], request.body, now=request.at
        )
        assert abs(signed_at - request.at) < 5
        notice = EscalationNotice.from_body(request.body)
        assert (notice.case_id, notice.tenant, notice.source) == (case.case_id, "acme", "orders")
        assert (notice.category, notice.notification) == ("auth_failure", 1)
        assert notice.summary.startswith("no healing strategy applies to this category")
        assert notice.answer_hints["acknowledge"] == f"eventcenter rca ack {case.case_id}"

        # a person acknowledges it from another process; the center applies it
        acked = await asyncio.to_thread(
            cli, tmp_path, database_url, "rca", "ack", case.case_id, "--by", "dana", "--wait", "0"
        )
        assert "answer recorded" in acked.stdout
        await w.run(ANSWERS_S * 2)
        found = await healing.cases.case(UUID(case.case_id))
        assert found is not None
        assert found.status == "acknowledged"
        assert found.acknowledged is not None
        assert found.acknowledged["by"] == "dana"

        # no reminder after an acknowledgement, long past the renotify time
        await flowing(w, RENOTIFY_S + 60)
        await w.settled()
        assert len(receiver.requests) == 1

        # the key is rotated (the path delivers again), and the person resolves the case
        w.push.receive_errors.clear()
        await flowing(w, 40)
        resolved = await asyncio.to_thread(
            cli,
            tmp_path,
            database_url,
            "rca",
            "resolve",
            case.case_id,
            "--note",
            "rotated the key",
            "--by",
            "dana",
            "--wait",
            "0",
        )
        assert "answer recorded" in resolved.stdout
        await w.run(ANSWERS_S * 2)

        steps = await history(w, case.case_id)
        assert story(steps) == [
            "Opened",
            "Analysed",
            "Escalated:ops",
            "Acknowledged",
            "Resolved",
            "Closed",
        ]
        assert len(receiver.requests) == 1
        assert not await cases(w, open_only=True)

    shown, listed = await asyncio.gather(
        asyncio.to_thread(cli, tmp_path, database_url, "rca", "show", case.case_id, "--json"),
        asyncio.to_thread(cli, tmp_path, database_url, "rca", "list", "--open", "--json"),
    )
    assert listed.stdout == "", "no open case"
    lines = [json.loads(line) for line in shown.stdout.splitlines()]
    told = [line for line in lines if line["name"] != "FailureAttached"]
    assert [line["name"] for line in told] == [
        "Opened",
        "Analysed",
        "Escalated",
        "Acknowledged",
        "Resolved",
        "Closed",
    ]
    assert [line["version"] for line in lines] == list(range(1, len(lines) + 1))
    assert told[1]["analysis"]["category"] == "auth_failure"
    assert told[2]["sink"] == "ops"
    assert told[3]["by"] == "dana"
    assert (told[4]["note"], told[4]["by"]) == ("rotated the key", "dana")
    assert told[5]["outcome"] == "resolved"


# 3. a restart resumes what was open, and repeats nothing -----------------------------------------

BREAKER = BreakerConfig(
    window_size=2, minimum_calls=2, permitted_calls_in_half_open=2, wait_in_open=120.0
)
DOWN_S = 30.0  # fake seconds between the two centers


def refused() -> None:
    raise ConnectionError("payments API refused the connection (test)")


def answered() -> str:
    return "ok"


async def test_a_restart_keeps_breakers_and_open_cases_and_heals_or_escalates_nothing_twice(
    database_url: str, tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    config = settings(database_url, tmp_path, receiver.url)
    async with FakeTimeCenter(config) as w:
        healing = w.center.healing
        payments = healing.breakers.get_or_create("payments", BREAKER)
        for _ in range(2):
            with pytest.raises(ConnectionError):
                payments.call(refused)
        assert payments.state == OPEN
        open_until = w.clock.now() + BREAKER.wait_in_open
        await w.deliver(2)

        # an unhealable case escalates ...
        w.push.receive_errors.extend(refused_credentials(500))
        await run_until(w, lambda: healing.runner.stats.opened == 1, "auth case", within=30)
        await real_until(w, lambda: healing.runner.stats.escalated == 1, "escalated")
        [unhealable] = await cases(w)
        escalated_at = w.clock.now()

        # ... and a push outage is being healed when the center stops: restart_stream was
        # applied, its re-check has no verdict yet
        w.push.receive_errors.clear()
        w.push.receive_errors.extend(timeouts(500))
        await run_until(w, lambda: healing.runner.stats.attempts == 1, "attempt", within=60)
        await w.run(1.0)
        assert healing.runner.stats.failed == healing.runner.stats.verified == 0
        healing_case = next(r for r in await cases(w) if r.category == "event_timeout")
        assert healing_case.status == "healing"
        analysed = steps_named(await history(w, unhealable.case_id), "Analysed")[0]
        assert analysed.fields["context"]["breakers"] == {"payments": "open"}
    assert len(receiver.requests) == 1
    caplog.clear()

    # the second center: the outage ended while it was down
    async with FakeTimeCenter(config, start=w.clock.now() + DOWN_S, fake=w.fake) as again:
        healing = again.center.healing
        payments = healing.breakers.get_or_create("payments", BREAKER)
        assert payments.state == OPEN
        retry_in = payments.status().retry_in
        assert retry_in is not None
        assert retry_in == pytest.approx(open_until - again.clock.now())
        assert 0 < retry_in < BREAKER.wait_in_open - DOWN_S
        with pytest.raises(CallNotPermitted):
            payments.call(answered)

        # the interrupted attempt is re-checked, not applied again; it healed the case
        async def rechecked() -> bool:
            again.fake.change(f"after-{again.clock.now()}")
            return healing.runner.stats.verified == 1

        await run_until(again, rechecked, "re-checked", within=30)
        steps = await history(again, healing_case.case_id)
        assert story(steps) == [
            "Opened",
            "Analysed",
            "HealingAttempted:restart_stream",
            "HealingVerified:restart_stream",
            "Closed",
        ]
        [verified] = steps_named(steps, "HealingVerified")
        assert verified.fields["detail"] == "re-checked after a restart: the re-check passed"
        restarts = [r for r in caplog.records if "restarting the push path" in r.getMessage()]
        assert restarts == [], "restart_stream was applied once, before the restart"
        stats = await healing.cases.stats("event_timeout")
        assert stats is not None
        assert stats.tally() == {"restart_stream": (1, 1)}

        # the escalated case was not escalated again
        due = escalated_at + RENOTIFY_S
        assert again.clock.now() < due
        assert len(receiver.requests) == 1
        assert story(await history(again, unhealable.case_id)) == [
            "Opened",
            "Analysed",
            "Escalated:ops",
        ]

        # the breaker half-opens when the rest of its wait is over
        await flowing(again, open_until - again.clock.now())
        assert payments.call(answered) == "ok"
        assert payments.state == HALF_OPEN

        # the escalated case is followed again: reminded when due, once
        await flowing(again, due - again.clock.now())
        await real_until(again, lambda: healing.runner.stats.renotified == 1, "reminded")
        steps = await history(again, unhealable.case_id)
        assert story(steps) == ["Opened", "Analysed", "Escalated:ops", "Renotified:ops"]
        first_notice, reminder = (EscalationNotice.from_body(r.body) for r in receiver.requests)
        assert (first_notice.notification, reminder.notification) == (1, 2)
        assert reminder.case_id == first_notice.case_id == unhealable.case_id
        assert reminder.escalated_at == first_notice.escalated_at, "it escalated once, then"
        assert reminder.sent_at >= first_notice.escalated_at + RENOTIFY_S
        assert healing.runner.stats.escalated == 0


# 4. handlers: a given-up delivery is a case, a retry that worked is not --------------------------


async def test_a_dead_lettered_delivery_opens_a_handler_bug_case_that_escalates_a_retried_one_none(
    database_url: str, tmp_path: Path
) -> None:
    w = FakeTimeCenter(settings(database_url, tmp_path))
    receipts: list[int] = []

    async def flaky(event: Event, ctx: object) -> None:
        receipts.append(len(receipts) + 1)
        if len(receipts) == 1:
            raise ConnectionError("the receipt printer was busy (test)")

    async def broken(event: Event, ctx: object) -> None:
        raise KeyError("amount")

    w.center.processor.subscribe("receipt.requested", flaky, name="receipts")
    w.center.processor.subscribe("payment.captured", broken, name="payments-sync")
    async with w:
        healing = w.center.healing

        await w.center.publish("receipt.requested", {"order": "o-1"}, tenant="acme")
        await real_until(w, lambda: len(receipts) == 2, "the receipt retried")
        await w.settled()

        event_id = await w.center.publish("payment.captured", {"order": "o-2"}, tenant="acme")
        await real_until(w, lambda: healing.runner.stats.escalated == 1, "the bug escalated")

        case = only_case(await cases(w))
        assert (case.category, case.source, case.tenant) == ("handler_bug", "payments-sync", "acme")
        steps = await history(w, case.case_id)
        assert story(steps) == ["Opened", "Analysed", "Escalated:log"]
        failure = steps[0].fields["failure"]
        assert failure["component"] == "handler"
        assert failure["message"] == "KeyError: 'amount'"
        details = failure["details"]
        assert (details["subscription"], details["event_type"]) == (
            "payments-sync",
            "payment.captured",
        )
        assert (details["event_id"], details["attempts"]) == (event_id, 2)
        assert steps_named(steps, "Escalated")[0].fields["reason"] == (
            "no healing strategy applies to this category"
        )
        assert healing.runner.stats.analysed == 1, "the retry that worked was not analysed"
