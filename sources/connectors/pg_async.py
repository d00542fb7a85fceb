"""One psycopg2 connection in asynchronous mode, driven by the event loop: nothing blocks it.

psycopg2's asynchronous connections (``async_=True``) send a command and return at once;
``poll()`` says whether the socket must become readable or writable before the answer is
complete. Waiting for that is done with ``loop.add_reader``/``add_writer``, so the loop keeps
running other sources meanwhile, and ``LISTEN`` notifications are read from the same socket.

Every wait has a deadline. A command cut short by it (or by cancellation) leaves the
connection in an unknown state, so it is closed: the owner connects again.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg2  # type: ignore[import-untyped]
import psycopg2.extensions  # type: ignore[import-untyped]
from psycopg2 import sql


class PgConnection:
    """An open asynchronous connection; build it with :meth:`connect`."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    @classmethod
    async def connect(cls, dsn: str, timeout: float) -> PgConnection:
        connection = psycopg2.connect(dsn, async_=True)
        opened = cls(connection)
        await opened._wait(timeout)
        return opened

    @property
    def closed(self) -> bool:
        return bool(self._connection.closed)

    def close(self) -> None:
        if not self._connection.closed:
            self._connection.close()

    async def execute(
        self, query: sql.Composable | str, params: tuple[Any, ...] | None, timeout: float
    ) -> list[tuple[Any, ...]]:
        """Run one statement (autocommit: async connections have no open transaction)."""
        cursor = self._connection.cursor()
        try:
            cursor.execute(query, params)
            await self._wait(timeout)
            rows: list[tuple[Any, ...]] = cursor.fetchall() if cursor.description else []
        finally:
            cursor.close()
        return rows

    def take_notifications(self) -> int:
        """How many notifications arrived since the last call (they are dropped: a wake-up)."""
        count = len(self._connection.notifies)
        self._connection.notifies.clear()
        return count

    async def wait_notified(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for a notification; True if one (or more) arrived.

        A connection that broke meanwhile raises (psycopg2 OperationalError) here.
        """
        if self._connection.notifies:
            return True
        if timeout > 0 and await self._ready(self._connection.fileno(), read=True, timeout=timeout):
            self._poll()
        return bool(self._connection.notifies)

    def _poll(self) -> int:
        try:
            state: int = self._connection.poll()
        except BaseException:
            self.close()
            raise
        return state

    async def _wait(self, timeout: float) -> None:
        """Drive the pending command (or the connect) to completion within ``timeout`` s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            state = self._poll()
            if state == psycopg2.extensions.POLL_OK:
                return
            read = state == psycopg2.extensions.POLL_READ
            if state != psycopg2.extensions.POLL_WRITE and not read:
                self.close()
                raise psycopg2.OperationalError(f"unexpected poll state {state}")
            remaining = deadline - loop.time()
            if remaining <= 0 or not await self._ready(
                self._connection.fileno(), read=read, timeout=remaining
            ):
                self.close()
                raise TimeoutError(f"PostgreSQL did not answer within {timeout:g} s")

    async def _ready(self, fd: int, *, read: bool, timeout: float) -> bool:
        """Wait until ``fd`` is readable (or writable); False when ``timeout`` passed first.

        Cancelled in the middle of a command, the connection is closed.
        """
        loop = asyncio.get_running_loop()
        ready = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        if read:
            loop.add_reader(fd, wake)
        else:
            loop.add_writer(fd, wake)
        try:
            async with asyncio.timeout(timeout):
                await ready
            return True
        except TimeoutError:
            return False
        except asyncio.CancelledError:
            self.close()
            raise
        finally:
            if read:
                loop.remove_reader(fd)
            else:
                loop.remove_writer(fd)
