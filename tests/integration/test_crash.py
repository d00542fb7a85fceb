"""kill -9 at random moments: what the durable core promises still holds after each crash.

A center runs in a child process (tests/crash_child.py) that publishes a stream from several
tasks while its handlers work; the test kills it with SIGKILL at a seeded random moment, three
times in a row on the same store (each new child recovers what the last one left, then
publishes more and is killed in turn), then a last child only drains. Then, from the ledgers
the children fsync'ed and from the store itself:

- every accepted event (its publish returned) reached every subscription it matched: handled
  (possibly more than once: at-least-once) or dead-lettered exactly once;
- every child reported as recovered exactly the deliveries the store held when it started,
  and logged it; handlers ran twice only for deliveries that were recovered;
- every delivery's decision is in the audit trail exactly once (recorded once per cause);
- every idempotency key that was accepted is still known: publishing it again returns the
  first event's id and admits nothing.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, func, inspect, make_url, select, text
from sqlalchemy.pool import NullPool

from eventcenter.center.reader import CenterReader
from eventcenter.center.settings import CenterSettings
from eventcenter.domain.aggregates import ProcessorLog
from eventcenter.storage.application import CenterApplication
from eventcenter.storage.inbox import deliveries

CHILD = Path(__file__).resolve().parents[1] / "crash_child.py"
SEED = 20240611
KILLS = 3
KILL_AFTER_S = (0.2, 1.5)
START_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 60.0
GONE_TIMEOUT_S = 10.0
POLL_S = 0.02
SUBSCRIPTIONS = {"all": "work.", "orders": "work.orders."}  # name -> type prefix it matches


@dataclass
class Accepted:
    type: str
    tenant: str
    fail: bool
    keys: set[str] = field(default_factory=set)

    def subscriptions(self) -> list[str]:
        return [name for name, prefix in SUBSCRIPTIONS.items() if self.type.startswith(prefix)]


@dataclass
class Store:
    """The store the children share, and what the test reads from it between two children."""

    url: str
    data_dir: Path
    ledger: Path
    engine: Engine

    def child_url(self, run: int) -> str:
        """The URL a child connects with: on PostgreSQL its connections carry its run's name."""
        if make_url(self.url).get_backend_name() != "postgresql":
            return self.url
        return f"{self.url}&application_name={self.application(run)}"

    def application(self, run: int) -> str:
        return f"crash-child-{id(self) % 100_000}-{run}"

    def wait_until_gone(self, run: int) -> None:
        """On PostgreSQL, wait until the killed child's sessions are over: a COMMIT it sent just
        before dying may still be carried out, and the count must come after it."""
        if self.engine.dialect.name != "postgresql":
            return
        deadline = time.monotonic() + GONE_TIMEOUT_S
        query = text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name")
        while True:
            with self.engine.connect() as connection:
                left = connection.execute(query, {"name": self.application(run)}).scalar_one()
            if left == 0:
                return
            assert time.monotonic() < deadline, f"{left} sessions of the killed child linger"
            time.sleep(POLL_S)

    def stored_deliveries(self) -> int:
        with self.engine.connect() as connection:
            if not inspect(connection).has_table(deliveries.name):
                return 0
            query = select(func.count()).select_from(deliveries)
            return int(connection.execute(query).scalar_one())


@pytest.fixture
def store(database_url: str, tmp_path: Path) -> Iterator[Store]:
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    engine = create_engine(database_url, poolclass=NullPool)
    yield Store(database_url, tmp_path / "data", ledger, engine)
    engine.dispose()


def spawn(store: Store, run: int, mode: str, seed: int) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        str(CHILD),
        "--url",
        store.child_url(run),
        "--data-dir",
        str(store.data_dir),
        "--ledger",
        str(store.ledger),
        "--run",
        str(run),
        "--mode",
        mode,
        "--seed",
        str(seed),
    ]
    with (store.ledger / f"stderr-{run}.log").open("wb") as errors:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors)


