"""Which failed CREATEs are run again: only those another process won (storage.tables)."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from eventcenter.storage.tables import (
    ATTEMPTS,
    created_concurrently,
    retry_created_concurrently,
)


class PgError(Exception):
    """What psycopg2 raises: the SQLSTATE is its ``pgcode``."""

    def __init__(self, pgcode: str, message: str) -> None:
        super().__init__(message)
        self.pgcode = pgcode


def lost_race_pg() -> DBAPIError:
    orig = PgError(
        "23505", 'duplicate key value violates unique constraint "pg_type_typname_nsp_index"'
    )
    return IntegrityError("CREATE TABLE center_api_keys", {}, orig)


def lost_race_sqlite() -> DBAPIError:
    orig = sqlite3.OperationalError("table center_api_keys already exists")
    return OperationalError("CREATE TABLE center_api_keys", {}, orig)


@pytest.mark.parametrize(
    ("error", "lost"),
    [
        (lost_race_pg(), True),
        (IntegrityError("", {}, PgError("42P07", 'relation "x" already exists')), True),
        (OperationalError("", {}, PgError("42710", 'type "x" already exists')), True),
        (lost_race_sqlite(), True),
        (
            IntegrityError(
                "INSERT INTO center_events",
                {},
                PgError("23505", 'violates unique constraint "center_events_pkey"'),
            ),
            False,
        ),
        (
            IntegrityError(
                "", {}, sqlite3.IntegrityError("UNIQUE constraint failed: center_events.id")
            ),
            False,
        ),
        (OperationalError("", {}, PgError("42501", "permission denied for schema")), False),
        (OperationalError("", {}, PgError("08006", "server closed the connection")), False),
        (OperationalError("", {}, sqlite3.OperationalError("database is locked")), False),
        (OperationalError("", {}, sqlite3.OperationalError("disk I/O error")), False),
    ],
)
def test_only_a_create_that_lost_to_another_counts_as_a_lost_race(
    error: DBAPIError, lost: bool
) -> None:
    assert created_concurrently(error) is lost


@pytest.mark.parametrize("lost_race", [lost_race_pg, lost_race_sqlite])
def test_a_transaction_that_lost_a_race_runs_again_and_its_result_is_returned(
    lost_race: object,
) -> None:
    calls: list[int] = []

    def attempt() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise lost_race()  # type: ignore[operator]
        return "created"

    assert retry_created_concurrently(attempt) == "created"
    assert len(calls) == 3


def test_another_error_is_raised_at_once() -> None:
    calls: list[int] = []
    refused = OperationalError("", {}, PgError("42501", "permission denied for schema"))

    def attempt() -> None:
        calls.append(1)
        raise refused

    with pytest.raises(OperationalError) as raised:
        retry_created_concurrently(attempt)
    assert raised.value is refused
    assert len(calls) == 1


def test_races_lost_every_time_end_with_the_last_error() -> None:
    calls: list[int] = []

    def attempt() -> None:
        calls.append(1)
        raise lost_race_pg()

    with pytest.raises(IntegrityError):
        retry_created_concurrently(attempt)
    assert len(calls) == ATTEMPTS


def test_a_lost_race_wrapped_in_another_error_is_recognised() -> None:
    wrapped = RuntimeError("the store's own wrapper")
    wrapped.__cause__ = lost_race_sqlite()

    assert created_concurrently(wrapped)
    assert not created_concurrently(RuntimeError("no cause"))
