"""The NATS JetStream push path against real servers: the shared one on 127.0.0.1:4222 (a
stream of the test's own, deleted afterwards) and, for restarts and passwords, a nats-server
the test starts itself with its store in the test's directory."""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from eventcenter.domain.sources import PositionLost, SourceError, SourceErrorKind
from eventcenter.sources.connectors import PathStateError, nats_jetstream
from eventcenter.sources.connectors.nats_jetstream import NatsJetStreamPath
from tests.integration.receiving import (
    failure_within,
    keys,
    problems,
    receive_quiet,
    receive_until,
)
from tests.servers import closed_port, nats_process

pytestmark = pytest.mark.nats


@pytest.fixture
def stream() -> str:
    return f"TEST_ORDERS_{secrets.token_hex(6)}"


@pytest.fixture
async def client(nats_url: str, stream: str) -> AsyncIterator[Client]:
    connection = await nats.connect(nats_url)
    yield connection
    with contextlib.suppress(NotFoundError):
        await connection.jetstream().delete_stream(stream)
    await connection.close()


def subject(stream: str) -> str:
    return f"{stream.lower()}.changed"


def path_for(url: str, stream: str, **options: Any) -> NatsJetStreamPath:
    return nats_jetstream(stream, subject(stream), durable="eventcenter", url=url, **options)


async def publish(client: Client, stream: str, *numbers: int) -> None:
    js = client.jetstream()
    for number in numbers:
        item = {"key": f"k{number}", "version": number, "data": {"n": number}}
        await js.publish(subject(stream), json.dumps(item).encode())


class TestDelivery:
    async def test_acked_messages_do_not_come_again(
        self, nats_url: str, client: Client, stream: str
    ) -> None:
        path = path_for(nats_url, stream)
        await path.open(None)  # creates the stream and the durable consumer
        await publish(client, stream, 1, 2, 3)

        received = await receive_until(path, 3)
        await path.ack(received)

        assert keys(received) == ["k1", "k2", "k3"]
        assert [message.position for message in received] == ["1", "2", "3"]
        assert await receive_quiet(path) == []
        await path.aclose()
        again = path_for(nats_url, stream)
        await again.open("3")
        assert await receive_quiet(again) == []
        await again.aclose()

    async def test_bad_messages_come_out_with_their_problem_and_the_flow_goes_on(
        self, nats_url: str, client: Client, stream: str
    ) -> None:
        path = path_for(nats_url, stream)
        await path.open(None)
        js = client.jetstream()
        await js.publish(subject(stream), b"\xff not json")
        await js.publish(subject(stream), b'{"key": "x"}')
        await publish(client, stream, 3)

        received = await receive_until(path, 3)
        await path.ack(received)

        assert keys(received) == ["k3"]
        found = problems(received)
        assert found[0].startswith("not JSON")
        assert "no version" in found[1]
        assert received[1].raw == '{"key": "x"}'
        assert await receive_quiet(path) == []
        await path.aclose()


class TestRedelivery:
    async def test_unacked_messages_come_again_after_ack_wait(
        self, nats_url: str, client: Client, stream: str
    ) -> None:
        path = path_for(nats_url, stream, ack_wait=1.0)
        await path.open(None)
        await publish(client, stream, 1, 2)
        first = await receive_until(path, 2)

        second = await receive_until(path, 2)  # not acked: the server sends them again
        await path.ack(second)

        assert [m.position for m in second] == [m.position for m in first]
        assert await receive_quiet(path, 1.5) == []
        await path.aclose()

    async def test_resume_from_a_stored_position_loses_nothing_and_replays_nothing(
        self, nats_url: str, client: Client, stream: str
    ) -> None:
        path = path_for(nats_url, stream)
        await path.open(None)
        await publish(client, stream, *range(10))
        first = await receive_until(path, 6, batch=6)
        await path.ack(first)
        await path.aclose()
        await publish(client, stream, *range(10, 14))

        again = path_for(nats_url, stream)
        await again.open(first[-1].position)
        rest = await receive_until(again, 8)

        assert keys(first) == [f"k{n}" for n in range(6)]
        assert keys(rest) == [f"k{n}" for n in range(6, 14)]
        await again.aclose()


