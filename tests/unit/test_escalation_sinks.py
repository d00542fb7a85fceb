"""Signatures, the log and callback sinks, and the per-tenant choice of sinks."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventcenter.domain.errors import ConfigurationError, SignatureInvalid
from eventcenter.domain.escalation import Attempt, EscalationNotice
from eventcenter.healing.escalation import (
    CallbackSink,
    Delivery,
    Escalator,
    LogSink,
    sign,
    verify_signature,
)

SECRET = "s3cret-shared-with-the-receiver"
NOW = 1_700_000_000.0


def notice(tenant: str = "acme", **changes: Any) -> EscalationNotice:
    values: dict[str, Any] = {
        "case_id": "case-1",
        "tenant": tenant,
        "source": "orders",
        "category": "auth_failure",
        "severity": "high",
        "summary": "the Redis password was refused",
        "evidence": ["WRONGPASS invalid username-password pair"],
        "attempts": [Attempt("reconnect", "failed: auth refused again")],
        "opened_at": NOW - 300.0,
        "escalated_at": NOW,
        "correlation_id": "deploy-7",
    }
    values.update(changes)
    return EscalationNotice(**values)


# --- signatures ----------------------------------------------------------------------------------


def test_a_signed_body_verifies_with_the_same_secret() -> None:
    body = notice().body()
    header = sign(SECRET, body, int(NOW))

    assert header.startswith(f"t={int(NOW)},v1=")
    assert verify_signature(SECRET, header, body, now=NOW) == int(NOW)


@given(body=st.binary(max_size=300), secret=st.text(min_size=1), position=st.integers(0))
def test_any_change_to_the_body_breaks_the_signature(
    body: bytes, secret: str, position: int
) -> None:
    header = sign(secret, body, int(NOW))
    verify_signature(secret, header, body, now=NOW)
    if body:
        index = position % len(body)
        tampered = body[:index] + bytes([body[index] ^ 0x01]) + body[index + 1 :]
    else:
        tampered = b"x"

    with pytest.raises(SignatureInvalid, match="no v1 signature matches"):
        verify_signature(secret, header, tampered, now=NOW)


def test_another_secret_does_not_verify() -> None:
    body = notice().body()
    header = sign("another-secret-of-someone-else", body, int(NOW))

    with pytest.raises(SignatureInvalid, match="another secret, or the body was changed"):
        verify_signature(SECRET, header, body, now=NOW)


def test_a_changed_timestamp_breaks_the_signature() -> None:
    body = notice().body()
    header = sign(SECRET, body, int(NOW)).replace(f"t={int(NOW)}", f"t={int(NOW) + 1}")

    with pytest.raises(SignatureInvalid, match="no v1 signature matches"):
        verify_signature(SECRET, header, body, now=NOW)


@pytest.mark.parametrize("offset", [-300.0, 0.0, 300.0])
def test_a_timestamp_inside_the_tolerance_is_accepted(offset: float) -> None:
    body = b"{}"
    header = sign(SECRET, body, int(NOW))

    assert verify_signature(SECRET, header, body, now=NOW + offset, tolerance=300.0)


@pytest.mark.parametrize("offset", [-301.0, 301.0, 86_400.0])
def test_a_timestamp_outside_the_tolerance_is_refused_as_a_replay(offset: float) -> None:
    body = b"{}"
    header = sign(SECRET, body, int(NOW))

    with pytest.raises(SignatureInvalid, match="at most 300 s is accepted"):
        verify_signature(SECRET, header, body, now=NOW + offset, tolerance=300.0)


def test_a_header_with_several_signatures_verifies_if_one_matches() -> None:
    body = b'{"a":1}'
    old = sign("the-secret-being-retired", body, int(NOW)).split(",")[1]
    header = f"{sign(SECRET, body, int(NOW))},{old}"

    assert verify_signature("the-secret-being-retired", header, body, now=NOW) == int(NOW)
    assert verify_signature(SECRET, header, body, now=NOW) == int(NOW)


@pytest.mark.parametrize(
    ("header", "words"),
    [
        (None, "no X-Eventcenter-Signature header"),
        ("", "no X-Eventcenter-Signature header"),
        ("v1=abc", "must hold one t="),
        ("t=yesterday,v1=abc", "must hold one t="),
        ("t=1,t=2,v1=abc", "must hold one t="),
        (f"t={int(NOW)}", "holds no v1="),
    ],
)
def test_a_malformed_header_is_refused_saying_what_is_wrong(header: str | None, words: str) -> None:
    with pytest.raises(SignatureInvalid, match=words):
        verify_signature(SECRET, header, b"{}", now=NOW)


# --- log and callback sinks ----------------------------------------------------------------------


async def test_the_log_sink_writes_one_structured_record_per_notice(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = LogSink()
    sent = notice()

    with caplog.at_level(logging.INFO, logger="eventcenter.escalation"):
        delivery = await sink.send(sent)

    assert delivery == Delivery("log", sent.notice_id, True)
    records = [r for r in caplog.records if r.name == "eventcenter.escalation"]
    assert len(records) == 1
    record = records[0]
    assert record.levelno == logging.WARNING
    assert record.tenant == "acme"  # type: ignore[attr-defined]
    assert record.source == "orders"  # type: ignore[attr-defined]
    assert record.correlation_id == "deploy-7"  # type: ignore[attr-defined]
    assert record.case_id == "case-1"  # type: ignore[attr-defined]
    assert record.notice_id == sent.notice_id  # type: ignore[attr-defined]
    assert record.escalation == sent.as_dict()  # type: ignore[attr-defined]
    message = record.getMessage()
    assert "case case-1 (acme/orders) escalated" in message
    assert "reconnect (failed: auth refused again)" in message
    assert "eventcenter rca ack case-1" in message


async def test_a_sync_callback_gets_the_notice() -> None:
    got: list[EscalationNotice] = []
    sink = CallbackSink("mine", got.append)

    delivery = await sink.send(notice())

    assert delivery.ok
    assert got == [notice()]


async def test_an_async_callback_is_awaited() -> None:
    got: list[str] = []

    async def page(sent: EscalationNotice) -> None:
        await asyncio.sleep(0)
        got.append(sent.case_id)

    delivery = await CallbackSink("pager", page).send(notice())

    assert delivery.ok
    assert got == ["case-1"]


async def test_a_callback_that_raises_is_a_failed_delivery_with_the_reason() -> None:
    def broken(sent: EscalationNotice) -> None:
        raise RuntimeError("pager service down")

    delivery = await CallbackSink("pager", broken).send(notice())

    assert not delivery.ok
    assert delivery.reason == "RuntimeError: pager service down"
    assert delivery.sink == "pager"


# --- the escalator -------------------------------------------------------------------------------


class Recorder:
    """A sink that keeps what it was sent."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: list[EscalationNotice] = []

    async def send(self, sent: EscalationNotice) -> Delivery:
        self.sent.append(sent)
        return Delivery(self.name, sent.notice_id, True)


