"""A real center with a real Redis Streams source (SQLite and PostgreSQL): items pushed to the
stream are handled once, a restart resumes without loss or repeats, and the source's log
records its registration."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from eventcenter.center.app import EventCenter
from eventcenter.center.settings import CenterSettings
from eventcenter.domain.event import Event
from eventcenter.domain.source_log import SourceLog
from eventcenter.domain.source_modes import EVENT_ONLY
from eventcenter.handlers.config import ProcessorSettings
from eventcenter.sources.connectors import redis_stream
from eventcenter.sources.source import DataSource

pytestmark = pytest.mark.redis

WAIT_S = 20.0


@pytest.fixture
async def stream(redis_url: str) -> AsyncIterator[str]:
    name = f"test-center-{secrets.token_hex(6)}"
    yield name
    client = Redis.from_url(redis_url)
    await client.delete(name)
    await client.aclose()


def build(url: str, tmp_path: Path, redis_url: str, stream: str, seen: list[Event]) -> EventCenter:
    settings = CenterSettings(database_url=url, data_dir=tmp_path, processor=ProcessorSettings())
    center = EventCenter(settings, builtin_handlers=False)

    async def keep(event: Event, ctx: object) -> None:
        seen.append(event)

    center.processor.subscribe("source.item.*", keep, name="items")
    center.sources.register(
        DataSource(
            tenant="acme",
            name="orders",
            events=redis_stream(stream, group="eventcenter", consumer="c1", url=redis_url),
            event_timeout="30s",
        )
    )
    return center


async def push(redis_url: str, stream: str, numbers: range) -> None:
    client = Redis.from_url(redis_url)
    for n in numbers:
        item = {"key": f"o-{n}", "version": 1, "data": {"n": n}}
        await client.xadd(stream, {"item": json.dumps(item)})
    await client.aclose()


class Seen(list[Event]):
    """The events handled so far; :meth:`reach` waits (bounded) for a count."""

    def __init__(self) -> None:
        super().__init__()
        self.grew = asyncio.Event()

    def append(self, event: Event) -> None:
        super().append(event)
        self.grew.set()

    async def reach(self, count: int) -> None:
        async with asyncio.timeout(WAIT_S):
            while len(self) < count:
                self.grew.clear()
                await self.grew.wait()


async def until_seen(seen: list[Event], count: int) -> None:
    assert isinstance(seen, Seen)
    await seen.reach(count)


async def test_stream_items_are_handled_once_across_a_restart(
    database_url: str, tmp_path: Path, redis_url: str, stream: str
) -> None:
    seen: list[Event] = Seen()
    center = build(database_url, tmp_path, redis_url, stream, seen)
    await center.start()
    try:
        await push(redis_url, stream, range(50))
        await until_seen(seen, 50)
        [runner] = center.sources.runners()
        assert runner.mode == EVENT_ONLY
    finally:
        await center.stop()
    await push(redis_url, stream, range(50, 80))  # while the center is down
    again = build(database_url, tmp_path, redis_url, stream, seen)
    await again.start()
    try:
        await until_seen(seen, 80)
        await asyncio.sleep(0.3)  # anything repeated would arrive now; nothing may
        keys = [e.payload["key"] for e in seen]
        assert sorted(keys) == sorted(f"o-{n}" for n in range(80))
        assert {e.tenant for e in seen} == {"acme"}
        assert {e.source for e in seen} == {"orders"}
        events = [type(e).__qualname__ for _, e in again.app.read_events()]
        assert events.count("SourceLog.Registered") == 1
        source_log = again.app.source_log(SourceLog.create_id("acme", "orders"))
        assert source_log is not None
        assert source_log.mode == EVENT_ONLY
    finally:
        await again.stop()
