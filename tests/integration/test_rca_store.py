"""RCA cases and healing stats in the store: the CaseRecorder contract run against the
in-memory recorder and the store (SQLite, PostgreSQL), and a restart after which open cases
and learned rates are back and nothing is healed or escalated twice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import pytest

from eventcenter.domain.errors import RcaCaseNotFound, RcaCaseRefused
from eventcenter.domain.healing_choice import HealingStats
from eventcenter.domain.rca import DEFAULT_RULES, Component, Failure, RcaContext, analyse
from eventcenter.domain.rca_case import (
    CLOSED,
    ESCALATED,
    CaseReader,
    CaseRecorder,
    RcaCase,
    StatsFor,
)
from eventcenter.healing.case_memory import MemoryCaseRecorder
from eventcenter.storage import rca_state
from eventcenter.storage.application import CenterApplication
from eventcenter.storage.rca_recorder import DurableCaseRecorder
from eventcenter.storage.writer import StoreWriter
from tests.unit.rca_fakes import AT, FakeEscalator, FakeStrategy, rig, timeout

WAIT_S = 10.0


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait for the writer thread (real time, bounded): ``condition`` is asked every 10 ms."""
    deadline = time.monotonic() + WAIT_S
    while not await condition():
        assert time.monotonic() < deadline, f"{what}: not within {WAIT_S}s"
        await asyncio.sleep(0.01)


@dataclass
class Store:
    """A writer on an application; ``reopen`` closes both and opens new ones (a restart)."""

    url: str
    app: CenterApplication
    writer: StoreWriter

    @classmethod
    async def open(cls, url: str) -> Store:
        app = CenterApplication(url)
        app.create_tables()
        writer = StoreWriter(app, "default", snapshot_interval=5)
        await asyncio.to_thread(writer.open)
        return cls(url, app, writer)

    async def close(self) -> None:
        await asyncio.to_thread(self.writer.close)
        self.app.close()

    async def reopen(self) -> Store:
        await self.close()
        return await Store.open(self.url)


# the contract, for the in-memory recorder and the store ------------------------------------------


#: The contract runs against the in-memory recorder and the store, on both backends.
contract = pytest.mark.parametrize(
    "database_url",
    ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
    indirect=True,
)


@pytest.fixture
async def recorder(database_url: str) -> AsyncIterator[CaseRecorder]:
    if database_url == "memory://":
        yield MemoryCaseRecorder()
        return
    store = await Store.open(database_url)
    yield DurableCaseRecorder(store.writer)
    await store.close()


def opening(failure: Failure) -> Callable[[RcaCase | None, StatsFor], tuple[Any, Any]]:
    seen = RcaContext(at=failure.at, source_mode="hybrid")
    analysis = analyse(failure, seen, DEFAULT_RULES)

    def open_case(case: RcaCase | None, stats: StatsFor) -> tuple[Any, Any]:
        if case is not None:
            return None, case
        made = RcaCase.open(failure, analysis, seen, at=failure.at)
        return made, made

    return open_case


async def opened(recorder: CaseRecorder, failure: Failure) -> RcaCase:
    case: RcaCase = await recorder.change(
        RcaCase.id_for(failure, "event_timeout"), opening(failure)
    )
    return case


async def history(recorder: CaseRecorder, case_id: UUID) -> list[str]:
    assert isinstance(recorder, (MemoryCaseRecorder, DurableCaseRecorder))
    reader: CaseReader = recorder
    return [step.name for step in await reader.history(case_id)]


@contract
async def test_a_step_and_its_count_are_recorded_together(recorder: CaseRecorder) -> None:
    case = await opened(recorder, timeout())

    def heal(found: RcaCase | None, stats: StatsFor) -> tuple[Any, bool]:
        assert found is not None
        found.attempt("restart_stream", 1, at=AT + 1)
        new = found.verdict(1, True, at=AT + 2, action="restarted", detail="passed")
        if new:
            stats(found.category).count("restart_stream", True, case_id=str(found.id), at=AT + 2)
        found.close("healed by restart_stream", at=AT + 2)
        return found, new

    assert await recorder.change(case.id, heal) is True
    assert await recorder.change(case.id, heal) is False, "the same step again: nothing new"

    stored = await recorder.case(case.id)
    assert stored is not None
    assert (stored.status, len(stored.attempts)) == (CLOSED, 1)
    stats = await recorder.stats("event_timeout")
    assert stats is not None
    assert stats.tally() == {"restart_stream": (1, 1)}, "counted once"
    assert await recorder.stats("rate_limited") is None
    assert await history(recorder, case.id) == [
        "Opened",
        "Analysed",
        "HealingAttempted",
        "HealingVerified",
        "Closed",
    ]