class Raising:
    name = "buggy"

    async def send(self, sent: EscalationNotice) -> Delivery:
        raise KeyError("a bug in a user's sink")


def escalator(**selection: Any) -> tuple[Escalator, dict[str, Recorder]]:
    sinks = {name: Recorder(name) for name in ("log", "ops", "acme-pager", "globex-mail")}
    return Escalator(sinks.values(), **selection), sinks


async def test_a_tenant_without_its_own_list_gets_the_default_sinks() -> None:
    chosen, sinks = escalator(default=["log", "ops"], tenants={"acme": ["acme-pager"]})

    report = await chosen.escalate(notice(tenant="initech"))

    assert report.delivered == ("log", "ops")
    assert report.reached
    assert [len(sinks[name].sent) for name in ("log", "ops", "acme-pager")] == [1, 1, 0]


async def test_a_tenant_list_replaces_the_default() -> None:
    chosen, sinks = escalator(
        default=["log", "ops"], tenants={"acme": ["acme-pager"], "globex": ["log", "globex-mail"]}
    )

    acme = await chosen.escalate(notice(tenant="acme"))
    globex = await chosen.escalate(notice(tenant="globex"))

    assert acme.delivered == ("acme-pager",)
    assert globex.delivered == ("log", "globex-mail")
    assert sinks["ops"].sent == []


async def test_only_limits_a_sending_to_the_sinks_not_reached_yet() -> None:
    chosen, sinks = escalator(default=["log", "ops"])

    report = await chosen.escalate(notice(), only={"ops"})

    assert report.delivered == ("ops",)
    assert sinks["log"].sent == []


async def test_a_sink_that_raises_is_reported_and_the_others_still_get_the_notice(
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = Recorder("log")
    chosen = Escalator([Raising(), good], default=["buggy", "log"])

    with caplog.at_level(logging.ERROR, logger="eventcenter.escalation"):
        report = await chosen.escalate(notice())

    assert report.delivered == ("log",)
    [failed] = report.failed
    assert failed.sink == "buggy"
    assert "KeyError" in failed.reason
    assert len(good.sent) == 1
    assert any("buggy raised" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("selection", "words"),
    [
        ({"default": ["log", "opps"]}, "the default escalation sinks name 'opps', which is not"),
        ({"tenants": {"acme": ["pagr"]}}, "of tenant 'acme' name 'pagr', which is not a sink"),
        ({"default": []}, "would reach nobody"),
        ({"tenants": {"acme": []}}, "would reach nobody"),
    ],
)
def test_a_selection_naming_no_sink_is_refused_when_built(
    selection: dict[str, Any], words: str
) -> None:
    with pytest.raises(ConfigurationError, match=words) as raised:
        escalator(**selection)

    if "not a sink" in words:
        assert "(sinks: acme-pager, globex-mail, log, ops)" in str(raised.value)


def test_two_sinks_of_one_name_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="two escalation sinks are named 'log'"):
        Escalator([Recorder("log"), LogSink()])
