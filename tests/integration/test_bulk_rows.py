"""Bulk inserts and upserts (``storage/bulk.py``) on SQLite and PostgreSQL: every value comes
back exactly as written, an upsert changes what is there, and everything belongs to the
caller's transaction."""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from eventcenter.domain.priority import Priority
from eventcenter.storage import bulk, inbox, source_state
from eventcenter.storage.writer import is_transient

#: Texts COPY's format or SQL quoting would get wrong if a value were not escaped.
AWKWARD = [
    "plain",
    "quote \" and ' apostrophe",
    "back\\slash \\N \\t literally",
    "tab\there",
    "new\nline and carriage\rreturn",
    "unicode: é ü 漢字 🙂",
    "",
    '{"json": "with \\"escapes\\" and \\\\ and \\n"}',
]


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url)
    with engine.begin() as connection:
        inbox.create_tables(connection)
        source_state.metadata.create_all(connection)
    yield engine
    engine.dispose()


def delivery(seq: int, envelope: str, failure: str | None) -> dict[str, Any]:
    return {
        "center": "c",
        "seq": seq,
        "subscription": "items",
        "priority": 2,
        "tenant": "acme",
        "event_id": f"e-{seq}",
        "envelope": envelope,
        "attempts": 0,
        "failure": failure,
        "replay_of": None,
        "admitted_at": 1764800000.123456789 + seq / 7,
    }


def item(key: str, version: str, deleted: bool, now: float) -> dict[str, Any]:
    return {
        "center": "c",
        "tenant": "acme",
        "source": "orders",
        "key": key,
        "version": version,
        "digest": "d" * 64,
        "deleted": deleted,
        "updated_at": now,
    }


def stored_deliveries(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        rows = connection.execute(select(inbox.deliveries).order_by(inbox.deliveries.c.seq))
        return [dict(row._mapping) for row in rows]


def stored_items(engine: Engine) -> dict[str, tuple[str, bool, float]]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(
                source_state.items.c.key,
                source_state.items.c.version,
                source_state.items.c.deleted,
                source_state.items.c.updated_at,
            )
        )
        return {key: (version, bool(deleted), at) for key, version, deleted, at in rows}


def test_inserted_rows_come_back_exactly_as_written(engine: Engine) -> None:
    rows = [
        delivery(seq, text, None if seq % 2 else f"failure: {text}")
        for seq, text in enumerate(AWKWARD, start=1)
    ]
    with Session(engine) as session, session.begin():
        bulk.insert_rows(session, inbox.deliveries, rows)
    assert stored_deliveries(engine) == rows


