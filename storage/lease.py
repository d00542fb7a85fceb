"""The lease: at most one active center per name and store.

Two processes running a center of the same name on the same database would both write:
refused transactions, lost events, state machines that drift apart. The store arbitrates:

- **PostgreSQL**: a session-level advisory lock, held on a connection of the lease's own for
  as long as the lease is held. The server releases it when that session ends (process killed,
  connection cut), so a dead holder does not block a standby for longer than the server takes
  to notice. The key is a 64-bit hash of the schema and the center name, so centers of the same
  name in different schemas of one database do not exclude each other. Session locks need a
  session: they do not work through a pooler in transaction mode (pgbouncer), connect directly.
- **SQLite**: an exclusive ``flock`` on ``<database file>.<center>.lock`` next to the database
  (or in ``lock_dir``); the kernel releases it when the holding process dies. The file stays
  after release (deleting it would let two processes lock two different files). ``flock`` is
  not reliable on network file systems: keep the SQLite file on a local disk. A database in
  memory belongs to one process, so its lease is always granted and fences nothing.

A lock says who holds the lease *now*. It cannot stop a holder that lost its lock without
noticing (its lock connection was cut, it was paused) from writing once more. Hence a row of
``center_leases`` per center carries a **fencing token** that grows by one with every
acquisition; the writer calls :meth:`Lease.fence` inside each of its write transactions, which
updates that row only where the token is still its own and raises :class:`LeaseLost` otherwise.
The update also locks the row until the writer commits, so a new holder's acquisition waits for
the old holder's last transaction and every later one of the old holder is refused.

Typical use, in the process that writes::

    lease = Lease(url, "default")
    lease.acquire(wait=0)            # or wait=None: stand by until the holder goes
    try:
        ...                           # open the store, start the writer
        with engine.begin() as connection:
            lease.fence(connection)   # first statement of each write transaction
            ...
        lease.check()                 # every few seconds: LeaseLost means stop writing
    finally:
        lease.release()

Read-only users (audit trail, dead-letter list) never take a lease; only a lease holder
creates the ``center_leases`` table.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol, Self

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    CursorResult,
    DateTime,
    Engine,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    create_engine,
    inspect,
    make_url,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from eventcenter.domain.errors import (
    CenterLocked,
    ConfigurationError,
    LeaseLost,
    StoreUnavailable,
)

__all__ = ["Lease", "LeaseHolder", "advisory_key", "center_leases"]

log = logging.getLogger("eventcenter.lease")

POLL_INTERVAL_S = 0.5
"""How often a standby tries the lock again."""

STORE_TIMEOUT_S = 10.0
"""How long the store may stay silent before the lease connection counts as dead."""

_LIBPQ_DRIVERS = frozenset({"psycopg2", "psycopg"})

_CENTER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

metadata = MetaData()

center_leases = Table(
    "center_leases",
    metadata,
    Column("center", String(64), primary_key=True),
    Column("token", BigInteger, nullable=False),
    Column("holder", Text, nullable=False),
    Column("acquired_at", DateTime(timezone=True), nullable=False),
    Column("heartbeat_at", DateTime(timezone=True), nullable=False),
)
"""One row per center name: the fencing token of its latest acquisition and who took it."""

_FENCE = (
    update(center_leases)
    .where(
        center_leases.c.center == bindparam("lease_center"),
        center_leases.c.token == bindparam("lease_token"),
    )
    .values(heartbeat_at=bindparam("lease_now"))
)


@dataclass(frozen=True, slots=True)
class LeaseHolder:
    """The ``center_leases`` row of a center: who took the lease last, and when."""

    holder: str
    token: int
    acquired_at: datetime
    heartbeat_at: datetime

    def describe(self) -> str:
        return (
            f"{self.holder} since {_shown(self.acquired_at)}"
            f" (token {self.token}, last heartbeat {_shown(self.heartbeat_at)})"
        )


def advisory_key(schema: str, center: str) -> int:
    """The PostgreSQL advisory lock key of ``center`` in ``schema``: a signed 64-bit integer.

    Computed here rather than with the server's ``hashtext``, whose results are not promised
    to stay the same across PostgreSQL versions: two versions must agree on the key.
    """
    digest = hashlib.blake2b(f"eventcenter:{schema}:{center}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def default_holder() -> str:
    """``hostname:pid``: enough for an operator to find the holding process."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Lease:
    """The right to be the active center ``center`` on the store at ``url``.

    Constructing it does no I/O. :meth:`acquire` takes it (or refuses with
    :class:`CenterLocked`, or stands by), :meth:`fence` proves it inside a write transaction,
    :meth:`check` verifies it is still held, :meth:`release` gives it up. It is also a context
    manager that acquires without waiting (unless already held) and releases.

    Thread-safe: acquire, check and release may be called from different threads; fence is
    meant for the writer's thread and takes no lock of its own.

    ``now`` stamps the row, ``monotonic`` and ``sleep`` pace a standby: tests pass fakes.
    ``timeout`` bounds connecting to PostgreSQL and, through TCP keepalives on both ends of the
    lease connection, how long a silent peer keeps it (and with it the lock) alive.
    """

    def __init__(
        self,
        url: str,
        center: str,
        *,
        lock_dir: Path | None = None,
        holder: str | None = None,
        poll_interval: float = POLL_INTERVAL_S,
        timeout: float = STORE_TIMEOUT_S,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        if not _CENTER_NAME.match(center):
            raise ConfigurationError(
                f"center name {center!r} cannot be leased: use 1-64 of A-Z a-z 0-9 _ -"
            )
        if poll_interval <= 0 or timeout <= 0:
            raise ConfigurationError("poll_interval and timeout must be positive")
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise ConfigurationError(f"not a database URL: {url!r}") from None
        self.center = center
        self.store = parsed.render_as_string(hide_password=True)
        self.holder = holder or default_holder()
        self._poll_interval = poll_interval
        self._now = now
        self._monotonic = monotonic
        self._sleep = sleep
        self._guard = _guard_for(parsed, center, self.store, lock_dir, timeout)
        self._mutex = threading.Lock()
        self._token: int | None = None
        self._held = False
        self._lost: LeaseLost | None = None  # why the lease was lost, until the next acquire

    # state --------------------------------------------------------------------------------

    @property
    def held(self) -> bool:
        """True from a successful :meth:`acquire` until :meth:`release` or a LeaseLost.

        No I/O: a lease whose lock connection died unnoticed still reads True here until
        :meth:`check` or :meth:`fence` finds out; fencing keeps writes safe meanwhile.
        """
        return self._held

    @property
    def token(self) -> int | None:
        """The fencing token of the latest acquisition (None before the first one).

        Strictly increasing across acquisitions of this center on this store, by any process,
        for as long as its ``center_leases`` row is kept (never delete it to "unlock").
        """
        return self._token

    def __repr__(self) -> str:
        state = f"held, token {self._token}" if self._held else "not held"
        return f"<Lease center={self.center!r} store={self.store!r} {state}>"

    # acquire / release --------------------------------------------------------------------

    def acquire(self, wait: float | None = 0) -> Self:
        """Take the lease and a new fencing token; return self.

        ``wait=0`` refuses at once with :class:`CenterLocked` (naming the holder) when another
        process holds it; ``wait=N`` stands by up to N seconds, trying every ``poll_interval``;
        ``wait=None`` stands by until the holder goes. Raises :class:`StoreUnavailable` when the
        store cannot be reached. Calling it while held does nothing.

        The lease's mutex is held while standing by: to stay responsive to a shutdown, stand by
        in slices (``acquire(wait=1.0)`` in a loop that checks a stop flag between tries).
        """
        with self._mutex:
            if self._held:
                return self
            try:
                self._wait_for_lock(wait)
                try:
                    token = self._guard.take_token(self.center, self.holder, self._now())
                except BaseException:
                    self._guard.unlock()
                    raise
            except DBAPIError as error:
                self._guard.unlock()
                raise self._unavailable(error) from None
            self._token = token
            self._held = True
            self._lost = None
        log.info(
            "lease taken: center %r on %s by %s, token %d",
            self.center,
            self.store,
            self.holder,
            token,
        )
        return self

    def release(self) -> None:
        """Give the lease up (idempotent, never raises for a store that went away)."""
        with self._mutex:
            was_held = self._held
            self._held = False
            self._guard.unlock()
        if was_held:
            log.info(
                "lease released: center %r on %s, token %s", self.center, self.store, self._token
            )

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def _wait_for_lock(self, wait: float | None) -> None:
        deadline = None if wait is None else self._monotonic() + wait
        standing_by = False
        while not self._guard.try_lock():
            remaining = None if deadline is None else deadline - self._monotonic()
            if remaining is not None and remaining <= 0:
                error = self._locked(wait or 0)
                self._guard.unlock()
                raise error
            if not standing_by:
                standing_by = True
                log.warning("%s; standing by", self._locked(0))
            self._sleep(
                self._poll_interval if remaining is None else min(self._poll_interval, remaining)
            )

    # proving it ---------------------------------------------------------------------------

    def fence(self, connection: Connection | Session) -> None:
        """Prove, inside the caller's write transaction, that this process still holds the lease.

        Call it in every write transaction, before its first write, with that transaction's
        Connection or Session: it stamps the ``center_leases`` row where the token is still
        ours (which also holds the row until the transaction ends, so a new holder cannot take
        over halfway through it) and raises :class:`LeaseLost` when another process has taken
        the lease since: the caller must roll back and stop writing.
        """
        token = self._token
        if not self._held or token is None:
            raise self._not_held()
        if not self._guard.shared:
            return
        if isinstance(connection, Session):
            connection = connection.connection()
        result = connection.execute(
            _FENCE, {"lease_center": self.center, "lease_token": token, "lease_now": self._now()}
        )
        if result.rowcount != 1:
            # The reason first: a check on another thread that sees the lease not held must
            # find why (not "holds no lease").
            self._lost = self._lost_to(token, _read_holder(connection, self.center))
            self._held = False
            raise self._lost

    def check(self) -> None:
        """Verify that the lease is still held; call it every few seconds while holding it.

        Raises :class:`LeaseLost` (stop writing: another process is, or may be, the center now)
        or :class:`StoreUnavailable` (cannot tell now: writes fail too, try again later; the
        lease stays held in doubt and fencing keeps writes safe).

        On PostgreSQL a lease whose connection died (server restarted, connection cut) has lost
        its lock. If the lock can be taken again on a new connection and the token is still
        ours, no other process held the lease in between (it would have taken a new token):
        the lease goes on. Otherwise it is lost.
        """
        with self._mutex:
            token = self._token
            if not self._held or token is None:
                raise self._not_held()
            try:
                if not self._guard.still_locked():
                    log.warning(
                        "lease of center %r on %s lost its lock; taking it again",
                        self.center,
                        self.store,
                    )
                    if not self._guard.try_lock():
                        raise self._give_up(token)
                if not self._guard.heartbeat(self.center, token, self._now()):
                    raise self._give_up(token)
            except DBAPIError as error:
                self._guard.drop_if_dead(error)
                raise self._unavailable(error) from None

    def _give_up(self, token: int) -> LeaseLost:
        """Mark the lease lost, let go of what is left of it, and say who has it now."""
        try:
            current = self._guard.read_holder(self.center)
        except DBAPIError:
            current = None
        self._lost = self._lost_to(token, current)  # before _held: see fence
        self._held = False
        self._guard.unlock()
        return self._lost

    # messages -----------------------------------------------------------------------------

    def _locked(self, waited: float) -> CenterLocked:
        try:
            current = self._guard.read_holder(self.center)
        except DBAPIError:
            current = None
        who = current.describe() if current is not None else "another process"
        after = f" (still, after waiting {waited:g} s)" if waited else ""
        return CenterLocked(
            f"center '{self.center}' on {self.store} is held by {who}{after}: stop that process,"
            " or let this one wait for the lease as a standby"
        )

    def _not_held(self) -> LeaseLost:
        if self._lost is not None:
            return LeaseLost(*self._lost.args)
        return LeaseLost(f"center '{self.center}' on {self.store}: this process holds no lease")

    def _lost_to(self, token: int, current: LeaseHolder | None) -> LeaseLost:
        now = f"token {current.token}, {current.holder}" if current is not None else "unknown"
        log.error("lease of center %r on %s lost (ours: token %d)", self.center, self.store, token)
        return LeaseLost(
            f"center '{self.center}' on {self.store}: lease token {token} is no longer current"
            f" (now: {now}); this process must stop writing"
        )

    def _unavailable(self, error: DBAPIError) -> StoreUnavailable:
        return StoreUnavailable(f"cannot use the store {self.store}: {_one_line(error)}")


# the stores ---------------------------------------------------------------------------------


class _Guard(Protocol):
    """What a store does for a lease: the lock itself, and statements on the lease row."""

    @property
    def shared(self) -> bool:
        """False when no other process can reach the store (nothing to fence against)."""

    def try_lock(self) -> bool: ...
    def still_locked(self) -> bool: ...
    def unlock(self) -> None: ...
    def drop_if_dead(self, error: DBAPIError) -> None: ...
    def take_token(self, center: str, holder: str, now: datetime) -> int: ...
    def heartbeat(self, center: str, token: int, now: datetime) -> bool: ...
    def read_holder(self, center: str) -> LeaseHolder | None: ...


def _guard_for(url: URL, center: str, store: str, lock_dir: Path | None, timeout: float) -> _Guard:
    backend = url.get_backend_name()
    if backend == "postgresql":
        return _AdvisoryLock(url, center, store, timeout)
    if backend == "sqlite":
        database = url.database or ""
        if database in ("", ":memory:") or url.query.get("mode") == "memory":
            return _InMemory()
        path = Path(database).expanduser().absolute()
        directory = lock_dir if lock_dir is not None else path.parent
        return _FileLock(url, directory / f"{path.name}.{center}.lock", store)
    raise ConfigurationError(f"no lease for {backend} stores: use SQLite or PostgreSQL")


class _AdvisoryLock:
    """A session-level advisory lock on a connection of its own (autocommit, never pooled:
    closing it ends the session, and with it the lock, even if unlocking failed)."""

    shared = True

    def __init__(self, url: URL, center: str, store: str, timeout: float) -> None:
        keepalive_idle = max(1, round(timeout / 3))
        keepalive_interval = max(1, round(timeout / 6))
        self._settings = {
            "tcp_keepalives_idle": keepalive_idle,
            "tcp_keepalives_interval": keepalive_interval,
            "tcp_keepalives_count": 3,
        }
        libpq_options: dict[str, int] = {
            "connect_timeout": max(2, round(timeout)),  # libpq's shortest is 2 s
            "keepalives": 1,
            "keepalives_idle": keepalive_idle,
            "keepalives_interval": keepalive_interval,
            "keepalives_count": 3,
            "tcp_user_timeout": round(timeout * 1000),  # unacknowledged data: give up (ms)
        }
        self._engine: Engine = create_engine(
            url,
            poolclass=NullPool,
            isolation_level="AUTOCOMMIT",
            connect_args=libpq_options if url.get_driver_name() in _LIBPQ_DRIVERS else {},
        )
        self._center = center
        self._store = store
        self._connection: Connection | None = None
        self._key = 0

    def _session(self) -> Connection:
        if self._connection is not None:
            return self._connection
        connection = self._engine.connect()
        try:
            schema = connection.execute(text("SELECT current_schema()")).scalar()
            if schema is None:
                raise StoreUnavailable(
                    f"cannot use the store {self._store}: no schema of its search_path exists"
                )
            for name, value in self._settings.items():
                connection.execute(text(f"SET {name} = {int(value)}"))
        except BaseException:
            connection.close()
            raise
        self._key = advisory_key(schema, self._center)
        self._connection = connection
        return connection

    def try_lock(self) -> bool:
        connection = self._session()
        try:
            locked = connection.execute(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": self._key}
            ).scalar_one()
        except DBAPIError as error:
            self.drop_if_dead(error)
            raise
        return bool(locked)

    def still_locked(self) -> bool:
        """Whether our session still holds the lock; False if the session is gone."""
        if self._connection is None:
            return False
        unsigned = self._key & 0xFFFF_FFFF_FFFF_FFFF
        try:
            held = self._connection.execute(
                text(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
                    " AND pid = pg_backend_pid() AND granted AND objsubid = 1"
                    " AND classid = CAST(:high AS oid) AND objid = CAST(:low AS oid))"
                ),
                {"high": unsigned >> 32, "low": unsigned & 0xFFFF_FFFF},
            ).scalar_one()
        except DBAPIError as error:
            if not error.connection_invalidated:
                raise
            self._close()
            return False
        return bool(held)

    def unlock(self) -> None:
        connection = self._connection
        if connection is None:
            return
        with contextlib.suppress(DBAPIError):  # closing the session releases it anyway
            connection.execute(text("SELECT pg_advisory_unlock_all()"))
        self._close()

    def drop_if_dead(self, error: DBAPIError) -> None:
        if error.connection_invalidated:
            self._close()

    def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(DBAPIError):
                connection.close()

    def take_token(self, center: str, holder: str, now: datetime) -> int:
        connection = self._session()
        _create_table(connection)
        return _upsert_token(connection, postgresql_insert, center, holder, now)

    def heartbeat(self, center: str, token: int, now: datetime) -> bool:
        return _heartbeat(self._session(), center, token, now)

    def read_holder(self, center: str) -> LeaseHolder | None:
        return _read_holder(self._session(), center)


class _FileLock:
    """An exclusive ``flock`` on a lock file, with the lease row in the SQLite database.

    ``flock`` belongs to the open file, not the process: two leases in one process exclude
    each other like two processes do, and the lock dies with the file descriptor (the file is
    opened close-on-exec, so child processes never inherit it).
    """

    shared = True

    def __init__(self, url: URL, path: Path, store: str) -> None:
        self.path = path
        self._store = store
        self._engine: Engine = create_engine(url, poolclass=NullPool)
        self._file: IO[bytes] | None = None
        self._locked = False

    def try_lock(self) -> bool:
        if self._file is None:
            try:
                self._file = open(self.path, "a+b")  # noqa: SIM115 (held for the lease's life)
            except OSError as error:
                raise StoreUnavailable(
                    f"cannot use the store {self._store}: lock file {self.path}:"
                    f" {error.strerror or error}"
                ) from None
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self._locked = True
        return True

    def still_locked(self) -> bool:
        """Whether we hold the lock on the file that the lock path names now (a lock file
        deleted and made anew would let another process lock the new one)."""
        if self._file is None or not self._locked:
            return False
        try:
            return os.stat(self.path).st_ino == os.fstat(self._file.fileno()).st_ino
        except FileNotFoundError:
            return False

    def unlock(self) -> None:
        file, self._file = self._file, None
        self._locked = False
        if file is not None:
            file.close()  # releases the flock

    def drop_if_dead(self, error: DBAPIError) -> None:
        pass

    def take_token(self, center: str, holder: str, now: datetime) -> int:
        with self._engine.begin() as connection:
            _create_table(connection)
            return _upsert_token(connection, sqlite_insert, center, holder, now)

    def heartbeat(self, center: str, token: int, now: datetime) -> bool:
        with self._engine.begin() as connection:
            return _heartbeat(connection, center, token, now)

    def read_holder(self, center: str) -> LeaseHolder | None:
        with self._engine.connect() as connection:
            return _read_holder(connection, center)


class _InMemory:
    """A database in memory belongs to one process: the lease is always granted."""

    shared = False

    def try_lock(self) -> bool:
        return True

    def still_locked(self) -> bool:
        return True

    def unlock(self) -> None:
        pass

    def drop_if_dead(self, error: DBAPIError) -> None:
        pass

    def take_token(self, center: str, holder: str, now: datetime) -> int:
        return 1

    def heartbeat(self, center: str, token: int, now: datetime) -> bool:
        return True

    def read_holder(self, center: str) -> LeaseHolder | None:
        return None


# statements on the lease row ----------------------------------------------------------------


def _create_table(connection: Connection) -> None:
    """Create ``center_leases`` if missing. Two processes creating it at once: the loser's
    CREATE fails on the catalog, and the table is there when it looks again."""
    try:
        center_leases.create(connection, checkfirst=True)
    except DBAPIError:
        if not inspect(connection).has_table(center_leases.name):
            raise


def _upsert_token(
    connection: Connection, insert: Callable[..., Any], center: str, holder: str, now: datetime
) -> int:
    """One statement, so atomic even in autocommit: the first token is 1, each later one the
    previous plus one."""
    statement = insert(center_leases).values(
        center=center, token=1, holder=holder, acquired_at=now, heartbeat_at=now
    )
    statement = statement.on_conflict_do_update(
        index_elements=[center_leases.c.center],
        set_={
            "token": center_leases.c.token + 1,
            "holder": statement.excluded.holder,
            "acquired_at": statement.excluded.acquired_at,
            "heartbeat_at": statement.excluded.heartbeat_at,
        },
    ).returning(center_leases.c.token)
    return int(connection.execute(statement).scalar_one())


def _heartbeat(connection: Connection, center: str, token: int, now: datetime) -> bool:
    result: CursorResult[Any] = connection.execute(
        _FENCE, {"lease_center": center, "lease_token": token, "lease_now": now}
    )
    return result.rowcount == 1


def _read_holder(connection: Connection, center: str) -> LeaseHolder | None:
    if not inspect(connection).has_table(center_leases.name):
        return None
    row = connection.execute(
        select(
            center_leases.c.holder,
            center_leases.c.token,
            center_leases.c.acquired_at,
            center_leases.c.heartbeat_at,
        ).where(center_leases.c.center == center)
    ).one_or_none()
    if row is None:
        return None
    return LeaseHolder(
        holder=row.holder,
        token=int(row.token),
        acquired_at=row.acquired_at,
        heartbeat_at=row.heartbeat_at,
    )


def _shown(moment: datetime) -> str:
    """A stored time in UTC (SQLite hands it back naive; it was stored as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _one_line(error: DBAPIError) -> str:
    """The driver's own message on one line, without SQLAlchemy's statement and link."""
    cause = error.orig if error.orig is not None else error
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    return " ".join(lines) or type(cause).__name__
