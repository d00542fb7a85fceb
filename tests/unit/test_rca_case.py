"""The RCA case aggregate: its events, the id derived from the cause, refusals, recording a
step twice, and snapshots."""

from __future__ import annotations

import json
from typing import Any

import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate

from eventcenter.domain.errors import RcaCaseRefused
from eventcenter.domain.rca import (
    DEFAULT_RULES,
    Component,
    Failure,
    ModeChange,
    RcaContext,
    analyse,
)
from eventcenter.domain.rca_case import (
    ACKNOWLEDGED,
    CLOSED,
    ESCALATED,
    HEALED,
    HEALING,
    OPEN,
    CaseRow,
    RcaCase,
    case_step,
)

AT = 1_700_000_000.0
BOOKKEEPING = {"originator_id", "originator_version", "timestamp", "originator_topic"}


def timeout(at: float = AT, source: str = "orders", tenant: str = "acme") -> Failure:
    return Failure(tenant, source, Component.SOURCE_PUSH, "timeout", "silent 30s", at)


def new_case(failure: Failure | None = None) -> RcaCase:
    made = failure or timeout()
    seen = RcaContext(at=AT, source_mode="hybrid")
    case = RcaCase.open(made, analyse(made, seen, DEFAULT_RULES), seen, at=AT)
    return case


def names(aggregate: Aggregate) -> list[str]:
    return [type(e).__name__ for e in aggregate.collect_events()]


def escalated() -> RcaCase:
    case = new_case()
    case.escalate("webhook", at=AT + 1, reason="nothing left")
    case.collect_events()
    return case


def test_opening_records_the_failure_and_the_analysis_as_plain_values() -> None:
    case = new_case()
    events = case.collect_events()
    assert [type(e).__name__ for e in events] == ["Opened", "Analysed"]
    opened, analysed = ({k: v for k, v in vars(e).items() if k not in BOOKKEEPING} for e in events)
    assert opened["category"] == "event_timeout"
    assert opened["failure"]["kind"] == "timeout"
    assert analysed["analysis"]["rule"] == "push_path_timeout"
    assert analysed["context"]["source_mode"] == "hybrid"
    json.dumps([opened, analysed])  # plain JSON values only
    assert (case.status, case.failures, case.tenant, case.source) == (OPEN, 1, "acme", "orders")


def test_the_case_id_is_derived_from_the_cause() -> None:
    assert new_case().id == RcaCase.id_for(timeout(), "event_timeout")
    assert new_case().id == new_case().id, "the same failure opens the same case"
    assert new_case(timeout(at=AT + 1)).id != new_case().id
    assert RcaCase.id_for(timeout(), "event_timeout") != RcaCase.id_for(timeout(), "unknown")


def test_later_failures_attach_once_each() -> None:
    case = new_case()
    case.collect_events()
    later = timeout(at=AT + 30)
    assert case.attach(later, at=AT + 30, repeats=4)
    assert not case.attach(later, at=AT + 31), "the same failure again changes nothing"
    assert not case.attach(timeout(), at=AT + 31), "nor does the one that opened it"
    assert names(case) == ["FailureAttached"]
    assert case.failures == 6
    assert case.last_failure["at"] == AT + 30
    with pytest.raises(RcaCaseRefused, match="concerns acme/billing"):
        case.attach(timeout(source="billing"), at=AT + 40)


def test_an_attempt_then_its_verdict() -> None:
    case = new_case()
    case.collect_events()
    assert case.attempt("restart_stream", 1, at=AT + 1, reason="best rate")
    assert case.status == HEALING
    assert case.pending_attempt is not None
    assert case.verdict(1, False, at=AT + 5, action="restarted", detail="still silent")
    assert case.status == OPEN
    assert case.attempt("reconnect", 2, at=AT + 6)
    assert case.verdict(2, True, at=AT + 9, action="reconnected", detail="delivering")
    assert case.status == HEALED
    assert case.close("healed by reconnect", at=AT + 9)
    assert names(case) == [
        "HealingAttempted",
        "HealingFailed",
        "HealingAttempted",
        "HealingVerified",
        "Closed",
    ]
    assert [(a["strategy"], a["verdict"]) for a in case.attempts] == [
        ("restart_stream", "failed"),
        ("reconnect", "verified"),
    ]
    assert (case.tried("reconnect"), case.last_applied("reconnect")) == (1, AT + 6)


def test_recording_a_step_twice_stores_it_once() -> None:
    case = new_case()
    case.collect_events()
    assert case.attempt("restart_stream", 1, at=AT + 1)
    assert not case.attempt("restart_stream", 1, at=AT + 2)
    assert case.verdict(1, False, at=AT + 3)
    assert not case.verdict(1, False, at=AT + 4)
    assert case.escalate("webhook", at=AT + 5, reason="r")
    assert not case.escalate("log", at=AT + 6, reason="r")
    assert case.renotify("webhook", 2, at=AT + 7)
    assert not case.renotify("webhook", 2, at=AT + 8)
    assert case.acknowledge("ops", at=AT + 9)
    assert not case.acknowledge("ops", at=AT + 10)
    assert case.close("done", at=AT + 11, outcome="resolved")
    assert not case.close("done", at=AT + 12)
    assert names(case) == [
        "HealingAttempted",
        "HealingFailed",
        "Escalated",
        "Renotified",
        "Acknowledged",
        "Closed",
    ]


