"""The read side of data sources on SQLite and PostgreSQL: a real center runs a source through
switches, a rollback, threshold changes and reconciliations; a CenterReader beside it (and
after it stopped) folds the same facts from the store, and rebuilds health and the what-if
from the recorded outcomes."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

from eventcenter.center.reader import CenterReader
from eventcenter.center.source_report import compare, source_report
from eventcenter.domain.errors import StoreNotFound
from eventcenter.domain.hysteresis import HysteresisConfig
from eventcenter.domain.source_log import SourceLog
from eventcenter.domain.source_modes import EVENT_ONLY
from eventcenter.projections.sources import ModeChange
from eventcenter.sources.manager import SourceNotFound
from eventcenter.storage.application import CenterApplication
from tests.source_center import FakeTimeCenter, center_settings, exercise
from tests.unit.source_fakes import SOURCE, TENANT


def switch_entries(changes: Iterable[ModeChange]) -> list[dict[str, object]]:
    """The switches among ``changes`` as the source log keeps them in its state."""
    return [
        {"at": c.at, "previous": c.previous, "to": c.to, "reason": c.reason}
        for c in changes
        if c.kind == "switch"
    ]


async def test_a_reader_beside_the_center_folds_what_the_source_log_holds(
    database_url: str, tmp_path: Path
) -> None:
    settings = center_settings(database_url, tmp_path)
    async with FakeTimeCenter(settings) as w:
        await exercise(w)
        log = w.center.app.source_log(SourceLog.create_id(TENANT, SOURCE))
        status = w.runner.status()
        now = w.clock.now()
        reader = CenterReader(settings)  # beside the running center: no lease, no writes
        try:
            [row] = reader.sources()
            outcomes = reader.outcomes(TENANT, SOURCE)
        finally:
            reader.close()

    assert log is not None
    assert (row.tenant, row.name, row.paths) == (TENANT, SOURCE, ("push", "poll"))
    assert (row.mode, row.level, row.cool_down_until) == (
        log.mode,
        log.level,
        log.cool_down_until,
    )
    assert (row.switches, row.rollbacks, row.reconciliations) == (
        log.switches,
        log.rollbacks,
        log.reconciliations,
    )
    assert switch_entries(row.recent) == log.recent
    assert row.last_reconcile is not None
    assert log.last_reconciled is not None
    assert row.last_reconcile.at == log.last_reconciled["at"]
    # what the exercise did: down, up, down rolled back (flapping: raised), then decayed
    assert row.mode == EVENT_ONLY
    assert (row.switches, row.rollbacks) == (3, 1)
    assert [(c.kind, c.previous, c.to) for c in row.recent] == [
        ("switch", "event_only", "hybrid"),
        ("switch", "hybrid", "event_only"),
        ("switch", "event_only", "hybrid"),
        ("rollback", "hybrid", "event_only"),
    ]
    assert "the first poll failed" in row.recent[-1].reason
    assert row.threshold_changes == 2
    assert row.level == 0

    # health rebuilt from the outcome rows is the running center's own tally
    report = source_report(row, outcomes, now=now)
    running = status.health
    rebuilt = report.health
    assert (rebuilt.successes, rebuilt.failures, rebuilt.polls) == (
        running.successes,
        running.failures,
        running.polls,
    )
    assert (rebuilt.items_pushed, rebuilt.items_polled) == (
        running.items_pushed,
        running.items_polled,
    )
    assert (rebuilt.last_success, rebuilt.last_failure) == (
        running.last_success,
        running.last_failure,
    )
    assert rebuilt.error_rate == pytest.approx(running.error_rate)
    assert rebuilt.score == pytest.approx(running.score)
    assert report.running
    assert report.outcomes.starts == 1
    assert report.outcomes.rollbacks == 1


async def test_replaying_the_record_through_its_own_settings_gives_its_switches_back(
    database_url: str, tmp_path: Path
) -> None:
    settings = center_settings(database_url, tmp_path)
    async with FakeTimeCenter(settings) as w:
        await exercise(w)
    later = w.clock.now() + 3600
    async with FakeTimeCenter(settings, start=later, fake=w.fake) as again:
        await again.deliver(4)  # a second life after a restart
    reader = CenterReader(settings)
    try:
        row = reader.source(TENANT, SOURCE)
        history = reader.mode_history(TENANT, SOURCE)
        outcomes = reader.outcomes(TENANT, SOURCE)
    finally:
        reader.close()

    same = compare(row, history, outcomes, row.hysteresis_config, polling_interval=60)
    assert same.fresh
    assert same.same_switches, same.timeline()
    assert len(same.recorded.switches) == 3
    assert same.simulated.rollbacks == ((same.recorded.rollbacks[0].at, EVENT_ONLY),)
    assert [o.path for o in outcomes].count("start") == 2

    stubborn = compare(
        row,
        history,
        outcomes,
        HysteresisConfig.from_dict({**row.hysteresis_config.as_dict(), "failure_threshold": 4}),
        polling_interval=60,
    )
    assert not stubborn.same_switches
    assert len(stubborn.simulated.switches) < len(same.simulated.switches)
    assert stubborn.simulated.time_in_mode[EVENT_ONLY] > same.simulated.time_in_mode[EVENT_ONLY]


async def test_a_store_where_no_source_ran_has_no_sources_and_no_outcomes(
    database_url: str, tmp_path: Path
) -> None:
    app = CenterApplication(database_url)  # the event tables only: no source tables
    app.create_tables()
    app.close()
    reader = CenterReader(center_settings(database_url, tmp_path))
    try:
        assert reader.sources() == []
        assert reader.outcomes(TENANT, SOURCE) == []
        with pytest.raises(SourceNotFound, match=r"no source 'acme/orders'.*recorded: none"):
            reader.source(TENANT, SOURCE)
    finally:
        reader.close()


async def test_an_empty_database_is_no_store(database_url: str, tmp_path: Path) -> None:
    if database_url.startswith("sqlite"):
        (tmp_path / "center.db").write_bytes(b"")  # an empty file where the store should be
    reader = CenterReader(center_settings(database_url, tmp_path))
    try:
        with pytest.raises(StoreNotFound, match="no eventcenter store"):
            reader.sources()
    finally:
        reader.close()
