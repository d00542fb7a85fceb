"""CLI messages that e2e tests cannot provoke cheaply: wrapped database errors, hint quoting."""

from __future__ import annotations

import shlex
from pathlib import Path

import eventsourcing.persistence
import pytest
import sqlalchemy.exc

from eventcenter.center.cli import _replay_hint, _store_problem

URL = "postgresql+psycopg2://ops:s3cret@db.internal:5432/center"


def wrapped_by_eventsourcing(detail: str) -> eventsourcing.persistence.OperationalError:
    """What eventsourcing raises in a transaction: its own error, SQLAlchemy's as the cause."""
    cause = sqlalchemy.exc.OperationalError("INSERT ...", {}, Exception(detail))
    try:
        raise eventsourcing.persistence.OperationalError(cause) from cause
    except eventsourcing.persistence.OperationalError as error:
        return error


def test_a_wrapped_database_error_names_the_store_and_the_driver_message() -> None:
    error = wrapped_by_eventsourcing("server closed the connection\nunexpectedly")
    assert _store_problem(error, URL) == (
        "cannot use the store at postgresql+psycopg2://ops:***@db.internal:5432/center:"
        " server closed the connection unexpectedly"
    )


def test_a_password_echoed_by_the_driver_is_masked_too() -> None:
    error = wrapped_by_eventsourcing("bad dsn password=s3cret host=db.internal")
    assert "s3cret" not in _store_problem(error, URL)


def test_without_a_known_url_the_message_still_names_the_problem() -> None:
    error = sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("disk I/O error"))
    assert _store_problem(error, None) == "cannot use the store at the database: disk I/O error"


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, []),
        ({"data_dir": Path("my data")}, ["--data-dir", "my data"]),
        ({"config": Path("c.toml")}, ["--config", "c.toml"]),
        (
            {"database_url": URL},
            ["--database-url", "postgresql+psycopg2://ops:***@db.internal:5432/center"],
        ),
    ],
)
def test_the_replay_hint_repeats_the_options_the_demo_was_given(
    options: dict[str, object], expected: list[str]
) -> None:
    arguments = {"config": None, "database_url": None, "data_dir": None, **options}
    hint = _replay_hint("abc", **arguments)  # type: ignore[arg-type]
    assert shlex.split(hint) == [
        "eventcenter",
        "dead-letters",
        "replay",
        "abc",
        "--handlers",
        "eventcenter.center.demo:register_demo_handlers",
        *expected,
    ]
