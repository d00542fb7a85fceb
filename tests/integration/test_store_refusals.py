"""What the real store refuses, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

from eventcenter.center.app import EventCenter
from eventcenter.center.settings import CenterSettings
from eventcenter.domain.event import Event
from eventcenter.handlers.config import ProcessorSettings
from eventcenter.handlers.context import Context

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
    assert "the store refused the write" in letter.error
