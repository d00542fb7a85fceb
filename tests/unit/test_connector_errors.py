"""Every library's failures map to one SourceError kind, in one place, without passwords."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import nats.errors
import nats.js.errors
import orjson
import psycopg2  # type: ignore[import-untyped]
import pytest
import redis.exceptions

from eventcenter.domain.sources import PositionLost, SourceError, SourceErrorKind
from eventcenter.sources.connectors.errors import (
    Where,
    classify,
    parse_retry_after,
    shown_url,
    url_password,
)

WHERE = Where("redis_stream", "'orders' at redis://:***@host:6379/0", secret="hunter22")
Kind = SourceErrorKind


def classified(error: BaseException) -> SourceErrorKind:
    found = classify(error, WHERE)
    assert found is not None
    return found.kind


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (redis.exceptions.AuthenticationError("invalid username-password pair"), Kind.AUTH),
        (redis.exceptions.ResponseError("NOAUTH Authentication required."), Kind.AUTH),
        (redis.exceptions.ResponseError("WRONGPASS invalid username-password"), Kind.AUTH),
        (redis.exceptions.TimeoutError("Timeout reading from socket"), Kind.TIMEOUT),
        (redis.exceptions.ConnectionError("Error 111 connecting"), Kind.CONNECTION),
        (redis.exceptions.BusyLoadingError("LOADING Redis is loading"), Kind.CONNECTION),
        (nats.errors.AuthorizationError(), Kind.AUTH),
        (nats.errors.Error("nats: 'Authorization Violation'"), Kind.AUTH),
        (nats.errors.TimeoutError(), Kind.TIMEOUT),
        (nats.errors.NoServersError(), Kind.CONNECTION),
        (nats.errors.ConnectionClosedError(), Kind.CONNECTION),
        (nats.js.errors.ServiceUnavailableError(), Kind.CONNECTION),
        (psycopg2.OperationalError("FATAL:  password authentication failed for user"), Kind.AUTH),
        (psycopg2.OperationalError('FATAL:  role "x" does not exist'), Kind.AUTH),
        (psycopg2.OperationalError("timeout expired"), Kind.TIMEOUT),
        (psycopg2.OperationalError("server closed the connection unexpectedly"), Kind.CONNECTION),
        (psycopg2.InterfaceError("connection already closed"), Kind.CONNECTION),
        (httpx.ConnectError("refused"), Kind.CONNECTION),
        (httpx.ReadTimeout("slow"), Kind.TIMEOUT),
        (TimeoutError(), Kind.TIMEOUT),
        (ConnectionResetError(104, "reset"), Kind.CONNECTION),
        (orjson.JSONDecodeError("bad", "{", 0), Kind.BAD_DATA),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_library_failures_are_classified(error: BaseException, kind: SourceErrorKind) -> None:
    assert classified(error) is kind


def test_a_vanished_group_is_a_lost_position() -> None:
    found = classify(redis.exceptions.ResponseError("NOGROUP No such key 'x'"), WHERE)

    assert isinstance(found, PositionLost)


def test_a_bug_is_not_classified() -> None:
    assert classify(KeyError("oops"), WHERE) is None
    assert classify(TypeError("oops"), WHERE) is None


def test_a_source_error_stays_what_it_is() -> None:
    error = SourceError(Kind.AUTH, "already classified")

    assert classify(error, WHERE) is error


def test_the_message_names_the_connector_and_scrubs_the_password() -> None:
    found = classify(redis.exceptions.ConnectionError("refused for hunter22"), WHERE)

    assert found is not None
    assert str(found) == (
        "connection: redis_stream 'orders' at redis://:***@host:6379/0:"
        " ConnectionError: refused for ***"
    )


def test_urls_are_shown_without_their_password() -> None:
    assert shown_url("redis://:pw@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert shown_url("nats://user:pw@host:4222") == "nats://user:***@host:4222"
    assert shown_url("http://host/feed?since={cursor}") == "http://host/feed?since={cursor}"
    assert url_password("http://user:pw@host/") == "pw"
    assert url_password("http://host/") is None


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        ("0.5", 0.5),
        ("-3", 0.0),
        ("Wed, 01 Jan 2025 00:00:30 GMT", 30.0),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_is_seconds_or_a_date(header: str | None, seconds: float | None) -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)

    assert parse_retry_after(header, now) == seconds
