"""The center's persistence, run the same way on SQLite and on the PostgreSQL server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from eventcenter.center.app import EventCenter
from eventcenter.center.reader import CenterReader
from eventcenter.center.settings import CenterSettings, RecordingSettings
from eventcenter.domain.aggregates import ProcessorLog
from eventcenter.domain.decisions import Decision
from eventcenter.domain.errors import (
    CenterLocked,
    DeadLetterNotFound,
    RecordingFailed,
    ReplayRefused,
    StoreNotFound,
)
from eventcenter.domain.event import Event
from eventcenter.handlers.config import ProcessorSettings
from eventcenter.handlers.context import Context
from eventcenter.storage.application import CenterApplication
from eventcenter.storage.writer import StoreWriter


def settings_for(url: str, tmp_path: Path, **processor: object) -> CenterSettings:
    fast = {"backoff_base": 0.001, "backoff_max": 0.002, "max_attempts": 2, **processor}
    return CenterSettings(
        database_url=url,
        data_dir=tmp_path,
        processor=ProcessorSettings.model_validate(fast),
        recording=RecordingSettings(snapshot_interval=10),
    )


@pytest.fixture
def app(database_url: str) -> Iterator[CenterApplication]:
    application = CenterApplication(database_url)
    application.create_tables()
    yield application
    application.close()


def open_writer(app: CenterApplication, batch_max: int = 500) -> StoreWriter:
    writer = StoreWriter(app, "default", batch_max=batch_max, snapshot_interval=10)
    writer.open()
    return writer


@pytest.fixture
async def center(database_url: str, tmp_path: Path) -> AsyncIterator[EventCenter]:
    built = EventCenter(settings_for(database_url, tmp_path))
    yield built
    if built.processor.status == "running":
        await built.stop()
    built.close()


@pytest.fixture
async def running(center: EventCenter) -> EventCenter:
    """A started center; handlers are registered on it before its first publish."""
    await center.start()
    return center


async def test_concurrent_decisions_are_all_saved_in_few_transactions(
    app: CenterApplication,
) -> None:
    writer = open_writer(app, batch_max=100)
    try:
        await asyncio.gather(
            *(
                writer.record_decision(Decision(f"kind.{i % 3}", f"reason {i}", f"corr-{i}"))
                for i in range(300)
            )
        )
        saves = writer.saves
    finally:
        writer.close()
    assert saves < 300, "decisions submitted together are saved together"
    log: ProcessorLog = app.repository.get(ProcessorLog.create_id("default"))
    assert log.decisions == 300
    reasons = [getattr(e, "reason", None) for _, e in app.read_events() if hasattr(e, "kind")]
    assert reasons == [f"reason {i}" for i in range(300)], "recorded in submission order"


async def test_loading_the_processor_log_reads_a_snapshot_and_a_bounded_tail(
    app: CenterApplication,
) -> None:
    writer = open_writer(app, batch_max=7)
    try:
        for i in range(95):
            await writer.record_decision(Decision("tick", str(i), "c"))
    finally:
        writer.close()
    log_id = ProcessorLog.create_id("default")
    assert app.snapshots is not None
    snapshots = list(app.snapshots.get(log_id, desc=True, limit=1))
    assert snapshots, "a snapshot was taken"
    latest = snapshots[0].originator_version
    tail = list(app.events.get(log_id, gt=latest))
    assert latest >= 90
    assert len(tail) < 10, "loading replays fewer events than the snapshot interval"
    assert app.repository.get(log_id).decisions == 95


async def test_state_machine_state_survives_a_restart(database_url: str, tmp_path: Path) -> None:
    first = EventCenter(settings_for(database_url, tmp_path))
    async with first:
        await first.processor.state.fire("begin_adjustment", reason="spike", correlation_id="c1")
    second = EventCenter(settings_for(database_url, tmp_path))
    async with second:
        assert second.processor.state.state == "adjusting"
        trail = await asyncio.to_thread(second.decisions)
    assert [(row.kind, row.details) for row in trail] == [
        ("transition", {"trigger": "begin_adjustment", "from": "stable", "to": "adjusting"})
    ]
    assert trail[0].correlation_id == "c1"
    assert trail[0].reason == "spike"


async def test_a_dead_letter_is_stored_listed_and_replayed_once(center: EventCenter) -> None:
    broken = True
    handled: list[str] = []

    @center.processor.on("orders.created", name="orders")
    async def on_order(event: Event, ctx: Context) -> None:
        if broken:
            raise RuntimeError("warehouse offline")
        handled.append(event.payload["order"])

    await center.start()
    event_id = await center.publish("orders.created", {"order": "o-1"}, tenant="acme")
    await center.processor.join()
    [letter] = await asyncio.to_thread(center.dead_letters, "pending")
    assert letter.event["id"] == event_id
    assert (letter.subscription, letter.error_type, letter.error, letter.attempts) == (
        "orders",
        "RuntimeError",
        "warehouse offline",
        2,
    )
    assert letter.tenant == "acme"

    broken = False
    replayed = await center.replay_dead_letter(letter.id, reason="warehouse back")
    await center.processor.join()
    assert str(replayed.id) == event_id
    assert handled == ["o-1"]
    [row] = await asyncio.to_thread(center.dead_letters)
    assert row.status == "replayed"
    with pytest.raises(ReplayRefused, match="replayed already"):
        await center.replay_dead_letter(letter.id)


async def test_two_replays_of_one_letter_at_once_deliver_it_once(center: EventCenter) -> None:
    broken = True
    handled: list[str] = []

    @center.processor.on("orders.created", name="orders")
    async def on_order(event: Event, ctx: Context) -> None:
        if broken:
            raise RuntimeError("warehouse offline")
        handled.append(str(event.id))

    await center.start()
    await center.publish("orders.created", {"order": "o-1"})
    await center.processor.join()
    [letter] = await asyncio.to_thread(center.dead_letters, "pending")
    broken = False
    outcomes = await asyncio.gather(
        *(center.replay_dead_letter(letter.id) for _ in range(5)), return_exceptions=True
    )
    await center.processor.join()
    refused = [o for o in outcomes if isinstance(o, ReplayRefused)]
    assert len(refused) == 4, outcomes
    assert all("in progress" in str(o) or "replayed already" in str(o) for o in refused)
    assert len(handled) == 1


async def test_a_replay_that_fails_again_becomes_a_new_letter_linked_to_the_old(
    center: EventCenter,
) -> None:
    @center.processor.on("orders.created", name="orders")
    async def on_order(event: Event, ctx: Context) -> None:
        raise RuntimeError("still offline")

    await center.start()
    await center.publish("orders.created", {"order": "o-1"})
    await center.processor.join()
    [old] = await asyncio.to_thread(center.dead_letters, "pending")
    await center.replay_dead_letter(old.id)
    await center.processor.join()
    letters = {row.id: row for row in await asyncio.to_thread(center.dead_letters)}
    [new] = [row for row in letters.values() if row.id != old.id]
    assert new.status == "pending"
    assert new.replay_of == str(old.id)
    assert letters[old.id].status == "replayed"
    assert letters[old.id].failed_again_as == str(new.id)


async def test_replaying_an_unknown_dead_letter_is_a_clear_error(running: EventCenter) -> None:
    with pytest.raises(DeadLetterNotFound, match="not a dead letter id"):
        await running.replay_dead_letter("nonsense")
    with pytest.raises(DeadLetterNotFound, match="no dead letter"):
        await running.replay_dead_letter("00000000-0000-4000-8000-000000000000")


async def test_work_left_at_shutdown_stays_in_the_store_and_runs_after_a_restart(
    database_url: str, tmp_path: Path
) -> None:
    center = EventCenter(settings_for(database_url, tmp_path, workers=1))
    started = asyncio.Event()

    @center.processor.on("slow.work", name="slow")
    async def slow(event: Event, ctx: Context) -> None:
        started.set()
        await asyncio.Event().wait()  # never returns: cancelled by stop()

    await center.start()
    ids = [await center.publish("slow.work", {"n": n}) for n in range(3)]
    await asyncio.wait_for(started.wait(), 5)
    report = await center.stop(timeout=0)
    assert report.dead_lettered == []
    assert len(report.interrupted) == 1
    assert report.abandoned == []

    handled: list[str] = []
    again = EventCenter(settings_for(database_url, tmp_path, workers=1))

    @again.processor.on("slow.work", name="slow")
    async def fast(event: Event, ctx: Context) -> None:
        handled.append(str(event.id))

    async with again:
        await again.processor.join()
        assert again.processor.queue_depths()["redelivered_at_start"] == 3
        letters = await asyncio.to_thread(again.dead_letters)
    assert sorted(handled) == sorted(ids), "nothing lost, the running one runs again"
    assert letters == [], "nothing dead-lettered as if it had not run"


async def test_an_idempotency_key_admits_once_across_restarts(
    database_url: str, tmp_path: Path
) -> None:
    handled: list[str] = []

    def build() -> EventCenter:
        center = EventCenter(settings_for(database_url, tmp_path))

        @center.processor.on("orders.created", name="orders")
        async def on_order(event: Event, ctx: Context) -> None:
            handled.append(str(event.id))

        return center

    async with build() as first:
        one = await first.publish("orders.created", {"v": 1}, tenant="acme", key="order-42@v7")
        again = await first.publish("orders.created", {"v": 2}, tenant="acme", key="order-42@v7")
        other = await first.publish("orders.created", {"v": 3}, tenant="beta", key="order-42@v7")
        await first.processor.join()
    async with build() as second:
        later = await second.publish("orders.created", {"v": 4}, tenant="acme", key="order-42@v7")
        await second.processor.join()
    assert again == one, "the first event's id is returned"
    assert later == one, "and after a restart too"
    assert other != one, "keys are per tenant"
    assert sorted(handled) == sorted([one, other])


async def test_a_decision_is_recorded_once_per_cause_when_its_delivery_runs_again(
    center: EventCenter,
) -> None:
    attempts = 0

    @center.processor.on("orders.created", name="orders")
    async def on_order(event: Event, ctx: Context) -> None:
        nonlocal attempts
        attempts += 1
        await ctx.decide("order.accepted", "looks fine", event)
        await ctx.decide("order.accepted", "second decision of the same kind", event)
        if attempts == 1:
            raise RuntimeError("failed after deciding")

    await center.start()
    await center.publish("orders.created", {"order": "o-1"})
    await center.processor.join()
    trail = await asyncio.to_thread(center.decisions)
    assert attempts == 2
    assert [row.reason for row in trail if row.kind == "order.accepted"] == [
        "looks fine",
        "second decision of the same kind",
    ]


async def test_a_failing_snapshot_does_not_fail_a_stored_batch(
    center: EventCenter, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("snapshot store full")

    monkeypatch.setattr(center.app, "snapshot_processor_log", broken)
    await center.start()
    for i in range(25):  # crosses the snapshot interval (10) twice
        await center.processor.context.decisions.record_decision(Decision("tick", str(i), "c"))
    trail = await asyncio.to_thread(center.decisions)
    assert [row.reason for row in trail if row.kind == "tick"] == [str(i) for i in range(25)]


async def test_a_lagging_subscription_builds_a_backlog_in_the_store_not_in_memory(
    database_url: str, tmp_path: Path
) -> None:
    center = EventCenter(settings_for(database_url, tmp_path, memory_window=4, max_backlog=50))
    gate = asyncio.Event()
    slow_done: list[int] = []
    fast_done: list[int] = []

    @center.processor.on("work.#", name="slow", max_in_flight=1)
    async def slow(event: Event, ctx: Context) -> None:
        await gate.wait()
        slow_done.append(event.payload["n"])

    @center.processor.on("work.#", name="fast")
    async def fast(event: Event, ctx: Context) -> None:
        fast_done.append(event.payload["n"])

    async with center:
        await center.publish_batch([{"type": "work.item", "payload": {"n": n}} for n in range(40)])
        for _ in range(100):
            if len(fast_done) == 40:
                break
            await asyncio.sleep(0.01)
        assert sorted(fast_done) == list(range(40)), "the other subscription is not held up"
        depths = center.processor.queue_depths()
        slow_info = {s["name"]: s for s in center.processor.subscriptions()}["slow"]
        assert slow_info["buffered"] <= 4, "memory holds a bounded window"
        assert depths["lag_by_subscription"]["slow"] == 40
        assert depths["in_store"] >= 36
        from eventcenter.domain.errors import Backpressure

        with pytest.raises(Backpressure, match="'slow' is lagging"):
            await center.publish_batch(
                [{"type": "work.item", "payload": {"n": n}} for n in range(40, 51)]
            )
        gate.set()
        await center.processor.join()
    assert sorted(slow_done) == list(range(40))


async def test_the_audit_trail_lists_decisions_in_recorded_order(running: EventCenter) -> None:
    center = running
    await center.publish(
        "latency.spike", {"service": "api", "observed_ms": 500, "threshold_ms": 100}
    )
    await center.processor.join()
    await center.publish("system.idle", {"idle_seconds": 60})
    await center.processor.join()
    trail = await asyncio.to_thread(center.decisions)
    assert [row.kind for row in trail] == [
        "transition",
        "frequency.reduce",
        "transition",
        "frequency.restore",
    ]
    assert [row.summary for row in trail if row.kind == "transition"] == [
        "stable -> adjusting (begin_adjustment)",
        "adjusting -> stable (settle)",
    ]
    positions = [row.position for row in trail]
    assert positions == sorted(positions)
    assert trail[1].details == {"service": "api", "factor": 0.25}


async def test_a_refused_save_fails_its_callers_and_the_writer_recovers(
    app: CenterApplication, database_url: str
) -> None:
    writer = open_writer(app)
    try:
        await writer.record_decision(Decision("first", "mine", "c1"))
        # Another process writes to the same processor log behind the writer's back.
        other = CenterApplication(database_url, cache_size=0)
        try:
            log: ProcessorLog = other.repository.get(ProcessorLog.create_id("default"))
            log.decide(Decision("second", "theirs", "c2"))
            other.save(log)
        finally:
            other.close()
        with pytest.raises(RecordingFailed, match="refused"):
            await writer.record_decision(Decision("lost", "conflicts", "c3"))
        await writer.record_decision(Decision("third", "after reload", "c4"))
    finally:
        writer.close()
    kinds = [getattr(e, "kind", None) for _, e in app.read_events() if hasattr(e, "kind")]
    assert kinds == ["first", "second", "third"], "the refused decision is not half-stored"


async def test_a_second_center_of_the_same_name_refuses_and_readers_work_beside_it(
    running: EventCenter, database_url: str, tmp_path: Path
) -> None:
    await running.processor.state.fire("begin_adjustment", reason="spike", correlation_id="c1")
    second = EventCenter(settings_for(database_url, tmp_path))
    with pytest.raises(CenterLocked, match="default"):
        await second.start()
    second.close()
    reader = CenterReader(settings_for(database_url, tmp_path))
    try:
        trail = await asyncio.to_thread(reader.decisions)
    finally:
        reader.close()
    assert [row.summary for row in trail] == ["stable -> adjusting (begin_adjustment)"]
    assert running.processor.status == "running"


def test_a_reader_never_creates_a_store(tmp_path: Path) -> None:
    missing = tmp_path / "typo"
    with pytest.raises(StoreNotFound, match="no store at"):
        CenterReader(CenterSettings(data_dir=missing))
    assert not missing.exists()


async def test_a_load_test_interrupted_by_a_restart_is_ended_with_a_recorded_reason(
    database_url: str, tmp_path: Path
) -> None:
    first = EventCenter(settings_for(database_url, tmp_path))
    async with first:
        await first.processor.state.fire("begin_load_test", reason="deploy", correlation_id="d1")
    second = EventCenter(settings_for(database_url, tmp_path))
    async with second:
        assert second.processor.state.state == "stable"
        trail = await asyncio.to_thread(second.decisions)
    assert [(row.summary, row.reason) for row in trail][-1] == (
        "load_testing -> stable (abort)",
        "interrupted by restart",
    )


async def test_a_deliverys_decisions_are_stored_with_its_outcome_or_not_at_all(
    database_url: str, tmp_path: Path
) -> None:
    first = EventCenter(settings_for(database_url, tmp_path))
    entered = asyncio.Event()

    @first.processor.on("orders.created", name="orders")
    async def decide_then_hang(event: Event, ctx: Context) -> None:
        await ctx.decide("order.accepted", "looks fine", event)
        entered.set()
        await asyncio.Event().wait()  # interrupted by the stop below

    await first.start()
    await first.publish("orders.created", {"order": "o-1"})
    await asyncio.wait_for(entered.wait(), 5)
    await first.stop(timeout=0)
    reader = CenterReader(settings_for(database_url, tmp_path))
    try:
        assert [r for r in reader.decisions() if r.kind == "order.accepted"] == []
    finally:
        reader.close()

    second = EventCenter(settings_for(database_url, tmp_path))

    @second.processor.on("orders.created", name="orders")
    async def decide(event: Event, ctx: Context) -> None:
        await ctx.decide("order.accepted", "looks fine", event)

    async with second:
        await second.processor.join()
        trail = await asyncio.to_thread(second.decisions)
    assert [r.reason for r in trail if r.kind == "order.accepted"] == ["looks fine"]
