"""kill -9 in the middle of a mode switch: a data source loses nothing and admits nothing twice.

A center runs in a child process (tests/source_crash_child.py) with one data source: its push
path is a real Redis stream, read through a TCP proxy the test cuts to make it fail; its poll
path is a small HTTP feed of the same items, served by the test. While the test keeps producing
items (each a new version of one of a few keys, added to the stream and to the feed), it:

1. cuts the push path and kills the child with SIGKILL in the middle of the switch
   ``event_only -> hybrid``: recorded in the source's log, its first poll not yet answered
   (the feed holds it);
2. restarts it (it resumes in ``hybrid`` from the source's log), waits for ``hybrid ->
   polling_only``, restores the push path and kills it at a random moment right after
   ``polling_only -> hybrid``;
3. restarts it, waits until push brought it back to ``event_only``, cuts the push path again
   and kills it at a random moment around the switch that follows;
4. restores the push path, restarts it, stops producing, waits until everything produced was
   handled, and stops it gracefully (SIGTERM).

Then, from the handlers' ledger (fsync'ed per line) and the center's own tables: every produced
``(key, version)`` was handled at least once (after a kill, a delivery may run again: the same
event id), each by exactly one event id (it was admitted once, whichever path brought it, across
every kill), the center's idempotency table holds exactly the produced identities with those
ids, no delivery is left in the store, both paths carried items, and the switches are in the
source's log. SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import random
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from redis import Redis
from sqlalchemy import Engine, create_engine, func, make_url, select, text
from sqlalchemy.pool import NullPool

from eventcenter.storage.application import CenterApplication
from eventcenter.storage.inbox import deliveries, idempotency
from tests.faults import TcpProxy

pytestmark = pytest.mark.redis

CHILD = Path(__file__).resolve().parents[1] / "source_crash_child.py"
SEED = 20240612
KEYS = 25
PRODUCE_EVERY_S = 0.01
START_TIMEOUT_S = 30.0
SWITCH_TIMEOUT_S = 20.0
DRAIN_TIMEOUT_S = 40.0
STOP_TIMEOUT_S = 20.0
GONE_TIMEOUT_S = 10.0
POLL_S = 0.02
PAGE = 200
IDENTITY_PREFIX = "acme\norders\n"  # how the center scopes the source's idempotency keys


class FeedServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A child killed in the middle of a poll drops its connection: expected here."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class Feed:
    """The poll path's upstream: ``GET /items?since=<n>`` answers the items after the n-th.

    ``hold()`` makes it keep the next polls waiting (``held`` is set once one waits) until
    ``release()``: a child killed then is caught between recording a switch to a polling mode
    and its first poll's answer, the middle of the switch.
    """

    def __init__(self) -> None:
        self._items: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._holding = False
        self._released = threading.Event()
        self.held = threading.Event()
        feed = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if feed._holding:
                    feed.held.set()
                    feed._released.wait(STOP_TIMEOUT_S)
                query = parse_qs(urlsplit(self.path).query)
                since = int((query.get("since") or ["0"])[0] or "0")
                with feed._lock:
                    page = feed._items[since : since + PAGE]
                body = json.dumps({"items": page, "cursor": str(since + len(page))}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = FeedServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/items?since={{cursor}}"

    def hold(self) -> None:
        self._released.clear()
        self.held.clear()
        self._holding = True

    def release(self) -> None:
        self._holding = False
        self._released.set()

    def append(self, item: dict[str, Any]) -> None:
        with self._lock:
            self._items.append(item)

    def close(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class Producer(threading.Thread):
    """The source system: every PRODUCE_EVERY_S a new version of one of KEYS keys, added to
    the Redis stream (directly, not through the proxy) and to the feed."""

    def __init__(self, redis_url: str, stream: str, feed: Feed) -> None:
        super().__init__(name="producer", daemon=True)
        self._client = Redis.from_url(redis_url)
        self._stream = stream
        self._feed = feed
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._produced: list[tuple[str, str]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        versions: Counter[str] = Counter()
        n = 0
        try:
            while not self._stopping.wait(PRODUCE_EVERY_S):
                key = f"o-{n % KEYS}"
                versions[key] += 1
                item = {"key": key, "version": versions[key], "data": {"n": n}}
                self._client.xadd(self._stream, {"item": json.dumps(item)})
                self._feed.append(item)
                with self._lock:
                    self._produced.append((key, str(versions[key])))
                n += 1
        except BaseException as error:
            self.error = error
        finally:
            self._client.close()

    def produced(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._produced)

    def finish(self) -> list[tuple[str, str]]:
        self._stopping.set()
        self.join(STOP_TIMEOUT_S)
        assert not self.is_alive(), "the producer did not stop"
        assert self.error is None, f"the producer failed: {self.error!r}"
        return self.produced()


@dataclass
class Handled:
    """The ledger: per identity the event ids handled, and the paths the items came by."""

    ids: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    lines: int = 0
    paths: Counter[str] = field(default_factory=Counter)

    @classmethod
    def read(cls, ledger: Path) -> Handled:
        handled = cls()
        path = ledger / "handled.log"
        for line in path.read_text().splitlines() if path.exists() else []:
            _, event_id, key, version, via, _ = line.split(" ")
            handled.ids.setdefault((key, version), set()).add(event_id)
            handled.paths[via] += 1
            handled.lines += 1
        return handled


@dataclass
class Run:
    """The child processes on one store, and what the test controls around them."""

    url: str
    tmp: Path
    redis_url: str
    stream: str
    proxy: TcpProxy
    feed: Feed
    engine: Engine
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def ledger(self) -> Path:
        return self.tmp / "ledger"

    def application(self, run: int) -> str:
        return f"source-crash-{id(self) % 100_000}-{run}"

    def child_url(self, run: int) -> str:
        """On PostgreSQL each child's connections carry its run's name (see wait_until_gone)."""
        if make_url(self.url).get_backend_name() != "postgresql":
            return self.url
        return f"{self.url}&application_name={self.application(run)}"

    def spawn(self, run: int) -> subprocess.Popen[bytes]:
        command = [
            sys.executable,
            str(CHILD),
            "--url",
            self.child_url(run),
            "--data-dir",
            str(self.tmp / "data"),
            "--ledger",
            str(self.ledger),
            "--run",
            str(run),
            "--redis-url",
            f"redis://127.0.0.1:{self.proxy.port}/0",
            "--stream",
            self.stream,
            "--poll-url",
            self.feed.url,
        ]
        with (self.ledger / f"stderr-{run}.log").open("wb") as errors:
            child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors)
        self.children.append(child)
        self.wait_for(lambda: (self.ledger / f"started-{run}").exists(), child, run, "start")
        return child

    def stderr(self, run: int) -> str:
        return (self.ledger / f"stderr-{run}.log").read_text()

    def wait_for(
        self,
        condition: Any,
        child: subprocess.Popen[bytes],
        run: int,
        what: str,
        timeout: float = START_TIMEOUT_S,
    ) -> None:
        """Wait (bounded) until ``condition()``; fail with the child's log if it died."""
        deadline = time.monotonic() + timeout
        while not condition():
            if child.poll() is not None:
                pytest.fail(
                    f"run {run} exited ({child.returncode}) before {what}:\n{self.stderr(run)}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"run {run}: no {what} after {timeout}s:\n{self.stderr(run)}")
            time.sleep(POLL_S)

    def wait_for_switch(self, child: subprocess.Popen[bytes], run: int, switch: str) -> None:
        """Wait until the child logged ``switch`` (``"event_only -> hybrid"``): the switch is
        recorded in the source's log and the new mode is being started."""
        line = f"source acme/orders: {switch}"
        self.wait_for(lambda: line in self.stderr(run), child, run, switch, SWITCH_TIMEOUT_S)

    def wait_for_mode(self, child: subprocess.Popen[bytes], run: int, mode: str) -> None:
        """Wait until the child runs its source in ``mode`` (started in it, or switched to it)."""

        def there() -> bool:
            log = self.stderr(run)
            return f"source acme/orders started in {mode}" in log or f"-> {mode} (" in log

        self.wait_for(there, child, run, f"mode {mode}", SWITCH_TIMEOUT_S)

    def kill(self, child: subprocess.Popen[bytes], run: int) -> None:
        child.kill()  # SIGKILL, this child's pid only
        child.wait()
        self.wait_until_gone(run)

    def wait_until_gone(self, run: int) -> None:
        """On PostgreSQL, wait until the killed child's sessions are over: a COMMIT it sent just
        before dying may still be carried out, and its lease must be free for the next one."""
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

    def stop(self, child: subprocess.Popen[bytes], run: int) -> dict[str, Any]:
        child.terminate()  # SIGTERM: a graceful stop
        try:
            returncode = child.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"run {run} did not stop within {STOP_TIMEOUT_S}s:\n{self.stderr(run)}")
        assert returncode == 0, self.stderr(run)
        done = self.ledger / f"done-{run}.json"
        assert done.exists(), self.stderr(run)
        result: dict[str, Any] = json.loads(done.read_text())
        return result

    def admitted(self) -> dict[str, str]:
        """The source's idempotency rows: ``key@version`` -> event id."""
        with self.engine.connect() as connection:
            rows = connection.execute(select(idempotency.c.ident, idempotency.c.event_id))
            return {
                ident.removeprefix(IDENTITY_PREFIX): event_id
                for ident, event_id in rows
                if ident.startswith(IDENTITY_PREFIX)
            }

    def deliveries_left(self) -> int:
        with self.engine.connect() as connection:
            return int(
                connection.execute(select(func.count()).select_from(deliveries)).scalar_one()
            )

    def switches(self) -> list[str]:
        app = CenterApplication(self.url, cache_size=0, create_tables=False)
        try:
            return [
                type(event).__qualname__
                for _, event in app.read_events()
                if type(event).__qualname__ == "SourceLog.ModeSwitched"
            ]
        finally:
            app.close()


