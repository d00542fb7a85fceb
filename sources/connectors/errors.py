"""Library failures turned into :class:`SourceError` kinds, in one place.

The hysteresis policy and the self-healing runner decide on the kind, never on a library's
exception class, so every connector hands its failures through :func:`classify`:

- **timeout**: Redis ``TimeoutError``; NATS ``TimeoutError``; psycopg2 "timeout expired" and
  57014 (statement timeout); httpx ``TimeoutException``, HTTP 408 and 504.
- **connection**: Redis ``ConnectionError``, ``LOADING`` and other server errors; NATS
  ``NoServersError``, a closed connection, JetStream unavailable; psycopg2
  ``OperationalError`` and ``InterfaceError``; httpx ``ConnectError``/``ReadError``, HTTP 404
  and 5xx other than 503.
- **auth**: Redis ``NOAUTH``, ``WRONGPASS``, ``NOPERM``; NATS "Authorization Violation",
  "Permissions Violation"; PostgreSQL 28P01/28000, 42501 (no privilege), "password
  authentication failed", an unknown role; HTTP 401 and 403.
- **rate_limited**: PostgreSQL 53300 (too many connections); HTTP 429 and 503, with the
  server's ``Retry-After`` as ``retry_after``.
- **bad_data**: a body that does not decode (JSON, UTF-8), PostgreSQL 22xxx (data exception),
  HTTP 4xx not listed above. A single bad *message* is not an error: it is handed out as a
  ``Received`` with its problem.
- **position_lost**: Redis ``NOGROUP`` (the group or the stream vanished), HTTP 410 (the
  cursor is no longer served); the connectors check the rest themselves.

A plain :class:`TimeoutError` is a timeout and an :class:`OSError` a connection failure,
whoever raised it. Anything else (a bug: ``TypeError``, ``KeyError``) is not classified and
propagates unchanged.

Messages name the connector and its target through a :class:`Where`, with the password
masked in URLs and scrubbed from library texts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import httpx
import nats.errors
import nats.js.errors
import orjson
import psycopg2  # type: ignore[import-untyped]
import redis.exceptions

from eventcenter.domain.backoff import retry_after_seconds
from eventcenter.domain.errors import EventCenterError
from eventcenter.domain.sources import PositionLost, SourceError, SourceErrorKind

Kind = SourceErrorKind

_PG_AUTH_CODES = {"28P01", "28000", "42501"}  # bad password, not allowed, no privilege
_PG_AUTH_TEXTS = (
    "password authentication failed",
    "no password supplied",
    "pg_hba.conf",
)
_REDIS_AUTH_PREFIXES = ("NOAUTH", "WRONGPASS", "NOPERM")


class PathStateError(EventCenterError, RuntimeError):
    """Raised when a path is used out of order: ``receive`` or ``ack`` before ``open`` or
    after ``aclose``, ``open`` while already open, a poll after ``aclose``. A programming
    error in the caller, not a failure of the source."""


@dataclass(frozen=True, slots=True)
class Where:
    """Which connector, aimed at what, for messages. ``secret`` (a password) never shows."""

    connector: str
    target: str
    secret: str | None = None

    def say(self, detail: str) -> str:
        text = f"{self.connector} {self.target}: {detail}"
        if self.secret:
            text = text.replace(self.secret, "***")
        return text

    def error(self, kind: SourceErrorKind, detail: str) -> SourceError:
        return SourceError(kind, self.say(detail))

    def lost(self, detail: str) -> PositionLost:
        return PositionLost(self.say(detail))


def shown_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (``redis://:***@host:6379/0``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def url_password(url: str) -> str | None:
    """The password in ``url``, so that messages can scrub it."""
    return urlsplit(url).password or None


def classify(error: BaseException, where: Where) -> SourceError | None:
    """The :class:`SourceError` for a library failure, or None when it is not one (a bug)."""
    if isinstance(error, SourceError):
        return error
    if isinstance(error, redis.exceptions.ResponseError) and str(error).startswith("NOGROUP"):
        return where.lost(
            "the consumer group or the stream is gone (Redis restarted without persistence, "
            "or they were deleted): re-list and reconcile, then open without a position"
        )
    if isinstance(error, httpx.HTTPStatusError):
        return http_status_error(error.response, where)
    kind = _kind(error)
    if kind is None:
        return None
    return where.error(kind, _detail(error))


def _kind(error: BaseException) -> SourceErrorKind | None:
    """Checked in this order because the families overlap: an authentication error is a
    ``ConnectionError`` in redis-py, and nats' ``TimeoutError`` is an ``OSError``."""
    for check in (_auth, _rate_limited, _timeout, _bad_data, _connection):
        kind = check(error)
        if kind is not None:
            return kind
    return None


