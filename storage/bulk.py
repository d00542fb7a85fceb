"""Many rows in one statement, inside the writer's transaction, at the driver's own speed.

The writer's hot path stores a few hundred rows per table per commit (an admission's
deliveries and idempotency keys, a source's delivered items). Through SQLAlchemy Core each
row's parameters are processed in Python; on PostgreSQL psycopg2 then quotes every value of a
multi-row ``INSERT`` one by one. Measured on 500 delivery rows of ~420-byte envelopes (one
transaction each): SQLAlchemy 24 to 38 ms on PostgreSQL and 5.5 ms on SQLite, ``COPY`` 6 to 8
ms, the sqlite3 driver's own ``executemany`` 3.2 ms. So:

- **SQLite**: the DBAPI cursor's ``executemany`` with ``?`` parameters (the loop over the
  rows runs in C); an upsert is ``INSERT ... ON CONFLICT (keys) DO UPDATE``.
- **PostgreSQL**: ``COPY ... FROM STDIN`` in the text format; an upsert of a few rows is one
  ``INSERT ... VALUES ... ON CONFLICT DO UPDATE``, a larger one copies into a
  temporary staging table of the same shape (``ON COMMIT DELETE ROWS``, one per connection
  and table) and moves the rows out of it with one ``DELETE ... RETURNING`` feeding an
  ``INSERT ... ON CONFLICT DO UPDATE``.

Both run on the session's own connection, so they belong to the caller's transaction: a
rollback undoes them with everything else. A driver's error is raised as SQLAlchemy's (an
``OperationalError`` for a connection cut, with the connection invalidated), as a statement
through SQLAlchemy would raise it: the writer tells "the store is unreachable, retry" from
"the store refused this" the same way for both. Values are ``None``, ``bool``, ``int``, ``float``
or ``str``, keyed by column name (``*_rows``) or in the table's column order (``*_values``, what
the writer's hot path builds); every column of the table is written. The rows of one upsert must
not repeat a key (a statement cannot change one row twice).
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from operator import itemgetter
from typing import Any, cast

import sqlalchemy.exc
from sqlalchemy import Table
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

#: Up to this many rows, a PostgreSQL upsert is one plain statement (one round trip instead of
#: the staging table's three: a source's position is one row per commit).
DIRECT_MAX = 8

#: COPY's text format: a backslash (first), a tab, a newline and a carriage return are escaped.
_COPY_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))


def insert_rows(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` into ``table`` in the session's transaction (see the module docstring)."""
    if rows:
        insert_values(session, table, _tuples(rows, _columns(table)))


def insert_values(session: Session, table: Table, rows: Sequence[Sequence[Any]]) -> None:
    """:func:`insert_rows` for rows given as their values in the table's column order (what
    the writer's hot path builds: no dict per row, and nothing to reorder)."""
    if not rows:
        return
    columns = _columns(table)
    with _cursor(session) as (cursor, postgresql):
        if postgresql:
            _copy(cursor, table.name, columns, rows)
        else:
            cursor.executemany(_sqlite_insert(table.name, columns), rows)


def upsert_rows(
    session: Session, table: Table, rows: Sequence[dict[str, Any]], keys: Sequence[str]
) -> None:
    """Insert ``rows``, or update the other columns of a row whose ``keys`` are already there."""
    if rows:
        upsert_values(session, table, _tuples(rows, _columns(table)), keys)


def upsert_values(
    session: Session, table: Table, rows: Sequence[Sequence[Any]], keys: Sequence[str]
) -> None:
    """:func:`upsert_rows` for rows given as their values in the table's column order."""
    if not rows:
        return
    columns = _columns(table)
    changed = [name for name in columns if name not in keys]
    conflict = f" ON CONFLICT ({_names(keys)}) DO UPDATE SET {_changes(changed)}"
    with _cursor(session) as (cursor, postgresql):
        if postgresql and len(rows) <= DIRECT_MAX:
            marks = ", ".join("%s" for _ in columns)
            cursor.execute(
                f'INSERT INTO "{table.name}" ({_names(columns)}) VALUES '
                + ", ".join(f"({marks})" for _ in rows)
                + conflict,
                [value for row in rows for value in row],
            )
        elif postgresql:
            stage = f"{table.name}_stage"
            cursor.execute(
                f'CREATE TEMPORARY TABLE IF NOT EXISTS "{stage}"'
                f' (LIKE "{table.name}" INCLUDING DEFAULTS) ON COMMIT DELETE ROWS'
            )
            _copy(cursor, stage, columns, rows)
            names = _names(columns)
            # Moved out of the stage in the same statement: a second upsert of this
            # transaction finds it empty (the commit also empties it).
            cursor.execute(
                f'WITH moved AS (DELETE FROM "{stage}" RETURNING {names})'
                f' INSERT INTO "{table.name}" ({names}) SELECT {names} FROM moved{conflict}'
            )
        else:
            statement = _sqlite_insert(table.name, columns) + conflict
            cursor.executemany(statement, rows)


