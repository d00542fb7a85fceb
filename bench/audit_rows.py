"""A large ``center_audit`` made up, and the audit queries timed against it.

The rows are what many busy centers' read model would hold: ``tenants`` tenants with a Zipf
skew (the largest has about an eighth of all rows, the smallest a few hundred thousandths),
about 30 kinds of decision in correlation chains of 3 to 10 rows (a deployment's tuning, a
source's mode switches and RCA case, handler decisions, breaker moves, dead letters), each
chain a few minutes long, the chains spread over ``days`` days; positions follow time. They are
loaded in bulk (``COPY`` on PostgreSQL, ``executemany`` of 50,000 rows per transaction on
SQLite) into the table with its indexes dropped, which are then built and the table analysed:
what is measured is the query side, so the load does not go through the read model.

Each query is the function the CLI and the HTTP API call (:mod:`eventcenter.projections.queries`),
in a session of its own, rows turned into entries included.
"""

from __future__ import annotations

import bisect
import csv
import heapq
import io
import itertools
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

import orjson
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from bench.common import percentile
from eventcenter.projections import queries, tables
from eventcenter.projections.catalog import AuditEntry
from eventcenter.projections.explain import explain
from eventcenter.projections.queries import AuditFilter

DAY = 86_400.0
CHAIN_GAP_S = 20.0  # mean seconds between two decisions of one chain
ZIPF_S = 1.0
BREAKERS = 20

#: Chains by what they are about: (share of chains, aggregate, kinds; the first opens it).
SCENARIOS: tuple[tuple[float, str, tuple[str, ...]], ...] = (
    (
        0.40,
        "ProcessorLog",
        (
            "processor.transitioned",
            "frequency.reduce",
            "frequency.restore",
            "deployment.seen",
            "traffic.pause",
            "traffic.resume",
            "retest.flagged",
        ),
    ),
    (
        0.20,
        "SourceLog",
        (
            "mode.switched",
            "mode.rolled_back",
            "threshold.raised",
            "threshold.decayed",
            "source.reconciled",
            "source.reconfigured",
        ),
    ),
    (
        0.10,
        "RcaCase",
        (
            "rca.opened",
            "rca.analysed",
            "rca.strategy_tried",
            "rca.verified",
            "rca.escalated",
            "rca.closed",
        ),
    ),
    (
        0.12,
        "TuningRun",
        (
            "deployment.changed",
            "tuning.requested",
            "tuning.load_test_started",
            "throughput.measured",
            "tuning.frequencies_decided",
            "tuning.dispatched",
        ),
    ),
    (0.08, "BreakerLog", ("breaker.opened", "breaker.half_opened", "breaker.closed")),
    (
        0.10,
        "DeadLetter",
        ("dead_letter.recorded", "dead_letter.replay_claimed", "dead_letter.replayed"),
    ),
)

KINDS = tuple(kind for _, _, kinds in SCENARIOS for kind in kinds)
COLUMNS = tuple(c.name for c in tables.audit.columns)
_NS = uuid5(NAMESPACE_URL, "https://eventcenter/bench/audit")
_PROCESSOR_ID = str(uuid5(_NS, "processor"))

#: A row of ``center_audit`` without its position (added once rows are in time order).
Row = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Chain:
    start: float
    length: int
    tenant: int
    scenario: int
    seq: int


def _uuid(rng: random.Random) -> str:
    return str(UUID(int=rng.getrandbits(128), version=4))


def _chains(rows: int, tenants: int, days: float, end: float, rng: random.Random) -> list[Chain]:
    weights = list(itertools.accumulate(1.0 / (i + 1) ** ZIPF_S for i in range(tenants)))
    shares = list(itertools.accumulate(s for s, _, _ in SCENARIOS))
    chains: list[Chain] = []
    total = 0
    while total < rows:
        length = min(rng.randint(3, 10), rows - total)
        tenant = bisect.bisect(weights, rng.random() * weights[-1])
        scenario = min(bisect.bisect(shares, rng.random() * shares[-1]), len(SCENARIOS) - 1)
        start = end - days * DAY + rng.random() * (days * DAY - CHAIN_GAP_S * 40)
        chains.append(Chain(start, length, tenant, scenario, len(chains)))
        total += length
    chains.sort(key=lambda c: c.start)
    return chains