@contract
async def test_a_refused_step_leaves_nothing_behind(recorder: CaseRecorder) -> None:
    case = await opened(recorder, timeout())

    def bad(found: RcaCase | None, stats: StatsFor) -> tuple[Any, None]:
        assert found is not None
        stats(found.category).count("restart_stream", True, case_id="x", at=AT)
        found.attempt("restart_stream", 1, at=AT + 1)
        found.acknowledge("ops", at=AT + 2)  # refused: the case was not escalated
        return found, None

    with pytest.raises(RcaCaseRefused, match="not escalated"):
        await recorder.change(case.id, bad)
    stored = await recorder.case(case.id)
    assert stored is not None
    assert stored.attempts == []
    assert await recorder.stats("event_timeout") is None
    assert await history(recorder, case.id) == ["Opened", "Analysed"]


@contract
async def test_steps_submitted_together_each_see_the_one_before(recorder: CaseRecorder) -> None:
    case = await opened(recorder, timeout())

    def attach(at: float) -> Callable[[RcaCase | None, StatsFor], tuple[Any, int]]:
        def step(found: RcaCase | None, stats: StatsFor) -> tuple[Any, int]:
            assert found is not None
            found.attach(timeout(at), at=at)
            stats(found.category).count("restart_stream", False, case_id="c", at=at)
            return found, found.failures

        return step

    def refused(found: RcaCase | None, stats: StatsFor) -> tuple[Any, None]:
        assert found is not None
        found.renotify("webhook", 2, at=AT)
        return found, None

    results = await asyncio.gather(
        recorder.change(case.id, attach(AT + 1)),
        recorder.change(case.id, refused),
        recorder.change(case.id, attach(AT + 2)),
        return_exceptions=True,
    )
    assert results[0] == 2
    assert isinstance(results[1], RcaCaseRefused)
    assert results[2] == 3
    stored = await recorder.case(case.id)
    assert stored is not None
    assert stored.failures == 3
    stats = await recorder.stats("event_timeout")
    assert stats is not None
    assert stats.tally() == {"restart_stream": (0, 2)}


@contract
async def test_the_same_failure_finds_the_same_case(recorder: CaseRecorder) -> None:
    first = await opened(recorder, timeout())
    again = await opened(recorder, timeout())
    assert again.id == first.id
    assert await history(recorder, first.id) == ["Opened", "Analysed"]


@contract
async def test_open_cases_and_listings(recorder: CaseRecorder) -> None:
    acme = await opened(recorder, timeout(AT, tenant="acme"))
    beta = await opened(recorder, timeout(AT + 1, tenant="beta"))

    def resolve(found: RcaCase | None, stats: StatsFor) -> tuple[Any, None]:
        assert found is not None
        found.resolve("fixed by hand", at=AT + 5, by="ops")
        return found, None

    await recorder.change(beta.id, resolve)
    assert [c.id for c in await recorder.open_cases()] == [acme.id]
    assert await recorder.case(UUID(int=7)) is None
    assert isinstance(recorder, (MemoryCaseRecorder, DurableCaseRecorder))
    reader: CaseReader = recorder
    every = await reader.cases()
    mine = await reader.cases(tenant="beta")
    still = await reader.cases(open_only=True)
    with pytest.raises(RcaCaseNotFound):
        await reader.history(UUID(int=7))
    assert [(r.tenant, r.status) for r in every] == [("beta", CLOSED), ("acme", "open")]
    assert [r.case_id for r in mine] == [str(beta.id)]
    assert [r.case_id for r in still] == [str(acme.id)]


# a restart ---------------------------------------------------------------------------------------


def connection_refused(at: float = AT) -> Failure:
    return Failure("acme", "stock", Component.SOURCE_PUSH, "connection", "refused", at)


def unknown(at: float = AT) -> Failure:
    return Failure("acme", None, Component.DISPATCH, "exception", "boom", at)


