"""PostgreSQL push path: rows read from a table by position, ``LISTEN`` only to wake up.

NOTIFY alone cannot carry a source: a payload is capped at 8,000 bytes, and a listener that is
disconnected misses what was sent meanwhile. So the items live in a table the producer writes,
and a notification only says "read again". Whatever was missed while disconnected is read on
reconnect, because reading goes by position; ``receive`` also reads once more when its timeout
ends, so a producer that forgot to notify is late, never lost.

The table (names are parameters)::

    CREATE TABLE orders_feed (
        id   bigserial PRIMARY KEY,
        tx   xid8 NOT NULL DEFAULT pg_current_xact_id(),  -- the writing transaction
        item jsonb NOT NULL                                -- {"key": ..., "version": ..., ...}
    );
    CREATE INDEX ON orders_feed (tx, id);
    CREATE FUNCTION orders_feed_notify() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN PERFORM pg_notify('orders_feed', ''); RETURN NULL; END $$;
    CREATE TRIGGER orders_feed_notify AFTER INSERT ON orders_feed
        FOR EACH STATEMENT EXECUTE FUNCTION orders_feed_notify();

Why the ``tx`` column: ids are handed out when a row is inserted, not when it commits. With
concurrent writers, row 11 can commit while row 10's transaction is still open; a reader that
went by id alone would move past 10 and never see it. Rows are therefore read in
``(tx, id)`` order and only from transactions older than every transaction still running
(``pg_snapshot_xmin(pg_current_snapshot())``): that prefix can no longer change. A row waits
while an older writing transaction is open anywhere on the server (PostgreSQL 13 or later);
keep writing transactions short. The position is ``"<tx>:<id>"``.

``tx_column=None`` reads by ``id`` alone (position ``"<id>"``): correct only when rows commit in
id order, i.e. with a single writer at a time.

Other rules: rows must not be deleted before the center has read them; ``open(position)``
raises :class:`PositionLost` when the table is gone or its id sequence restarted below the
position (the table was recreated). ``ack`` only remembers the position: after a reconnect,
reading resumes after the last acked row, so rows handed out and not acked come again.
Needs SELECT on the table and its id sequence. Table, column and channel names are quoted as
given (``LISTEN "orders_feed"``): write them in lower case, as unquoted SQL names end up. One
``receive`` at a time per path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg2  # type: ignore[import-untyped]
import psycopg2.extensions  # type: ignore[import-untyped]
from psycopg2 import sql

from eventcenter.domain.errors import ConfigurationError
from eventcenter.domain.sources import Received, SourceErrorKind
from eventcenter.sources.connectors.errors import PathStateError, Where, translated
from eventcenter.sources.connectors.lifecycle import Lifecycle
from eventcenter.sources.connectors.messages import received_json
from eventcenter.sources.connectors.pg_async import PgConnection

# Unless the URL sets them: a silent network ends in an error instead of a hang.
KEEPALIVES = {
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "30000",
}

Position = tuple[int, int]  # (transaction id, row id); the transaction is 0 without tx_column
START: Position = (0, 0)


def pg_notify(
    url: str,
    table: str,
    channel: str,
    *,
    id_column: str = "id",
    item_column: str = "item",
    tx_column: str | None = "tx",
    connect_timeout: float = 5.0,
    statement_timeout: float = 10.0,
    holdback_recheck: float = 0.05,
) -> PgNotifyPath:
    """A push path over ``table`` (``schema.table`` or a name in the search path), woken by
    ``LISTEN channel``. ``url`` is a libpq URL (``postgresql://user@host:5432/db``; the
    SQLAlchemy form ``postgresql+psycopg2://`` is accepted too).

    ``holdback_recheck``: how soon to read again while rows wait for an older transaction.
    """
    return PgNotifyPath(
        url,
        table,
        channel,
        id_column=id_column,
        item_column=item_column,
        tx_column=tx_column,
        connect_timeout=connect_timeout,
        statement_timeout=statement_timeout,
        holdback_recheck=holdback_recheck,
    )


def libpq_dsn(url: str) -> dict[str, str]:
    """The connection parameters of ``url``, with TCP keepalives unless it sets them."""
    if url.startswith("postgresql+") or url.startswith("postgres+"):
        url = "postgresql://" + url.partition("://")[2]
    try:
        params: dict[str, str] = psycopg2.extensions.parse_dsn(url)
    except psycopg2.ProgrammingError as error:
        raise ConfigurationError(f"pg_notify: not a PostgreSQL URL: {error}") from None
    return {**KEEPALIVES, **params}


@dataclass
class _Session:
    connection: PgConnection
    cursor: Position  # the last row handed out
    acked: Position  # the last row acknowledged: where a reconnect resumes


class PgNotifyPath:
    """See :func:`pg_notify`."""

    def __init__(
        self,
        url: str,
        table: str,
        channel: str,
        *,
        id_column: str,
        item_column: str,
        tx_column: str | None,
        connect_timeout: float,
        statement_timeout: float,
        holdback_recheck: float,
    ) -> None:
        if min(connect_timeout, statement_timeout, holdback_recheck) <= 0:
            raise ConfigurationError("pg_notify: timeouts and holdback_recheck must be > 0")
        params = libpq_dsn(url)
        self.table, self.channel = table, channel
        self._dsn = psycopg2.extensions.make_dsn(**params)
        self._tx_column = tx_column
        self._connect_timeout = connect_timeout
        self._statement_timeout = statement_timeout
        self._holdback_recheck = holdback_recheck
        self._shown = (
            f"postgresql://{params.get('user', '')}@{params.get('host', '')}"
            f":{params.get('port', '5432')}/{params.get('dbname', '')}"
        )
        self._where = Where("pg_notify", self._target(), params.get("password") or None)
        self._life = Lifecycle(self.describe)
        self._session: _Session | None = None
        self._query = self._read_query(
            sql.Identifier(*table.split(".")),
            sql.Identifier(id_column),
            sql.Identifier(item_column),
            None if tx_column is None else sql.Identifier(tx_column),
        )
        self._regclass = ".".join('"' + part.replace('"', '""') + '"' for part in table.split("."))
        self._serial = (self._regclass, id_column)

    def _target(self) -> str:
        return f"table {self.table!r} (channel {self.channel!r}) at {self._shown}"

    @property
    def describe(self) -> str:
        return f"pg_notify {self._target()}"

    @staticmethod
    def _read_query(
        table: sql.Identifier,
        id_: sql.Identifier,
        item: sql.Identifier,
        tx: sql.Identifier | None,
    ) -> sql.Composed:
        """Rows after a position, each with whether it is settled (can no longer be preceded
        by a row that commits later). Settled rows come first in this order."""
        if tx is None:
            return sql.SQL(
                "SELECT NULL, {id}, {item}::text, true FROM {table}"
                " WHERE {id} > %s ORDER BY {id} LIMIT %s"
            ).format(id=id_, item=item, table=table)
        return sql.SQL(
            "SELECT {tx}::text, {id}, {item}::text, {tx} < h.horizon"
            " FROM {table}, (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS horizon) AS h"
            " WHERE ({tx}, {id}) > (%s::text::xid8, %s) ORDER BY {tx}, {id} LIMIT %s"
        ).format(tx=tx, id=id_, item=item, table=table)

    def _parse(self, position: str) -> Position:
        try:
            if self._tx_column is None:
                found = (0, int(position))
            else:
                tx, _, row = position.partition(":")
                found = (int(tx), int(row))
        except ValueError:
            found = (-1, -1)
        if min(found) < 0:
            shape = "<id>" if self._tx_column is None else "<tx>:<id>"
            raise self._where.lost(
                f"position {position!r} is not {shape}: it was not stored by this path"
            )
        return found

    def _show(self, position: Position) -> str:
        if self._tx_column is None:
            return str(position[1])
        return f"{position[0]}:{position[1]}"

    async def open(self, position: str | None) -> None:
        self._life.check_openable()
        floor = START if position is None else self._parse(position)
        connection = await self._connect(resuming=position is not None)
        if position is not None:
            try:
                await self._check_sequence(connection, floor)
            except BaseException:
                connection.close()
                raise
        self._session = _Session(connection=connection, cursor=floor, acked=floor)
        self._life.opened()

    async def _connect(self, *, resuming: bool) -> PgConnection:
        """Connect, check the table is there, LISTEN."""
        statement = self._statement_timeout
        async with translated(self._where, self._connect_timeout + 2 * statement):
            connection = await PgConnection.connect(self._dsn, self._connect_timeout)
            try:
                found = await connection.execute(
                    "SELECT to_regclass(%s)", (self._regclass,), statement
                )
                if found[0][0] is None:
                    if resuming:
                        raise self._where.lost(
                            "the table is gone: re-list and reconcile, then open without a position"
                        )
                    raise self._where.error(
                        SourceErrorKind.CONNECTION,
                        "the table does not exist (or is not in the search path): create it",
                    )
                listen = sql.SQL("LISTEN {}").format(sql.Identifier(self.channel))
                await connection.execute(listen, None, statement)
            except BaseException:
                connection.close()
                raise
        return connection

    async def _check_sequence(self, connection: PgConnection, floor: Position) -> None:
        """A table recreated since ``floor`` was stored has an id sequence behind it."""
        query = (
            "SELECT s IS NOT NULL, pg_sequence_last_value(s)"
            " FROM (SELECT pg_get_serial_sequence(%s, %s)::regclass AS s) AS serial"
        )
        async with translated(self._where, self._statement_timeout):
            rows = await connection.execute(query, self._serial, self._statement_timeout)
        serial, last = rows[0]
        if serial and floor[1] > 0 and (last is None or last < floor[1]):
            raise self._where.lost(
                f"the id sequence is at {last or 0}, behind the stored position"
                f" {self._show(floor)} (the table was recreated): re-list and reconcile"
            )

    def _require(self, action: str) -> _Session:
        self._life.require_open(action)
        if self._session is None:
            raise PathStateError(f"{self.describe}: {action}() while open() failed")
        return self._session

    async def receive(self, max_items: int, timeout: float) -> Sequence[Received]:
        session = self._require("receive")
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        bound = max(timeout, 0.0) + self._connect_timeout + 4 * self._statement_timeout
        async with translated(self._where, bound):
            if session.connection.closed:  # a reconnect resumes after the last acked row
                session.connection = await self._connect(resuming=True)
                session.cursor = session.acked
            connection = session.connection
            try:
                while True:
                    connection.take_notifications()
                    found, held = await self._read(connection, session, max_items)
                    remaining = deadline - loop.time()
                    if found or remaining <= 0:
                        return found
                    if held:
                        remaining = min(remaining, self._holdback_recheck)
                    await connection.wait_notified(remaining)
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                connection.close()
                raise

    async def _read(
        self, connection: PgConnection, session: _Session, max_items: int
    ) -> tuple[list[Received], bool]:
        """Settled rows after the cursor, and whether unsettled rows wait behind them."""
        tx, row = session.cursor
        params: tuple[Any, ...] = (
            (row, max_items) if self._tx_column is None else (str(tx), row, max_items)
        )
        rows = await connection.execute(self._query, params, self._statement_timeout)
        found: list[Received] = []
        for tx_text, row_id, body, settled in rows:
            if not settled:
                return found, True
            position = (0 if tx_text is None else int(tx_text), int(row_id))
            found.append(received_json(body or "null", self._show(position), token=position))
            session.cursor = position
        return found, False

    async def ack(self, received: Sequence[Received]) -> None:
        session = self._require("ack")
        positions = [item.token for item in received if isinstance(item.token, tuple)]
        if positions:
            session.acked = max(session.acked, *positions)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if self._life.state == "open":
            self._life.closed()
        if session is not None:
            session.connection.close()
