"""Health checkers: HTTP, PostgreSQL, Redis, NATS and any callable, behind one small protocol.

Each has a ``name`` (the service it checks) and ``async check() -> CheckResult``
(:class:`~eventcenter.domain.health.HealthChecker`). A check opens what it needs, asks one
cheap question and closes again: a health check that reuses a connection tests the
connection, not the service, and a stale pooled connection after a server restart would fail
a check the server would pass. Each check is bounded by its own ``timeout`` (connect and
answer); the monitor bounds it again on its clock. Failures come back as a failed
:class:`CheckResult` naming what was tried and why it failed, never with a password.

- :class:`HttpCheck`: a request whose status must be one of ``expected_status``;
- :class:`PostgresCheck`: ``SELECT 1`` over psycopg2 in a worker thread (the loop never blocks
  on libpq), with a connect timeout and a statement timeout;
- :class:`RedisCheck`: ``PING`` over ``redis.asyncio``;
- :class:`NatsCheck`: connect and flush (a round trip to the server), or with
  ``jetstream=True`` the JetStream account info (JetStream enabled and answering);
- :class:`CallableCheck`: a user's sync or async callable returning a bool, a
  :class:`CheckResult` or None (passed); raising fails the check.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import Callable, Collection
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import nats
import psycopg2  # type: ignore[import-untyped]
import psycopg2.extensions  # type: ignore[import-untyped]
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from eventcenter.domain.errors import ConfigurationError
from eventcenter.domain.health import CheckResult

__all__ = [
    "CallableCheck",
    "HttpCheck",
    "NatsCheck",
    "PostgresCheck",
    "RedisCheck",
    "shown_url",
]

DEFAULT_TIMEOUT = 5.0
PG_CONNECT_MIN_S = 2  # libpq treats shorter connect timeouts as 2 seconds anyway


def shown_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages and reports."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def describe(error: BaseException, secret: str | None = None) -> str:
    """``Kind: message`` of ``error``, with ``secret`` (a password) scrubbed."""
    text = str(error).strip() or repr(error)
    if secret:
        text = text.replace(secret, "***")
    return f"{type(error).__name__}: {text}"


def _check_timeout(kind: str, name: str, timeout: float) -> float:
    if not (timeout > 0 and math.isfinite(timeout)):
        raise ConfigurationError(
            f"{kind} check {name!r}: timeout must be a finite number of seconds > 0, "
            f"got {timeout!r}"
        )
    return float(timeout)


def _check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(f"a {kind} check needs a non-empty name, got {name!r}")
    return name


class HttpCheck:
    """``method url`` must answer with a status in ``expected_status`` within ``timeout``.

    The check keeps one client without keep-alive (each check opens a connection: a pooled
    one would hide a restarted server) and closes it in :meth:`aclose` (the monitor's
    ``aclose`` calls it). A client may be passed instead (a custom transport, auth); it stays
    the caller's to close.
    """

    def __init__(
        self,
        name: str,
        url: str,
        *,
        expected_status: int | Collection[int] = 200,
        method: str = "GET",
        timeout: float = DEFAULT_TIMEOUT,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.name = _check_name("HTTP", name)
        if urlsplit(url).scheme not in ("http", "https"):
            raise ConfigurationError(f"HTTP check {name!r}: not an http(s) URL: {url!r}")
        self.url = url
        expected = (expected_status,) if isinstance(expected_status, int) else expected_status
        self.expected_status = frozenset(expected)
        if not self.expected_status or not all(100 <= s <= 599 for s in self.expected_status):
            raise ConfigurationError(
                f"HTTP check {name!r}: expected_status must be HTTP statuses (100-599), "
                f"got {expected_status!r}"
            )
        self.method = method.upper()
        self.timeout = _check_timeout("HTTP", name, timeout)
        self._client = client
        self._own: httpx.AsyncClient | None = None

    async def check(self) -> CheckResult:
        where = f"{self.method} {shown_url(self.url)}"
        client = self._client or self._own_client()
        try:
            response = await client.request(self.method, self.url, timeout=self.timeout)
        except httpx.HTTPError as error:
            return CheckResult.failed(f"{where}: {describe(error, urlsplit(self.url).password)}")
        if response.status_code not in self.expected_status:
            wanted = ", ".join(str(s) for s in sorted(self.expected_status))
            return CheckResult.failed(
                f"{where} answered {response.status_code} (expected {wanted})",
                status_code=response.status_code,
            )
        return CheckResult.passed(status_code=response.status_code)

    async def aclose(self) -> None:
        """Close the check's own client (a client passed in is left open); safe twice."""
        own, self._own = self._own, None
        if own is not None:
            await own.aclose()

    def _own_client(self) -> httpx.AsyncClient:
        if self._own is None:
            limits = httpx.Limits(max_keepalive_connections=0)
            self._own = httpx.AsyncClient(limits=limits, timeout=self.timeout)
        return self._own


