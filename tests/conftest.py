"""Fixtures shared by every test layer.

``database_url`` runs a persistence test twice: against SQLite in the test's own directory and
against the real PostgreSQL server, in a fresh schema that is dropped afterwards. The server is
probed once per session. When it cannot be reached the postgres variant is skipped with the
reason, except in CI (``CI=true``), where it fails: a green CI run means both backends ran.

``pg_proxy`` gives PostgreSQL through a TCP proxy that a test can cut, stall and restore
(tests/faults.py), for outage tests.

``redis_url`` and ``nats_url`` give the shared Redis and NATS JetStream servers the same way:
probed once per session, skipped with the reason when unreachable, failed under ``CI=true``.
``redis_binary`` and ``nats_binary`` do the same for tests that start their own server
(tests/servers.py).
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.exc import OperationalError

from tests.faults import ProxiedPostgres, TcpProxy
from tests.servers import binary

REDIS_URL_ENV = "EVENTCENTER_TEST_REDIS_URL"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
NATS_URL_ENV = "EVENTCENTER_TEST_NATS_URL"
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
PG_URL_ENV = "EVENTCENTER_TEST_PG_URL"
DEFAULT_PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
CONNECT_TIMEOUT_S = 3
DROP_LOCK_TIMEOUT = "5s"


@dataclass(frozen=True)
class PostgresServer:
    """The outcome of the session's one probe: an admin engine, or why there is none."""

    url: str
    engine: Engine | None
    error: str | None

    @property
    def shown_url(self) -> str:
        """The URL with any password masked, for messages."""
        return make_url(self.url).render_as_string(hide_password=True)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """Probe the PostgreSQL server once; keep an autocommit engine for schema DDL."""
    url = os.environ.get(PG_URL_ENV, DEFAULT_PG_URL)
    engine = create_engine(
        url,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
        isolation_level="AUTOCOMMIT",
        pool_size=1,
    )
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except OperationalError as error:
        engine.dispose()
        yield PostgresServer(url=url, engine=None, error=str(error.orig or error).strip())
        return
    yield PostgresServer(url=url, engine=engine, error=None)
    engine.dispose()


def with_search_path(base_url: str, schema: str) -> str:
    """``base_url`` whose connections see ``schema`` first (and only)."""
    separator = "&" if "?" in base_url else "?"
    return f"{base_url}{separator}options=-csearch_path%3D{schema}"


