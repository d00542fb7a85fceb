"""Bulk inserts and upserts (``storage/bulk.py``) on SQLite and PostgreSQL: every value comes
back exactly as written, an upsert changes what is there, and everything belongs to the
caller's transaction."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.orm import Session

from eventcenter.storage import bulk, inbox, source_state

#: Texts COPY's format or SQL quoting would get wrong if a value were not escaped.
AWKWARD = [
    "plain",
    'quote " and \' apostrophe',
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
    with pytest.raises(RuntimeError), Session(engine) as session, session.begin():
        bulk.insert_rows(session, inbox.deliveries, [delivery(1, "{}", None)])
        bulk.upsert_rows(session, source_state.items, [item("kept", "9", True, 9.0)], keys)
        raise RuntimeError("the transaction fails after the writes")
    assert stored_deliveries(engine) == []
    assert stored_items(engine) == {"kept": ("1", False, 1.0)}
    # The same connection (from the pool) upserts again after the rollback.
    with Session(engine) as session, session.begin():
        bulk.upsert_rows(session, source_state.items, [item("kept", "2", False, 2.0)], keys)
    assert stored_items(engine) == {"kept": ("2", False, 2.0)}


def test_a_row_the_table_refuses_fails_the_statement(engine: Engine) -> None:
    first = delivery(1, "{}", None)
    with pytest.raises(Exception) as caught, Session(engine) as session, session.begin():
        bulk.insert_rows(session, inbox.deliveries, [first, dict(first)])  # the same key twice
    assert "duplicate" in str(caught.value).lower() or "unique" in str(caught.value).lower()
    assert stored_deliveries(engine) == []


def test_a_value_of_another_type_is_refused_by_name() -> None:
    with pytest.raises(TypeError, match="cannot write a bytes value"):
        bulk.copy_text(b"raw")
    assert bulk.copy_text(None) == "\\N"
    assert bulk.copy_text(True) == "t"
    assert bulk.copy_text(0.1) == "0.1"