def _auth(error: BaseException) -> SourceErrorKind | None:
    text = str(error)
    if isinstance(
        error,
        redis.exceptions.AuthenticationError
        | redis.exceptions.AuthenticationWrongNumberOfArgsError
        | redis.exceptions.AuthorizationError
        | redis.exceptions.NoPermissionError
        | nats.errors.AuthorizationError
        | nats.errors.InvalidUserCredentialsError,
    ):
        return Kind.AUTH
    if isinstance(error, redis.exceptions.ResponseError) and text.startswith(_REDIS_AUTH_PREFIXES):
        return Kind.AUTH
    if isinstance(error, nats.errors.Error) and (
        "authorization violation" in text.lower() or "permissions violation" in text.lower()
    ):
        return Kind.AUTH
    if getattr(error, "pgcode", None) in _PG_AUTH_CODES and isinstance(error, psycopg2.Error):
        return Kind.AUTH
    if isinstance(error, psycopg2.OperationalError) and (
        any(part in text for part in _PG_AUTH_TEXTS)
        or ("role " in text and "does not exist" in text)
    ):
        return Kind.AUTH
    return None


def _rate_limited(error: BaseException) -> SourceErrorKind | None:
    if isinstance(error, psycopg2.Error) and getattr(error, "pgcode", None) == "53300":
        return Kind.RATE_LIMITED
    return None


def _timeout(error: BaseException) -> SourceErrorKind | None:
    if isinstance(error, TimeoutError | redis.exceptions.TimeoutError | httpx.TimeoutException):
        return Kind.TIMEOUT
    if isinstance(error, psycopg2.Error) and (
        getattr(error, "pgcode", None) == "57014" or "timeout expired" in str(error)
    ):
        return Kind.TIMEOUT
    return None


def _bad_data(error: BaseException) -> SourceErrorKind | None:
    if isinstance(error, orjson.JSONDecodeError | UnicodeDecodeError):
        return Kind.BAD_DATA
    code = getattr(error, "pgcode", None)
    if isinstance(error, psycopg2.Error) and isinstance(code, str) and code.startswith("22"):
        return Kind.BAD_DATA
    return None


def _connection(error: BaseException) -> SourceErrorKind | None:
    if isinstance(
        error,
        OSError
        | redis.exceptions.RedisError
        | nats.errors.Error
        | psycopg2.Error
        | httpx.TransportError,
    ):
        return Kind.CONNECTION
    return None


def _detail(error: BaseException) -> str:
    text = " ".join(str(error).split())
    name = type(error).__name__
    if isinstance(error, nats.errors.NoServersError):
        return "no NATS server could be reached"
    if isinstance(error, nats.js.errors.ServiceUnavailableError):
        return "JetStream is not available on the server (started without -js?)"
    return f"{name}: {text}" if text else name


def http_status_error(response: httpx.Response, where: Where) -> SourceError:
    """The error for an HTTP answer that is not a success, with the server's Retry-After."""
    status = response.status_code
    detail = f"HTTP {status} {response.reason_phrase} from {shown_url(str(response.url))}"
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    if status == 410:
        return where.lost(f"{detail}: the cursor is no longer served; re-list and reconcile")
    kind: SourceErrorKind
    if status in (401, 403):
        kind = Kind.AUTH
    elif status in (429, 503):
        kind = Kind.RATE_LIMITED
    elif status in (408, 504):
        kind = Kind.TIMEOUT
    elif status >= 500 or status == 404:
        kind = Kind.CONNECTION
    else:
        kind = Kind.BAD_DATA
    if retry_after is not None:
        detail += f" (retry after {retry_after:g} s)"
    return SourceError(kind, where.say(detail), retry_after=retry_after)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), or None."""
    return retry_after_seconds(value, (now or datetime.now(UTC)).timestamp())


@asynccontextmanager
async def translated(where: Where, timeout: float | None = None) -> AsyncIterator[None]:
    """Run the body within ``timeout`` seconds; library failures leave as SourceError."""
    try:
        async with asyncio.timeout(timeout):
            yield
    except Exception as error:
        found = classify(error, where)
        if found is None or found is error:
            raise
        raise found from error
