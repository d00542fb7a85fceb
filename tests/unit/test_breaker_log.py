"""The breaker log: its events with their figures, what it keeps for a restart, refusals,
recording a transition twice, and snapshots."""

from __future__ import annotations

from typing import Any

import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate

from eventcenter.domain.breaker import (
    CLOSED,
    DISABLED,
    FORCED_OPEN,
    HALF_OPEN,
    OPEN,
    Breaker,
    BreakerConfig,
    BreakerState,
    BreakerTransition,
)
from eventcenter.domain.breaker_log import BreakerLog
from eventcenter.domain.errors import BreakerRefused

BOOKKEEPING = {"originator_id", "originator_version", "timestamp", "originator_topic"}


def recorded(aggregate: Aggregate) -> list[tuple[str, dict[str, Any]]]:
    return [
        (type(e).__name__, {k: v for k, v in vars(e).items() if k not in BOOKKEEPING})
        for e in aggregate.collect_events()
    ]


def new_log() -> BreakerLog:
    log = BreakerLog.register("default", "payments", at=1_000.0)
    log.collect_events()
    return log


def opened(at: float = 1_010.0, wait: float = 30.0, reopens: int = 1) -> BreakerTransition:
    return BreakerTransition(
        "payments", "trip", CLOSED, OPEN, "failure rate 60.0% >= 50%", at, 60.0, 0.0, 5, wait,
        reopens,
    )  # fmt: skip


def moved(trigger: str, previous: str, state: str, at: float) -> BreakerTransition:
    return BreakerTransition("payments", trigger, previous, state, trigger, at)


def test_the_log_id_is_derived_from_center_and_name() -> None:
    assert BreakerLog.create_id("default", "payments") == new_log().id
    assert BreakerLog.create_id("other", "payments") != BreakerLog.create_id("default", "payments")
    assert BreakerLog.create_id("default", "payment") != BreakerLog.create_id("default", "payments")


def test_a_new_log_is_closed_and_says_so_in_its_registration() -> None:
    log = BreakerLog.register("default", "payments", at=1_000.0)
    assert recorded(log) == [
        ("Registered", {"center": "default", "name": "payments", "at": 1000.0})
    ]
    assert log.saved() == BreakerState("payments", CLOSED, None, 0)


def test_an_opening_is_recorded_with_its_figures_and_when_the_wait_ends() -> None:
    log = new_log()
    log.record(opened())
    assert recorded(log) == [
        (
            "Opened",
            {
                "at": 1010.0,
                "previous": CLOSED,
                "reason": "failure rate 60.0% >= 50%",
                "failure_rate": 60.0,
                "slow_rate": 0.0,
                "calls": 5,
                "wait": 30.0,
                "reopens": 1,
            },
        )
    ]
    assert log.saved() == BreakerState("payments", OPEN, open_until=1_040.0, reopens=1)


def test_each_move_has_its_event_and_a_close_starts_the_openings_over() -> None:
    log = new_log()
    log.record(opened())
    log.record(moved("probe", OPEN, HALF_OPEN, 1_040.0))
    again = BreakerTransition(
        "payments", "trip", HALF_OPEN, OPEN, "again", 1_041.0, 100.0, 0.0, 4, 60.0, 2
    )
    log.record(again)
    assert log.saved() == BreakerState("payments", OPEN, 1_101.0, 2)
    log.record(moved("probe", OPEN, HALF_OPEN, 1_101.0))
    log.record(
        BreakerTransition("payments", "close", HALF_OPEN, CLOSED, "ok", 1_102.0, 0.0, 0.0, 4)
    )
    log.record(moved("force_open", CLOSED, FORCED_OPEN, 1_200.0))
    log.record(moved("disable", FORCED_OPEN, DISABLED, 1_300.0))
    log.record(moved("reset", DISABLED, CLOSED, 1_400.0))
    names = [name for name, _ in recorded(log)]
    assert names == [
        "Opened",
        "HalfOpened",
        "Opened",
        "HalfOpened",
        "Closed",
        "ForcedOpen",
        "Disabled",
        "Reset",
    ]
    assert log.saved() == BreakerState("payments", CLOSED, None, 0)
    assert (log.opened, log.changed_at) == (2, 1_400.0)


def test_recording_the_same_transition_twice_changes_nothing() -> None:
    log = new_log()
    log.record(opened())
    log.record(opened())
    assert [name for name, _ in recorded(log)] == ["Opened"]
    assert log.version == 2


def test_a_move_that_does_not_start_from_the_state_held_is_refused() -> None:
    log = new_log()
    with pytest.raises(BreakerRefused, match="the log holds closed, so it cannot record a move"):
        log.record(moved("probe", OPEN, HALF_OPEN, 1_010.0))
    assert recorded(log) == []


def test_a_move_the_table_does_not_have_is_refused() -> None:
    log = new_log()
    with pytest.raises(BreakerRefused, match="not a move from closed"):
        log.record(moved("close", CLOSED, CLOSED, 1_010.0))
    with pytest.raises(BreakerRefused, match="leads to open, not half_open"):
        log.record(moved("trip", CLOSED, HALF_OPEN, 1_010.0))
    with pytest.raises(BreakerRefused, match="an opening needs its wait"):
        log.record(moved("trip", CLOSED, OPEN, 1_010.0))
    assert recorded(log) == []


def test_another_breakers_transition_is_refused() -> None:
    log = new_log()
    other = BreakerTransition("billing", "trip", CLOSED, OPEN, "x", 1.0, wait=5.0)
    with pytest.raises(BreakerRefused, match="breaker 'billing' does not belong"):
        log.record(other)


def test_a_breaker_resumes_from_what_its_log_saved() -> None:
    """The log fed by one breaker's moves restores another one in the same state."""
    config = BreakerConfig(window_size=4, minimum_calls=4, wait_in_open=30)
    breaker = Breaker("payments", config)
    log = new_log()
    for _ in range(4):
        epoch, _ = breaker.acquire(0.0)
        assert epoch is not None
        transition = breaker.record(epoch, True, 0.0, 0.0)
    assert transition is not None
    log.record(transition)  # stamped on the wall clock: at == 0.0 here
    again = Breaker.restore(log.saved(), config, now=500.0, wall=10.0)
    assert (again.state, again.retry_in(500.0), again.reopens) == (OPEN, 20.0, 1)


class Breakers(Application[Any]):
    snapshotting_intervals = {BreakerLog: 5}


def test_a_long_history_is_loaded_from_a_snapshot() -> None:
    app = Breakers()
    try:
        log = BreakerLog.register("default", "payments", at=0.0)
        at = 0.0
        for round_ in range(10):
            at += 10
            reopens = round_ + 1
            trip = "trip"
            previous = CLOSED if round_ == 0 else HALF_OPEN
            log.record(
                BreakerTransition(
                    "payments", trip, previous, OPEN, "r", at, 50.0, 0.0, 4, 5.0, reopens
                )
            )
            log.record(moved("probe", OPEN, HALF_OPEN, at + 5))
        app.save(log)
        snapshots = list(app.snapshots.get(log.id)) if app.snapshots else []
        loaded: BreakerLog = app.repository.get(log.id)
        assert snapshots, "no snapshot was taken"
        assert vars(loaded) == vars(log) | {"_pending_events": []}
        assert loaded.saved() == BreakerState("payments", HALF_OPEN, None, 10)
    finally:
        app.close()
