"""The ``database_url`` fixture gives each test an empty, working database on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, inspect, text


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


def schema_in(url: str) -> str:
    """The schema the fixture put in the URL's search path."""
    return url.rsplit("search_path%3D", 1)[1]


def test_database_starts_empty(engine: Engine) -> None:
    assert inspect(engine).get_table_names() == []


def test_rows_written_are_read_back(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE probe (id INTEGER PRIMARY KEY, note TEXT NOT NULL)"))
        connection.execute(
            text("INSERT INTO probe (id, note) VALUES (:id, :note)"),
            [{"id": 1, "note": "first"}, {"id": 2, "note": "second"}],
        )

    with engine.connect() as connection:
        rows = connection.execute(text("SELECT id, note FROM probe ORDER BY id")).all()

    assert [tuple(row) for row in rows] == [(1, "first"), (2, "second")]
    assert inspect(engine).get_table_names() == ["probe"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sqlite_database_lives_in_the_test_directory(database_url: str, tmp_path: Path) -> None:
    assert database_url == f"sqlite:///{tmp_path}/center.db"


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_postgres_connections_use_a_fresh_schema(database_url: str, engine: Engine) -> None:
    schema = schema_in(database_url)
    assert schema.startswith("t_")

    with engine.begin() as connection:
        assert connection.execute(text("SELECT current_schema()")).scalar_one() == schema
        assert connection.execute(text("SHOW search_path")).scalar_one() == schema
        connection.execute(text("CREATE TABLE probe (id INTEGER PRIMARY KEY)"))
        holders = connection.execute(
            text("SELECT table_schema FROM information_schema.tables WHERE table_name = 'probe'")
        ).scalars()
        # only this test's schema: tables of other tests and of public stay out of sight
        assert schema in list(holders)
        assert inspect(connection).get_table_names() == ["probe"]
