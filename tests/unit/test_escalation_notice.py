"""The escalation notice: plain values, checked when built, one canonical JSON body."""

from __future__ import annotations

import math
import shlex
from dataclasses import replace
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventcenter.domain.errors import InvalidNotice
from eventcenter.domain.escalation import (
    NOTICE_TYPE,
    NOTICE_VERSION,
    Attempt,
    EscalationNotice,
)

OPENED = 1_700_000_000.0


def notice(**changes: Any) -> EscalationNotice:
    values: dict[str, Any] = {
        "case_id": "case-1",
        "tenant": "acme",
        "source": "orders",
        "category": "event_timeout",
        "severity": "high",
        "summary": "the push path of acme/orders has been silent for 5 minutes",
        "evidence": ["no push outcome for 90s", "3 consecutive push failures"],
        "attempts": [
            Attempt("restart_stream", "failed: still silent after re-check"),
            Attempt("reconnect", "failed: connection refused"),
        ],
        "opened_at": OPENED,
        "escalated_at": OPENED + 120.0,
        "correlation_id": "deploy-42",
    }
    values.update(changes)
    return EscalationNotice(**values)


def test_the_body_is_canonical_json_holding_every_fact_and_the_answer_commands() -> None:
    body = notice().body()

    assert body == orjson.dumps(orjson.loads(body), option=orjson.OPT_SORT_KEYS)
    data = orjson.loads(body)
    assert data["type"] == NOTICE_TYPE
    assert data["version"] == NOTICE_VERSION
    assert data["case_id"] == "case-1"
    assert data["tenant"] == "acme"
    assert data["source"] == "orders"
    assert data["attempts"][0] == {
        "strategy": "restart_stream",
        "outcome": "failed: still silent after re-check",
    }
    assert data["evidence"] == ["no push outcome for 90s", "3 consecutive push failures"]
    assert data["opened_at"] == OPENED
    assert data["escalated_at"] == OPENED + 120.0
    assert data["notified_at"] == OPENED + 120.0  # the first sending goes out on escalation
    assert data["notification"] == 1
    assert data["correlation_id"] == "deploy-42"
    assert data["answer"]["acknowledge"] == "eventcenter rca ack case-1"
    assert data["answer"]["resolve"].startswith("eventcenter rca resolve case-1 --note ")


def test_equal_notices_give_equal_bytes_whatever_the_order_of_their_links() -> None:
    one = notice(links={"dashboard": "https://d.example/1", "api": "https://a.example/1"})
    two = notice(links={"api": "https://a.example/1", "dashboard": "https://d.example/1"})

    assert one.body() == two.body()


def test_a_body_reads_back_into_the_same_notice() -> None:
    original = notice(source=None, links={"dashboard": "https://d.example/1"})

    assert EscalationNotice.from_body(original.body()) == original


def test_retries_of_a_sending_share_its_id_and_a_reminder_gets_a_new_one() -> None:
    first = notice()
    reminder = first.renotified(OPENED + 3600.0)

    assert notice().notice_id == first.notice_id  # computed from the case, not drawn at random
    assert reminder.notice_id != first.notice_id
    assert reminder.notification == 2
    assert reminder.sent_at == OPENED + 3600.0
    assert reminder.escalated_at == first.escalated_at
    assert notice(case_id="case-2").notice_id != first.notice_id


def test_the_answer_commands_quote_a_case_id_for_the_shell() -> None:
    odd = notice(case_id="case 1; rm -rf /")

    command = odd.answer_hints["acknowledge"]
    assert shlex.split(command) == ["eventcenter", "rca", "ack", "case 1; rm -rf /"]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"case_id": ""}, "case_id"),
        ({"tenant": "a/b"}, "tenant"),
        ({"source": "../etc"}, "source"),
        ({"summary": "   "}, "summary"),
        ({"escalated_at": OPENED - 1.0}, "escalated_at"),
        ({"opened_at": math.nan}, "opened_at"),
        ({"notified_at": OPENED}, "notified_at"),
        ({"notification": 0}, "notification"),
        ({"evidence": ["fine", ""]}, "evidence.1"),
        ({"attempts": [("restart_stream", "failed")]}, "attempts.0"),
        ({"summary": "x" * 5000}, "summary"),
    ],
)
def test_a_notice_refuses_values_it_cannot_hold(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidNotice) as raised:
        notice(**changes)

    assert raised.value.field == field
    assert field in str(raised.value)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"type": "other.webhook"}, "type"),
        ({"version": 2}, "version"),
        ({"colour": "red"}, "colour"),
        ({"opened_at": "yesterday"}, "opened_at"),
        ({"notice_id": "00000000-0000-5000-8000-000000000000"}, "notice_id"),
        ({"notification": 2}, "notice_id"),  # the id does not belong to that sending
    ],
)
def test_a_body_that_is_not_such_a_notice_is_refused_naming_the_field(
    change: dict[str, Any], field: str
) -> None:
    data = orjson.loads(notice().body())
    data.update(change)

    with pytest.raises(InvalidNotice) as raised:
        EscalationNotice.from_body(orjson.dumps(data))

    assert raised.value.field == field


def test_a_body_that_is_not_json_is_refused() -> None:
    with pytest.raises(InvalidNotice, match="not JSON"):
        EscalationNotice.from_body(b"{not json")


texts = st.text(st.characters(codec="utf-8"), min_size=1).filter(str.strip)
names = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,20}", fullmatch=True)
times = st.floats(min_value=0, max_value=4e9, allow_nan=False)


@given(
    case_id=texts,
    tenant=names,
    source=st.none() | names,
    summary=texts,
    evidence=st.lists(texts, max_size=4),
    attempts=st.lists(st.builds(Attempt, names, texts), max_size=4),
    opened=times,
    escalated_after=times,
    notification=st.integers(1, 50),
)
def test_any_notice_survives_its_body(
    case_id: str,
    tenant: str,
    source: str | None,
    summary: str,
    evidence: list[str],
    attempts: list[Attempt],
    opened: float,
    escalated_after: float,
    notification: int,
) -> None:
    original = notice(
        case_id=case_id[:200],
        tenant=tenant,
        source=source,
        summary=summary,
        evidence=evidence,
        attempts=attempts,
        opened_at=opened,
        escalated_at=opened + escalated_after,
        notification=notification,
    )

    again = EscalationNotice.from_body(original.body())

    assert again == original
    assert again.body() == original.body()
    assert again.notice_id == original.notice_id


def test_a_notice_is_a_frozen_value() -> None:
    original = notice()

    with pytest.raises(AttributeError):
        original.summary = "changed"  # type: ignore[misc]
    assert replace(original, severity="low").severity == "low"