def wait_for_file(path: Path, child: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not path.exists():
        if child.poll() is not None:
            errors = (path.parent / f"stderr-{path.name.split('-')[-1]}.log").read_text()
            pytest.fail(f"child exited with {child.returncode} before {path.name}:\n{errors}")
        assert time.monotonic() < deadline, f"no {path.name} after {START_TIMEOUT_S}s"
        time.sleep(POLL_S)


def read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def read_accepted(ledger: Path) -> dict[str, Accepted]:
    accepted: dict[str, Accepted] = {}
    path = ledger / "accepted.log"
    for line in path.read_text().splitlines() if path.exists() else []:
        _, event_id, type_, tenant, fail, key = line.split(" ")
        entry = accepted.setdefault(event_id, Accepted(type_, tenant, fail == "1"))
        if key != "-":
            entry.keys.add(key)
    return accepted


def read_handled(ledger: Path) -> Counter[tuple[str, str]]:
    path = ledger / "handled.log"
    lines = path.read_text().splitlines() if path.exists() else []
    return Counter((line.split(" ")[1], line.split(" ")[2]) for line in lines)


def read_trail(store: Store) -> tuple[Counter[tuple[str, str]], Counter[str]]:
    """Dead letters per (event id, subscription), and recorded decisions per cause."""
    settings = CenterSettings(database_url=store.url, data_dir=store.data_dir)
    reader = CenterReader(settings)
    try:
        letters = reader.dead_letters()
    finally:
        reader.close()
    assert {row.error_type for row in letters} <= {"PermanentFailure"}, letters[:3]
    dead = Counter((str(row.event["id"]), row.subscription) for row in letters)
    app = CenterApplication(store.url, cache_size=0, create_tables=False)
    try:
        causes = Counter(
            domain_event.cause
            for _, domain_event in app.read_events()
            if isinstance(domain_event, ProcessorLog.DecisionRecorded)  # type: ignore[attr-defined]
        )
    finally:
        app.close()
    return dead, causes


def test_every_accepted_event_ends_handled_or_dead_lettered_across_kill_9(
    store: Store, request: pytest.FixtureRequest
) -> None:
    backend = request.node.callspec.id
    rng = random.Random(f"{SEED}-{backend}")
    recovered: dict[int, int] = {}  # run -> deliveries it reported as recovered
    expected: dict[int, int] = {}  # run -> deliveries the store held when it started
    for run in range(1, KILLS + 1):
        expected[run] = store.stored_deliveries()
        child = spawn(store, run, "publish", rng.randrange(1 << 30))
        try:
            wait_for_file(store.ledger / f"ready-{run}", child)
            time.sleep(rng.uniform(*KILL_AFTER_S))  # the random moment of the crash
        finally:
            child.kill()  # SIGKILL, this child's pid only
            child.wait()
        store.wait_until_gone(run)
        started = read_json(store.ledger / f"started-{run}.json")
        if started is not None:
            recovered[run] = started["redelivered_at_start"]

    drain_run = KILLS + 1
    expected[drain_run] = store.stored_deliveries()
    drain = spawn(store, drain_run, "drain", 0)
    try:
        returncode = drain.wait(DRAIN_TIMEOUT_S)
    finally:
        if drain.poll() is None:
            drain.kill()
            drain.wait()
    drain_log = (store.ledger / f"stderr-{drain_run}.log").read_text()
    assert returncode == 0, drain_log
    assert "Traceback" not in drain_log
    started = read_json(store.ledger / f"started-{drain_run}.json")
    done = read_json(store.ledger / f"done-{drain_run}.json")
    assert started is not None
    assert done is not None
    recovered[drain_run] = started["redelivered_at_start"]

    # Each start recovered exactly what the store held, and said so in its log.
    for run, count in recovered.items():
        assert count == expected[run], f"run {run}: recovered {count}, stored {expected[run]}"
        if count:
            log = (store.ledger / f"stderr-{run}.log").read_text()
            assert f"recovered {count} deliveries not ended before this start" in log
    assert sum(recovered.values()) > 0, "no crash left work behind: the test proved nothing"
    assert done["left_in_store"] == 0
    assert done["unrecorded"] == 0
    assert store.stored_deliveries() == 0

    accepted = read_accepted(store.ledger)
    handled = read_handled(store.ledger)
    dead, causes = read_trail(store)
    assert accepted, "the children accepted nothing before the kills"
    missing: list[tuple[str, str]] = []
    for event_id, entry in accepted.items():
        for subscription in entry.subscriptions():
            delivery = (event_id, subscription)
            if entry.fail:
                assert dead[delivery] == 1, f"{delivery}: {dead[delivery]} dead letters"
                assert handled[delivery] == 0
            else:
                assert dead[delivery] == 0, f"{delivery} was dead-lettered"
                if handled[delivery] == 0:
                    missing.append(delivery)
    assert missing == [], f"{len(missing)} accepted deliveries never handled: {missing[:5]}"

    assert max(dead.values(), default=1) == 1, "a delivery was dead-lettered twice"
    twice = {cause: n for cause, n in causes.items() if n > 1}
    assert twice == {}, "a decision was recorded twice for one cause"
    for event_id, subscription in handled + dead:
        assert causes[f"{event_id}/{subscription}/work.seen/1"] == 1

    redelivered = sum(n - 1 for n in handled.values())
    assert redelivered <= sum(recovered.values()), "handlers ran again for unrecovered work"

    keys = done["keys"]
    assert len(keys) == sum(len(entry.keys) for entry in accepted.values())
    assert {key: ids[1] for key, ids in keys.items()} == {
        key: ids[0] for key, ids in keys.items()
    }, "an accepted idempotency key was forgotten"
    print(
        f"\n{backend}: {len(accepted)} events accepted, {sum(handled.values())} handled"
        f" ({redelivered} again after a crash), {sum(dead.values())} dead letters,"
        f" recovered per start {recovered}, {len(keys)} keys republished"
    )
