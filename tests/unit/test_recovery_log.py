"""A service's recovery log: its events, what it keeps for a restart (the open incident, the
cool-down, the statistics folded), refusals, recording a step twice, and snapshots."""

from __future__ import annotations

from typing import Any

import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate

from eventcenter.domain.errors import RecoveryRefused
from eventcenter.domain.health import (
    RECENT_FAILURES,
    AttemptStart,
    IncidentEnd,
    IncidentOutcome,
    IncidentStart,
    RecoveryAttempt,
    RecoveryStats,
    SavedRecovery,
)
from eventcenter.domain.recovery_log import CUT_SHORT, ServiceRecovery

BOOKKEEPING = {"originator_id", "originator_version", "timestamp", "originator_topic"}
T0 = 1_700_000_000.0


def recorded(aggregate: Aggregate) -> list[str]:
    return [type(e).__name__ for e in aggregate.collect_events()]


def new_log() -> ServiceRecovery:
    log = ServiceRecovery.register("default", "cache", at=T0)
    log.collect_events()
    return log


def opened(since: float = T0) -> IncidentStart:
    return IncidentStart("cache", since, 3, "connection refused")


def attempt(
    number: int, since: float = T0, *, verified: bool = False, action: str = "restart"
) -> RecoveryAttempt:
    start = since + 10.0 * number
    error = None if verified else "re-check 1 failed: connection refused"
    return RecoveryAttempt("cache", action, number, since, start, start + 1.0, verified, error)


def ended(
    since: float = T0, outcome: IncidentOutcome = IncidentOutcome.GAVE_UP, attempts: int = 3
) -> IncidentEnd:
    at = since + 10.0 * attempts + 1.0
    return IncidentEnd("cache", since, outcome, attempts, at, at + 300.0)


def test_the_log_id_is_derived_from_center_and_service() -> None:
    assert ServiceRecovery.create_id("default", "cache") == new_log().id
    assert ServiceRecovery.create_id("east", "cache") != ServiceRecovery.create_id(
        "default", "cache"
    )


def test_an_incident_is_recorded_as_it_opens_tries_and_ends() -> None:
    log = new_log()
    log.record(opened())
    log.record(attempt(1))
    assert log.saved() == SavedRecovery("cache", T0, 1, None)
    log.record(attempt(2, verified=True))
    log.record(ended(outcome=IncidentOutcome.RECOVERED, attempts=2))
    events = log.collect_events()
    assert [type(e).__name__ for e in events] == [
        "IncidentOpened",
        "AttemptRecorded",
        "AttemptRecorded",
        "IncidentEnded",
    ]
    first = {k: v for k, v in vars(events[1]).items() if k not in BOOKKEEPING}
    assert first == {
        "attempt": 1,
        "action": "restart",
        "incident_since": T0,
        "started_at": T0 + 10.0,
        "finished_at": T0 + 11.0,
        "verified": False,
        "error": "re-check 1 failed: connection refused",
    }
    saved = log.saved()
    assert (saved.incident_since, saved.attempts) == (None, 0)
    assert saved.cool_down_until == T0 + 21.0 + 300.0


def test_the_statistics_are_folded_as_the_attempts_come() -> None:
    log = new_log()
    log.record(opened())
    log.record(attempt(1, action="reconnect"))
    log.record(attempt(2, verified=True))
    log.record(ended(outcome=IncidentOutcome.RECOVERED, attempts=2))
    later = T0 + 1_000.0
    log.record(opened(later))
    for number in (1, 2, 3):
        log.record(attempt(number, later))
    log.record(ended(later))
    stats = log.saved().stats.as_dict()
    assert stats["total_attempts"] == 5
    assert stats["successful_attempts"] == 1
    assert stats["average_recovery_time"] == pytest.approx(21.0)  # verified 21 s after opening
    assert stats["actions_by_type"]["reconnect"]["attempts"] == 1
    assert stats["actions_by_type"]["restart"] == {
        "attempts": 4,
        "successes": 1,
        "success_rate": 0.25,
        "average_recovery_time": pytest.approx(21.0),
    }
    assert stats["incidents"] == {"recovered": 1, "recovered_alone": 0, "gave_up": 1}
    assert [f["at"] for f in stats["recent_failures"]] == [
        T0 + 11.0,
        later + 11.0,
        later + 21.0,
        later + 31.0,
    ]


def test_only_the_last_failures_are_kept() -> None:
    log = new_log()
    for number in range(RECENT_FAILURES + 5):
        since = T0 + 1_000.0 * number
        log.record(opened(since))
        log.record(attempt(1, since))
        log.record(ended(since, attempts=1))
    failures = log.saved().stats.recent_failures
    assert len(failures) == RECENT_FAILURES
    assert failures[0].incident_since == T0 + 5_000.0


