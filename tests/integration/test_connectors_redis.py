"""The Redis Streams push path against real servers: the shared one on 127.0.0.1:6379 (a
stream of the test's own, deleted afterwards) and, for restarts and passwords, a
redis-server the test starts itself."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from eventcenter.domain.sources import PositionLost, SourceError, SourceErrorKind
from eventcenter.sources.connectors import PathStateError, redis_stream
from eventcenter.sources.connectors.redis_stream import RedisStreamPath
from tests.integration.receiving import (
    failure_within,
    keys,
    problems,
    receive_quiet,
    receive_until,
)
from tests.servers import closed_port, redis_process

pytestmark = pytest.mark.redis


@pytest.fixture
async def stream(redis_url: str) -> AsyncIterator[str]:
    name = f"test-orders-{secrets.token_hex(6)}"
    yield name
    client = Redis.from_url(redis_url)
    await client.delete(name)
    await client.aclose()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def add(redis: Redis, stream: str, *numbers: int) -> list[str]:
    """One entry per number: item ``k<n>`` at version ``n``, in the JSON form."""
    ids = []
    for number in numbers:
        item = {"key": f"k{number}", "version": number, "data": {"n": number}}
        entry_id = await redis.xadd(stream, {"item": json.dumps(item)})
        ids.append(entry_id.decode() if isinstance(entry_id, bytes) else entry_id)
    return ids


def path_for(url: str, stream: str, consumer: str = "c1", **options: Any) -> RedisStreamPath:
    return redis_stream(stream, group="eventcenter", consumer=consumer, url=url, **options)


class TestDelivery:
    async def test_acked_entries_do_not_come_again(
        self, redis_url: str, redis: Redis, stream: str
    ) -> None:
        path = path_for(redis_url, stream)
        await path.open(None)
        ids = await add(redis, stream, 1, 2, 3)

        received = await receive_until(path, 3)
        await path.ack(received)

        assert keys(received) == ["k1", "k2", "k3"]
        assert [message.position for message in received] == ids
        assert received[0].item is not None
        assert received[0].item.data == {"n": 1}
        assert await receive_quiet(path) == []
        await path.aclose()
        again = path_for(redis_url, stream)
        await again.open(ids[-1])
        assert await receive_quiet(again) == []
        await again.aclose()

    async def test_flat_fields_and_the_data_field_are_items_too(
        self, redis_url: str, redis: Redis, stream: str
    ) -> None:
        path = path_for(redis_url, stream)
        await path.open(None)
        await redis.xadd(
            stream,
            {"key": "a", "version": "7", "data": '{"x": 1}', "deleted": "true", "occurred_at": "5"},
        )
        await redis.xadd(stream, {"data": json.dumps({"key": "b", "version": 2})})

        first, second = await receive_until(path, 2)

        assert first.item is not None
        assert second.item is not None
        assert (first.item.key, first.item.version, first.item.data) == ("a", "7", {"x": 1})
        assert (first.item.deleted, first.item.occurred_at) == (True, 5.0)
        assert (second.item.key, second.item.version) == ("b", "2")
        await path.aclose()

    async def test_bad_entries_come_out_with_their_problem_and_the_flow_goes_on(
        self, redis_url: str, redis: Redis, stream: str
    ) -> None:
        path = path_for(redis_url, stream)
        await path.open(None)
        await redis.xadd(stream, {"item": "{not json"})
        await redis.xadd(stream, {"version": "1"})
        await redis.xadd(stream, {"key": "x", "version": "1", "deleted": "maybe"})
        await redis.xadd(stream, {"key": b"\xff\xfe", "version": "1"})
        await add(redis, stream, 9)

        received = await receive_until(path, 5)
        await path.ack(received)

        assert keys(received) == ["k9"]
        found = problems(received)
        assert found[0].startswith("not JSON")
        assert "no key" in found[1]
        assert "'deleted' must be true or false" in found[2]
        assert "not UTF-8" in found[3]
        assert all(message.raw for message in received[:4])
        assert await receive_quiet(path) == []
        await path.aclose()


class TestRedelivery:
    async def test_unacked_entries_come_again_after_a_restart_of_the_consumer(
        self, redis_url: str, redis: Redis, stream: str
    ) -> None:
        path = path_for(redis_url, stream)
        await path.open(None)
        await add(redis, stream, 1, 2, 3)
        first = await receive_until(path, 3)
        await path.aclose()  # nothing acked

        again = path_for(redis_url, stream)
        await again.open(None)
        second = await receive_until(again, 3)

        assert [m.position for m in second] == [m.position for m in first]
        await again.ack(second)
        assert await receive_quiet(again) == []
        await again.aclose()

    async def test_a_dead_consumers_pending_entries_are_claimed_after_claim_idle(
        self, redis_url: str, redis: Redis, stream: str
    ) -> None:
        dead = path_for(redis_url, stream, consumer="dead")
        await dead.open(None)
        await add(redis, stream, 1, 2)
        taken = await receive_until(dead, 2)
        await dead.aclose()

        alive = path_for(redis_url, stream, consumer="alive", claim_idle=0.2)
        await alive.open(None)
        claimed = await receive_until(alive, 2)
        await alive.ack(claimed)

        assert [m.position for m in claimed] == [m.position for m in taken]
        assert await receive_quiet(alive) == []
        await alive.aclose()

    async def test_resume_from_a_stored_position_loses_nothing_and_replays_nothing(
        self, redis_url: str, redis: Redis, stream: str
    ) -> None:
        path = path_for(redis_url, stream)
        await path.open(None)
        await add(redis, stream, *range(10))
        first = await receive_until(path, 6, batch=6)
        await path.ack(first)
        await path.aclose()
        await add(redis, stream, *range(10, 14))

        again = path_for(redis_url, stream)
        await again.open(first[-1].position)
        rest = await receive_until(again, 8)

        assert keys(first) == [f"k{n}" for n in range(6)]
        assert keys(rest) == [f"k{n}" for n in range(6, 14)]
        await again.aclose()


class TestPositionLost:
    async def test_a_trimmed_stream_loses_the_stored_position(
        self, redis_url: str, redis: Redis, stream: str
    ) -> None:
        path = path_for(redis_url, stream)
        await path.open(None)
        await add(redis, stream, *range(10))
        first = await receive_until(path, 2, batch=2)
        await path.ack(first)
        await path.aclose()
        await redis.xtrim(stream, maxlen=3, approximate=False)

        with pytest.raises(PositionLost, match="5 entries were trimmed before the group read them"):
            await path_for(redis_url, stream).open(first[-1].position)

    async def test_a_trim_while_reading_is_reported(
        self, redis_url: str, redis: Redis, stream: str
    ) -> None:
        path = path_for(redis_url, stream, claim_idle=0.2)
        await path.open(None)
        await add(redis, stream, *range(10))
        await redis.xtrim(stream, maxlen=2, approximate=False)

        error = await failure_within(path)

        assert isinstance(error, PositionLost)
        assert "8 entries were trimmed before the group read them" in str(error)
        await path.aclose()

    async def test_a_vanished_stream_loses_the_stored_position(
        self, redis_url: str, redis: Redis, stream: str
    ) -> None:
        path = path_for(redis_url, stream)
        await path.open(None)
        ids = await add(redis, stream, 1)
        await path.aclose()
        await redis.delete(stream)

        with pytest.raises(PositionLost, match="the stream is gone"):
            await path_for(redis_url, stream).open(ids[0])

    async def test_after_a_position_lost_opening_without_a_position_goes_on(
        self, redis_url: str, redis: Redis, stream: str
    ) -> None:
        path = path_for(redis_url, stream)
        await path.open(None)
        ids = await add(redis, stream, *range(5))
        await path.aclose()
        await redis.xtrim(stream, maxlen=1, approximate=False)
        with pytest.raises(PositionLost):
            await path_for(redis_url, stream).open(ids[0])

        fresh = path_for(redis_url, stream)
        await fresh.open(None)
        await add(redis, stream, 5)

        assert keys(await receive_until(fresh, 2)) == ["k4", "k5"]
        await fresh.aclose()


class TestErrors:
    async def test_a_refused_connection_is_a_connection_error(self) -> None:
        path = redis_stream("s", "g", url=f"redis://127.0.0.1:{closed_port()}/0")

        with pytest.raises(SourceError) as raised:
            await path.open(None)

        assert raised.value.kind is SourceErrorKind.CONNECTION
        assert "redis_stream 's'" in str(raised.value)

    async def test_misuse_is_a_clear_error_and_aclose_is_safe_twice(self, redis_url: str) -> None:
        path = path_for(redis_url, "never-opened")

        with pytest.raises(PathStateError, match=r"receive\(\) before open\(\)"):
            await path.receive(10, 0.1)
        with pytest.raises(PathStateError, match=r"ack\(\) before open\(\)"):
            await path.ack([])
        await path.aclose()
        await path.aclose()

    async def test_a_wrong_password_is_an_auth_error_that_does_not_show_it(
        self, redis_binary: str, tmp_path: Path
    ) -> None:
        with redis_process(tmp_path, "--requirepass", "s3cret-pw") as server:
            wrong = redis_stream("s", "g", url=f"redis://:not-the-pw@127.0.0.1:{server.port}/0")
            anonymous = redis_stream("s", "g", url=f"{server.url}/0")

            with pytest.raises(SourceError) as wrong_password:
                await wrong.open(None)
            with pytest.raises(SourceError) as no_password:
                await anonymous.open(None)

        assert wrong_password.value.kind is SourceErrorKind.AUTH
        assert no_password.value.kind is SourceErrorKind.AUTH
        assert "not-the-pw" not in str(wrong_password.value)
        assert "redis://:***@127.0.0.1" in str(wrong_password.value)


class TestServerRestart:
    async def test_a_restarted_redis_has_forgotten_the_stream_and_says_so(
        self, redis_binary: str, tmp_path: Path
    ) -> None:
        with redis_process(tmp_path) as server:
            url = f"{server.url}/0"
            producer = Redis.from_url(url)
            path = path_for(url, "orders", claim_idle=0.2)
            await path.open(None)
            await add(producer, "orders", *range(5))
            first = await receive_until(path, 5)
            await path.ack(first)
            await producer.aclose()

            server.stop()
            down = await failure_within(path)
            server.start()
            after = await failure_within(path)
            await path.aclose()

            assert down.kind is SourceErrorKind.CONNECTION
            assert isinstance(after, PositionLost)
            with pytest.raises(PositionLost, match="Redis restarted"):
                await path_for(url, "orders").open(first[-1].position)