def _chain_rows(chain: Chain, rng: random.Random, versions: dict[str, int]) -> list[Row]:
    _, aggregate, kinds = SCENARIOS[chain.scenario]
    tenant = f"tenant-{chain.tenant:04d}"
    source = f"source-{rng.randrange(8)}"
    correlation = _uuid(rng)
    if aggregate == "ProcessorLog":
        aggregate_id, subject = _PROCESSOR_ID, "center"
    elif aggregate == "SourceLog":  # as the catalogue: a source's decisions carry no cause id
        aggregate_id = str(uuid5(_NS, f"{tenant}/{source}"))
        subject, correlation = f"{tenant}/{source}", ""
    elif aggregate == "BreakerLog":  # the center's breakers, of no tenant
        name = f"breaker-{rng.randrange(BREAKERS)}"
        aggregate_id = str(uuid5(_NS, name))
        tenant, source, subject, correlation = "", "", name, ""
    else:
        aggregate_id, subject = _uuid(rng), f"{aggregate.lower()}-{chain.seq}"
    at = chain.start
    rows = []
    for step in range(chain.length):
        kind = kinds[0] if step == 0 else rng.choice(kinds)
        # processor transitions are the center's own: no tenant (decisions name theirs)
        row_tenant = "" if kind == "processor.transitioned" else tenant
        version = versions.get(aggregate_id, 0) + 1
        versions[aggregate_id] = version
        observed = round(rng.uniform(120.0, 900.0), 1)
        details = {"kind": kind, "details": {"observed_ms": observed, "threshold_ms": 250}}
        rows.append(
            (
                at,
                row_tenant,
                source,
                kind,
                aggregate,
                aggregate_id,
                version,
                subject,
                "event_only" if kind.startswith("mode.") else "",
                "hybrid" if kind.startswith("mode.") else "",
                f"{kind.replace('.', ' ')}: p95 {observed} ms against 250 ms",
                correlation,
                _uuid(rng),
                orjson.dumps(details).decode(),
            )
        )
        at += rng.expovariate(1.0 / CHAIN_GAP_S)
    return rows


def audit_rows(
    rows: int, tenants: int, days: float, end: float, seed: int = 3
) -> Iterator[tuple[Any, ...]]:
    """``rows`` rows of ``center_audit`` (its columns in order) in time order, positions 1.."""
    rng = random.Random(seed)
    versions: dict[str, int] = {}
    waiting: list[tuple[float, int, Row]] = []  # rows of started chains, by time
    order = itertools.count()
    position = 0
    for chain in _chains(rows, tenants, days, end, rng):
        while waiting and waiting[0][0] < chain.start:  # no later chain starts before these
            position += 1
            yield (position, *heapq.heappop(waiting)[2])
        for row in _chain_rows(chain, rng, versions):
            heapq.heappush(waiting, (row[0], next(order), row))
    while waiting:
        position += 1
        yield (position, *heapq.heappop(waiting)[2])


# loading ---------------------------------------------------------------------------------------


