"""The source projections fold a SourceLog's events into what the aggregate holds, and the
CLI's report turns rows and outcomes into health and a side-by-side replay."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from eventsourcing.persistence import IntegrityError
from eventsourcing_sqlalchemy.datastore import SQLAlchemyDatastore
from rich.console import Console
from sqlalchemy.orm import Session

from eventcenter.center.source_report import compare, source_report, summarize
from eventcenter.center.source_views import source_details
from eventcenter.domain.durations import format_duration
from eventcenter.domain.hysteresis import HysteresisConfig, Switch, ThresholdRaised
from eventcenter.domain.source_log import SourceLog
from eventcenter.domain.source_pause import PauseState
from eventcenter.projections import queries
from eventcenter.projections.sources import ModeHistory, SourceRow
from eventcenter.projections.view import ReadModel
from eventcenter.storage.source_state import OutcomeRow

T0 = 1_000.0


@contextmanager
def folded(*logs: SourceLog) -> Iterator[Session]:
    """A read model in an in-memory SQLite database holding ``logs``' events, and a session
    on it."""
    model = ReadModel(SQLAlchemyDatastore(url="sqlite:///:memory:"))
    model.create_table()
    events = [event for log in logs for event in log.collect_events()]
    model.process(list(enumerate(events, start=1)))
    with model.datastore.transaction(commit=False) as session:
        yield session


def row_of(session: Session, tenant: str = "acme", name: str = "orders") -> SourceRow:
    row = queries.source(session, tenant, name)
    assert row is not None
    return row


def lived() -> SourceLog:
    """A source that left push, came back, had a switch rolled back, was reconfigured."""
    log = SourceLog.register(
        "acme", "orders", at=T0, has_push=True, has_poll=True, config=HysteresisConfig()
    )
    log.record(Switch(T0 + 10, "event_only", "hybrid", "3 consecutive push failures", 3, 0, 3))
    log.record(Switch(T0 + 40, "hybrid", "event_only", "5 consecutive push successes", 0, 5, 5))
    log.record(Switch(T0 + 50, "event_only", "hybrid", "3 consecutive push failures", 3, 0, 3))
    log.record(ThresholdRaised(T0 + 50, 1, 4, 6, "3 switches within 300s"))
    log.roll_back(at=T0 + 51, attempted="hybrid", landed="event_only", reason="poll refused")
    log.reconciled(at=T0 + 60, missing=1, changed=2, deleted=0)
    log.reconfigure(
        at=T0 + 70, has_push=False, has_poll=True, config=HysteresisConfig(failure_threshold=4)
    )
    return log


def test_the_index_holds_what_the_aggregate_holds() -> None:
    log = lived()
    with folded(log) as session:
        row = row_of(session)
        other = queries.source(session, "acme", "other")
    assert (row.mode, row.level, row.has_push, row.has_poll) == (
        log.mode,
        log.level,
        log.has_push,
        log.has_poll,
    )
    assert (row.switches, row.rollbacks, row.reconciliations) == (3, 1, 1)
    assert row.config == log.config
    assert row.thresholds == (5, 6)  # the new configuration (4 / 5), raised one level
    assert row.since == T0 + 70  # reconfigured into polling_only
    assert [(c.kind, c.to) for c in row.recent] == [
        ("switch", "hybrid"),
        ("switch", "event_only"),
        ("switch", "hybrid"),
        ("rollback", "event_only"),
        ("reconfigured", "polling_only"),
    ]
    assert row.last_switch is not None
    assert row.last_switch.at == T0 + 50
    assert row.last_reconcile is not None
    assert (row.last_reconcile.missing, row.last_reconcile.changed) == (1, 2)
    assert other is None


def test_the_row_follows_pauses_and_the_trail_shows_them() -> None:
    log = lived()
    log.pause(at=T0 + 80, reason="broker upgrade", by="alice")
    events = list(enumerate(log.collect_events(), start=1))
    model = ReadModel(SQLAlchemyDatastore(url="sqlite:///:memory:"))
    model.create_table()
    model.process(events)
    with model.datastore.transaction(commit=False) as session:
        paused = row_of(session)
        trail = queries.audit_page(session, queries.AuditFilter(), limit=100).entries
    log.resume(at=T0 + 90, reason="", by="bob")
    model.process(list(enumerate(log.collect_events(), start=len(events) + 1)))
    with model.datastore.transaction(commit=False) as session:
        resumed = row_of(session)

    assert paused.paused == PauseState(T0 + 80, "broker upgrade", "alice")
    assert paused.mode == log.mode, "a pause is no mode change"
    [entry] = [e for e in trail if e.kind == "source.paused"]
    assert (entry.at, entry.reason, entry.details["by"]) == (T0 + 80, "broker upgrade", "alice")
    assert resumed.paused is None


def test_a_longer_event_timeout_is_shown_while_it_runs_and_gone_after() -> None:
    log = SourceLog.register(
        "acme", "orders", at=T0, has_push=True, has_poll=True, config=HysteresisConfig()
    )
    configured = HysteresisConfig().event_timeout
    log.extend_timeout(at=T0 + 5, factor=1.5, until=T0 + 65, reason="rca case c-1: slow")
    with folded(log) as session:
        row = row_of(session)

    assert (row.timeout_factor, row.extended_until) == (log.timeout_factor, log.extended_until)
    assert row.event_timeout(T0 + 64) == 1.5 * configured
    assert row.extension_end(T0 + 64) == T0 + 65
    assert row.event_timeout(T0 + 65) == configured
    assert row.extension_end(T0 + 65) is None
    during = shown(source_details(source_report(row, [], now=T0 + 30)))
    after = shown(source_details(source_report(row, [], now=T0 + 70)))
    assert "1.5x the configured" in during
    assert "rca case c-1: slow" in during
    assert "1.5x" not in after
    assert f"{format_duration(configured)} (configured)" in after


def shown(renderable: object) -> str:
    console = Console(width=200, record=True)
    console.print(renderable)
    return console.export_text()


def test_a_position_folded_twice_counts_once() -> None:
    events = list(enumerate(lived().collect_events(), start=1))
    model = ReadModel(SQLAlchemyDatastore(url="sqlite:///:memory:"))
    model.create_table()
    model.process(events[:3])
    with pytest.raises(IntegrityError):
        model.process(events[:4])  # the first three again: refused as a whole
    model.process(events[3:])

    with model.datastore.transaction(commit=False) as session:
        [row] = queries.sources(session)
        entries = queries.audit_page(session, queries.AuditFilter(), limit=100).entries
    assert row.switches == 3
    assert [e.position for e in entries] == [p for p, _ in events]


def test_the_history_knows_the_mode_at_any_time() -> None:
    with folded(lived()) as session:
        history = queries.mode_history(session, "acme", "orders")

    assert history.mode_at(T0 - 1) is None
    assert history.mode_at(T0) == "event_only"
    assert history.mode_at(T0 + 10) == "hybrid"
    assert history.mode_at(T0 + 45) == "event_only"
    assert history.mode_at(T0 + 50.5) == "hybrid"
    assert history.mode_at(T0 + 55) == "event_only"
    assert history.mode_at(T0 + 80) == "polling_only"
    assert len(history.changes) == 5


def outcome(at: float, path: str, ok: bool = True, reason: str = "", items: int = 0) -> OutcomeRow:
    return OutcomeRow(T0 + at, path, ok, reason, "", items)


RUN = [
    outcome(0, "start"),
    outcome(1, "push", items=2),
    outcome(2, "push", False, "connection: reset"),
    outcome(3, "push", False, "connection: reset"),
    outcome(4, "push", False, "connection: reset"),
    outcome(5, "poll", items=3),
    *(outcome(10 + n, "push", items=1) for n in range(5)),
    outcome(20, "stop"),
]


def pushed_down_and_back() -> tuple[Any, ModeHistory]:
    """The log a runner would have written for RUN with the default configuration."""
    log = SourceLog.register(
        "acme", "orders", at=T0, has_push=True, has_poll=True, config=HysteresisConfig()
    )
    reason = "3 consecutive push failures (last: connection: reset)"
    log.record(Switch(T0 + 4, "event_only", "hybrid", reason, 3, 0, 3))
    log.record(Switch(T0 + 14, "hybrid", "event_only", "5 consecutive push successes", 0, 5, 5))
    with folded(log) as session:
        return row_of(session), queries.mode_history(session, "acme", "orders")


def test_health_is_rebuilt_from_the_outcomes_and_taken_at_the_stop() -> None:
    row, _ = pushed_down_and_back()

    report = source_report(row, RUN, now=T0 + 10_000)

    assert not report.running
    assert report.at == T0 + 20
    assert (report.outcomes.push.ok, report.outcomes.push.failed) == (6, 3)
    assert (report.outcomes.poll.ok, report.outcomes.poll.items) == (1, 3)
    assert report.health.items_pushed == 7
    assert report.health.consecutive_failures == 0
    assert report.health.factors is not None
    assert report.health.score == report.health.factors.score
    assert summarize([]).total == 0


def test_the_replay_through_the_recorded_settings_matches_line_by_line() -> None:
    row, history = pushed_down_and_back()

    same = compare(row, history, RUN, HysteresisConfig(), polling_interval=60)

    assert same.fresh
    assert same.same_switches
    assert [(line.change, line.recorded == line.simulated) for line in same.timeline()] == [
        ("event_only -> hybrid", True),
        ("hybrid -> event_only", True),
    ]
    assert same.recorded.time_in_mode == same.simulated.time_in_mode
    assert same.recorded.polls == 1


def test_a_replay_that_differs_shows_each_side_on_its_own_line() -> None:
    row, history = pushed_down_and_back()

    eager = compare(
        row,
        history,
        RUN,
        HysteresisConfig(failure_threshold=2, success_threshold=3),
        polling_interval=60,
    )

    assert not eager.same_switches
    lines = [
        (line.change, line.recorded is not None, line.simulated is not None)
        for line in eager.timeline()
    ]
    assert lines == [
        ("event_only -> hybrid", False, True),  # after two failures
        ("event_only -> hybrid", True, False),
        ("hybrid -> event_only", False, True),  # after three successes
        ("hybrid -> event_only", True, False),
    ]
