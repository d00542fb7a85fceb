"""What the benchmark's sections share: the event stream, percentiles, fresh databases."""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import importlib
import json
import math
import os
import random
import secrets
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.exc import SQLAlchemyError

from eventcenter.domain.event import Event
from eventcenter.domain.priority import Priority

P = ParamSpec("P")
T = TypeVar("T")

PG_URL_ENV = "EVENTCENTER_TEST_PG_URL"
DEFAULT_PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
CONNECT_TIMEOUT_S = 3
BACKENDS = ("sqlite", "postgresql")

EVENT_TYPE = "bench.tick"
TENANTS = ("acme", "globex", "initech", "umbrella")
#: Share of each priority in the stream (CRITICAL is rare, as it starves the others).
PRIORITY_MIX = (
    (Priority.CRITICAL, 0.05),
    (Priority.HIGH, 0.20),
    (Priority.NORMAL, 0.50),
    (Priority.LOW, 0.25),
)


# the event stream ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Spec:
    """One event to publish; every system under comparison receives the same list."""

    tenant: str
    priority: Priority
    payload: dict[str, Any]

    def item(self) -> dict[str, Any]:
        """The event as a ``publish_batch`` item (what HTTP ingest or a data source hands in)."""
        return {
            "type": EVENT_TYPE,
            "tenant": self.tenant,
            "priority": self.priority,
            "payload": self.payload,
        }


def small_payload(seq: int) -> dict[str, Any]:
    return {"seq": seq, "service": "checkout", "latency_ms": 12.5, "region": "eu-west-1"}


def nested_payload(seq: int) -> dict[str, Any]:
    """About 10 KB of JSON, five levels deep: an order with 42 lines and their attributes."""
    lines = [
        {
            "sku": f"SKU-{seq % 997:04d}-{n:03d}",
            "quantity": n % 7 + 1,
            "price": {"amount": 19.99 + n, "currency": "EUR", "tax": {"rate": 0.2, "code": "S"}},
            "attributes": {"colour": "blue", "size": "L", "tags": ["gift", "fragile", "eu"]},
            "warehouse": {"id": f"wh-{n % 5}", "zone": "A", "slot": n},
        }
        for n in range(42)
    ]
    return {
        "seq": seq,
        "order": {
            "id": f"order-{seq}",
            "customer": {"id": f"cust-{seq % 1000}", "segment": "retail", "country": "DE"},
            "lines": lines,
            "notes": "deliver to the side entrance, ring twice",
        },
    }


def event_stream(
    count: int,
    seed: int = 7,
    *,
    tenants: Sequence[str] | int = TENANTS,
    payload: Callable[[int], dict[str, Any]] = small_payload,
) -> list[Spec]:
    """``count`` events at mixed priorities; payload ``seq`` is the index.

    ``tenants`` is a list of names used in turn, or a number of tenants drawn at random.
    """
    rng = random.Random(seed)
    priorities = [p for p, _ in PRIORITY_MIX]
    weights = [w for _, w in PRIORITY_MIX]
    chosen = rng.choices(priorities, weights, k=count)
    if isinstance(tenants, int):
        names = [f"tenant-{rng.randrange(tenants)}" for _ in range(count)]
    else:
        names = [tenants[i % len(tenants)] for i in range(count)]
    return [Spec(names[i], chosen[i], payload(i)) for i in range(count)]


async def noop_handler(event: Event, ctx: Any) -> None:
    return None


class Probe:
    """Publish times and handler-entry latencies, indexed by the payload's ``seq``."""

    def __init__(self, count: int) -> None:
        self.sent = [0.0] * count
        self.latency = [math.nan] * count

    async def handler(self, event: Event, ctx: Any) -> None:
        seq = event.payload["seq"]
        self.latency[seq] = time.perf_counter() - self.sent[seq]

    def summary(self, upto: int | None = None) -> dict[str, float]:
        return latency_summary(self.latency[:upto])


# statistics ------------------------------------------------------------------------------------


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_summary(samples: Sequence[float]) -> dict[str, float]:
    """count, p50/p99/max in milliseconds; ``missing`` counts events never seen by a handler."""
    seen = sorted(s for s in samples if not math.isnan(s))
    missing = len(samples) - len(seen)
    if not seen:
        return {"count": 0, "missing": missing, "p50_ms": -1.0, "p99_ms": -1.0, "max_ms": -1.0}
    return {
        "count": len(seen),
        "missing": missing,
        "p50_ms": round(percentile(seen, 0.50) * 1000, 3),
        "p99_ms": round(percentile(seen, 0.99) * 1000, 3),
        "max_ms": round(seen[-1] * 1000, 3),
    }