@pytest.mark.parametrize(
    ("prepare", "command", "problem"),
    [
        (lambda c: None, lambda c: c.attempt("a", 2, at=AT), "next attempt is #1"),
        (
            lambda c: c.attempt("a", 1, at=AT),
            lambda c: c.attempt("b", 2, at=AT),
            "still waiting for its verdict",
        ),
        (lambda c: None, lambda c: c.verdict(1, True, at=AT), "no attempt #1"),
        (
            lambda c: (c.attempt("a", 1, at=AT), c.verdict(1, False, at=AT)),
            lambda c: c.verdict(1, True, at=AT),
            "was failed already",
        ),
        (
            lambda c: c.attempt("a", 1, at=AT),
            lambda c: c.escalate("webhook", at=AT, reason="r"),
            "still waiting for its verdict",
        ),
        (
            lambda c: c.escalate("webhook", at=AT, reason="r"),
            lambda c: c.attempt("a", 1, at=AT),
            "no longer healed automatically",
        ),
        (lambda c: None, lambda c: c.acknowledge("ops", at=AT), "it was not escalated"),
        (
            lambda c: (c.escalate("w", at=AT, reason="r"), c.acknowledge("ann", at=AT)),
            lambda c: c.acknowledge("bob", at=AT),
            "ann acknowledged it already",
        ),
        (lambda c: None, lambda c: c.renotify("w", 2, at=AT), "only an escalated case"),
        (
            lambda c: c.escalate("w", at=AT, reason="r"),
            lambda c: c.renotify("w", 3, at=AT),
            "next notification is #2",
        ),
        (
            lambda c: c.resolve("fixed the DNS", at=AT),
            lambda c: c.resolve("again", at=AT),
            "it was closed",
        ),
        (
            lambda c: c.close("healed", at=AT),
            lambda c: c.attach(timeout(at=AT + 1), at=AT),
            "it was closed",
        ),
        (lambda c: None, lambda c: c.resolve("  ", at=AT), "say what was done"),
        (lambda c: c.attempt("a", 1, at=AT), lambda c: c.close("x", at=AT), "verdict"),
    ],
)
def test_a_case_refuses_what_does_not_follow(prepare: Any, command: Any, problem: str) -> None:
    case = new_case()
    prepare(case)
    before = len(case.collect_events())
    with pytest.raises(RcaCaseRefused, match=problem) as refused:
        command(case)
    assert refused.value.case == str(case.id)
    assert len(case.collect_events()) == 0, f"nothing recorded after {before} events"


def test_escalation_acknowledgement_and_resolution() -> None:
    case = escalated()
    assert (case.status, case.escalated_at, case.notified_at) == (ESCALATED, AT + 1, AT + 1)
    case.renotify("webhook", 2, at=AT + 3600)
    assert case.notified_at == AT + 3600
    case.acknowledge("ops@acme", at=AT + 4000, note="looking")
    assert case.status == ACKNOWLEDGED
    case.resolve("rotated the password", at=AT + 5000, by="ops@acme")
    assert names(case) == ["Renotified", "Acknowledged", "Resolved", "Closed"]
    assert case.status == CLOSED
    assert case.closed == {
        "reason": "resolved by ops@acme: rotated the password",
        "outcome": "resolved",
        "at": AT + 5000,
    }


def test_resolving_a_case_being_healed_closes_it_and_refuses_the_late_verdict() -> None:
    case = new_case()
    case.attempt("restart_stream", 1, at=AT + 1)
    case.resolve("restarted the broker by hand", at=AT + 2)
    assert case.status == CLOSED
    with pytest.raises(RcaCaseRefused, match="closed"):
        case.verdict(1, True, at=AT + 3)


def test_the_summary_and_row_show_the_case_as_plain_values() -> None:
    case = escalated()
    summary = case.summary(reason="nothing left", notification=1)
    assert summary.key == f"{case.id}/1"
    assert summary.category == "event_timeout"
    assert summary.confidence == pytest.approx(0.9)
    json.dumps(summary.as_dict())
    row = CaseRow.of(case)
    assert (row.status, row.notifications, row.attempts, row.failures) == (ESCALATED, 1, 0, 1)


class Cases(Application[Any]):
    snapshotting_intervals = {RcaCase: 5}


def test_a_case_loads_from_its_events_and_from_a_snapshot() -> None:
    app = Cases()
    try:
        case = new_case()
        for n in range(1, 4):
            case.attempt("restart_stream", n, at=AT + n)
            case.verdict(n, False, at=AT + n, action="restarted", detail="still silent")
            case.attach(timeout(at=AT + 100 + n), at=AT + n)
        case.escalate("webhook", at=AT + 10, reason="exhausted")
        app.save(case)
        assert app.snapshots is not None
        assert list(app.snapshots.get(case.id)), "a snapshot was taken"
        loaded: RcaCase = app.repository.get(case.id)
        assert vars(loaded) == vars(case) | {"_pending_events": []}
        steps = [case_step(e) for e in app.events.get(case.id)]
        assert [s.version for s in steps] == list(range(1, len(steps) + 1))
        assert steps[0].name == "Opened"
        assert steps[-1].name == "Escalated"
        assert steps[-1].fields["sink"] == "webhook"
    finally:
        app.close()


def test_the_context_switches_are_kept_with_the_analysis() -> None:
    made = timeout()
    seen = RcaContext(
        at=AT,
        source_mode="hybrid",
        recent_switches=(ModeChange(AT - 10, "event_only", "hybrid", "3 push failures"),),
    )
    case = RcaCase.open(made, analyse(made, seen, DEFAULT_RULES), seen, at=AT)
    assert case.context is not None
    assert RcaContext.from_dict(case.context) == seen
