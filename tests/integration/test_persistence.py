"""The center's persistence, run the same way on SQLite and on the PostgreSQL server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from eventcenter.center.app import EventCenter
from eventcenter.center.settings import CenterSettings, RecordingSettings
from eventcenter.domain.aggregates import ProcessorLog
from eventcenter.domain.decisions import Decision
from eventcenter.domain.errors import DeadLetterNotFound, EventCenterError, RecordingFailed
from eventcenter.domain.event import Event
from eventcenter.handlers.config import ProcessorSettings
from eventcenter.handlers.context import Context
from eventcenter.storage.application import CenterApplication
from eventcenter.storage.writer import DecisionWriter


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
    application = CenterApplication(database_url, snapshot_interval=10)
    yield application
    application.close()


@pytest.fixture
async def center(database_url: str, tmp_path: Path) -> AsyncIterator[EventCenter]:
    built = EventCenter(settings_for(database_url, tmp_path))
    yield built
    if built.processor.status == "running":
        await built.stop()
    built.close()


async def test_concurrent_decisions_are_all_saved_in_few_transactions(
    app: CenterApplication,
) -> None:
    writer = DecisionWriter(app, "default", batch_max=100)
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
    writer = DecisionWriter(app, "default", batch_max=7)
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
    try:
        assert second.processor.state.state == "adjusting"
        trail = second.decisions()
    finally:
        second.close()
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
    with pytest.raises(EventCenterError, match="replayed, not pending"):
        await center.replay_dead_letter(letter.id)


async def test_replaying_an_unknown_dead_letter_is_a_clear_error(center: EventCenter) -> None:
    with pytest.raises(DeadLetterNotFound, match="not a dead letter id"):
        await center.replay_dead_letter("nonsense")
    with pytest.raises(DeadLetterNotFound, match="no dead letter"):
        await center.replay_dead_letter("00000000-0000-4000-8000-000000000000")


async def test_events_still_queued_at_shutdown_become_dead_letters(
    database_url: str, tmp_path: Path
) -> None:
    center = EventCenter(settings_for(database_url, tmp_path, workers=1))
    release = asyncio.Event()

    @center.processor.on("slow.work", name="slow")
    async def slow(event: Event, ctx: Context) -> None:
        await release.wait()

    await center.start()
    ids = [await center.publish("slow.work", {"n": n}) for n in range(3)]
    await asyncio.sleep(0)  # let the single worker pick up the first delivery
    report = await center.stop(timeout=0.05)
    assert sorted(report.dead_lettered) == sorted(ids)
    reader = EventCenter(settings_for(database_url, tmp_path), builtin_handlers=False)
    try:
        letters = reader.dead_letters("pending")
    finally:
        reader.close()
    assert sorted(row.event["id"] for row in letters) == sorted(ids)
    assert {row.error_type for row in letters} == {"ShutdownInterrupted"}


async def test_the_audit_trail_lists_decisions_in_recorded_order(center: EventCenter) -> None:
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
    writer = DecisionWriter(app, "default")
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
        with pytest.raises(RecordingFailed, match="refused the batch"):
            await writer.record_decision(Decision("lost", "conflicts", "c3"))
        await writer.record_decision(Decision("third", "after reload", "c4"))
    finally:
        writer.close()
    kinds = [getattr(e, "kind", None) for _, e in app.read_events() if hasattr(e, "kind")]
    assert kinds == ["first", "second", "third"], "the refused decision is not half-stored"