def _drop_schema(engine: Engine, schema: str) -> None:
    """Drop ``schema``; if a leaked connection blocks it, end that connection and fail loudly.

    Without the lock timeout a test that forgot to close an engine or application would hang
    the whole run at teardown.
    """
    with engine.connect() as connection:
        connection.execute(text(f"SET lock_timeout = '{DROP_LOCK_TIMEOUT}'"))
        try:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
            return
        except OperationalError:
            pass
        holders = connection.execute(
            text(
                "SELECT DISTINCT l.pid FROM pg_locks l"
                " JOIN pg_class c ON c.oid = l.relation"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = :schema AND l.pid <> pg_backend_pid()"
            ),
            {"schema": schema},
        ).scalars()
        pids = sorted(holders)
        for pid in pids:
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    pytest.fail(
        f"schema {schema} was still locked by connection(s) {pids} after the test:"
        " close every engine and application the test opens (they were terminated)",
        pytrace=False,
    )


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An SQLAlchemy URL to an empty database of its own, once per backend.

    sqlite: ``sqlite:///<tmp_path>/center.db`` (the file does not exist yet).
    postgres: ``$EVENTCENTER_TEST_PG_URL`` (default ``postgresql+psycopg2://postgres@127.0.0.1:
    5432/test``) with ``?options=-csearch_path%3Dt_<hex>``: a schema created for this test and
    dropped with everything in it afterwards. Tests must close what they open.

    A test that needs one backend only parametrizes it indirectly:
    ``@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)``. Port contract
    tests also ask for ``"memory"``: then it is ``memory://`` and they build the in-memory fake.
    """
    if request.param == "memory":
        yield "memory://"
        return
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/center.db"
        return
    if request.param != "postgres":
        raise ValueError(f"unknown database backend {request.param!r}: use sqlite or postgres")

    server: PostgresServer = request.getfixturevalue("postgres_server")
    if server.engine is None:
        reason = f"PostgreSQL at {server.shown_url} is unreachable: {server.error}"
        if in_ci():
            pytest.fail(f"{reason} (CI=true: the postgres tests must run)", pytrace=False)
        pytest.skip(f"{reason} (set {PG_URL_ENV} or start the server; CI=true makes this fail)")

    schema = f"t_{secrets.token_hex(8)}"
    with server.engine.connect() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    yield with_search_path(server.url, schema)
    _drop_schema(server.engine, schema)


@pytest.fixture
def pg_proxy(postgres_server: PostgresServer) -> Iterator[ProxiedPostgres]:
    """PostgreSQL through a :class:`tests.faults.TcpProxy`, in a fresh schema of the test's own.

    ``pg_proxy.url`` goes through the proxy (``connect_timeout=3``, so a stalled connect fails
    instead of hanging), ``pg_proxy.direct_url`` around it, ``pg_proxy.proxy`` cuts, stalls and
    restores. Mark the test ``@pytest.mark.postgres``; it skips or fails like ``database_url``.
    """
    if postgres_server.engine is None:
        shown, error = postgres_server.shown_url, postgres_server.error
        reason = f"PostgreSQL at {shown} is unreachable: {error}"
        if in_ci():
            pytest.fail(f"{reason} (CI=true: the postgres tests must run)", pytrace=False)
        pytest.skip(f"{reason} (set {PG_URL_ENV} or start the server; CI=true makes this fail)")

    schema = f"t_{secrets.token_hex(8)}"
    with postgres_server.engine.connect() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    target = make_url(postgres_server.url)
    with TcpProxy(target.host or "127.0.0.1", target.port or 5432) as proxy:
        through = target.set(host="127.0.0.1", port=proxy.port)
        through = through.update_query_dict({"connect_timeout": str(CONNECT_TIMEOUT_S)})
        yield ProxiedPostgres(
            url=with_search_path(through.render_as_string(hide_password=False), schema),
            direct_url=with_search_path(postgres_server.url, schema),
            proxy=proxy,
        )
    _drop_schema(postgres_server.engine, schema)


def unavailable(what: str, reason: str, env: str | None = None) -> None:
    """Skip (or, under CI=true, fail) a test whose server or program is missing."""
    if in_ci():
        pytest.fail(f"{what}: {reason} (CI=true: these tests must run)", pytrace=False)
    hint = f"set {env} or start it" if env else "install it"
    pytest.skip(f"{what}: {reason} ({hint}; CI=true makes this fail)")


def _probe_tcp(url: str, default_port: int) -> str | None:
    """None if something accepts connections at the URL's host and port, else why not."""
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), CONNECT_TIMEOUT_S
        ):
            return None
    except OSError as error:
        return str(error)


@pytest.fixture(scope="session")
def _redis_probe() -> tuple[str, str | None]:
    url = os.environ.get(REDIS_URL_ENV, DEFAULT_REDIS_URL)
    return url, _probe_tcp(url, 6379)


@pytest.fixture(scope="session")
def _nats_probe() -> tuple[str, str | None]:
    url = os.environ.get(NATS_URL_ENV, DEFAULT_NATS_URL)
    return url, _probe_tcp(url, 4222)


@pytest.fixture
def redis_url(_redis_probe: tuple[str, str | None]) -> str:
    """The shared Redis server (``$EVENTCENTER_TEST_REDIS_URL``, default 127.0.0.1:6379/0).

    Tests use keys of their own and delete them; they never restart or flush this server.
    """
    url, error = _redis_probe
    if error is not None:
        unavailable(f"Redis at {url} is unreachable", error, REDIS_URL_ENV)
    return url


@pytest.fixture
def nats_url(_nats_probe: tuple[str, str | None]) -> str:
    """The shared NATS JetStream server (``$EVENTCENTER_TEST_NATS_URL``, default
    127.0.0.1:4222). Tests use streams of their own and delete them."""
    url, error = _nats_probe
    if error is not None:
        unavailable(f"NATS at {url} is unreachable", error, NATS_URL_ENV)
    return url


@pytest.fixture
def redis_binary() -> str:
    """``redis-server``, for tests that run a server of their own (tests/servers.py)."""
    found = binary("redis-server")
    if found is None:
        unavailable("redis-server", "not on PATH")
    return str(found)


@pytest.fixture
def nats_binary() -> str:
    """``nats-server``, for tests that run a server of their own (tests/servers.py)."""
    found = binary("nats-server")
    if found is None:
        unavailable("nats-server", "not on PATH")
    return str(found)
