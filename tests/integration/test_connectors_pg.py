"""The PostgreSQL push path against the real server, each test in a fresh schema: rows read
by position, LISTEN/NOTIFY only as a wake-up, and a cut connection (tests/faults.py) that
loses nothing."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import psycopg2  # type: ignore[import-untyped]
import pytest

from eventcenter.domain.sources import PositionLost, SourceError, SourceErrorKind
from eventcenter.sources.connectors import PathStateError, pg_notify
from eventcenter.sources.connectors.pg_notify import PgNotifyPath, libpq_dsn
from tests.faults import ProxiedPostgres
from tests.integration.receiving import (
    failure_within,
    keys,
    problems,
    receive_quiet,
    receive_until,
)
from tests.servers import closed_port

pytestmark = pytest.mark.postgres

TABLE = "orders_feed"
CHANNEL = "orders_feed"
DDL = f"""
CREATE TABLE {TABLE} (
    id   bigserial PRIMARY KEY,
    tx   xid8 NOT NULL DEFAULT pg_current_xact_id(),
    item jsonb NOT NULL
);
CREATE INDEX ON {TABLE} (tx, id);
"""


def connect(url: str) -> Any:
    """A plain (blocking) psycopg2 connection for the producer side of a test."""
    return psycopg2.connect(psycopg2.extensions.make_dsn(**libpq_dsn(url)))


class Producer:
    """Writes items into the feed table like a user's application would."""

    def __init__(self, url: str) -> None:
        self.connection = connect(url)
        self.connection.autocommit = True

    def run(self, statement: str, *params: Any) -> None:
        with self.connection.cursor() as cursor:
            cursor.execute(statement, params)

    def insert(self, *numbers: int, notify: bool = True) -> None:
        for number in numbers:
            item = {"key": f"k{number}", "version": number, "data": {"n": number}}
            self.run(f"INSERT INTO {TABLE} (item) VALUES (%s)", json.dumps(item))
        if notify:
            self.run(f"NOTIFY {CHANNEL}")

    def close(self) -> None:
        self.connection.close()


@pytest.fixture
def pg_url(database_url: str) -> str:
    return database_url


@pytest.fixture
def producer(pg_url: str) -> Iterator[Producer]:
    writer = Producer(pg_url)
    writer.run(DDL)
    yield writer
    writer.close()


on_postgres = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


def path_for(url: str, **options: Any) -> PgNotifyPath:
    return pg_notify(url, TABLE, CHANNEL, **options)


@on_postgres
class TestDelivery:
    async def test_rows_come_once_and_acked_rows_do_not_come_again(
        self, pg_url: str, producer: Producer
    ) -> None:
        path = path_for(pg_url)
        await path.open(None)
        producer.insert(1, 2, 3)

        received = await receive_until(path, 3)
        await path.ack(received)

        assert keys(received) == ["k1", "k2", "k3"]
        assert all(":" in message.position for message in received)
        assert received[0].item is not None
        assert received[0].item.data == {"n": 1}
        assert await receive_quiet(path) == []
        await path.aclose()
        again = path_for(pg_url)
        await again.open(received[-1].position)
        assert await receive_quiet(again) == []
        await again.aclose()

    async def test_a_notification_wakes_a_waiting_receive(
        self, pg_url: str, producer: Producer
    ) -> None:
        path = path_for(pg_url)
        await path.open(None)
        waiting = asyncio.create_task(path.receive(10, 30.0))
        await asyncio.sleep(0.2)  # let it read nothing and wait: not an assertion
        started = time.monotonic()

        await asyncio.to_thread(producer.insert, 1)
        received = await asyncio.wait_for(waiting, 30.0)

        assert keys(received) == ["k1"]
        assert time.monotonic() - started < 15.0  # woken, not timed out
        await path.aclose()

    async def test_a_row_without_a_notification_is_read_when_the_wait_ends(
        self, pg_url: str, producer: Producer
    ) -> None:
        path = path_for(pg_url)
        await path.open(None)
        producer.insert(1, notify=False)

        assert keys(await receive_until(path, 1)) == ["k1"]
        await path.aclose()

    async def test_a_row_of_an_older_open_transaction_is_not_skipped(
        self, pg_url: str, producer: Producer
    ) -> None:
        """Row 1's transaction commits after row 2's: reading by id alone would skip row 1."""
        path = path_for(pg_url, holdback_recheck=0.02)
        await path.open(None)
        slow = connect(pg_url)
        try:
            with slow.cursor() as cursor:
                cursor.execute(
                    f"INSERT INTO {TABLE} (item) VALUES (%s)", ['{"key": "slow", "version": 1}']
                )
            producer.insert(2)

            held = await receive_quiet(path, 0.3)
            slow.commit()
            after = await receive_until(path, 2)
        finally:
            slow.close()

        assert held == []  # row 2 waits for the older transaction
        assert keys(after) == ["slow", "k2"]
        await path.aclose()

    async def test_without_a_tx_column_rows_are_read_by_id(
        self, pg_url: str, producer: Producer
    ) -> None:
        path = path_for(pg_url, tx_column=None)
        await path.open(None)
        producer.insert(1, 2)

        received = await receive_until(path, 2)

        assert [message.position for message in received] == ["1", "2"]
        await path.aclose()

    async def test_bad_rows_come_out_with_their_problem_and_the_flow_goes_on(
        self, pg_url: str, producer: Producer
    ) -> None:
        path = path_for(pg_url)
        await path.open(None)
        producer.run(f"INSERT INTO {TABLE} (item) VALUES ('\"just text\"'), ('{{\"version\": 1}}')")
        producer.insert(3)

        received = await receive_until(path, 3)

        assert keys(received) == ["k3"]
        found = problems(received)
        assert "must be a JSON object" in found[0]
        assert "no key" in found[1]
        assert received[1].raw == '{"version": 1}'
        await path.aclose()


