"""The audit trail's queries on the read model, on SQLite and PostgreSQL: keyset pages in both
directions (decisions recorded at the same time included), the chain around a decision, and
what ``explain`` reads of an aggregate's earlier decisions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from eventsourcing_sqlalchemy.datastore import SQLAlchemyDatastore
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from eventcenter.domain.aggregates import ProcessorLog
from eventcenter.domain.decisions import Decision
from eventcenter.domain.hysteresis import HysteresisConfig, Switch, ThresholdRaised
from eventcenter.domain.source_log import SourceLog
from eventcenter.projections import queries
from eventcenter.projections.explain import HISTORY, explain
from eventcenter.projections.queries import AuditFilter
from eventcenter.projections.view import ReadModel

T0 = 1_000.0


@contextmanager
def read_model(url: str, *aggregates: Any) -> Iterator[Session]:
    """A read model at ``url`` holding the aggregates' events (in the order given), and a
    session on it."""
    datastore = SQLAlchemyDatastore(url=url)
    engine = datastore.engine
    assert isinstance(engine, Engine)
    try:
        model = ReadModel(datastore)
        model.create_table()
        events = [event for aggregate in aggregates for event in aggregate.collect_events()]
        model.process(list(enumerate(events, start=1)))
        with datastore.transaction(commit=False) as session:
            yield session
    finally:
        engine.dispose()


def flapping(name: str, switches: int, *, per_second: int = 1) -> SourceLog:
    """A source that switched ``switches`` times, ``per_second`` switches sharing each time."""
    log = SourceLog.register(
        "acme", name, at=T0, has_push=True, has_poll=True, config=HysteresisConfig()
    )
    for i in range(switches):
        previous, to = ("event_only", "hybrid") if i % 2 == 0 else ("hybrid", "event_only")
        log.record(Switch(T0 + 1 + i // per_second, previous, to, f"switch {i}", 3, 0, 3))
    return log


def test_pages_follow_the_cursor_both_ways_without_gaps_or_repeats(database_url: str) -> None:
    logs = [flapping("orders", 10, per_second=4), flapping("billing", 10, per_second=4)]
    with read_model(database_url, *logs) as session:
        flt = AuditFilter(tenant="acme", kinds=("mode.switched",))
        everything = queries.audit_page(session, flt, limit=100).entries
        for newest_first in (False, True):
            seen: list[int] = []
            after: str | None = None
            while True:
                page = queries.audit_page(
                    session, flt, after=after, limit=3, newest_first=newest_first
                )
                seen += [entry.position for entry in page.entries]
                if page.next is None:
                    break
                after = page.next
            expected = sorted(everything, key=lambda e: (e.at, e.position), reverse=newest_first)
            assert seen == [entry.position for entry in expected]
    assert len(everything) == 20
    assert len({entry.at for entry in everything}) == 3  # four decisions share each time


def test_a_correlated_chain_is_its_decisions_in_time_order(database_url: str) -> None:
    log = ProcessorLog("center")
    for i in range(7):
        correlation = "deploy-1" if i % 2 == 0 else "deploy-2"
        log.decide(Decision("frequency.reduce", f"step {i}", correlation, "acme"))
    with read_model(database_url, log) as session:
        trail = queries.audit_page(session, AuditFilter(correlation_id="deploy-1")).entries
        assert [e.reason for e in trail] == ["step 0", "step 2", "step 4", "step 6"]
        before, after = queries.chain(session, trail[1])
        nearest = queries.chain(session, trail[2], before=1, after=1)
    assert [e.reason for e in before] == ["step 0"]
    assert [e.reason for e in after] == ["step 4", "step 6"]
    assert [[e.reason for e in side] for side in nearest] == [["step 2"], ["step 6"]]


def test_a_decision_without_correlation_chains_with_its_aggregate(database_url: str) -> None:
    log, other = flapping("orders", 8), flapping("billing", 8)
    with read_model(database_url, log, other) as session:
        own = queries.history(session, str(log.id), 10**9)
        entry = own[5]  # registration, then switches 0..7: this is switch 4
        before, after = queries.chain(session, entry, before=2, after=10)
    assert entry.reason == "switch 4"
    assert [e.reason for e in before] == ["switch 2", "switch 3"]
    assert [e.reason for e in after] == ["switch 5", "switch 6", "switch 7"]


def test_explain_reads_the_state_before_a_decision_from_a_long_history(
    database_url: str,
) -> None:
    log = SourceLog.register(
        "acme",
        "orders",
        at=T0,
        has_push=True,
        has_poll=True,
        config=HysteresisConfig(failure_threshold=4),
    )
    log.record(ThresholdRaised(T0 + 0.5, 1, 5, 6, "3 switches within 300s"))
    for i in range(30):
        previous, to = ("event_only", "hybrid") if i % 2 == 0 else ("hybrid", "event_only")
        log.record(Switch(T0 + 1 + i, previous, to, f"switch {i}", 4, 0, 5))
    with read_model(database_url, log) as session:
        last = queries.history(session, str(log.id), 10**9)[-1]
        found = explain(session, last.position)
    assert found is not None
    assert found.entry.reason == "switch 29"
    assert [e.reason for e in found.history] == [f"switch {i}" for i in range(29 - HISTORY, 29)]
    assert found.state["config"]["failure_threshold"] == 4  # from the registration, far back
    assert found.state["paths"] == {"push": True, "poll": True}
    assert found.state["level"] == 1
    assert [s["at"] for s in found.state["switches_before"]] == [T0 + 1 + i for i in range(24, 29)]
    assert [e.reason for e in found.before][-2:] == ["switch 27", "switch 28"]
    assert found.after == []