async def test_open_cases_and_learning_survive_a_restart_and_nothing_is_done_twice(
    database_url: str,
) -> None:
    store = await Store.open(database_url)
    escalator = FakeEscalator()
    restart = FakeStrategy("restart_stream", heals=True)
    stuck = FakeStrategy(
        "reconnect", frozenset({"connection_failure"}), heals=True, apply_gate=asyncio.Event()
    )
    test = rig(restart, stuck)
    test.escalator = escalator
    first = test.runner(DurableCaseRecorder(store.writer))
    await first.start()
    try:
        first.report(timeout(AT, source="orders"))  # healed, verified, closed
        first.report(unknown(AT))  # no rule knows it: escalated
        first.report(connection_refused(AT))  # the action never ends: the center dies
        recorder = DurableCaseRecorder(store.writer)

        async def settled() -> bool:
            rows = {r.category: r.status for r in await recorder.cases()}
            return rows == {
                "event_timeout": CLOSED,
                "unknown": ESCALATED,
                "connection_failure": "healing",
            }

        await until(settled, "the first runner's steps")
    finally:
        await first.stop()
    assert len(escalator.seen) == 1

    store = await store.reopen()
    try:
        recorder = DurableCaseRecorder(store.writer)
        learned = await recorder.stats("event_timeout")
        assert learned is not None
        assert learned.tally() == {"restart_stream": (1, 1)}
        assert sorted(c.category for c in await recorder.open_cases()) == [
            "connection_failure",
            "unknown",
        ]

        again_restart = FakeStrategy("restart_stream", heals=True)
        again_reconnect = FakeStrategy("reconnect", frozenset({"connection_failure"}), heals=True)
        test.strategies = [again_restart, again_reconnect]
        second = test.runner(recorder)
        await second.start()
        try:

            async def resumed() -> bool:
                rows = {r.category: r.status for r in await recorder.cases()}
                return rows.get("connection_failure") == CLOSED and second.busy == 0

            await until(resumed, "the resumed case's re-check")
        finally:
            await second.stop()

        assert again_reconnect.applied == [], "the interrupted action is re-checked, not re-run"
        assert again_reconnect.checks == 1
        assert again_restart.applied == [], "the verified step is not run again"
        assert len(escalator.seen) == 1, "the escalated case is not escalated again"
        healed = await recorder.stats("connection_failure")
        assert healed is not None
        assert healed.tally() == {"reconnect": (1, 1)}
        escalated_id = RcaCase.id_for(unknown(AT), "unknown")
        steps = [s.name for s in await recorder.history(escalated_id)]
        assert steps == ["Opened", "Analysed", "Escalated"]

        # a reader beside the store lists the cases from the index table
        with store.app.recorder.datastore.transaction(commit=False) as session:  # type: ignore[attr-defined]
            rows = rca_state.list_cases(session, "default", open_only=True)
        assert [r.case_id for r in rows] == [str(escalated_id)]
        stored = rca_state.load_case(store.app, escalated_id)
        assert stored is not None
        assert stored.status == ESCALATED
    finally:
        await store.close()


async def test_a_long_case_loads_from_a_snapshot(database_url: str) -> None:
    store = await Store.open(database_url)
    try:
        recorder = DurableCaseRecorder(store.writer)
        case = await opened(recorder, timeout())
        for n in range(1, 13):

            def attach(found: RcaCase | None, stats: StatsFor, n: int = n) -> tuple[Any, None]:
                assert found is not None
                found.attach(timeout(AT + n), at=AT + n)
                stats("event_timeout").count("restart_stream", n % 2 == 0, case_id="c", at=AT)
                return found, None

            await recorder.change(case.id, attach)
        assert store.app.snapshots is not None
        assert list(store.app.snapshots.get(case.id)), "the case was snapshotted"
        stats_id = HealingStats.create_id("default", "event_timeout")
        assert list(store.app.snapshots.get(stats_id)), "the stats were snapshotted"
        store = await store.reopen()
        loaded = rca_state.load_case(store.app, case.id)
        assert loaded is not None
        assert loaded.failures == 13
        learned = rca_state.load_stats(store.app, "default", "event_timeout")
        assert learned is not None
        assert learned.tally() == {"restart_stream": (6, 12)}
    finally:
        await store.close()


def test_a_store_without_the_rca_table_lists_no_case(tmp_path: Any) -> None:
    app = CenterApplication(f"sqlite:///{tmp_path}/old.db")
    app.create_tables()
    try:
        with app.recorder.datastore.transaction(commit=False) as session:  # type: ignore[attr-defined]
            assert rca_state.list_cases(session, "default") == []
    finally:
        app.close()