def fresh_run(func: Callable[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run one measurement on a new event loop after a full collection (same start for all)."""
    gc.collect()
    return asyncio.run(func(*args, **kwargs))


def machine_busy_s() -> float | None:
    """CPU seconds every core of the machine has been busy since boot (all processes: the
    servers, the bench, anything else), from ``/proc/stat``; None where there is none."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            ticks = [int(value) for value in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # guest time is in user already


class CpuWindow:
    """CPU spent from its creation to :meth:`per_item`: by this process (every thread: the
    loop, the writer, the drivers) and by the whole machine (the broker's and the database's
    servers too), in microseconds per item. The machine's figure counts any other work on
    the machine as well, in ticks of 10 ms: read it over windows of a second or more."""

    def __init__(self) -> None:
        self._process = time.process_time()
        self._machine = machine_busy_s()

    def per_item(self, count: int) -> dict[str, float | None]:
        process = time.process_time() - self._process
        machine_now = machine_busy_s()
        machine = None
        if machine_now is not None and self._machine is not None:
            machine = round((machine_now - self._machine) / count * 1e6, 1)
        return {"process_cpu_us": round(process / count * 1e6, 1), "machine_cpu_us": machine}


def machine_load() -> dict[str, float]:
    """The 1/5/15-minute load averages: other work on the cores moves every figure."""
    one, five, fifteen = os.getloadavg()
    return {"1m": round(one, 2), "5m": round(five, 2), "15m": round(fifteen, 2)}


# databases -------------------------------------------------------------------------------------


def sqlite_url(directory: Path, name: str) -> str:
    return f"sqlite:///{directory / name}"


def with_search_path(base_url: str, schema: str) -> str:
    separator = "&" if "?" in base_url else "?"
    return f"{base_url}{separator}options=-csearch_path%3D{schema}"


def shown(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


@contextmanager
def postgres_schema(base_url: str) -> Iterator[str]:
    """A fresh schema on the server; yields the URL that uses it, drops it afterwards.

    Raises SQLAlchemyError when the server cannot be reached (the caller reports it).
    """
    engine: Engine = create_engine(
        base_url,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
        isolation_level="AUTOCOMMIT",
        pool_size=1,
    )
    schema = f"bench_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        with engine.connect() as connection:
            connection.execute(text(f"CREATE SCHEMA {schema}"))
        try:
            yield with_search_path(base_url, schema)
        finally:
            with engine.connect() as connection:
                connection.execute(text("SET lock_timeout = '10s'"))
                connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
    finally:
        engine.dispose()


@contextmanager
def fresh_database(backend: str, pg_url: str) -> Iterator[tuple[str, Path]]:
    """An empty database of ``backend`` and a scratch directory: (URL, directory).

    SQLite: a file in the directory. PostgreSQL: a new schema on ``pg_url``, dropped after.
    """
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        directory = Path(scratch)
        if backend == "sqlite":
            yield sqlite_url(directory, "center.db"), directory
            return
        with postgres_schema(pg_url) as url:
            yield url, directory


def postgres_reason(pg_url: str) -> str | None:
    """None when the server answers; else why not (one line, for the report)."""
    try:
        with postgres_schema(pg_url):
            return None
    except SQLAlchemyError as error:
        return str(getattr(error, "orig", None) or error).strip().splitlines()[0]


def unavailable(pg_url: str, reason: str) -> dict[str, Any]:
    return {"status": "unavailable", "url": shown(pg_url), "reason": reason}


# report tables -----------------------------------------------------------------------------------


def fmt(value: Any) -> str:
    """A figure as the report tables show it (thousands separated, booleans as yes/NO)."""
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    if value is None:
        return "-"
    return str(value)


def table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    text_columns: frozenset[str] = frozenset(),
) -> Table:
    """A report table: the first column and ``text_columns`` left-aligned, figures right."""
    grid = Table(title=title, title_justify="left")
    for i, column in enumerate(columns):
        grid.add_column(column, justify="left" if i == 0 or column in text_columns else "right")
    for row in rows:
        grid.add_row(*(fmt(v) for v in row))
    return grid


def targets_table(report: dict[str, Any]) -> Table:
    """The closing summary of a bench report: each target, its goal, value and verdict."""
    config = report["config"]
    return table(
        f"Targets (total {config['seconds']:.1f} s on {config['cpus']} cores; load average"
        f" (1/5/15 min) {_load(config['load']['start'])} at the start,"
        f" {_load(config['load']['end'])} at the end)",
        ["target", "goal", "value", "met"],
        [[t["name"], t["target"], t["value"], _met(t["met"])] for t in report["targets"]],
    )


def _load(load: dict[str, float]) -> str:
    return " / ".join(f"{v:.2f}" for v in load.values())


def _met(met: bool | None) -> str:
    return "not measured" if met is None else ("met" if met else "NOT MET")


Report = dict[str, Any]


def run_report(
    args: argparse.Namespace,
    run: Callable[[argparse.Namespace, Console], Report],
    render: Callable[[Report, Console], None],
    *,
    width: int,
) -> Report:
    """Run a bench and show its tables: on stdout, or on stderr with ``--json`` (the JSON then
    goes to stdout, see :func:`print_json`). Piped, rich would assume 80 columns: ``width``."""
    console = Console(stderr=args.json)
    if not console.is_terminal:
        console.width = width
    report = run(args, console)
    render(report, console)
    return report


def print_json(args: argparse.Namespace, report: Report) -> None:
    """The whole report as JSON on stdout, when ``--json`` asked for it."""
    if args.json:
        print(json.dumps(report, indent=2, default=str))


def code_fingerprint(modules: Sequence[str]) -> dict[str, str]:
    """sha256 prefixes of the measured modules: runs are comparable only when these match."""
    fingerprint = {}
    for name in modules:
        source = Path(str(importlib.import_module(name).__file__)).read_bytes()
        fingerprint[name.removeprefix("eventcenter.")] = hashlib.sha256(source).hexdigest()[:12]
    return fingerprint


def report_parser(prog: str, description: str, quick: str) -> argparse.ArgumentParser:
    """The options every report bench has: ``--json`` and ``--quick`` (``quick`` says what
    it leaves out)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--json", action="store_true", help="JSON on stdout, tables on stderr")
    parser.add_argument("--quick", action="store_true", help=quick)
    return parser


def add_pg_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(PG_URL_ENV, DEFAULT_PG_URL),
        help=f"PostgreSQL server (default: ${PG_URL_ENV} or {DEFAULT_PG_URL})",
    )