@pytest.fixture
def run(database_url: str, tmp_path: Path, redis_url: str) -> Iterator[Run]:
    stream = f"test-source-crash-{secrets.token_hex(6)}"
    (tmp_path / "ledger").mkdir()
    target = urlsplit(redis_url)
    engine = create_engine(database_url, poolclass=NullPool)
    feed = Feed()
    try:
        with TcpProxy(target.hostname or "127.0.0.1", target.port or 6379) as proxy:
            built = Run(database_url, tmp_path, redis_url, stream, proxy, feed, engine)
            try:
                yield built
            finally:
                for child in built.children:
                    if child.poll() is None:
                        child.kill()
                        child.wait()
    finally:
        feed.close()
        engine.dispose()
        client = Redis.from_url(redis_url)
        client.delete(stream)
        client.close()


def test_killed_in_the_middle_of_switches_nothing_is_lost_or_admitted_twice(
    run: Run, request: pytest.FixtureRequest
) -> None:
    backend = request.node.callspec.id
    rng = random.Random(f"{SEED}-{backend}")
    producer = Producer(run.redis_url, run.stream, run.feed)
    producer.start()
    try:
        # 1. Push fails in event_only: killed in the middle of the switch to hybrid, after
        #    it was recorded, while the first poll waits for its answer.
        child = run.spawn(1)
        run.wait_for(lambda: Handled.read(run.ledger).paths["push"] > 0, child, 1, "push items")
        run.feed.hold()
        run.proxy.cut()
        run.wait_for_switch(child, 1, "event_only -> hybrid")
        run.wait_for(run.feed.held.is_set, child, 1, "the first poll", SWITCH_TIMEOUT_S)
        run.kill(child, 1)
        run.feed.release()

        # 2. Resumes in hybrid, push still failing: polling_only; push comes back: killed
        #    while it climbs back to hybrid.
        child = run.spawn(2)
        run.wait_for_switch(child, 2, "hybrid -> polling_only")
        run.proxy.restore()
        run.wait_for_switch(child, 2, "polling_only -> hybrid")
        time.sleep(rng.uniform(0.0, 0.2))
        run.kill(child, 2)

        # 3. Back to event_only (a push backlog read in several batches may have brought it
        #    there before the kill), then push fails again: killed at a random moment around
        #    the switch down (it comes about a second after the cut).
        child = run.spawn(3)
        run.wait_for_mode(child, 3, "event_only")
        run.proxy.cut()
        time.sleep(rng.uniform(0.0, 2.5))
        run.kill(child, 3)

        # 4. Everything works again; the producer stops; the last run catches up and stops.
        run.proxy.restore()
        child = run.spawn(4)
    finally:
        produced = producer.finish()
    expected = set(produced)
    assert len(expected) == len(produced)
    run.wait_for(
        lambda: expected <= Handled.read(run.ledger).ids.keys(),
        child,
        4,
        "every produced item handled",
        DRAIN_TIMEOUT_S,
    )
    done = run.stop(child, 4)

    handled = Handled.read(run.ledger)
    missing = expected - handled.ids.keys()
    assert missing == set(), f"{len(missing)} produced items never handled: {sorted(missing)[:5]}"
    invented = handled.ids.keys() - expected
    assert invented == set(), f"handled items nobody produced: {sorted(invented)[:5]}"
    twice = {identity: ids for identity, ids in handled.ids.items() if len(ids) > 1}
    assert twice == {}, f"{len(twice)} items admitted more than once: {list(twice.items())[:3]}"
    admitted = run.admitted()
    assert admitted == {
        f"{key}@{version}": next(iter(ids)) for (key, version), ids in handled.ids.items()
    }, "the idempotency table and the handlers disagree"
    assert done["left_in_store"] == 0
    assert run.deliveries_left() == 0
    assert handled.paths["push"] > 0
    assert handled.paths["poll"] > 0, "the poll path carried nothing: no switch took effect"
    switches = run.switches()
    assert len(switches) >= 4, switches  # down, down, up (and up, down when not killed first)
    print(
        f"\n{backend}: {len(expected)} items produced and admitted once,"
        f" {handled.lines} handled ({handled.lines - len(expected)} again after a kill),"
        f" by push {handled.paths['push']} / poll {handled.paths['poll']},"
        f" {len(switches)} switches recorded"
    )