def _batches(rows: Iterator[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    while batch := list(itertools.islice(rows, size)):
        yield batch


def load(engine: Engine, rows: Iterator[tuple[Any, ...]]) -> dict[str, float]:
    """Create ``center_audit`` without its indexes, load ``rows``, build the indexes, analyse;
    seconds of each step."""
    tables.audit.create(engine)
    for index in tables.audit.indexes:
        index.drop(engine)
    started = time.perf_counter()
    if engine.dialect.name == "postgresql":
        _copy(engine, rows)
    else:
        placeholders = ", ".join("?" for _ in COLUMNS)
        statement = f"INSERT INTO center_audit ({', '.join(COLUMNS)}) VALUES ({placeholders})"
        for batch in _batches(rows, 50_000):
            with engine.begin() as connection:
                connection.exec_driver_sql(statement, batch)
    loaded = time.perf_counter()
    for index in tables.audit.indexes:
        index.create(engine)
    indexed = time.perf_counter()
    with engine.begin() as connection:
        connection.execute(
            text("ANALYZE center_audit" if engine.dialect.name == "postgresql" else "ANALYZE")
        )
    return {
        "load_s": round(loaded - started, 1),
        "index_s": round(indexed - loaded, 1),
        "analyze_s": round(time.perf_counter() - indexed, 1),
    }


def _copy(engine: Engine, rows: Iterator[tuple[Any, ...]]) -> None:
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        statement = (
            f"COPY center_audit ({', '.join(COLUMNS)}) FROM STDIN WITH (FORMAT csv, NULL '\\N')"
        )
        for batch in _batches(rows, 100_000):
            buffer = io.StringIO()
            csv.writer(buffer).writerows(batch)
            buffer.seek(0)
            cursor.copy_expert(statement, buffer)
        connection.commit()
    finally:
        connection.close()


# queries ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """A decision picked at random (so tenants are queried in proportion to their volume)."""

    entry: AuditEntry

    @property
    def by_kind(self) -> AuditFilter:
        return AuditFilter(tenant=self.entry.tenant, kinds=(self.entry.kind,))


def samples(engine: Engine, rows: int, count: int, seed: int = 5) -> list[Sample]:
    rng = random.Random(seed)
    with Session(engine) as session:
        found = []
        for _ in range(count):
            entry = queries.audit_entry(session, rng.randint(1, rows))
            assert entry is not None
            found.append(Sample(entry))
    return found


def latest(engine: Engine) -> float:
    with engine.connect() as connection:
        return float(
            connection.execute(
                select(tables.audit.c.at).order_by(tables.audit.c.at.desc()).limit(1)
            ).scalar_one()
        )


#: One query: run it on the session; the number of rows it returned.
Query = Callable[[Session], int]


def _page(flt: AuditFilter, *, newest_first: bool, after: str | None = None) -> Query:
    def run(session: Session) -> int:
        return len(
            queries.audit_page(
                session, flt, after=after, limit=100, newest_first=newest_first
            ).entries
        )

    return run


def _chain(entry: AuditEntry) -> Query:
    def run(session: Session) -> int:
        before, after = queries.chain(session, entry)
        return len(before) + len(after) + 1

    return run


def _explain(entry: AuditEntry) -> Query:
    def run(session: Session) -> int:
        found = explain(session, entry.position)
        assert found is not None
        return len(found.history) + len(found.before) + len(found.after) + 1

    return run


def query_plan(sample: Sample, end: float, rng: random.Random) -> dict[str, Query]:
    """Each measured query for one sampled decision (no correlation query for a decision
    without a correlation id)."""
    entry = sample.entry
    since = end - rng.uniform(1.0, 7.0) * DAY
    by_kind = sample.by_kind
    with_since = AuditFilter(tenant=entry.tenant, kinds=by_kind.kinds, since=since)
    by_prefix = AuditFilter(tenant=entry.tenant, kinds=(entry.kind.split(".")[0] + ".*",))
    by_tenant = AuditFilter(tenant=entry.tenant)
    here = f"{entry.at!r}:{entry.position}"  # the cursor of a page that ends at this decision
    plan = {
        "tenant + kind, newest first": _page(by_kind, newest_first=True),
        "tenant + kind, oldest first": _page(by_kind, newest_first=False),
        "tenant + kind, since, newest first": _page(with_since, newest_first=True),
        "tenant + kind, since, oldest first": _page(with_since, newest_first=False),
        "tenant + kind prefix (rca.*), newest first": _page(by_prefix, newest_first=True),
        "tenant only, newest first": _page(by_tenant, newest_first=True),
        "cursor at any depth, tenant + kind, newest first": _page(
            by_kind, newest_first=True, after=here
        ),
        "cursor at any depth, tenant + kind, oldest first": _page(
            by_kind, newest_first=False, after=here
        ),
        "cursor at any depth, tenant only, newest first": _page(
            by_tenant, newest_first=True, after=here
        ),
        "chain around a decision (explain)": _chain(entry),
        "explain, the whole answer": _explain(entry),
    }
    if entry.correlation_id:
        plan["correlation id (audit --correlation)"] = _page(
            AuditFilter(correlation_id=entry.correlation_id), newest_first=False
        )
    return plan


def timed(engine: Engine, query: Query) -> tuple[float, int]:
    with Session(engine) as session:
        started = time.perf_counter()
        found = query(session)
        return time.perf_counter() - started, found


def cursor_pages(
    engine: Engine, flt: AuditFilter, pages: int, newest_first: bool
) -> list[tuple[int, float]]:
    """Follow a filter's keyset cursor: (page number, seconds) of pages 2..``pages``."""
    timings = []
    after: str | None = None
    for number in range(1, pages + 1):
        with Session(engine) as session:
            started = time.perf_counter()
            page = queries.audit_page(
                session, flt, after=after, limit=100, newest_first=newest_first
            )
            took = time.perf_counter() - started
        if number > 1:
            timings.append((number, took))
        if page.next is None:
            break
        after = page.next
    return timings


def summary(seconds: list[float], rows: list[int] | None = None) -> dict[str, Any]:
    ordered = sorted(seconds)
    found: dict[str, Any] = {
        "count": len(ordered),
        "p50_ms": round(percentile(ordered, 0.50) * 1000, 2),
        "p95_ms": round(percentile(ordered, 0.95) * 1000, 2),
        "p99_ms": round(percentile(ordered, 0.99) * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }
    if rows is not None:
        found["rows_mean"] = round(sum(rows) / len(rows), 1)
    return found


def measure_queries(
    engine: Engine, rows: int, count: int, pages: int, warmup: int = 20
) -> dict[str, Any]:
    """Every query of :func:`query_plan` for ``count`` sampled decisions (interleaved, after
    ``warmup`` untimed rounds), and the cursor followed ``pages`` pages deep both ways."""
    end = latest(engine)
    picked = samples(engine, rows, count + warmup)
    rng = random.Random(9)
    seconds: dict[str, list[float]] = {}
    found: dict[str, list[int]] = {}
    for i, sample in enumerate(picked):
        for name, query in query_plan(sample, end, rng).items():
            took, n = timed(engine, query)
            if i >= warmup:
                seconds.setdefault(name, []).append(took)
                found.setdefault(name, []).append(n)
    results = {name: summary(seconds[name], found[name]) for name in seconds}
    for newest_first, label in ((True, "newest first"), (False, "oldest first")):
        deep: list[float] = []
        deepest: list[float] = []
        for sample in picked[warmup:]:
            for number, took in cursor_pages(engine, sample.by_kind, pages, newest_first):
                deep.append(took)
                if number == pages:
                    deepest.append(took)
        if deep:
            results[f"cursor pages 2-{pages}, {label}"] = summary(deep)
        if deepest:
            results[f"cursor page {pages}, {label}"] = summary(deepest)
    return results
