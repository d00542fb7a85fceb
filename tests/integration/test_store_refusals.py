"""What the real store refuses, and what a fenced writer does, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Connection

from eventcenter.center.app import EventCenter
from eventcenter.center.settings import CenterSettings
from eventcenter.domain.decisions import Decision
from eventcenter.domain.errors import LeaseLost
from eventcenter.domain.event import Event
from eventcenter.handlers.config import ProcessorSettings
from eventcenter.handlers.context import Context
from eventcenter.storage.application import CenterApplication
from eventcenter.storage.writer import SettleCommand, StoreWriter

JOIN_S = 10.0  # only turns a hang into a failure


async def test_a_decision_the_store_cannot_keep_dead_letters_its_delivery(
    database_url: str, tmp_path: Path
) -> None:
    """The refusal repeats on every retry: after max_attempts the delivery is a dead letter
    naming it (replayable once the handler is fixed), instead of retrying for ever."""
    settings = CenterSettings(
        database_url=database_url,
        data_dir=tmp_path,
        processor=ProcessorSettings(max_attempts=3, backoff_base=0.001, backoff_max=0.002),
    )
    center = EventCenter(settings, builtin_handlers=False)
    calls = 0

    @center.processor.on("orders.created", name="orders")
    async def decide(event: Event, ctx: Context) -> None:
        nonlocal calls
        calls += 1
        await ctx.decide("order.seen", "details the store cannot serialise", event, at=object())

    async with center:
        event_id = await center.publish("orders.created", {"order": 1})
        await asyncio.wait_for(center.processor.join(), JOIN_S)
        [letter] = await asyncio.to_thread(center.dead_letters)
    assert calls == 3
    assert (letter.event["id"], letter.subscription) == (event_id, "orders")
    assert (letter.error_type, letter.attempts) == ("RecordingFailed", 3)
    assert "cannot keep decision 'order.seen'" in letter.error


@pytest.fixture
def app(database_url: str) -> Iterator[CenterApplication]:
    application = CenterApplication(database_url)
    application.create_tables()
    yield application
    application.close()


async def test_a_fenced_writer_refuses_what_callers_wait_for_and_drops_what_they_posted(
    app: CenterApplication,
) -> None:
    """Once another process holds the lease, nothing more is written: a caller that waits gets
    LeaseLost; a worker that only posts the end of a delivery is not raised at (its delivery
    stays in the store for the new holder)."""
    lost = False

    def fence(connection: Connection) -> None:
        if lost:
            raise LeaseLost("center 'default': lease token 1 is no longer current")

    writer = StoreWriter(app, "default", fence=fence)
    writer.open()
    try:
        await writer.record_decision(Decision("before", "still ours", "c1"))
        lost = True
        with pytest.raises(LeaseLost, match="no longer current"):
            await writer.record_decision(Decision("after", "fenced off", "c2"))
        writer.post(SettleCommand(1))  # does not raise
        with pytest.raises(LeaseLost, match="no longer current"):
            await writer.record_decision(Decision("later", "refused at once", "c3"))
    finally:
        writer.close()
    kinds = [getattr(e, "kind", None) for _, e in app.read_events() if hasattr(e, "kind")]
    assert kinds == ["before"]