def test_an_upsert_inserts_new_keys_and_updates_known_ones(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        bulk.upsert_rows(
            session,
            source_state.items,
            [item("a", "1", False, 10.5), item("tab\tkey", "1", False, 10.5)],
            ("center", "tenant", "source", "key"),
        )
    with Session(engine) as session, session.begin():
        keys = ("center", "tenant", "source", "key")
        bulk.upsert_rows(session, source_state.items, [item("a", "2", True, 20.25)], keys)
        # A second upsert into the same table in one transaction sees only its own rows.
        bulk.upsert_rows(session, source_state.items, [item("b", "1", False, 30.0)], keys)
    assert stored_items(engine) == {
        "a": ("2", True, 20.25),
        "tab\tkey": ("1", False, 10.5),
        "b": ("1", False, 30.0),
    }


def test_bulk_writes_roll_back_with_their_transaction(engine: Engine) -> None:
    keys = ("center", "tenant", "source", "key")
    with Session(engine) as session, session.begin():
        bulk.upsert_rows(session, source_state.items, [item("kept", "1", False, 1.0)], keys)
    with Session(engine) as session:
        transaction = session.begin()
        bulk.insert_rows(session, inbox.deliveries, [delivery(1, "{}", None)])
        bulk.upsert_rows(session, source_state.items, [item("kept", "9", True, 9.0)], keys)
        transaction.rollback()
    assert stored_deliveries(engine) == []
    assert stored_items(engine) == {"kept": ("1", False, 1.0)}
    # The same connection (from the pool) upserts again after the rollback.
    with Session(engine) as session, session.begin():
        bulk.upsert_rows(session, source_state.items, [item("kept", "2", False, 2.0)], keys)
    assert stored_items(engine) == {"kept": ("2", False, 2.0)}


def test_a_row_the_table_refuses_fails_the_statement(engine: Engine) -> None:
    first = delivery(1, "{}", None)
    with Session(engine) as session, session.begin():
        with pytest.raises(IntegrityError, match=r"(?i)duplicate|unique"):
            bulk.insert_rows(session, inbox.deliveries, [first, dict(first)])  # one key twice
        session.rollback()
    assert stored_deliveries(engine) == []


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_connection_cut_during_copy_is_a_transient_failure(engine: Engine) -> None:
    """The writer retries what is transient: a cut in the middle of a COPY must look like a
    cut in the middle of any other statement (SQLAlchemy's OperationalError, invalidated)."""
    with Session(engine) as session, session.begin():
        pid = session.execute(text("SELECT pg_backend_pid()")).scalar()
        with engine.connect() as other:  # ends this test's own session's backend, by its pid
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(OperationalError) as caught:
            bulk.insert_rows(session, inbox.deliveries, [delivery(1, "{}", None)])
        assert caught.value.connection_invalidated
        assert is_transient(caught.value)
        session.rollback()
    with Session(engine) as session, session.begin():  # the pool hands out a sound connection
        bulk.insert_rows(session, inbox.deliveries, [delivery(2, "{}", None)])
    assert [row["seq"] for row in stored_deliveries(engine)] == [2]


def test_a_value_of_another_type_is_refused_by_name() -> None:
    with pytest.raises(TypeError, match="cannot write a bytes value"):
        bulk.copy_text(b"raw")
    assert bulk.copy_text(None) == "\\N"
    assert bulk.copy_text(True) == "t"
    assert bulk.copy_text(0.1) == "0.1"
    assert bulk.copy_text(Priority.HIGH) == str(int(Priority.HIGH))  # an int subclass: its number
    assert bulk.copy_text(Tabbed.VALUE) == "a\\tb"  # a str subclass: its text, escaped


class Tabbed(StrEnum):
    VALUE = "a\tb"


def test_rows_are_selected_and_deleted_by_a_list_of_keys_of_one_center(engine: Engine) -> None:
    rows = [delivery(seq, "{}", None) for seq in range(1, 8)]
    other = {**delivery(3, "{}", None), "center": "other"}  # same seq, another center
    keys = [
        {"center": "c", "ident": ident, "event_id": f"e-{n}", "accepted_at": 1.0}
        for n, ident in enumerate(AWKWARD)
    ]
    with Session(engine) as session, session.begin():
        bulk.insert_rows(session, inbox.deliveries, [*rows, other])
        bulk.insert_rows(session, inbox.idempotency, keys)
        bulk.delete_in(session, inbox.deliveries, "c", "seq", [2, 3, 5, 99])
        bulk.delete_in(session, inbox.deliveries, "c", "seq", [])
        found = bulk.select_in(
            session, inbox.idempotency, ("ident", "event_id"), "c", "ident", [*AWKWARD[3:6], "none"]
        )
        elsewhere = bulk.select_in(
            session, inbox.idempotency, ("ident",), "other", "ident", AWKWARD
        )
    assert sorted(found) == sorted((ident, f"e-{AWKWARD.index(ident)}") for ident in AWKWARD[3:6])
    assert elsewhere == []
    left = [(row["center"], row["seq"]) for row in stored_deliveries(engine)]
    assert sorted(left) == [("c", 1), ("c", 4), ("c", 6), ("c", 7), ("other", 3)]


@pytest.mark.parametrize("size", [1, bulk.DIRECT_MAX, bulk.DIRECT_MAX + 1, 300])
def test_upserts_of_every_size_write_the_same(engine: Engine, size: int) -> None:
    """A few rows are one statement on PostgreSQL, more go through the staging table: both
    must insert, update and leave other rows alone alike, twice in one transaction too."""
    keys = ("center", "tenant", "source", "key")
    names = [f"{AWKWARD[n % len(AWKWARD)]}#{n}" for n in range(size)]
    with Session(engine) as session, session.begin():
        bulk.upsert_rows(session, source_state.items, [item("kept", "1", False, 1.0)], keys)
        bulk.upsert_rows(
            session, source_state.items, [item(k, "1", False, 1.5) for k in names], keys
        )
    with Session(engine) as session, session.begin():
        half = names[: (size + 1) // 2]
        bulk.upsert_rows(session, source_state.items, [item(k, "2", True, 2.5) for k in half], keys)
        bulk.upsert_rows(
            session, source_state.items, [item(k, "3", False, 3.5) for k in half[:1]], keys
        )
    expected = {k: ("1", False, 1.5) for k in names}
    expected.update({k: ("2", True, 2.5) for k in half})
    expected[names[0]] = ("3", False, 3.5)
    expected["kept"] = ("1", False, 1.0)
    assert stored_items(engine) == expected
