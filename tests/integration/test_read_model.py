"""The read model (projections/) on SQLite and PostgreSQL: what a real center recorded becomes
one audit row per decision, found again by every filter and page; exactly once through a
failed batch, a reader killed with SIGKILL between writing its rows and committing them, and
two readers at once; a rebuild gives the same tables; the runner lives through an outage; an
event the catalogue cannot read becomes a row; the CLI's audit and explain answer from it;
a deployment's chain of cause and effect is followed across every aggregate it touched.

Every expectation is computed from the notification log itself (``CenterApplication.read_events``),
never from the read model's own code: the events that only bring an aggregate into being have
no row, every other one has exactly one, at its notification id.

A real center is expensive to run, so the tests that only read what it recorded share one
store per backend (the ``recorded`` fixture, a database of its own like ``database_url``'s);
the tests that write use ``database_url``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import orjson
import pytest
from eventsourcing.persistence import Tracking
from sqlalchemy import make_url, select, text
from sqlalchemy.orm import Session

from eventcenter.center.app import EventCenter
from eventcenter.center.healing import HealingSettings
from eventcenter.center.reader import CenterReader
from eventcenter.center.settings import CenterSettings, ProjectionSettings
from eventcenter.domain.aggregates import DeadLetter as _DeadLetter
from eventcenter.domain.aggregates import ProcessorLog as _ProcessorLog
from eventcenter.domain.breaker_log import BreakerLog as _BreakerLog
from eventcenter.domain.decisions import Decision, Transition
from eventcenter.domain.deployments import ServiceDeployments as _ServiceDeployments
from eventcenter.domain.errors import PermanentFailure
from eventcenter.domain.event import Event
from eventcenter.domain.healing_choice import HealingStats as _HealingStats
from eventcenter.domain.rca_case import RcaCase as _RcaCase
from eventcenter.domain.source_log import SourceLog as _SourceLog
from eventcenter.domain.throughput import ThroughputRecorder as _ThroughputRecorder
from eventcenter.domain.tuning_run import ServiceTuning as _ServiceTuning
from eventcenter.domain.tuning_run import TuningRun
from eventcenter.handlers.config import ProcessorSettings
from eventcenter.handlers.context import Context
from eventcenter.projections import catalog, queries, tables
from eventcenter.projections.explain import explain
from eventcenter.projections.runner import ProjectionRunner, ReadModelDiverged
from eventcenter.projections.view import ReadModel
from eventcenter.storage.application import CenterApplication
from tests.conftest import PostgresServer, _drop_schema, in_ci, with_search_path
from tests.faults import ProxiedPostgres
from tests.integration.agents import sample_agents
from tests.integration.test_tuning_center import settings as tuning_settings
from tests.integration.test_tuning_center import tuned, wait_for
from tests.servers import free_port
from tests.source_center import FakeTimeCenter
from tests.unit.source_fakes import SOURCE, TENANT, connection_lost
from tests.unit.test_tuning_workflow import ScriptedTester

#: The aggregates as mypy sees their event classes (made by eventsourcing's ``@event``).
DeadLetter: Any = _DeadLetter
ProcessorLog: Any = _ProcessorLog
BreakerLog: Any = _BreakerLog
ServiceDeployments: Any = _ServiceDeployments
HealingStats: Any = _HealingStats
RcaCase: Any = _RcaCase
SourceLog: Any = _SourceLog
ThroughputRecorder: Any = _ThroughputRecorder
ServiceTuning: Any = _ServiceTuning

SCRIPT = Path(sys.executable).parent / "eventcenter"
CHILD = Path(__file__).resolve().parents[1] / "read_model_child.py"
WAIT_S = 30.0  # only turns a hang into a failure
TENANTS = ("acme", "beta", "gamma")

#: The events that only bring an aggregate into being: no decision, so no row.
CREATING = (
    ProcessorLog.Opened,
    BreakerLog.Registered,
    ServiceDeployments.Registered,
    ServiceTuning.Registered,
    ThroughputRecorder.Registered,
    HealingStats.Started,
)


# reading the store -------------------------------------------------------------------------------


def open_app(url: str) -> CenterApplication:
    return CenterApplication(url, cache_size=0, create_tables=False)


def session_of(app: CenterApplication) -> Any:
    """A read-only session on ``app``'s store (a context manager)."""
    return app.recorder.datastore.transaction(commit=False)  # type: ignore[attr-defined]


def model_of(app: CenterApplication) -> ReadModel:
    model = ReadModel(app.recorder.datastore, app.name)  # type: ignore[attr-defined]
    model.create_table()
    return model


def rows_of(session: Session, table: Any = tables.audit) -> list[dict[str, Any]]:
    """Every row of ``table`` as a dict in key order, JSON columns parsed."""
    key = next(iter(table.primary_key.columns))
    found = []
    for row in session.execute(select(table).order_by(key)).mappings():
        values = dict(row)
        for column in ("details", "envelope", "row"):
            if column in values:
                values[column] = orjson.loads(values[column])
        found.append(values)
    return found


def audit_rows(app: CenterApplication) -> list[dict[str, Any]]:
    with session_of(app) as session:
        return rows_of(session)


def view_tables(app: CenterApplication) -> dict[str, list[dict[str, Any]]]:
    with session_of(app) as session:
        return {table.name: rows_of(session, table) for table in tables.VIEW_TABLES}


