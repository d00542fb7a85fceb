"""Pausing a source in its log: the events and the flag, idempotent commands, snapshots, a log
from before pausing existed, and the request's validation."""

from __future__ import annotations

from typing import Any

import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate

from eventcenter.domain.errors import InvalidPauseRequest
from eventcenter.domain.hysteresis import HysteresisConfig, Switch
from eventcenter.domain.source_log import SourceLog
from eventcenter.domain.source_modes import EVENT_ONLY, HYBRID
from eventcenter.domain.source_pause import (
    REASON_MAX,
    PauseAction,
    PauseRequest,
    PauseResult,
    PauseState,
)

BOOKKEEPING = {"originator_id", "originator_version", "timestamp", "originator_topic"}


def recorded(aggregate: Aggregate) -> list[tuple[str, dict[str, Any]]]:
    return [
        (type(e).__name__, {k: v for k, v in vars(e).items() if k not in BOOKKEEPING})
        for e in aggregate.collect_events()
    ]


def new_log() -> SourceLog:
    log = SourceLog.register(
        "acme", "orders", at=0.0, has_push=True, has_poll=True, config=HysteresisConfig()
    )
    log.collect_events()
    return log


def test_a_new_log_is_not_paused() -> None:
    log = new_log()
    assert (log.paused, log.pause_state) == (False, None)


def test_pausing_records_when_why_and_who_and_keeps_the_mode() -> None:
    log = new_log()
    log.switch(Switch(3.0, EVENT_ONLY, HYBRID, "push failed", 3, 0, 3))
    log.collect_events()

    assert log.pause(at=10.0, reason="maintenance of the broker", by="alice") is True

    assert recorded(log) == [
        ("Paused", {"at": 10.0, "reason": "maintenance of the broker", "by": "alice"})
    ]
    assert log.paused is True
    assert log.pause_state == PauseState(10.0, "maintenance of the broker", "alice")
    assert log.mode == HYBRID, "a pause is no mode: the source resumes in the one it had"


def test_pausing_a_paused_source_records_nothing() -> None:
    log = new_log()
    log.pause(at=10.0, reason="first", by="alice")
    log.collect_events()

    assert log.pause(at=20.0, reason="second", by="bob") is False

    assert recorded(log) == []
    assert log.pause_state == PauseState(10.0, "first", "alice"), "the first pause stands"


def test_resuming_records_the_resume_and_clears_the_pause() -> None:
    log = new_log()
    log.pause(at=10.0, reason="maintenance", by="alice")
    log.collect_events()

    assert log.resume(at=30.0, reason="broker is back", by="bob") is True

    assert recorded(log) == [("Resumed", {"at": 30.0, "reason": "broker is back", "by": "bob"})]
    assert (log.paused, log.pause_state) == (False, None)


def test_resuming_a_source_that_is_not_paused_records_nothing() -> None:
    log = new_log()
    assert log.resume(at=5.0, reason="", by="alice") is False
    assert recorded(log) == []


def test_decisions_can_still_be_recorded_while_paused() -> None:
    """Outcomes received just before a pause are decided after it: their switch is recorded."""
    log = new_log()
    log.pause(at=10.0, reason="maintenance", by="alice")
    log.switch(Switch(10.0, EVENT_ONLY, HYBRID, "push failed", 3, 0, 3))
    assert (log.mode, log.paused) == (HYBRID, True)


class Sources(Application[Any]):
    snapshotting_intervals = {SourceLog: 2}


def test_the_pause_survives_a_snapshot_and_a_reload() -> None:
    app = Sources()
    try:
        log = SourceLog.register(
            "acme", "orders", at=0.0, has_push=True, has_poll=False, config=HysteresisConfig()
        )
        log.pause(at=10.0, reason="maintenance", by="alice")
        log.reconciled(at=11.0, missing=0, changed=0, deleted=0)
        app.save(log)
        assert app.snapshots is not None
        assert list(app.snapshots.get(log.id)), "no snapshot was taken"

        loaded: SourceLog = app.repository.get(log.id)

        assert loaded.pause_state == PauseState(10.0, "maintenance", "alice")
        loaded.resume(at=20.0, reason="", by="bob")
        app.save(loaded)
        assert app.repository.get(log.id).paused is False
    finally:
        app.close()


def test_a_log_snapshotted_before_pausing_existed_loads_as_not_paused() -> None:
    log = new_log()
    state = {k: v for k, v in vars(log).items() if k not in ("paused", "current_pause")}
    old = object.__new__(SourceLog)
    old.__dict__.update(state)
    assert (old.paused, old.pause_state) == (False, None)
    assert old.pause(at=1.0, reason="r", by="b") is True


# the request ------------------------------------------------------------------------------------


def test_a_pause_request_needs_a_reason() -> None:
    with pytest.raises(InvalidPauseRequest) as refused:
        PauseRequest.pause("alice", "   ")
    assert refused.value.field == "reason"
    assert "a pause needs a non-empty reason" in str(refused.value)


def test_a_resume_request_may_go_without_a_reason() -> None:
    request = PauseRequest.resume(" alice ")
    assert (request.action, request.by, request.reason) == (PauseAction.RESUME, "alice", "")


def test_a_request_names_every_bad_field() -> None:
    with pytest.raises(InvalidPauseRequest) as refused:
        PauseRequest.parse({"action": "stop", "by": "", "reasons": "x"})
    fields = [field for field, _ in refused.value.problems]
    assert fields == ["action", "by", "reasons"]
    assert "unknown field (a pause request has: action, by, reason)" in str(refused.value)


def test_a_reason_has_a_length_limit() -> None:
    PauseRequest.pause("alice", "x" * REASON_MAX)
    with pytest.raises(InvalidPauseRequest) as refused:
        PauseRequest.pause("alice", "x" * (REASON_MAX + 1))
    assert refused.value.field == "reason"


def test_a_request_parses_from_json_text() -> None:
    request = PauseRequest.parse(b'{"action": "pause", "by": "ops", "reason": "broker upgrade"}')
    assert request == PauseRequest.pause("ops", "broker upgrade")
    with pytest.raises(InvalidPauseRequest):
        PauseRequest.parse(b"{not json")


@pytest.mark.parametrize(
    ("action", "changed", "paused", "outcome"),
    [
        (PauseAction.PAUSE, True, PauseState(1.0, "why", "alice"), "paused"),
        (
            PauseAction.PAUSE,
            False,
            PauseState(1.0, "why", "alice"),
            "paused already (by alice: why)",
        ),
        (PauseAction.RESUME, True, None, "resumed"),
        (PauseAction.RESUME, False, None, "not paused: nothing to resume"),
    ],
)
def test_a_result_says_what_is_in_effect(
    action: PauseAction, changed: bool, paused: PauseState | None, outcome: str
) -> None:
    result = PauseResult("acme", "orders", action, changed, paused, EVENT_ONLY)
    assert result.outcome == outcome
    body = result.as_dict()
    assert body["outcome"] == outcome
    assert body["paused"] is (paused is not None)
    assert body["action"] == action.value