class PostgresCheck:
    """``SELECT 1`` on a fresh connection, run in a worker thread.

    ``url`` is a libpq URL or DSN; the SQLAlchemy form ``postgresql+psycopg2://`` works too.
    The connect timeout is ``timeout`` rounded up (libpq counts whole seconds, at least 2);
    the statement timeout is ``timeout``.
    """

    def __init__(self, name: str, url: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.name = _check_name("PostgreSQL", name)
        self.timeout = _check_timeout("PostgreSQL", name, timeout)
        if url.startswith(("postgresql+", "postgres+")):
            url = "postgresql://" + url.partition("://")[2]
        try:
            params: dict[str, str] = psycopg2.extensions.parse_dsn(url)
        except psycopg2.ProgrammingError as error:
            raise ConfigurationError(
                f"PostgreSQL check {name!r}: not a PostgreSQL URL: {error}"
            ) from None
        self._password = params.get("password")
        params["connect_timeout"] = str(max(PG_CONNECT_MIN_S, math.ceil(self.timeout)))
        statement_ms = max(1, round(self.timeout * 1000))
        params["options"] = f"{params.get('options', '')} -c statement_timeout={statement_ms}"
        self._dsn = psycopg2.extensions.make_dsn(**params)
        self._shown = shown_url(url) if "://" in url else "the server of its DSN"

    async def check(self) -> CheckResult:
        try:
            version = await asyncio.to_thread(self._select_one)
        except psycopg2.Error as error:
            return CheckResult.failed(
                f"PostgreSQL at {self._shown}: {describe(error, self._password)}"
            )
        return CheckResult.passed(server_version=version)

    def _select_one(self) -> int:
        connection = psycopg2.connect(self._dsn)
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchone()
            return int(connection.server_version)
        finally:
            connection.close()


class RedisCheck:
    """``PING`` on a fresh connection (no retry: the check is the retry)."""

    def __init__(self, name: str, url: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.name = _check_name("Redis", name)
        if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise ConfigurationError(f"Redis check {name!r}: not a redis:// URL: {url!r}")
        self.url = url
        self.timeout = _check_timeout("Redis", name, timeout)

    async def check(self) -> CheckResult:
        client = Redis.from_url(
            self.url,
            socket_connect_timeout=self.timeout,
            socket_timeout=self.timeout,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            await client.ping()
        except Exception as error:  # redis-py raises its own errors and OSError subclasses
            where = f"Redis at {shown_url(self.url)}"
            return CheckResult.failed(f"{where}: {describe(error, urlsplit(self.url).password)}")
        finally:
            await client.aclose()
        return CheckResult.passed()


class NatsCheck:
    """Connect and ``flush`` (one round trip); with ``jetstream=True``, the JetStream account
    info instead, which fails when JetStream is off or not answering.

    The client tries the server twice at most (nats-py's ``max_reconnect_attempts=0`` would
    mean forever) and the reason of a refused connection is the one the client reported, not
    its generic "no servers available".
    """

    def __init__(
        self, name: str, url: str, *, timeout: float = DEFAULT_TIMEOUT, jetstream: bool = False
    ) -> None:
        self.name = _check_name("NATS", name)
        if urlsplit(url).scheme not in ("nats", "tls", "ws", "wss"):
            raise ConfigurationError(f"NATS check {name!r}: not a nats:// URL: {url!r}")
        self.url = url
        self.timeout = _check_timeout("NATS", name, timeout)
        self.jetstream = jetstream

    async def check(self) -> CheckResult:
        errors: list[Exception] = []

        async def on_error(error: Exception) -> None:
            errors.append(error)

        secret = urlsplit(self.url).password
        where = f"NATS at {shown_url(self.url)}"
        try:
            client = await nats.connect(
                self.url,
                name="eventcenter-health",
                connect_timeout=self.timeout,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.0,
                error_cb=on_error,
            )
        except Exception as error:
            cause = errors[-1] if errors else error
            return CheckResult.failed(f"{where}: {describe(cause, secret)}")
        try:
            if self.jetstream:
                info = await client.jetstream(timeout=self.timeout).account_info()
                return CheckResult.passed(streams=info.streams, consumers=info.consumers)
            await client.flush(timeout=max(1, math.ceil(self.timeout)))
            return CheckResult.passed()
        except Exception as error:
            return CheckResult.failed(f"{where}: {describe(error, secret)}")
        finally:
            await client.close()


CheckFunction = Callable[[], Any]
"""Sync or async; returns (or resolves to) a bool, a :class:`CheckResult` or None."""


class CallableCheck:
    """A check written as a function: sync or async, returning True/None (passed), False
    (failed) or a :class:`CheckResult`. A blocking sync function should say ``blocking=True``:
    it then runs in a worker thread instead of on the loop."""

    def __init__(self, name: str, function: CheckFunction, *, blocking: bool = False) -> None:
        self.name = _check_name("custom", name)
        if not callable(function):
            raise ConfigurationError(f"custom check {name!r}: {function!r} is not callable")
        self.function = function
        self.blocking = blocking

    async def check(self) -> CheckResult:
        if self.blocking:
            answer = await asyncio.to_thread(self.function)
        else:
            answer = self.function()
        if inspect.isawaitable(answer):
            answer = await answer
        if answer is None or answer is True:
            return CheckResult.passed()
        if answer is False:
            return CheckResult.failed(f"{self.name}: the check returned False")
        if isinstance(answer, CheckResult):
            return answer
        raise TypeError(
            f"custom check {self.name!r} returned {type(answer).__name__}: return a bool, "
            "a CheckResult or None"
        )