class TestPositionLost:
    async def test_a_purged_stream_loses_the_stored_position(
        self, nats_url: str, client: Client, stream: str
    ) -> None:
        path = path_for(nats_url, stream)
        await path.open(None)
        await publish(client, stream, *range(10))
        first = await receive_until(path, 2, batch=2)
        await path.ack(first)
        await path.aclose()
        await client.jetstream().purge_stream(stream)

        with pytest.raises(PositionLost, match=r"messages 3\.\.10 after the stored position"):
            await path_for(nats_url, stream).open(first[-1].position)

    async def test_a_removal_while_reading_is_reported(
        self, nats_url: str, client: Client, stream: str
    ) -> None:
        path = path_for(nats_url, stream, check_interval=0.1)
        await path.open(None)
        await publish(client, stream, *range(10))
        await client.jetstream().purge_stream(stream, keep=2)

        error = await failure_within(path)

        assert isinstance(error, PositionLost)
        assert "messages 1..8 were removed before they were delivered" in str(error)
        await path.aclose()

    async def test_a_deleted_consumer_or_stream_loses_the_stored_position(
        self, nats_url: str, client: Client, stream: str
    ) -> None:
        path = path_for(nats_url, stream)
        await path.open(None)
        await publish(client, stream, 1)
        await path.ack(await receive_until(path, 1))
        await path.aclose()
        js = client.jetstream()

        await js.delete_consumer(stream, "eventcenter")
        with pytest.raises(PositionLost, match="the durable consumer is gone"):
            await path_for(nats_url, stream).open("1")
        await js.delete_stream(stream)
        with pytest.raises(PositionLost, match="the stream is gone"):
            await path_for(nats_url, stream).open("1")


class TestErrors:
    async def test_a_refused_connection_is_a_connection_error(self) -> None:
        path = nats_jetstream("S", "s.x", "d", url=f"nats://127.0.0.1:{closed_port()}")

        with pytest.raises(SourceError) as raised:
            await path.open(None)

        assert raised.value.kind is SourceErrorKind.CONNECTION
        assert "ConnectionRefusedError" in str(raised.value)

    async def test_misuse_is_a_clear_error_and_aclose_is_safe_twice(self, nats_url: str) -> None:
        path = nats_jetstream("S", "s.x", "d", url=nats_url)

        with pytest.raises(PathStateError, match=r"receive\(\) before open\(\)"):
            await path.receive(10, 0.1)
        await path.aclose()
        await path.aclose()

    async def test_a_wrong_password_is_an_auth_error_that_does_not_show_it(
        self, nats_binary: str, tmp_path: Path
    ) -> None:
        with nats_process(tmp_path / "store", "--user", "center", "--pass", "s3cret") as server:
            path = nats_jetstream(
                "S", "s.x", "d", url=f"nats://center:wrong-pw@127.0.0.1:{server.port}"
            )

            with pytest.raises(SourceError) as raised:
                await path.open(None)

        assert raised.value.kind is SourceErrorKind.AUTH
        assert "wrong-pw" not in str(raised.value)
        assert "nats://center:***@127.0.0.1" in str(raised.value)


class TestServerRestart:
    async def test_a_restarted_server_with_its_store_resumes_without_loss(
        self, nats_binary: str, tmp_path: Path
    ) -> None:
        with nats_process(tmp_path / "store") as server:
            producer = await nats.connect(server.url)
            path = path_for(server.url, "ORDERS", reconnect_wait=0.1)
            await path.open(None)
            await publish(producer, "ORDERS", *range(10))
            first = await receive_until(path, 4, batch=4)
            await path.ack(first)
            await producer.close()

            server.stop()
            down = await failure_within(path)
            server.start()
            rest = await receive_until(path, 6)
            await path.ack(rest)
            assert await receive_quiet(path) == []
            await path.aclose()

            again = path_for(server.url, "ORDERS")
            await again.open(rest[-1].position)
            assert await receive_quiet(again) == []
            await again.aclose()

        assert down.kind is SourceErrorKind.CONNECTION
        assert keys(first) + keys(rest) == [f"k{n}" for n in range(10)]
