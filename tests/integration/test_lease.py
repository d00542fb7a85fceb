"""One active center per name and store: the lease, on SQLite and PostgreSQL.

Refusal names the holder, a standby takes over when the holder goes (released, killed, or
its connection cut), tokens only grow, and fencing stops a holder that lost the lease at its
next write transaction.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.orm import Session

from eventcenter.domain.errors import (
    CenterLocked,
    ConfigurationError,
    LeaseLost,
    StoreUnavailable,
)
from eventcenter.storage.lease import Lease, advisory_key, center_leases
from tests.faults import ProxiedPostgres

CENTER = "default"
JOIN_S = 10.0
POLL_S = 0.02
PROCESS_TIMEOUT_S = 30.0

LeaseFactory = Callable[..., Lease]
postgres_only = pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


class FakeTime:
    """A monotonic clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def leases() -> Iterator[LeaseFactory]:
    """Makes leases (short poll interval) and releases every one after the test."""
    made: list[Lease] = []

    def make(url: str, center: str = CENTER, **options: object) -> Lease:
        options.setdefault("poll_interval", POLL_S)
        lease = Lease(url, center, **options)  # type: ignore[arg-type]
        made.append(lease)
        return lease

    yield make
    for lease in made:
        lease.release()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A writer's engine on the same store."""
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


def stored_token(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                select(center_leases.c.token).where(center_leases.c.center == CENTER)
            ).scalar_one()
        )


def force_token_up(engine: Engine) -> None:
    """What another process taking the lease does to the row."""
    with engine.begin() as connection:
        connection.execute(text("UPDATE center_leases SET token = token + 1"))


# acquiring ----------------------------------------------------------------------------------


def test_a_second_acquire_is_refused_naming_the_holder(
    database_url: str, leases: LeaseFactory
) -> None:
    first = leases(database_url, holder="host-a:1234").acquire()
    second = leases(database_url, holder="host-b:99")

    with pytest.raises(CenterLocked) as refused:
        second.acquire(wait=0)

    message = str(refused.value)
    assert f"center '{CENTER}' on {first.store} is held by host-a:1234 since " in message
    assert "token 1" in message
    assert "\n" not in message
    assert first.held
    assert not second.held


def test_the_lease_row_names_holder_and_token(
    database_url: str, leases: LeaseFactory, engine: Engine
) -> None:
    leases(database_url, holder="host-a:1234").acquire()

    with engine.connect() as connection:
        row = connection.execute(select(center_leases)).one()

    assert (row.center, row.token, row.holder) == (CENTER, 1, "host-a:1234")
    assert row.heartbeat_at >= row.acquired_at


def test_a_standby_takes_over_once_the_holder_releases(
    database_url: str, leases: LeaseFactory
) -> None:
    holder = leases(database_url).acquire()
    time = FakeTime()

    def sleep_then_release(seconds: float) -> None:
        time.sleep(seconds)
        if len(time.sleeps) == 2:
            holder.release()

    standby = leases(
        database_url, poll_interval=0.5, monotonic=time.monotonic, sleep=sleep_then_release
    )
    standby.acquire(wait=None)

    assert standby.held
    assert time.sleeps == [0.5, 0.5]
    assert standby.token == 2


def test_a_standby_gives_up_when_its_wait_runs_out(database_url: str, leases: LeaseFactory) -> None:
    leases(database_url, holder="host-a:1").acquire()
    time = FakeTime()
    standby = leases(database_url, poll_interval=0.5, monotonic=time.monotonic, sleep=time.sleep)

    with pytest.raises(CenterLocked, match=r"held by host-a:1 .*after waiting 1\.2 s"):
        standby.acquire(wait=1.2)

    assert time.sleeps == [0.5, 0.5, pytest.approx(0.2)]
    assert not standby.held


def test_tokens_strictly_increase_across_acquisitions(
    database_url: str, leases: LeaseFactory
) -> None:
    first, second = leases(database_url), leases(database_url)
    tokens = []
    for lease in (first, second, first, first, second):
        lease.acquire()
        tokens.append(lease.token)
        lease.release()

    assert tokens == [1, 2, 3, 4, 5]


def test_acquire_while_held_changes_nothing(database_url: str, leases: LeaseFactory) -> None:
    lease = leases(database_url).acquire()

    assert lease.acquire() is lease
    assert lease.token == 1


def test_the_context_manager_acquires_and_releases(database_url: str, leases: LeaseFactory) -> None:
    lease, other = leases(database_url), leases(database_url)

    with lease:
        assert lease.held
        with pytest.raises(CenterLocked):
            other.acquire()

    assert not lease.held
    assert other.acquire().token == 2


def test_centers_of_different_names_do_not_exclude_each_other(
    database_url: str, leases: LeaseFactory
) -> None:
    blue = leases(database_url, "blue").acquire()
    green = leases(database_url, "green").acquire()

    assert (blue.held, green.held) == (True, True)
    assert (blue.token, green.token) == (1, 1)


# fencing ------------------------------------------------------------------------------------