def expected_rows(events: Sequence[tuple[int, Any]]) -> dict[int, dict[str, Any]]:
    """What the row of each position must say, read off the stored events: every event but
    the creating ones has a row at its position; the decisions' tenant, kind, from -> to,
    reason and correlation id come from the event (or from the first event of its aggregate,
    which the later ones do not repeat)."""
    cases: dict[str, Any] = {}
    expected: dict[int, dict[str, Any]] = {}
    for position, e in events:
        if isinstance(e, CREATING):
            continue
        want: dict[str, Any] = {
            "aggregate_id": str(e.originator_id),
            "version": e.originator_version,
        }
        if isinstance(e, ProcessorLog.DecisionRecorded):
            want |= {
                "kind": e.kind,
                "tenant": e.tenant,
                "reason": e.reason,
                "correlation_id": e.correlation_id,
            }
        elif isinstance(e, ProcessorLog.Transitioned):
            want |= {
                "kind": "processor.transitioned",
                "from_state": e.source,
                "to_state": e.dest,
                "reason": e.reason,
                "correlation_id": e.correlation_id,
            }
        elif isinstance(e, SourceLog.ModeSwitched):
            want |= {
                "kind": "mode.switched",
                "tenant": TENANT,
                "source": SOURCE,
                "from_state": e.previous,
                "to_state": e.to,
                "reason": e.reason,
                "at": e.at,
            }
        elif isinstance(e, SourceLog.Event):
            want |= {"tenant": TENANT, "source": SOURCE}
        elif isinstance(e, DeadLetter.Recorded):
            want |= {
                "kind": "dead_letter.recorded",
                "tenant": e.envelope["tenant"],
                "correlation_id": e.envelope["correlation_id"],
                "reason": f"{e.error_type}: {e.error}",
            }
        elif isinstance(e, RcaCase.Event):
            if isinstance(e, RcaCase.Opened):
                cases[str(e.originator_id)] = e
            opened = cases[str(e.originator_id)]
            want |= {
                "tenant": opened.tenant,
                "source": opened.source or "",
                "correlation_id": opened.failure.get("correlation_id") or str(e.originator_id),
                "kind_prefix": "rca.",
            }
        expected[position] = want
    return expected


def check_rows(rows: list[dict[str, Any]], events: Sequence[tuple[int, Any]]) -> None:
    """One row per position that has a decision, none elsewhere, each saying what its event
    says."""
    expected = expected_rows(events)
    by_position = {row["position"]: row for row in rows}
    assert len(by_position) == len(rows)
    assert sorted(by_position) == sorted(expected), "one row per decision, at its position"
    for position, want in expected.items():
        row = by_position[position]
        prefix = want.pop("kind_prefix", None)
        if prefix is not None:
            assert row["kind"].startswith(prefix), row
        assert {k: row[k] for k in want} == want, (position, row)


@contextlib.contextmanager
def caught_up_reader(settings: CenterSettings) -> Iterator[CenterReader]:
    reader = CenterReader(settings)
    try:
        reader.catch_up()
        yield reader
    finally:
        reader.close()


# a real center, shared by the tests that only read what it recorded -------------------------------


@dataclass(frozen=True)
class Recorded:
    url: str
    settings: CenterSettings
    directory: Path
    center_position: int  # where the center's own runner stood when it stopped
    center_errors: int


def scenario_settings(url: str, directory: Path) -> CenterSettings:
    return CenterSettings(
        database_url=url,
        data_dir=directory / "data",
        processor=ProcessorSettings(max_attempts=2, backoff_base=0.01, backoff_max=0.05),
        healing=HealingSettings(verify_timeout=10.0, epsilon=0.0, answers_every=1.0),
        projections=ProjectionSettings(interval=0.05),
    )


async def record_a_center(settings: CenterSettings) -> tuple[int, int]:
    """A center whose handler decides on orders of three tenants, whose payments handler
    fails (two dead letters, two RCA cases), whose processor moves, and whose data source
    falls back to hybrid and comes back (a third RCA case, healed). Returns where its own
    runner stood when it stopped and how many errors it had."""
    w = FakeTimeCenter(settings)
    handled: list[str] = []
    dead: list[str] = []

    async def orders(event: Event, ctx: Context) -> None:
        amount = int(event.payload["amount"])
        held = amount >= 100
        why = f"amount {amount} {'over' if held else 'under'} the limit of 100"
        await ctx.decide("order.held" if held else "order.accepted", why, event, amount=amount)
        if amount % 60 == 0:  # a kind "order.*" must not select
            await ctx.decide("orders.counted", "every fourth order is counted", event)
        handled.append(str(event.id))

    async def payments(event: Event, ctx: Context) -> None:
        dead.append(str(event.id))
        raise PermanentFailure("the ledger refused the capture (test)")

    w.center.processor.subscribe("order.placed", orders, name="orders")
    w.center.processor.subscribe("payment.captured", payments, name="payments")
    async with w:
        center = w.center
        for n in range(15):
            await center.publish(
                "order.placed",
                {"amount": n * 15},
                tenant=TENANTS[n % 3],
                correlation_id=f"corr-{n % 4}",
            )
        for tenant in ("beta", "gamma"):
            await center.publish(
                "payment.captured", {"amount": 5}, tenant=tenant, correlation_id=f"pay-{tenant}"
            )
        await center.processor.state.fire(
            "begin_adjustment", reason="latency spike (test)", correlation_id="corr-1"
        )
        await center.processor.state.fire("settle", reason="latency back", correlation_id="corr-1")

        await w.deliver(3)
        w.push.receive_errors.extend([connection_lost()] * 3)  # push fails: hybrid
        await w.run(10)
        await w.deliver(5, prefix="back")  # push works again: event_only

        deadline = time.monotonic() + WAIT_S
        while len(handled) < 15 or len(await center.healing.cases.cases()) < 3:
            assert time.monotonic() < deadline, "the handlers and the RCA runner did not finish"
            await asyncio.sleep(0.02)
            await w.run(0.5)
        await w.settled()
        # the running center's own runner follows the log (it is poked on each commit)
        while (status := await asyncio.to_thread(center.projections.refresh)).lag:
            assert time.monotonic() < deadline, f"the center's read model stayed behind: {status}"
            center.projections.poke()
            await asyncio.sleep(0.02)
        return status.position, status.errors