def test_recording_a_step_again_changes_nothing() -> None:
    log = new_log()
    log.record(opened())
    log.record(opened())
    log.record(attempt(1))
    log.record(attempt(1))
    log.record(attempt(2))
    log.record(attempt(1))
    log.record(ended(attempts=2))
    log.record(ended(attempts=2))
    log.record(attempt(2))  # a retried write of an attempt of the incident that ended
    log.record(opened())
    assert recorded(log) == [
        "IncidentOpened",
        "AttemptRecorded",
        "AttemptRecorded",
        "IncidentEnded",
    ]
    assert log.saved().stats.total.attempts == 2


@pytest.mark.parametrize(
    ("steps", "match"),
    [
        ([attempt(1)], "attempt 1 refused: no incident is open"),
        ([ended()], "no incident is open"),
        ([opened(), opened(T0 + 5.0)], "the incident opened at .* is still open"),
        ([opened(), attempt(2)], "attempt 2 refused: the log holds 0 attempt"),
        ([opened(), attempt(1, T0 + 5.0)], "belongs to the incident opened at"),
        ([opened(), ended(T0 + 5.0)], "belongs to the incident opened at"),
        ([IncidentStart("db", T0, 3)], "a step of 'db' does not belong here"),
    ],
)
def test_a_step_that_does_not_follow_is_refused_and_records_nothing(
    steps: list[Any], match: str
) -> None:
    log = new_log()
    *before, last = steps
    for step in before:
        log.record(step)
    log.collect_events()
    with pytest.raises(RecoveryRefused, match=match):
        log.record(last)
    assert recorded(log) == []


def begun(number: int, since: float = T0) -> AttemptStart:
    return AttemptStart("cache", "restart", number, since, since + 10.0 * number)


def test_an_attempt_begun_and_never_finished_is_saved_as_cut_short() -> None:
    log = new_log()
    log.record(opened())
    log.record(begun(1))
    log.record(begun(1))  # again: recorded once
    assert recorded(log) == ["IncidentOpened", "AttemptStarted"]
    saved = log.saved()
    assert (saved.incident_since, saved.attempts) == (T0, 0)
    assert saved.interrupted == RecoveryAttempt(
        "cache", "restart", 1, T0, T0 + 10.0, T0 + 10.0, False, CUT_SHORT
    )
    with pytest.raises(RecoveryRefused, match="holds 0 attempt"):
        log.record(begun(2))  # attempt 1 has no result yet

    log.record(attempt(1))  # its result (after a restart: cut short) ends it
    assert log.saved().interrupted is None
    log.record(begun(1))  # a start of an attempt with a result: nothing new
    log.record(begun(2))
    log.record(attempt(2))
    log.record(ended(attempts=2))
    assert recorded(log) == [
        "AttemptRecorded",
        "AttemptStarted",
        "AttemptRecorded",
        "IncidentEnded",
    ]
    log.record(begun(2))  # a start retried after the end: nothing new
    assert recorded(log) == []
    assert log.saved().interrupted is None
    with pytest.raises(RecoveryRefused, match="no incident is open"):
        log.record(begun(1, since=T0 + 1_000.0))


def test_an_empty_stats_record_folds_to_nothing() -> None:
    assert new_log().saved() == SavedRecovery("cache", None, 0, None)
    assert new_log().saved().stats.as_dict() == RecoveryStats().as_dict()


class Recoveries(Application[Any]):
    snapshotting_intervals = {ServiceRecovery: 5}


def test_a_long_history_is_loaded_from_a_snapshot() -> None:
    app = Recoveries()
    try:
        log = ServiceRecovery.register("default", "cache", at=T0)
        for number in range(8):
            since = T0 + 1_000.0 * number
            log.record(opened(since))
            log.record(attempt(1, since))
            log.record(attempt(2, since, verified=True))
            log.record(ended(since, IncidentOutcome.RECOVERED, 2))
        log.record(opened(T0 + 9_000.0))
        log.record(attempt(1, T0 + 9_000.0))
        app.save(log)
        snapshots = list(app.snapshots.get(log.id)) if app.snapshots else []
        loaded: ServiceRecovery = app.repository.get(log.id)
        assert snapshots, "no snapshot was taken"
        assert vars(loaded) == vars(log) | {"_pending_events": []}
        assert loaded.saved() == SavedRecovery("cache", T0 + 9_000.0, 1, T0 + 7_021.0 + 300.0)
        assert loaded.saved().stats.as_dict() == log.saved().stats.as_dict()
    finally:
        app.close()
