"""What the lease costs the writer: fence per write transaction, check, acquire and release.

Run from the repository root::

    .venv/bin/python -m bench.lease [--pg-url URL] [--transactions N]

On each store (a temporary SQLite file; PostgreSQL in a fresh schema, dropped afterwards):

- **fence statement**: ``lease.fence(connection)`` alone, timed inside a transaction of its
  own (one UPDATE of one row by primary key: one round trip).
- **write transaction**: a transaction that inserts one row, without and with a fence as its
  first statement; the difference is what fencing adds to a write. N of each, interleaved
  with the fence-alone samples; medians.
- **check**: median of 200 ``lease.check()`` (PostgreSQL: a pg_locks probe and a heartbeat).
- **acquire + release**: median of 20 cycles (PostgreSQL: a new connection each time).

Figures are wall-clock medians or means on whatever else the machine is doing; compare the
with/without columns of one run rather than figures across runs.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from eventcenter.storage.lease import Lease

PG_URL_ENV = "EVENTCENTER_TEST_PG_URL"
DEFAULT_PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
CENTER = "bench"


def median_us(action: Callable[[], object], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e6


def transaction_us(engine: Engine, lease: Lease | None, n: int) -> float:
    """Microseconds for one one-row write transaction, fenced when ``lease`` is given."""
    started = time.perf_counter()
    with engine.begin() as connection:
        if lease is not None:
            lease.fence(connection)
        connection.execute(text("INSERT INTO bench_rows (n) VALUES (:n)"), {"n": n})
    return (time.perf_counter() - started) * 1e6


def fence_us(engine: Engine, lease: Lease) -> float:
    """Microseconds for the fence statement alone, in a transaction of its own."""
    with engine.begin() as connection:
        started = time.perf_counter()
        lease.fence(connection)
        return (time.perf_counter() - started) * 1e6


def measure(url: str, transactions: int) -> dict[str, float]:
    engine = create_engine(url)
    lease = Lease(url, CENTER)
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE bench_rows (n INTEGER NOT NULL)"))
        lease.acquire()
        for n in range(transactions // 10):  # warm up both paths
            transaction_us(engine, lease if n % 2 else None, n)
        # interleaved, so that load from elsewhere hits both alike
        plain, fenced, alone = [], [], []
        for n in range(transactions):
            plain.append(transaction_us(engine, None, n))
            fenced.append(transaction_us(engine, lease, n))
            alone.append(fence_us(engine, lease))
        check = median_us(lease.check, 200)
        lease.release()

        def cycle() -> None:
            lease.acquire()
            lease.release()

        cycle_us = median_us(cycle, 20)
    finally:
        lease.release()
        engine.dispose()
    return {
        "fence statement": statistics.median(alone),
        "write transaction": statistics.median(plain),
        "fenced write transaction": statistics.median(fenced),
        "fence adds": statistics.median(fenced) - statistics.median(plain),
        "check": check,
        "acquire + release": cycle_us,
    }


@contextmanager
def postgres_schema(base_url: str) -> Iterator[str]:
    schema = f"bench_{os.getpid()}_{secrets.token_hex(3)}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f"CREATE SCHEMA {schema}"))
        separator = "&" if "?" in base_url else "?"
        yield f"{base_url}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()


def report(store: str, figures: dict[str, float]) -> None:
    print(f"\n{store}")
    for name, value in figures.items():
        print(f"  {name:<26} {value:10.1f} µs")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lease", description=__doc__)
    parser.add_argument("--pg-url", default=os.environ.get(PG_URL_ENV, DEFAULT_PG_URL))
    parser.add_argument("--transactions", type=int, default=2000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as directory:
        report("SQLite", measure(f"sqlite:///{Path(directory) / 'bench.db'}", args.transactions))
    try:
        with postgres_schema(args.pg_url) as url:
            report("PostgreSQL", measure(url, args.transactions))
    except SQLAlchemyError as error:
        print(f"\nPostgreSQL unavailable: {str(error).splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