@contextlib.contextmanager
def module_database(request: pytest.FixtureRequest, directory: Path) -> Iterator[str]:
    """A database of the module's own for ``request.param``, as ``database_url`` makes one."""
    if request.param == "sqlite":
        yield f"sqlite:///{directory}/center.db"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    if server.engine is None:
        reason = f"PostgreSQL at {server.shown_url} is unreachable: {server.error}"
        if in_ci():
            pytest.fail(f"{reason} (CI=true: the postgres tests must run)", pytrace=False)
        pytest.skip(reason)
    schema = f"t_{uuid4().hex[:16]}"
    with server.engine.connect() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield with_search_path(server.url, schema)
    finally:
        _drop_schema(server.engine, schema)


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ],
)
def recorded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Recorded]:
    directory = tmp_path_factory.mktemp(f"recorded-{request.param}")
    with module_database(request, directory) as url:
        settings = scenario_settings(url, directory)
        position, errors = asyncio.run(record_a_center(settings))
        yield Recorded(url, settings, directory, position, errors)


# 1. one row per decision, found by every filter and page ------------------------------------------


def test_the_read_model_holds_one_row_per_decision_the_center_recorded(recorded: Recorded) -> None:
    with caught_up_reader(recorded.settings) as reader:
        status = reader.projection_status()
        letters = reader.dead_letters()
        [source] = reader.sources()
    app = open_app(recorded.url)
    try:
        events = list(app.read_events())
        rows = audit_rows(app)
        head = app.head()
    finally:
        app.close()

    check_rows(rows, events)
    kinds = {row["kind"] for row in rows}
    assert {
        "order.accepted",
        "order.held",
        "processor.transitioned",
        "mode.switched",
        "dead_letter.recorded",
        "rca.opened",
        "rca.escalated",
        "rca.closed",
    } <= kinds, kinds
    assert {row["tenant"] for row in rows} >= set(TENANTS)
    assert (status.position, status.head, status.lag) == (head, head, 0)
    assert recorded.center_errors == 0
    assert recorded.center_position == head, "the running center's runner had caught up"

    recorded_letters = [e for _, e in events if isinstance(e, DeadLetter.Recorded)]
    assert sorted((str(row.id), row.tenant, row.status, row.error) for row in letters) == sorted(
        (str(e.originator_id), e.envelope["tenant"], "pending", e.error) for e in recorded_letters
    )
    switches = [e for _, e in events if isinstance(e, SourceLog.ModeSwitched)]
    assert len(switches) >= 2
    assert (source.tenant, source.name, source.mode) == (TENANT, SOURCE, switches[-1].to)
    assert source.switches == len(switches)


def brute_force(rows: list[dict[str, Any]], flt: queries.AuditFilter) -> list[dict[str, Any]]:
    """The rows ``flt`` selects, by a plain loop, in time order."""

    def kind_matches(kind: str) -> bool:
        return not flt.kinds or any(
            kind.startswith(k[:-1]) if k.endswith(".*") else kind == k for k in flt.kinds
        )

    found = [
        row
        for row in rows
        if (flt.tenant is None or row["tenant"] == flt.tenant)
        and (flt.source is None or row["source"] == flt.source)
        and kind_matches(row["kind"])
        and (flt.since is None or row["at"] >= flt.since)
        and (flt.until is None or row["at"] <= flt.until)
        and (flt.correlation_id is None or row["correlation_id"] == flt.correlation_id)
    ]
    return sorted(found, key=lambda row: (row["at"], row["position"]))


def as_row(entry: Any) -> dict[str, Any]:
    return {name: getattr(entry, name) for name in entry.__dataclass_fields__}