def delete_in(
    session: Session, table: Table, center: str, column: str, values: Sequence[Any]
) -> None:
    """Delete the center's rows of ``table`` whose ``column`` is one of ``values``."""
    if not values:
        return
    with _cursor(session) as (cursor, postgresql):
        if postgresql:
            cursor.execute(
                f'DELETE FROM "{table.name}" WHERE center = %s AND "{column}" = ANY(%s)',
                (center, list(values)),
            )
        else:
            cursor.executemany(
                f'DELETE FROM "{table.name}" WHERE center = ? AND "{column}" = ?',
                [(center, value) for value in values],
            )


def select_in(
    session: Session,
    table: Table,
    columns: Sequence[str],
    center: str,
    column: str,
    values: Sequence[Any],
) -> list[tuple[Any, ...]]:
    """The ``columns`` of the center's rows of ``table`` whose ``column`` is one of
    ``values`` (SQLite: at most 30,000 values, its limit of parameters per statement)."""
    if not values:
        return []
    names = _names(columns)
    with _cursor(session) as (cursor, postgresql):
        if postgresql:
            cursor.execute(
                f'SELECT {names} FROM "{table.name}" WHERE center = %s AND "{column}" = ANY(%s)',
                (center, list(values)),
            )
        else:
            marks = ", ".join("?" for _ in values)
            cursor.execute(
                f'SELECT {names} FROM "{table.name}" WHERE center = ? AND "{column}" IN ({marks})',
                [center, *values],
            )
        return [tuple(row) for row in cursor.fetchall()]


def copy_text(value: Any) -> str:
    """One value as a field of ``COPY``'s text format."""
    kind = type(value)
    if kind is str:
        return _escaped(value)
    if value is None:
        return "\\N"
    if kind is bool:
        return "t" if value else "f"
    if kind is int or kind is float:
        return repr(value)
    if isinstance(value, str):  # a subclass (an enum member): its text
        return _escaped(str.__str__(value))
    if isinstance(value, int):  # a subclass: its number
        return int.__repr__(value)
    if isinstance(value, float):
        return float.__repr__(value)
    raise TypeError(f"cannot write a {kind.__name__} value with COPY")


def _escaped(text: str) -> str:
    # ``in`` and ``replace`` run in C; a text without these characters (nearly every one) is
    # scanned four times and returned as it is. (``str.translate`` with a table looks up each
    # character in Python: about 9 µs for a 400-character envelope.)
    for char, escape in _COPY_ESCAPES:
        if char in text:
            text = text.replace(char, escape)
    return text


def _copy(cursor: Any, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    text = "\n".join(["\t".join(map(copy_text, row)) for row in rows]) + "\n"
    cursor.copy_expert(f'COPY "{table}" ({_names(columns)}) FROM STDIN', io.StringIO(text))


def _sqlite_insert(table: str, columns: Sequence[str]) -> str:
    marks = ", ".join("?" for _ in columns)
    return f'INSERT INTO "{table}" ({_names(columns)}) VALUES ({marks})'


def _names(columns: Sequence[str]) -> str:
    return ", ".join(f'"{name}"' for name in columns)


def _changes(columns: Sequence[str]) -> str:
    return ", ".join(f'"{name}" = EXCLUDED."{name}"' for name in columns)


def _columns(table: Table) -> list[str]:
    return [column.name for column in table.columns]


def _tuples(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> list[tuple[Any, ...]]:
    """Each row's values in the order of ``columns``."""
    if len(columns) == 1:
        (name,) = columns
        return [(row[name],) for row in rows]
    values = itemgetter(*columns)
    return [values(row) for row in rows]


@contextmanager
def _cursor(session: Session) -> Iterator[tuple[Any, bool]]:
    """A DBAPI cursor of the session's transaction, and whether it is PostgreSQL's; the
    driver's errors leave as SQLAlchemy's (see the module docstring)."""
    connection: Connection = session.connection()
    dialect = connection.dialect
    raw = connection.connection.dbapi_connection  # this very transaction
    if raw is None:
        raise sqlalchemy.exc.ResourceClosedError("the session's connection is closed")
    cursor = raw.cursor()
    driver_error: type[Exception] = dialect.loaded_dbapi.Error
    try:
        yield cursor, dialect.name == "postgresql"
    except driver_error as error:
        cut = bool(dialect.is_disconnect(cast(Any, error), raw, cursor))
        if cut:
            connection.invalidate(error)
        raise sqlalchemy.exc.DBAPIError.instance(
            None, None, error, driver_error, connection_invalidated=cut, dialect=dialect
        ) from error
    finally:
        with suppress(driver_error):  # a cut connection may refuse even this
            cursor.close()
