"""The TCP proxy that outage tests put between a client and PostgreSQL does what it says."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError

from tests.faults import ProxiedPostgres

pytestmark = pytest.mark.postgres

JOIN_S = 10.0


@pytest.fixture
def engine(pg_proxy: ProxiedPostgres) -> Iterator[Engine]:
    engine = create_engine(pg_proxy.url, pool_size=1, max_overflow=0)
    yield engine
    engine.dispose()


def query(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT 42")).scalar_one())


def test_queries_pass_through_the_proxy_into_the_test_schema(
    pg_proxy: ProxiedPostgres, engine: Engine
) -> None:
    with engine.connect() as connection:
        schema = connection.execute(text("SELECT current_schema()")).scalar_one()

    assert pg_proxy.url.endswith(f"search_path%3D{schema}")
    assert pg_proxy.direct_url.endswith(f"search_path%3D{schema}")
    assert pg_proxy.proxy.connections == 1  # the pooled connection goes through the proxy


def test_cut_closes_open_connections_and_refuses_new_ones(
    pg_proxy: ProxiedPostgres, engine: Engine
) -> None:
    assert query(engine) == 42  # a pooled connection is open now

    pg_proxy.proxy.cut()

    assert pg_proxy.proxy.connections == 0
    with pytest.raises(OperationalError, match="closed the connection unexpectedly"):
        query(engine)  # the pooled connection, closed under it
    with pytest.raises(OperationalError, match="closed the connection unexpectedly"):
        query(engine)  # a new connection, closed at once


def test_restore_after_a_cut_lets_new_connections_through(
    pg_proxy: ProxiedPostgres, engine: Engine
) -> None:
    assert query(engine) == 42
    pg_proxy.proxy.cut()
    with pytest.raises(OperationalError):
        query(engine)

    pg_proxy.proxy.restore()

    assert query(engine) == 42


def test_a_stalled_query_completes_once_restored(pg_proxy: ProxiedPostgres, engine: Engine) -> None:
    assert query(engine) == 42
    pg_proxy.proxy.stall()
    results: list[int] = []
    worker = threading.Thread(target=lambda: results.append(query(engine)))
    worker.start()

    worker.join(0.2)
    stalled = worker.is_alive()
    pg_proxy.proxy.restore()
    worker.join(JOIN_S)

    assert stalled
    assert results == [42]


def test_a_connection_opened_while_stalled_times_out(pg_proxy: ProxiedPostgres) -> None:
    pg_proxy.proxy.stall()
    # libpq's shortest connect timeout is 2 s
    engine = create_engine(pg_proxy.url, connect_args={"connect_timeout": 2})
    try:
        with pytest.raises(OperationalError, match="timeout expired"):
            query(engine)
    finally:
        engine.dispose()