def filters(rows: list[dict[str, Any]], count: int) -> list[queries.AuditFilter]:
    """``count`` filters drawn (seeded) from values the rows have and some nobody has; times
    are the rows' own, so inclusive bounds are tested on rows that sit on them."""
    draw = random.Random(15)
    times = sorted({row["at"] for row in rows})
    tenants = [None, *TENANTS, "nobody"]
    sources = [None, SOURCE, "payments", "nowhere"]
    kinds: list[tuple[str, ...]] = [
        (),
        ("rca.*",),
        ("mode.*",),
        ("order.held",),
        ("order.accepted", "rca.*"),
        ("dead_letter.recorded", "mode.switched"),
        ("order.*", "processor.transitioned"),
        ("no.such.kind",),
        ("rc*",),  # only a trailing ".*" is a prefix: this is an exact kind nobody has
    ]
    correlations = [None, "corr-1", "corr-3", "pay-beta", "none"]
    bounds = draw.sample(times, 4)

    def maybe(values: Sequence[Any], unset: Any = None) -> Any:
        """Mostly no constraint on a field, so that most filters select something."""
        return draw.choice(values) if draw.random() < 0.4 else unset

    found = [
        queries.AuditFilter(
            tenant=maybe(tenants[1:]),
            source=maybe(sources[1:]),
            kinds=maybe(kinds[1:], ()),
            since=maybe(bounds),
            until=maybe(bounds),
            correlation_id=maybe(correlations[1:]),
        )
        for _ in range(count)
    ]
    # and each value on its own
    found += [queries.AuditFilter(tenant=t) for t in tenants]
    found += [queries.AuditFilter(source=s) for s in sources]
    found += [queries.AuditFilter(kinds=k) for k in kinds]
    found += [queries.AuditFilter(correlation_id=c) for c in correlations]
    found += [queries.AuditFilter(since=t, until=t) for t in times[:: max(1, len(times) // 5)]]
    return found


def test_every_filter_returns_what_a_brute_force_filter_over_all_rows_returns(
    recorded: Recorded,
) -> None:
    with caught_up_reader(recorded.settings):
        pass
    app = open_app(recorded.url)
    try:
        rows = audit_rows(app)
        tried = filters(rows, 120)
        with session_of(app) as session:
            for flt in tried:
                page = queries.audit_page(session, flt, limit=queries.MAX_PAGE)
                assert page.next is None
                assert [as_row(e) for e in page.entries] == brute_force(rows, flt), flt
                if flt.tenant is not None:
                    assert {e.tenant for e in page.entries} <= {flt.tenant}, "another's row"
    finally:
        app.close()
    assert sum(1 for flt in tried if brute_force(rows, flt)) > len(tried) // 3, (
        "most filters select something: the comparison is not between empty lists"
    )


def walk(session: Session, flt: queries.AuditFilter, limit: int, newest_first: bool) -> list[Any]:
    """Every page of ``flt`` in turn, each one's ``next`` starting the following one."""
    entries: list[Any] = []
    after = None
    for _ in range(1000):
        page = queries.audit_page(session, flt, after=after, limit=limit, newest_first=newest_first)
        assert len(page.entries) <= limit
        entries += page.entries
        if page.next is None:
            return entries
        assert len(page.entries) == limit, "only a full page has a next one"
        after = page.next
    raise AssertionError("the pages never ended")


def test_keyset_pages_walk_every_row_once_in_both_directions(recorded: Recorded) -> None:
    with caught_up_reader(recorded.settings):
        pass
    app = open_app(recorded.url)
    try:
        rows = audit_rows(app)
        with session_of(app) as session:
            for flt, limit in itertools.product(
                [
                    queries.AuditFilter(),
                    queries.AuditFilter(tenant="acme"),
                    queries.AuditFilter(kinds=("rca.*", "mode.*")),
                    queries.AuditFilter(tenant="beta", correlation_id="pay-beta"),
                ],
                [1, 2, 3, 7],
            ):
                expected = [row["position"] for row in brute_force(rows, flt)]
                forward = [e.position for e in walk(session, flt, limit, newest_first=False)]
                backward = [e.position for e in walk(session, flt, limit, newest_first=True)]
                assert forward == expected, (flt, limit)
                assert backward == expected[::-1], (flt, limit)
    finally:
        app.close()
    ties = len(rows) - len({row["at"] for row in rows})
    assert ties > 0, "rows share a time: the cursor's position breaks the tie"


def test_a_tenant_filter_never_returns_or_explains_another_tenant_s_row(
    recorded: Recorded,
) -> None:
    with caught_up_reader(recorded.settings) as reader:
        for tenant in TENANTS:
            assert {letter.tenant for letter in reader.dead_letters(tenant=tenant)} <= {tenant}
            assert {row.tenant for row in reader.sources(tenant)} <= {tenant}
    app = open_app(recorded.url)
    try:
        rows = audit_rows(app)
        with session_of(app) as session:
            for tenant, row in itertools.product(TENANTS, rows):
                explained = explain(session, row["position"], tenant=tenant)
                if row["tenant"] != tenant:
                    assert explained is None, (tenant, row)
                    assert queries.audit_entry(session, row["position"], tenant) is None
                    continue
                assert explained is not None
                chain = explained.before + explained.after
                assert {e.tenant for e in chain} <= {tenant}, (tenant, row)
    finally:
        app.close()


# 2. exactly once: a failed batch, a killed reader, two readers ------------------------------------


@pytest.fixture
def store(database_url: str) -> Iterator[CenterApplication]:
    """The center's event tables on the test's database (written by the test itself)."""
    app = CenterApplication(database_url, cache_size=0)
    app.create_tables()
    yield app
    app.close()


class Appender:
    """Appends handler decisions of three tenants to the center's log, with a dead letter every
    ``letters_every`` decisions, ``chunk`` decisions per transaction."""

    def __init__(self, app: CenterApplication) -> None:
        self.app = app
        self.log = app.processor_log("default")
        self.count = 0

    def append(self, decisions: int, *, chunk: int = 500, letters_every: int = 100) -> None:
        letters: list[DeadLetter] = []
        for _ in range(decisions):
            n, self.count = self.count, self.count + 1
            tenant = TENANTS[n % 3]
            decision = Decision("order.accepted", f"order {n}", f"corr-{n % 7}", tenant, {"n": n})
            self.log.decide(decision)
            if letters_every and n % letters_every == 0:
                envelope = {
                    "id": str(uuid4()),
                    "type": "payment.captured",
                    "tenant": tenant,
                    "source": "shop",
                    "correlation_id": f"corr-{n % 7}",
                }
                letters.append(DeadLetter(envelope, "payments", "KeyError", "amount", 2))
            if len(self.log.pending_events) >= chunk:
                self.app.save(self.log, *letters)
                letters = []
        self.app.save(self.log, *letters)


def letters_in(app: CenterApplication) -> list[dict[str, Any]]:
    with session_of(app) as session:
        return rows_of(session, tables.dead_letters)


def check_letters(app: CenterApplication, events: Sequence[tuple[int, Any]]) -> None:
    recorded = sorted(str(e.originator_id) for _, e in events if isinstance(e, DeadLetter.Recorded))
    assert [row["id"] for row in letters_in(app)] == recorded


class TrackingFails(ReadModel):
    """A read model whose tracking insert raises in its ``fail_on``-th page, after that page's
    rows were written in the same transaction (it counts them there first)."""

    def __init__(self, datastore: Any, fail_on: int) -> None:
        super().__init__(datastore)
        self.fail_on = fail_on
        self.pages = 0
        self.rows_in_failed_transaction = 0

    def _insert_tracking(self, session: Session, tracking: Tracking) -> None:
        self.pages += 1
        if self.pages == self.fail_on:
            self.rows_in_failed_transaction = len(session.execute(select(tables.audit)).all())
            raise RuntimeError("the tracking insert failed (test)")
        super()._insert_tracking(session, tracking)


def test_a_batch_whose_tracking_insert_fails_leaves_nothing_and_is_written_once_later(
    store: CenterApplication,
) -> None:
    Appender(store).append(120, letters_every=25)
    model = TrackingFails(store.recorder.datastore, fail_on=2)  # type: ignore[attr-defined]
    model.create_table()
    runner = ProjectionRunner(model, store, page=50)
    runner.catch_up(limit=50)
    before = view_tables(store)
    assert before["center_audit"], "the first page went through"

    with pytest.raises(RuntimeError, match="tracking insert failed"):
        runner.catch_up()
    assert model.rows_in_failed_transaction > len(before["center_audit"]), "rows were written"
    assert model.position == 50, "the position did not move"
    assert view_tables(store) == before, "nothing of the failed page is visible"

    assert runner.catch_up() == store.head() - 50
    events = list(store.read_events())
    check_rows(audit_rows(store), events)
    check_letters(store, events)
    assert model.position == store.head()


def read_line(stream: Any, seconds: float) -> str:
    """The next line of ``stream`` (a child's stdout); fails after ``seconds``."""
    lines: list[str] = []
    reading = threading.Thread(target=lambda: lines.append(stream.readline()), daemon=True)
    reading.start()
    reading.join(seconds)
    assert lines, f"no line from the child within {seconds:g} s"
    return lines[0]


def test_a_reader_killed_between_writing_rows_and_committing_leaves_each_row_once(
    store: CenterApplication, database_url: str
) -> None:
    Appender(store).append(3000, letters_every=100)
    head = store.head()
    child = subprocess.Popen(
        [sys.executable, str(CHILD), "--url", database_url, "--page", "500", "--hang-at", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = read_line(child.stdout, WAIT_S)
        assert line.startswith("wrote "), (line, child.stderr.read() if child.stderr else "")
        first, last = (int(n) for n in line.split()[1].split(".."))
        assert (first, last) == (1001, 1500), "the third page of 500"
        model = model_of(store)
        assert model.position == first - 1, "two pages committed, the third in flight"
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(WAIT_S) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(WAIT_S)
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()

    assert model.position == first - 1, "the killed page was not committed"
    assert max(row["position"] for row in audit_rows(store)) < first
    assert ProjectionRunner(model, store).catch_up() == head - (first - 1)
    events = list(store.read_events())
    rows = audit_rows(store)
    check_rows(rows, events)
    positions = [row["position"] for row in rows]
    assert positions == list(range(2, head + 1)), "every position once, no gap (1 opened the log)"
    check_letters(store, events)
    assert model.position == head


def test_two_readers_catching_up_at_once_while_the_log_grows_write_each_row_once(
    store: CenterApplication, database_url: str
) -> None:
    appender = Appender(store)
    appender.append(200, letters_every=20)
    apps = [open_app(database_url) for _ in range(2)]
    runners = [ProjectionRunner(model_of(app), app, page=40) for app in apps]
    failures: list[BaseException] = []
    writing = threading.Event()
    writing.set()

    def write() -> None:
        try:
            for _ in range(20):
                appender.append(50, letters_every=20)
        except BaseException as error:
            failures.append(error)
        finally:
            writing.clear()

    def read(runner: ProjectionRunner) -> None:
        try:
            while writing.is_set():
                runner.catch_up()
            runner.catch_up()
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=write)]
    threads += [threading.Thread(target=read, args=(runner,)) for runner in runners]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT_S * 2)
        assert not any(thread.is_alive() for thread in threads), "a reader or the writer hung"
        assert failures == []
        head = store.head()
        events = list(store.read_events())
        check_rows(audit_rows(store), events)
        check_letters(store, events)
        assert [runner.model.position for runner in runners] == [head, head]
    finally:
        for app in apps:
            app.close()


def within(seconds: float, call: Callable[[], Any]) -> Any:
    """What ``call()`` returns or raises, run in a thread; fails if it takes over ``seconds``
    (a catch-up that spins instead of answering)."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"no answer within {seconds:g} s"
    return outcome[0]


def test_a_read_model_whose_tracking_was_lost_says_so_and_a_rebuild_mends_it(
    store: CenterApplication, database_url: str, tmp_path: Path
) -> None:
    Appender(store).append(200, letters_every=20)
    reader = CenterReader(CenterSettings(database_url=database_url, data_dir=tmp_path))
    try:
        reader.catch_up()
        before = view_tables(store)
        model = model_of(store)
        with model.transaction(commit=True) as session:  # an operator "resetting" it by hand
            session.execute(model.tracking_table.delete())

        refused = within(WAIT_S, reader.catch_up)
        assert isinstance(refused, ReadModelDiverged), refused
        assert "its tables hold rows its tracking does not know" in str(refused)
        assert "rebuild it: eventcenter projections rebuild" in str(refused)
        assert view_tables(store) == before

        assert reader.rebuild() == store.head()
        assert view_tables(store) == before
        assert reader.projection_status().lag == 0
    finally:
        reader.close()


# 3. a rebuild gives the same tables ---------------------------------------------------------------


def cli_many(*commands: Sequence[str], cwd: Path) -> list[subprocess.CompletedProcess[str]]:
    """Run the ``eventcenter`` commands as a user does, all at once; their results in order."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    env.pop("EVENTCENTER_CONFIG", None)
    started = [
        subprocess.Popen(
            [str(SCRIPT), *command],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in commands
    ]
    results = []
    try:
        for command, process in zip(commands, started, strict=True):
            out, err = process.communicate(timeout=120)
            results.append(subprocess.CompletedProcess(command, process.returncode, out, err))
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
                process.communicate()
    return results


def json_lines(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert result.returncode == 0, (result.args, result.stderr)
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_a_rebuild_from_the_runner_and_from_the_cli_gives_the_same_tables(
    recorded: Recorded,
) -> None:
    with caught_up_reader(recorded.settings):
        pass
    app = open_app(recorded.url)
    try:
        head = app.head()
        before = view_tables(app)
        assert len(before["center_audit"]) > 30
        runner = ProjectionRunner(model_of(app), app, page=7)  # other pages, the same rows
        assert runner.rebuild() == head
        assert view_tables(app) == before

        url = ("--database-url", recorded.url)
        [rebuilt] = cli_many(("projections", "rebuild", *url), cwd=recorded.directory)
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert f"rebuilt the read model from {head} event(s)" in rebuilt.stdout
        assert view_tables(app) == before
    finally:
        app.close()


# 4. the runner lives through an outage ------------------------------------------------------------


def until(condition: Callable[[], bool], what: str, seconds: float = WAIT_S) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what} after {seconds:g} s"
        time.sleep(0.01)


def watch_an_outage(
    runner: ProjectionRunner,
    writer: CenterApplication,
    outage: Callable[[], None],
    mend: Callable[[], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Start ``runner``, let it catch up, cause ``outage`` (which also appends events), check
    it counts and keeps the error without moving, ``mend`` it, check it catches up."""
    caplog.set_level(logging.WARNING, logger="eventcenter.projections")
    runner.start()
    try:
        until(lambda: runner.status.position == writer.head(), "the first catch-up")
        caught = runner.status.position
        outage()
        until(lambda: runner.status.errors >= 2, "two failed catch-ups")
        status = runner.status
        assert status.running
        assert status.position == caught
        assert "OperationalError" in status.last_error, status.last_error
        warnings = [r.getMessage() for r in caplog.records if r.name == "eventcenter.projections"]
        assert any(f"read model stopped at position {caught}:" in m for m in warnings), warnings

        mend()
        head = writer.head()
        assert head > caught
        until(lambda: runner.status.position == head, "the catch-up after the outage")
        until(lambda: runner.status.last_error == "", "the error cleared")
        assert runner.status.errors >= status.errors, "the count is kept"
        assert runner.status.running
    finally:
        runner.stop()
    events = list(writer.read_events())
    check_rows(audit_rows(writer), events)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_runner_keeps_going_through_a_locked_sqlite_store(
    store: CenterApplication, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    appender = Appender(store)
    appender.append(100, letters_every=10)
    app = open_app(f"{database_url}?timeout=0.05")  # a lock is waited for 50 ms, not 5 s
    # A long interval: the events appended before the lock are taken only when poked.
    runner = ProjectionRunner(model_of(app), app, page=30, interval=60.0, max_backoff=0.1)
    holder = sqlite3.connect(make_url(database_url).database or "", isolation_level=None)

    def outage() -> None:
        appender.append(100, letters_every=10)
        holder.execute("BEGIN EXCLUSIVE")  # another process writing, for as long as it likes
        runner.poke()

    def mend() -> None:
        holder.execute("ROLLBACK")

    try:
        watch_an_outage(runner, store, outage, mend, caplog)
    finally:
        holder.close()
        app.close()


@pytest.mark.postgres
def test_the_runner_keeps_going_through_a_postgres_outage(
    pg_proxy: ProxiedPostgres, caplog: pytest.LogCaptureFixture
) -> None:
    writer = CenterApplication(pg_proxy.direct_url, cache_size=0)
    writer.create_tables()
    appender = Appender(writer)
    appender.append(100, letters_every=10)
    app = open_app(pg_proxy.url)
    runner = ProjectionRunner(model_of(app), app, page=30, interval=0.02, max_backoff=0.1)

    def outage() -> None:
        pg_proxy.proxy.cut()
        appender.append(100, letters_every=10)

    try:
        watch_an_outage(runner, writer, outage, pg_proxy.proxy.restore, caplog)
    finally:
        app.close()
        writer.close()


# 5. an event the catalogue cannot read ------------------------------------------------------------


def test_an_event_the_catalogue_cannot_read_becomes_a_row_and_the_model_goes_on(
    store: CenterApplication, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    log = store.processor_log("default")
    log.decide(Decision("order.accepted", "order 1", "corr-1", "acme"))
    log.transition(Transition("begin_adjustment", "stable", "adjusting", "spike", "corr-1"))
    log.decide(Decision("order.held", "order 2", "corr-1", "beta"))
    store.save(log)
    Appender(store).append(20, letters_every=5)
    events = list(store.read_events())
    [moved] = [p for p, e in events if isinstance(e, ProcessorLog.Transitioned)]

    real = catalog.describe

    def describe(position: int, event: Any, known: Any) -> Any:
        if isinstance(event, ProcessorLog.Transitioned):
            raise ValueError("the catalogue has no entry for this event (test)")
        return real(position, event, known)

    monkeypatch.setattr("eventcenter.projections.view.describe", describe)  # its caller
    model = model_of(store)
    runner = ProjectionRunner(model, store, page=10)
    runner.catch_up()

    rows = audit_rows(store)
    [unreadable] = [row for row in rows if row["kind"] == "projection.unreadable"]
    assert unreadable["position"] == moved
    assert unreadable["reason"] == "ValueError: the catalogue has no entry for this event (test)"
    assert unreadable["subject"] == "ProcessorLog.Transitioned"
    assert unreadable["aggregate_id"] == str(ProcessorLog.create_id("default"))
    readable = [(p, e) for p, e in events if p != moved]
    check_rows([row for row in rows if row["position"] != moved], readable)
    assert model.position == store.head(), "the model went on past it"
    assert any(
        f"cannot read event Transitioned at position {moved}" in r.getMessage()
        for r in caplog.records
    )
    with session_of(store) as session:
        found = queries.audit_page(session, queries.AuditFilter(kinds=("projection.*",)))
        assert [e.position for e in found.entries] == [moved]
        explained = explain(session, moved)
        assert explained is not None
        assert "ValueError" in explained.rule

    monkeypatch.undo()  # the catalogue fixed: a rebuild reads it
    runner.rebuild()
    check_rows(audit_rows(store), events)


# 6. the CLI ---------------------------------------------------------------------------------------


def chain_around(rows: list[dict[str, Any]], row: dict[str, Any]) -> tuple[list[int], list[int]]:
    """The positions before and after ``row`` in its chain (its correlation id, or else its
    aggregate), at most 10 each side, by a plain loop."""
    if row["correlation_id"]:
        same = [r for r in rows if r["correlation_id"] == row["correlation_id"]]
    else:
        same = [r for r in rows if r["aggregate_id"] == row["aggregate_id"]]
    ordered = sorted(same, key=lambda r: (r["at"], r["position"]))
    key = (row["at"], row["position"])
    before = [r["position"] for r in ordered if (r["at"], r["position"]) < key]
    after = [r["position"] for r in ordered if (r["at"], r["position"]) > key]
    return before[-10:], after[:10]


def without_time(line: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in line.items() if k != "time"}


def check_explained(explained: dict[str, Any], row: dict[str, Any], rows: list[Any]) -> None:
    """``explain --json`` of ``row``: the decision is its row, the inputs its recorded fields,
    the chain and the history what a plain loop over the rows finds."""
    assert without_time(explained["decision"]) == row
    assert explained["inputs"] == row["details"]
    assert explained["rule"]
    before, after = chain_around(rows, row)
    assert [e["position"] for e in explained["before"]] == before
    assert [e["position"] for e in explained["after"]] == after
    history = [
        r["position"]
        for r in rows
        if r["aggregate_id"] == row["aggregate_id"] and r["position"] < row["position"]
    ]
    assert [e["position"] for e in explained["history"]] == history[-10:]


def test_audit_and_explain_on_the_command_line(recorded: Recorded) -> None:
    with caught_up_reader(recorded.settings):
        pass
    app = open_app(recorded.url)
    try:
        rows = audit_rows(app)
        switch = next(row for row in rows if row["kind"] == "mode.switched")
        with session_of(app) as session:
            explained_switch = explain(session, switch["position"])
    finally:
        app.close()
    by_position = {row["position"]: row for row in rows}
    case = next(
        row for row in rows if row["kind"] == "rca.opened" and row["correlation_id"] == "pay-beta"
    )
    url = ("--database-url", recorded.url)
    commands: list[tuple[str, ...]] = [
        ("audit", *url, "--tenant", "beta", "--kind", "order.*", "--kind",
         "dead_letter.recorded", "--since", "1h", "--json", "--limit", "1000"),
        ("audit", *url, "--tenant", TENANT, "--source", SOURCE, "--kind", "mode.*",
         "--since", "2023-11-14T22:13:30", "--until", "2023-11-15T00:00", "--json"),
        ("explain", str(case["position"]), *url, "--json"),
    ]  # fmt: skip
    errors: list[tuple[str, ...]] = []
    if recorded.url.startswith("sqlite"):  # a user's mistakes are the same on both stores
        errors = [("audit", *url, "--since", "yesterday"), ("explain", "999999", *url)]
    hour_ago = time.time() - 3600
    results = cli_many(*commands, *errors, cwd=recorded.directory)

    by_tenant, modes = json_lines(results[0]), json_lines(results[1])
    assert [line["position"] for line in by_tenant] == [
        row["position"]
        for row in brute_force(
            rows,
            queries.AuditFilter(
                tenant="beta", kinds=("order.*", "dead_letter.recorded"), since=hour_ago
            ),
        )
    ]
    assert {line["kind"] for line in by_tenant} == {
        "order.accepted",
        "order.held",
        "dead_letter.recorded",
    }
    start = 1_700_000_010.0  # 2023-11-14T22:13:30 UTC
    assert [line["position"] for line in modes] == [
        row["position"]
        for row in brute_force(
            rows,
            queries.AuditFilter(
                tenant=TENANT, source=SOURCE, kinds=("mode.*",), since=start, until=start + 6390
            ),
        )
    ]
    assert [line["kind"] for line in modes] == ["mode.switched", "mode.switched"]
    for line in by_tenant + modes:
        assert without_time(line) == by_position[line["position"]]
        assert line["time"] == datetime.fromtimestamp(line["at"], UTC).isoformat()

    assert results[2].returncode == 0, results[2].stderr
    explained_case = json.loads(results[2].stdout)
    check_explained(explained_case, case, rows)
    assert {e["aggregate"] for e in explained_case["before"] + explained_case["after"]} == {
        "DeadLetter",
        "RcaCase",
    }, "its chain crosses aggregates"
    assert explained_switch is not None
    check_explained(explained_switch.as_dict(), switch, rows)
    assert explained_switch.rule.startswith(
        f"{switch['details']['failures']} consecutive push failures reached the failure"
        f" threshold {switch['details']['threshold']}: event_only -> hybrid"
    )
    assert explained_switch.state["mode_before"] == "event_only"

    if errors:
        since, unknown = results[3:]
        for result, message in (
            (since, "error: 'yesterday' is neither a duration (90s, 15m, 1h, 2d) nor a date"),
            (unknown, "error: no decision #999999 in the store (see eventcenter audit)"),
        ):
            assert result.returncode != 0, result.args
            assert result.stdout == ""
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr
            assert result.stderr.startswith(message), result.stderr
            assert "Traceback" not in result.stderr


# 7. a deployment's chain across aggregates --------------------------------------------------------


def in_the_chain(events: Sequence[tuple[int, Any]], event_id: str, correlation: str) -> set[int]:
    """The positions of the decisions a deployment event set off, read off the stored events:
    those naming its correlation id, every event of its tuning run, and the events of RCA cases
    opened for a failure in its chain."""
    run = TuningRun.create_id(event_id)
    cases: set[str] = set()
    found = set()
    for position, e in events:
        if isinstance(e, CREATING):
            continue
        if isinstance(e, RcaCase.Opened) and e.failure.get("correlation_id") == correlation:
            cases.add(str(e.originator_id))
        if (
            getattr(e, "correlation_id", None) == correlation
            or e.originator_id == run
            or str(e.originator_id) in cases
        ):
            found.add(position)
    return found


def naming(events: Sequence[tuple[int, Any]], *values: str) -> set[int]:
    """The positions of the events (creating ones aside) whose recorded fields name any of
    ``values`` anywhere."""
    found = set()
    for position, e in events:
        if isinstance(e, CREATING):
            continue
        fields = orjson.dumps(
            {k: v for k, v in vars(e).items() if k != "originator_id"}, default=str
        ).decode()
        if any(value in fields for value in values):
            found.add(position)
    return found


async def test_a_deployment_s_chain_is_followed_across_every_aggregate_it_touched(
    database_url: str, tmp_path: Path
) -> None:
    config = tuning_settings(database_url, tmp_path)
    tester = ScriptedTester({"http://t": 200.0})
    async with sample_agents("a1", "a2") as (a1, a2):
        gone = f"http://127.0.0.1:{free_port()}/frequency"  # nothing listens there
        agents = [
            {"name": "a1", "url": a1.url, "weight": 3},
            {"name": "a2", "url": a2.url, "weight": 1},
            {"name": "gone", "url": gone, "weight": 1},
        ]
        async with EventCenter(config, pressure=tester) as center:
            event_id = await center.publish(  # no correlation id given: the event's own id
                "deployment.changed",
                {"service": "api", "signature": "sha-1", "target": "http://t", "agents": agents},
                tenant="acme",
            )

            async def dispatch_case() -> bool:
                return any(row.source == "api:gone" for row in await center.healing.cases.cases())

            await wait_for(lambda: tuned(center, event_id), "the tuning run")
            await wait_for(dispatch_case, "the failed dispatch's rca case")

    [audited] = await asyncio.to_thread(
        cli_many,
        ("audit", "--database-url", database_url, "--correlation", event_id, "--json",
         "--limit", "1000"),
        cwd=tmp_path,
    )  # fmt: skip
    chain = json_lines(audited)
    app = open_app(database_url)
    try:
        events = list(app.read_events())
    finally:
        app.close()

    positions = [line["position"] for line in chain]
    missing = naming(events, event_id) - set(positions)
    assert not missing, [(p, type(e).__qualname__) for p, e in events if p in missing]
    assert set(positions) == in_the_chain(events, event_id, event_id)
    assert chain == sorted(chain, key=lambda line: (line["at"], line["position"])), "time order"
    kinds = [line["kind"] for line in chain]
    assert kinds[0] == "deployment.changed"
    assert {
        "tuning.requested",
        "processor.transitioned",
        "tuning.test_started",
        "load_test.started",
        "tuning.step_measured",
        "load_test.step",
        "throughput.measured",
        "tuning.capacity_known",
        "tuning.adjusted",
        "frequency.adjusted",
        "tuning.dispatched",
        "frequency.dispatched",
        "tuning.dispatch_failed",
        "tuning.tuned",
        "rca.opened",
    } <= set(kinds), kinds
    steps = [line for line in chain if line["kind"] == "tuning.step_measured"]
    assert len(steps) == kinds.count("load_test.step") > 3, "each step of the load test"
    assert kinds.count("tuning.dispatched") == 2
    [measured] = [
        line
        for line in chain
        if line["kind"] == "throughput.measured" and line["aggregate"] == "ThroughputRecorder"
    ]
    [adjusted] = [line for line in chain if line["kind"] == "tuning.adjusted"]
    dispatched = [line for line in chain if line["kind"] == "tuning.dispatched"]
    assert steps[-1]["at"] <= measured["at"] <= adjusted["at"] <= dispatched[0]["at"]
    assert measured["details"]["max_rps"] == pytest.approx(200, rel=0.1)
    assert {line["details"]["outcome"]["agent"] for line in dispatched} == {"a1", "a2"}
    # Every link of a tenant's deployment is that tenant's (an API key of acme sees the chain),
    # including the measurement, adjustment and dispatches whose events record no tenant.
    assert {line["tenant"] for line in chain} == {"acme"}, [
        (line["kind"], line["aggregate"]) for line in chain if line["tenant"] != "acme"
    ]
