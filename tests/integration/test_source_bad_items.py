"""Bad items on a real center (SQLite and PostgreSQL) with a real Redis stream source: each one
becomes a dead letter with its reason, is acknowledged like any other entry, and the flow goes
on: the items after it are handled, and the source stays on push (a bad message is not a push
failure)."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from eventcenter.center.app import EventCenter
from eventcenter.center.settings import CenterSettings
from eventcenter.domain.event import Event
from eventcenter.domain.source_modes import EVENT_ONLY
from eventcenter.handlers.config import ProcessorSettings
from eventcenter.sources.connectors import redis_stream
from eventcenter.sources.source import DataSource

pytestmark = pytest.mark.redis

WAIT_S = 20.0
POLL_S = 0.01
GROUP = "eventcenter"

#: Each bad entry, and what its dead letter must say.
BAD: list[tuple[dict[bytes, bytes], str]] = [
    ({b"item": b"{not json"}, "not JSON"),
    ({b"item": json.dumps({"version": 1}).encode()}, "no key"),
    ({b"item": json.dumps({"key": "o-nov"}).encode()}, "no version"),
    (
        {b"item": json.dumps({"key": "o-big", "version": 1, "data": {"b": "x" * 70_000}}).encode()},
        "field 'payload': is 70",
    ),
    ({b"key": b"\xff\xfe", b"version": b"1"}, "not UTF-8"),
]


async def until_acked(client: Redis, stream: str) -> None:
    """Wait (bounded) until the group has no entry pending: every entry was acknowledged."""
    deadline = time.monotonic() + WAIT_S
    while (await client.xpending(stream, GROUP))["pending"]:
        assert time.monotonic() < deadline, f"entries still pending after {WAIT_S}s"
        await asyncio.sleep(POLL_S)


@pytest.fixture
async def stream(redis_url: str) -> AsyncIterator[str]:
    name = f"test-bad-items-{secrets.token_hex(6)}"
    yield name
    client = Redis.from_url(redis_url)
    await client.delete(name)
    await client.aclose()


async def test_bad_items_become_dead_letters_with_the_reason_and_the_flow_goes_on(
    database_url: str, tmp_path: Path, redis_url: str, stream: str
) -> None:
    settings = CenterSettings(
        database_url=database_url, data_dir=tmp_path, processor=ProcessorSettings()
    )
    center = EventCenter(settings, builtin_handlers=False)
    handled: list[str] = []
    arrived = asyncio.Event()

    async def keep(event: Event, ctx: object) -> None:
        handled.append(event.payload["key"])
        arrived.set()

    center.processor.subscribe("source.item.*", keep, name="items")
    center.sources.register(
        DataSource(
            tenant="acme",
            name="orders",
            events=redis_stream(stream, group=GROUP, consumer="c1", url=redis_url),
        )
    )
    client = Redis.from_url(redis_url)
    await center.start()
    try:
        await client.xadd(stream, {"item": json.dumps({"key": "o-1", "version": 1})})
        for fields, _ in BAD:
            await client.xadd(stream, fields)  # type: ignore[arg-type]
        for key in ("o-2", "o-3"):
            await client.xadd(stream, {"item": json.dumps({"key": key, "version": 1})})

        async with asyncio.timeout(WAIT_S):
            while len(handled) < 3:
                arrived.clear()
                await arrived.wait()
        await until_acked(client, stream)
        letters = await asyncio.to_thread(center.dead_letters)
        [runner] = center.sources.runners()
        mode = runner.mode
    finally:
        await center.stop()
        await client.aclose()

    assert handled == ["o-1", "o-2", "o-3"], "the items after the bad ones were not handled"
    assert len(letters) == len(BAD)
    assert {letter.subscription for letter in letters} == {"source:acme/orders"}
    in_order = sorted(letters, key=lambda row: row.position)
    for (_, reason), letter in zip(BAD, in_order, strict=True):
        assert reason in letter.error, (reason, letter.error)
        assert letter.event["metadata"]["path"] == "push"
    assert in_order[0].event["payload"]["raw"] == "{not json", "the bad message is kept"
    assert mode == EVENT_ONLY, "bad messages were held against the push path"
