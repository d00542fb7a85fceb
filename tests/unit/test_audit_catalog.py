"""What the audit trail makes of each recorded event (projections/catalog.py), the pure parts
of the queries (cursors, page sizes, ``--since``), and the runner's answer to a reader that
processed a page first: on domain events built in memory, and a read model in an in-memory
SQLite database."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest
from eventsourcing.domain import Aggregate, event
from eventsourcing_sqlalchemy.datastore import SQLAlchemyDatastore

from eventcenter.center.audit_views import parse_since
from eventcenter.domain.aggregates import DeadLetter, ProcessorLog
from eventcenter.domain.breaker import BreakerTransition
from eventcenter.domain.breaker_log import BreakerLog
from eventcenter.domain.decisions import Decision, Transition
from eventcenter.domain.errors import EventCenterError
from eventcenter.domain.health import IncidentEnd, IncidentOutcome, IncidentStart, RecoveryAttempt
from eventcenter.domain.hysteresis import HysteresisConfig, Switch, ThresholdRaised
from eventcenter.domain.recovery_log import ServiceRecovery
from eventcenter.domain.source_log import SourceLog
from eventcenter.projections import queries
from eventcenter.projections.catalog import AuditEntry, Subject, describe, json_safe
from eventcenter.projections.runner import ProjectionRunner, ProjectionStatus, ReadModelDiverged
from eventcenter.projections.view import ReadModel

T0 = 1_000.0
ENVELOPE_FIELDS = {"originator_id", "originator_version", "timestamp", "originator_topic"}


class Elsewhere(Aggregate):
    """An aggregate the center does not have (another application's, a newer version's)."""

    @event("Happened")
    def happen(self, reason: str) -> None:
        pass


def trail(events: Sequence[Any]) -> list[AuditEntry | None]:
    """Each event described in order, the subject carried as the read model carries it."""
    subjects: dict[str, Subject | None] = {}
    entries = []
    for position, e in enumerate(events, start=1):
        key = str(e.originator_id)
        subjects[key], entry = describe(position, e, subjects.get(key))
        entries.append(entry)
    return entries


def only(entries: list[AuditEntry | None]) -> list[AuditEntry]:
    return [e for e in entries if e is not None]


def test_the_event_that_creates_an_aggregate_names_its_subject_and_is_no_decision() -> None:
    [opened] = ProcessorLog("center-1").collect_events()
    subject, entry = describe(1, opened, None)
    assert entry is None
    assert subject == Subject("ProcessorLog", name="center-1")


def test_processor_moves_and_handler_decisions_carry_their_tenant_reason_and_cause() -> None:
    log = ProcessorLog("default")
    log.transition(Transition("begin_adjustment", "stable", "adjusting", "spike", "corr-1"))
    log.decide(Decision("frequency.reduce", "p95 over 200 ms", "corr-1", "acme", {"by": 0.5}))
    log.decide(Decision("noted", "just so", "corr-2", "beta", cause="e-1/orders/noted/1"))
    events = log.collect_events()
    _, moved, reduced, noted = trail(events)

    assert moved is not None
    assert (moved.kind, moved.from_state, moved.to_state) == (
        "processor.transitioned",
        "stable",
        "adjusting",
    )
    assert (moved.reason, moved.correlation_id, moved.tenant) == ("spike", "corr-1", "")
    assert moved.at == events[1].timestamp.timestamp(), "no 'at' field: the event's time"
    assert moved.subject == "default"
    assert (moved.aggregate, moved.aggregate_id, moved.version) == (
        "ProcessorLog",
        str(log.id),
        2,
    )
    assert reduced is not None
    assert (reduced.kind, reduced.tenant, reduced.reason, reduced.correlation_id) == (
        "frequency.reduce",
        "acme",
        "p95 over 200 ms",
        "corr-1",
    )
    assert reduced.details["details"] == {"by": 0.5}
    assert not ENVELOPE_FIELDS & set(reduced.details), "the inputs, not the envelope"
    assert noted is not None
    assert noted.kind == "decision.noted", "a kind without a dot gets one"
    assert noted.cause == "e-1/orders/noted/1"


def lived_source() -> SourceLog:
    log = SourceLog.register(
        "acme", "orders", at=T0, has_push=True, has_poll=True, config=HysteresisConfig()
    )
    log.record(Switch(T0 + 10, "event_only", "hybrid", "3 consecutive push failures", 3, 0, 3))
    log.record(ThresholdRaised(T0 + 10, 1, 4, 6, "3 switches within 300s"))
    log.roll_back(at=T0 + 11, attempted="hybrid", landed="event_only", reason="poll refused")
    log.reconciled(at=T0 + 20, missing=1, changed=0, deleted=0)
    return log


def test_a_source_log_s_later_events_carry_the_tenant_and_source_of_its_first() -> None:
    registered, switched, raised, rolled, reconciled = only(trail(lived_source().collect_events()))
    for entry in (registered, switched, raised, rolled, reconciled):
        assert (entry.tenant, entry.source, entry.subject) == ("acme", "orders", "acme/orders")
    assert (registered.kind, registered.to_state) == ("source.registered", "event_only")
    assert (switched.kind, switched.from_state, switched.to_state, switched.at) == (
        "mode.switched",
        "event_only",
        "hybrid",
        T0 + 10,
    )
    assert switched.reason == "3 consecutive push failures"
    assert (switched.details["failures"], switched.details["threshold"]) == (3, 3)
    assert (raised.kind, raised.from_state, raised.to_state) == (
        "threshold.raised",
        "level 0",
        "level 1",
    )
    assert (rolled.kind, rolled.from_state, rolled.to_state, rolled.reason) == (
        "mode.rolled_back",
        "hybrid",
        "event_only",
        "poll refused",
    )
    assert reconciled.kind == "source.reconciled", "no entry of its own: named by its class"


def test_a_breaker_move_goes_from_the_state_it_left_to_the_state_it_reached() -> None:
    log = BreakerLog.register("default", "payments", at=T0)
    log.record(
        BreakerTransition(
            "payments",
            "trip",
            "closed",
            "open",
            "60% of 10 calls failed",
            T0 + 1,
            failure_rate=60.0,
            slow_rate=0.0,
            calls=10,
            wait=30.0,
        )
    )
    log.record(BreakerTransition("payments", "probe", "open", "half_open", "wait over", T0 + 31))
    registered, opened, probing = trail(log.collect_events())
    assert registered is None
    assert opened is not None
    assert probing is not None
    assert (opened.kind, opened.from_state, opened.to_state, opened.subject) == (
        "breaker.opened",
        "closed",
        "open",
        "payments",
    )
    assert (probing.kind, probing.from_state, probing.to_state) == (
        "breaker.half_opened",
        "open",
        "half_open",
    )


def test_a_dead_letter_s_rows_belong_to_the_tenant_and_chain_of_the_event_it_holds() -> None:
    envelope = {"type": "payment.captured", "tenant": "beta", "source": "shop"}
    letter = DeadLetter({**envelope, "correlation_id": "corr-9"}, "payments", "KeyError", "x", 2)
    letter.claim("retry")
    letter.replay("retry")
    recorded, claimed, replayed = only(trail(letter.collect_events()))
    for entry in (recorded, claimed, replayed):
        assert (entry.tenant, entry.source, entry.correlation_id, entry.subject) == (
            "beta",
            "shop",
            "corr-9",
            "payments",
        )
    assert [e.kind for e in (recorded, claimed, replayed)] == [
        "dead_letter.recorded",
        "dead_letter.replay_claimed",
        "dead_letter.replayed",
    ]
    assert recorded.reason == "KeyError: x", "a dead letter's why is the error it failed with"


def test_an_event_of_no_aggregate_of_the_center_has_no_row_and_keeps_what_was_known() -> None:
    thing = Elsewhere()
    thing.happen("elsewhere")
    known = Subject("SourceLog", "acme", "orders")
    for e in thing.collect_events():
        assert describe(7, e, known) == (known, None)


def test_recorded_values_become_json_values() -> None:
    @dataclass
    class Point:
        x: int
        at: datetime

    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    key = uuid4()
    assert json_safe({"p": Point(1, moment), 2: (key, {3}), "n": None}) == {
        "p": {"x": 1, "at": "2026-01-02T03:04:05+00:00"},
        "2": [str(key), [3]],
        "n": None,
    }


# queries: cursors, page sizes, --since ------------------------------------------------------------


@pytest.mark.parametrize("cursor", ["", "12", "x:3", "1.5:", "1.5:two", "nan-ish"])
def test_a_cursor_not_made_by_a_page_is_refused_with_what_to_use(cursor: str) -> None:
    with pytest.raises(queries.InvalidQuery, match="use the 'next' of a page"):
        queries.parse_cursor(cursor)


def test_a_cursor_gives_back_the_exact_time_and_position_of_the_row_it_continues_after() -> None:
    at = 1_700_000_000.123456789
    assert queries.parse_cursor(f"{at!r}:42") == (at, 42)


@pytest.fixture
def model() -> ReadModel:
    built = ReadModel(SQLAlchemyDatastore(url="sqlite:///:memory:"))
    built.create_table()
    return built


@pytest.mark.parametrize("limit", [0, -1, queries.MAX_PAGE + 1])
def test_a_page_size_out_of_bounds_is_refused(model: ReadModel, limit: int) -> None:
    with (
        model.datastore.transaction(commit=False) as session,
        pytest.raises(queries.InvalidQuery, match=f"between 1 and {queries.MAX_PAGE}"),
    ):
        queries.audit_page(session, queries.AuditFilter(), limit=limit)


NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", NOW - 90),
        ("15m", NOW - 900),
        ("1h", NOW - 3600),
        ("2d", NOW - 2 * 86400),
        ("2026-12-03T14:00:00", datetime(2026, 12, 3, 14, tzinfo=UTC).timestamp()),
        ("2026-12-03T14:00:00+02:00", datetime(2026, 12, 3, 12, tzinfo=UTC).timestamp()),
    ],
)
def test_since_is_a_duration_back_from_now_or_a_time_utc_unless_it_names_a_zone(
    text: str, expected: float
) -> None:
    assert parse_since(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "1 hour", "-", "2026-13-01"])
def test_a_since_that_is_neither_is_refused_naming_both_forms(text: str) -> None:
    with pytest.raises(EventCenterError, match=r"neither a duration \(90s.*nor a date and time"):
        parse_since(text, now=NOW)


# the runner -------------------------------------------------------------------------------------


class ListLog:
    """A notification log in a list; ``before_read`` runs before each read (a reader racing)."""

    def __init__(self, events: Sequence[Any]) -> None:
        self.notifications = list(enumerate(events, start=1))
        self.before_read: Callable[[], None] | None = None

    def read(self, after: int, limit: int) -> Sequence[tuple[int, Any]]:
        if self.before_read is not None:
            hook, self.before_read = self.before_read, None
            hook()
        return [n for n in self.notifications if n[0] > after][:limit]

    def head(self) -> int:
        return len(self.notifications)


def decisions_log(count: int) -> list[Any]:
    log = ProcessorLog("default")
    for n in range(count):
        log.decide(Decision("order.accepted", f"order {n}", f"corr-{n}", "acme"))
    return list(log.collect_events())


def positions(model: ReadModel) -> list[int]:
    with model.datastore.transaction(commit=False) as session:
        page = queries.audit_page(session, queries.AuditFilter(), limit=queries.MAX_PAGE)
    return sorted(e.position for e in page.entries)


def test_catch_up_takes_at_most_limit_in_pages_and_resumes_where_it_stopped(
    model: ReadModel,
) -> None:
    log = ListLog(decisions_log(25))
    runner = ProjectionRunner(model, log, page=4)
    assert runner.catch_up(limit=10) == 10
    assert model.position == 10
    assert runner.catch_up() == 16
    assert runner.catch_up() == 0
    assert positions(model) == list(range(2, 27)), "one row per decision (1 opened the log)"
    status = runner.status
    assert (status.position, status.head, status.lag) == (26, 26, 0)


def test_a_page_another_reader_processed_first_is_skipped_not_written_twice(
    model: ReadModel,
) -> None:
    log = ListLog(decisions_log(30))
    mine = ProjectionRunner(model, log, page=8)
    other = ProjectionRunner(model, ListLog([e for _, e in log.notifications]), page=5)
    # The other reader commits its pages after this one read its position, before it wrote.

    def race() -> None:
        other.catch_up(limit=12)

    log.before_read = race
    assert mine.catch_up() == 31 - 12
    assert positions(model) == list(range(2, 32))
    assert model.position == 31


def test_rows_the_tracking_does_not_know_are_refused_with_a_way_out_not_retried_forever(
    model: ReadModel,
) -> None:
    log = ListLog(decisions_log(10))
    runner = ProjectionRunner(model, log, page=4)
    runner.catch_up()
    with model.transaction(commit=True) as session:  # the tracking row lost, the rows kept
        session.execute(model.tracking_table.delete())
    calls = 0

    def counted() -> None:
        nonlocal calls
        calls += 1
        if calls > 5:
            raise AssertionError("the runner kept reading the page it was refused")
        log.before_read = counted

    log.before_read = counted
    with pytest.raises(ReadModelDiverged, match=r"notifications 1-4 although its tracked"):
        runner.catch_up()
    runner.rebuild()
    assert positions(model) == list(range(2, 12))


def test_the_lag_is_never_negative() -> None:
    status = ProjectionStatus(
        position=9, head=7, running=False, errors=0, last_error="", caught_up_at=None
    )
    assert status.lag == 0
    assert status.as_dict()["lag"] == 0


def test_a_service_s_recovery_steps_are_on_the_trail_under_its_name() -> None:
    log = ServiceRecovery.register("default", "cache", at=T0)
    log.record(IncidentStart("cache", T0, 3, "connection refused"))
    log.record(RecoveryAttempt("cache", "restart", 1, T0, T0 + 1, T0 + 2, True))
    log.record(IncidentEnd("cache", T0, IncidentOutcome.RECOVERED, 1, T0 + 2, T0 + 302))
    registered, *steps = trail(log.collect_events())
    assert registered is None
    assert [(e.kind, e.aggregate, e.subject) for e in only(steps)] == [
        ("recovery.incident_opened", "ServiceRecovery", "cache"),
        ("recovery.attempt_recorded", "ServiceRecovery", "cache"),
        ("recovery.incident_ended", "ServiceRecovery", "cache"),
    ]
    assert only(steps)[2].at == T0 + 2
    assert only(steps)[2].details["outcome"] == "recovered"