@on_postgres
class TestRedelivery:
    async def test_unacked_rows_come_again_after_a_reopen(
        self, pg_url: str, producer: Producer
    ) -> None:
        path = path_for(pg_url)
        await path.open(None)
        producer.insert(1, 2, 3)
        first = await receive_until(path, 3)
        await path.ack(first[:1])
        await path.aclose()

        again = path_for(pg_url)
        await again.open(first[0].position)

        assert keys(await receive_until(again, 2)) == ["k2", "k3"]
        await again.aclose()

    async def test_resume_from_a_stored_position_loses_nothing_and_replays_nothing(
        self, pg_url: str, producer: Producer
    ) -> None:
        path = path_for(pg_url)
        await path.open(None)
        producer.insert(*range(10))
        first = await receive_until(path, 6, batch=6)
        await path.ack(first)
        await path.aclose()
        producer.insert(*range(10, 14))

        again = path_for(pg_url)
        await again.open(first[-1].position)
        rest = await receive_until(again, 8)

        assert keys(first) == [f"k{n}" for n in range(6)]
        assert keys(rest) == [f"k{n}" for n in range(6, 14)]
        await again.aclose()


@on_postgres
class TestPositionLost:
    async def test_a_recreated_table_loses_the_stored_position(
        self, pg_url: str, producer: Producer
    ) -> None:
        path = path_for(pg_url)
        await path.open(None)
        producer.insert(1, 2, 3)
        received = await receive_until(path, 3)
        await path.aclose()
        producer.run(f"DROP TABLE {TABLE}")

        with pytest.raises(PositionLost, match="the table is gone"):
            await path_for(pg_url).open(received[-1].position)
        producer.run(DDL)
        with pytest.raises(PositionLost, match="the table was recreated"):
            await path_for(pg_url).open(received[-1].position)

    async def test_a_position_of_another_shape_is_lost(
        self, pg_url: str, producer: Producer
    ) -> None:
        with pytest.raises(PositionLost, match="is not <tx>:<id>"):
            await path_for(pg_url).open("1796286724371-0")


class TestNoServer:
    async def test_a_refused_connection_is_a_connection_error(self) -> None:
        path = pg_notify(f"postgresql://postgres@127.0.0.1:{closed_port()}/test", TABLE, CHANNEL)

        with pytest.raises(SourceError) as raised:
            await path.open(None)

        assert raised.value.kind is SourceErrorKind.CONNECTION
        assert "pg_notify table 'orders_feed'" in str(raised.value)


@on_postgres
class TestErrors:
    async def test_an_unknown_role_is_an_auth_error_that_does_not_show_the_password(
        self, pg_url: str
    ) -> None:
        params = libpq_dsn(pg_url)
        url = (
            f"postgresql://nobody_{secrets.token_hex(4)}:pw-not-shown@{params['host']}:{params['port']}"
            f"/{params['dbname']}"
        )

        with pytest.raises(SourceError) as raised:
            await pg_notify(url, TABLE, CHANNEL).open(None)

        assert raised.value.kind is SourceErrorKind.AUTH
        assert "pw-not-shown" not in str(raised.value)

    async def test_a_missing_table_says_so(self, pg_url: str) -> None:
        with pytest.raises(SourceError, match="the table does not exist"):
            await path_for(pg_url).open(None)

    async def test_misuse_is_a_clear_error_and_aclose_is_safe_twice(self, pg_url: str) -> None:
        path = path_for(pg_url)

        with pytest.raises(PathStateError, match=r"receive\(\) before open\(\)"):
            await path.receive(10, 0.1)
        await path.aclose()
        await path.aclose()


class TestOutage:
    async def test_a_cut_connection_loses_nothing_and_replays_nothing(
        self, pg_proxy: ProxiedPostgres
    ) -> None:
        producer = Producer(pg_proxy.direct_url)
        producer.run(DDL)
        path = path_for(pg_proxy.url)
        await path.open(None)
        producer.insert(*range(5))
        first = await receive_until(path, 5)
        await path.ack(first)

        pg_proxy.proxy.cut()
        producer.insert(*range(5, 10))  # its notification is sent to nobody
        error = await failure_within(path)
        pg_proxy.proxy.restore()
        rest = await receive_until(path, 5)
        producer.close()

        assert error.kind is SourceErrorKind.CONNECTION
        assert keys(first) + keys(rest) == [f"k{n}" for n in range(10)]
        assert await receive_quiet(path) == []
        await path.aclose()

    async def test_a_silent_network_is_a_timeout(self, pg_proxy: ProxiedPostgres) -> None:
        producer = Producer(pg_proxy.direct_url)
        producer.run(DDL)
        producer.close()
        path = path_for(pg_proxy.url, statement_timeout=0.5)
        await path.open(None)

        pg_proxy.proxy.stall()
        error = await failure_within(path)
        pg_proxy.proxy.restore()

        assert error.kind is SourceErrorKind.TIMEOUT
        await path.aclose()
