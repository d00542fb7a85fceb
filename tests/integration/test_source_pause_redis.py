"""Pausing a real Redis Streams source of a real center (SQLite and PostgreSQL): while paused
the consumer group reads nothing and nothing is admitted, also across a restart of the center;
resumed, every entry is admitted and handled exactly once and the group has nothing pending.

Whether the group read anything is asked of the Redis server itself (``XINFO GROUPS``), and
the engines are stopped once ``pause`` returns, so the checks hold without waiting."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from eventcenter.center.app import EventCenter
from eventcenter.domain.event import Event
from tests.integration.test_center_sources import Seen, build, push, until_seen

pytestmark = pytest.mark.redis

GROUP = "eventcenter"  # the consumer group build() gives the source


@pytest.fixture
async def stream(redis_url: str) -> AsyncIterator[str]:
    name = f"test-pause-{secrets.token_hex(6)}"
    yield name
    client = Redis.from_url(redis_url)
    await client.delete(name)
    await client.aclose()


async def group(redis_url: str, name: str) -> dict[str, Any]:
    client = Redis.from_url(redis_url)
    try:
        [found] = [g for g in await client.xinfo_groups(name) if g["name"] == GROUP.encode()]
        return dict(found)
    finally:
        await client.aclose()


def engines_running(center: EventCenter) -> bool:
    [runner] = center.sources.runners()
    assert runner.push is not None
    return runner.push.running


async def test_a_paused_redis_source_reads_nothing_until_resumed_then_everything_once(
    database_url: str, tmp_path: Path, redis_url: str, stream: str
) -> None:
    seen: list[Event] = Seen()
    center = build(database_url, tmp_path, redis_url, stream, seen)
    await center.start()
    try:
        await push(redis_url, stream, range(10))
        await until_seen(seen, 10)
        result = await center.pause_source("acme", "orders", reason="redis upgrade", by="dana")
        assert result.changed
        assert not engines_running(center)
        position = await center.deliveries.source_position("acme", "orders", "push")
        read = await group(redis_url, stream)

        await push(redis_url, stream, range(10, 40))  # while paused

        assert await group(redis_url, stream) == {**read, "lag": 30}, "the group read nothing"
        assert await center.deliveries.source_position("acme", "orders", "push") == position
        await center.processor.join()
        assert len(seen) == 10
    finally:
        await center.stop()

    again = build(database_url, tmp_path, redis_url, stream, seen)  # the center restarts
    await again.start()
    try:
        assert not engines_running(again), "still paused after the restart"
        assert (await group(redis_url, stream))["lag"] == 30
        [status] = again.sources.statuses()
        assert status.paused is not None
        assert status.paused.reason == "redis upgrade"

        await push(redis_url, stream, range(40, 50))
        resumed = await again.resume_source("acme", "orders", by="dana")
        assert resumed.changed
        assert engines_running(again)
        await until_seen(seen, 50)
        await again.processor.join()

        after = await group(redis_url, stream)
        assert (after["pending"], after["lag"]) == (0, 0), "all read and acknowledged"
        keys = [e.payload["key"] for e in seen]
        assert sorted(keys) == sorted(f"o-{n}" for n in range(50))
        assert len(keys) == len(set(keys)), "each entry handled once"
    finally:
        await again.stop()
