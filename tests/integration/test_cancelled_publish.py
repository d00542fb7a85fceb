"""A publisher that goes away while its events are being committed loses nothing: the store
commits them all the same, and their deliveries run now, not after a restart (SQLite and
PostgreSQL)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from eventcenter.center.app import EventCenter
from eventcenter.center.settings import CenterSettings
from eventcenter.domain.event import Event
from eventcenter.handlers.config import ProcessorSettings

GUARD_S = 10.0


async def test_a_publish_cancelled_during_its_commit_is_still_handled(
    database_url: str, tmp_path: Path
) -> None:
    settings = CenterSettings(
        database_url=database_url, data_dir=tmp_path, processor=ProcessorSettings()
    )
    center = EventCenter(settings, builtin_handlers=False)
    handled = asyncio.Event()
    seen: list[Event] = []

    async def keep(event: Event, ctx: object) -> None:
        seen.append(event)
        handled.set()

    center.processor.subscribe("orders.*", keep, name="orders")
    await center.start()
    try:
        publishing = asyncio.ensure_future(
            center.publish("orders.created", {"n": 1}, key="order-1")
        )
        await asyncio.sleep(0)  # the admission is handed to the store writer
        publishing.cancel()
        await asyncio.gather(publishing, return_exceptions=True)
        await asyncio.wait_for(handled.wait(), GUARD_S)
        await asyncio.wait_for(center.processor.join(), GUARD_S)
        assert [e.payload for e in seen] == [{"n": 1}]
        again = await center.publish("orders.created", {"n": 1}, key="order-1")
        assert again == seen[0].id_text  # the key was committed with it
        report = await center.stop()
        assert report.left_in_store == 0
    finally:
        if center.processor.status == "running":
            await center.stop()