def test_fence_passes_inside_the_holders_write_transaction(
    database_url: str, leases: LeaseFactory, engine: Engine
) -> None:
    lease = leases(database_url).acquire()

    with engine.begin() as connection:
        lease.fence(connection)
    with Session(engine) as session, session.begin():
        lease.fence(session)

    lease.check()
    assert lease.held


def test_fence_raises_lease_lost_once_another_took_the_lease(
    database_url: str, leases: LeaseFactory, engine: Engine
) -> None:
    lease = leases(database_url).acquire()
    force_token_up(engine)

    lost = pytest.raises(LeaseLost, match=r"lease token 1 is no longer current \(now: token 2")
    with lost, engine.begin() as connection:
        lease.fence(connection)

    assert not lease.held
    with pytest.raises(LeaseLost, match="lease token 1 is no longer current"):
        lease.check()  # says again why, without asking the store


def test_check_raises_lease_lost_once_another_took_the_lease(
    database_url: str, leases: LeaseFactory, engine: Engine
) -> None:
    lease = leases(database_url).acquire()
    force_token_up(engine)

    with pytest.raises(LeaseLost, match="this process must stop writing"):
        lease.check()

    assert not lease.held
    assert leases(database_url).acquire().token == 3  # the lock was let go


def test_fence_refuses_a_released_lease(
    database_url: str, leases: LeaseFactory, engine: Engine
) -> None:
    lease = leases(database_url).acquire()
    lease.release()

    with pytest.raises(LeaseLost, match="holds no lease"), engine.begin() as connection:
        lease.fence(connection)


def test_a_new_holder_waits_for_the_old_holders_fenced_transaction(
    database_url: str, leases: LeaseFactory, engine: Engine
) -> None:
    old = leases(database_url).acquire()
    with engine.connect() as connection:
        transaction = connection.begin()
        old.fence(connection)  # the row is ours until this transaction ends
        old.release()
        new = leases(database_url)
        taking_over = threading.Thread(target=new.acquire)
        taking_over.start()

        taking_over.join(0.3)
        waited = taking_over.is_alive()
        transaction.commit()
        taking_over.join(JOIN_S)

    assert waited
    assert new.held
    assert new.token == 2


# stores -------------------------------------------------------------------------------------


def test_an_unreachable_store_is_named_on_one_line_without_its_password(
    leases: LeaseFactory,
) -> None:
    # port 1 on loopback: nothing listens there, the connection is refused at once
    lease = leases("postgresql+psycopg2://eventcenter:s3cret@127.0.0.1:1/center")

    with pytest.raises(StoreUnavailable) as unavailable:
        lease.acquire()

    message = str(unavailable.value)
    assert message.startswith(
        "cannot use the store postgresql+psycopg2://eventcenter:***@127.0.0.1:1/center: "
    )
    assert "s3cret" not in message
    assert "\n" not in message
    assert not lease.held


def test_a_sqlite_store_in_a_missing_directory_is_unavailable(
    tmp_path: Path, leases: LeaseFactory
) -> None:
    lease = leases(f"sqlite:///{tmp_path}/missing/center.db")

    with pytest.raises(StoreUnavailable, match=r"lock file .*center\.db\.default\.lock"):
        lease.acquire()


def test_sqlite_locks_a_file_next_to_the_database_or_in_lock_dir(
    tmp_path: Path, leases: LeaseFactory
) -> None:
    url = f"sqlite:///{tmp_path}/center.db"
    leases(url).acquire()
    lock_dir = tmp_path / "locks"
    lock_dir.mkdir()
    leases(url, "other", lock_dir=lock_dir).acquire()

    assert (tmp_path / "center.db.default.lock").exists()
    assert (lock_dir / "center.db.other.lock").exists()


def test_an_in_memory_sqlite_lease_is_always_granted(leases: LeaseFactory) -> None:
    engine = create_engine("sqlite://")
    lease = leases("sqlite://").acquire()
    try:
        with engine.begin() as connection:
            lease.fence(connection)  # no lease row there: nothing else can reach the store
        lease.check()
    finally:
        engine.dispose()

    assert lease.token == 1


@pytest.mark.parametrize("name", ["", "a/b", "x" * 65, "sp ace"])
def test_a_name_that_cannot_be_leased_is_refused_before_any_io(name: str) -> None:
    with pytest.raises(ConfigurationError, match="cannot be leased"):
        Lease("sqlite:///never-opened.db", name)


@postgres_only
def test_postgres_leases_of_one_name_in_two_schemas_are_independent(
    database_url: str, pg_proxy: ProxiedPostgres, leases: LeaseFactory
) -> None:
    here = leases(database_url).acquire()
    there = leases(pg_proxy.direct_url).acquire()

    assert (here.held, there.held) == (True, True)


@postgres_only
def test_a_search_path_without_an_existing_schema_is_unavailable(
    database_url: str, leases: LeaseFactory
) -> None:
    url = database_url.rsplit("search_path%3D", 1)[0] + "search_path%3Dno_such_schema"

    with pytest.raises(StoreUnavailable, match="no schema of its search_path exists"):
        leases(url).acquire()


def test_advisory_keys_are_stable_signed_64_bit_integers() -> None:
    key = advisory_key("public", CENTER)

    assert key == advisory_key("public", CENTER)
    assert -(2**63) <= key < 2**63
    assert key != advisory_key("other", CENTER)
    assert key != advisory_key("public", "other")


# a holder whose lock connection dies ----------------------------------------------------------


def lease_backend_pid(engine: Engine, center: str = CENTER) -> int:
    """The server process of the connection holding ``center``'s advisory lock."""
    with engine.connect() as connection:
        schema = connection.execute(text("SELECT current_schema()")).scalar_one()
        unsigned = advisory_key(schema, center) & 0xFFFF_FFFF_FFFF_FFFF
        return int(
            connection.execute(
                text(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                    " AND classid = CAST(:high AS oid) AND objid = CAST(:low AS oid)"
                ),
                {"high": unsigned >> 32, "low": unsigned & 0xFFFF_FFFF},
            ).scalar_one()
        )


def terminate_lease_connection(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(
            text("SELECT pg_terminate_backend(:pid)"), {"pid": lease_backend_pid(engine)}
        )


@postgres_only
def test_check_takes_the_lock_again_when_nobody_took_over(
    database_url: str, leases: LeaseFactory, engine: Engine
) -> None:
    lease = leases(database_url).acquire()
    terminate_lease_connection(engine)

    lease.check()

    assert lease.held
    assert lease.token == stored_token(engine) == 1
    with pytest.raises(CenterLocked):
        leases(database_url).acquire(wait=0)


@postgres_only
def test_a_holder_whose_session_died_is_fenced_off_by_the_new_holder(
    database_url: str, leases: LeaseFactory, engine: Engine
) -> None:
    old = leases(database_url).acquire()
    terminate_lease_connection(engine)

    new = leases(database_url).acquire(wait=JOIN_S)

    assert new.token == 2
    lost = pytest.raises(LeaseLost, match="lease token 1 is no longer current")
    with lost, engine.begin() as connection:
        old.fence(connection)
    with pytest.raises(LeaseLost):
        old.check()


@pytest.mark.postgres
def test_a_cut_lease_connection_is_taken_again_after_restore(
    pg_proxy: ProxiedPostgres, leases: LeaseFactory
) -> None:
    lease = leases(pg_proxy.url).acquire()
    pg_proxy.proxy.cut()

    with pytest.raises(StoreUnavailable, match=r"^cannot use the store postgresql"):
        lease.check()
    assert lease.held  # in doubt, not lost: fencing keeps writes safe meanwhile

    pg_proxy.proxy.restore()
    lease.check()

    assert lease.held
    assert lease.token == 1
    with pytest.raises(CenterLocked):
        leases(pg_proxy.direct_url).acquire(wait=0)


@pytest.mark.postgres
def test_a_cut_holder_loses_the_lease_to_a_standby(
    pg_proxy: ProxiedPostgres, leases: LeaseFactory
) -> None:
    old = leases(pg_proxy.url).acquire()
    standby = leases(pg_proxy.direct_url)
    with pytest.raises(CenterLocked):
        standby.acquire(wait=0)

    pg_proxy.proxy.cut()  # the server ends the old holder's session, and its lock
    standby.acquire(wait=JOIN_S)
    pg_proxy.proxy.restore()

    assert standby.token == 2
    with pytest.raises(LeaseLost, match=r"lease token 1 is no longer current \(now: token 2"):
        old.check()
    assert not old.held


# real processes -----------------------------------------------------------------------------

HOLD = """
import sys
from eventcenter.domain.errors import CenterLocked
from eventcenter.storage.lease import Lease

lease = Lease(sys.argv[1], "default", poll_interval=0.02)
try:
    lease.acquire(wait=float(sys.argv[2]))
except CenterLocked as error:
    print("refused:", error, flush=True)
    sys.exit(3)
print("held", lease.token, flush=True)
sys.stdin.read()
lease.release()
"""


def start_center(url: str, wait: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", HOLD, url, str(wait)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def first_line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    return process.stdout.readline().strip()


def test_a_second_process_is_refused_and_a_standby_takes_over_from_a_killed_holder(
    database_url: str,
) -> None:
    started: list[subprocess.Popen[str]] = []
    try:
        holder = start_center(database_url, wait=0)
        started.append(holder)
        assert first_line(holder) == "held 1"

        refused = subprocess.run(
            [sys.executable, "-c", HOLD, database_url, "0"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=PROCESS_TIMEOUT_S,
        )
        assert refused.returncode == 3
        assert f"is held by {socket.gethostname()}:{holder.pid} since" in refused.stdout

        standby = start_center(database_url, wait=PROCESS_TIMEOUT_S)
        started.append(standby)
        holder.kill()  # SIGKILL: no release, no clean-up of any kind
        holder.wait(PROCESS_TIMEOUT_S)

        assert first_line(standby) == "held 2"
        standby.communicate("", timeout=PROCESS_TIMEOUT_S)  # releases and exits
        assert standby.returncode == 0
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
                process.wait(PROCESS_TIMEOUT_S)
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    pipe.close()
