"""Catch-up of the read model from a real notification log, next to its raw parts.

A log is recorded through the center's own write path: its event-sourced application
(:class:`CenterApplication`) and aggregates, ``app.save`` of every aggregate a batch touched in
one transaction, as the store writer does. The mix is what a busy center records: handler
decisions and processor transitions on the processor log (correlation chains of 3 to 10
decisions), mode switches and reconciliations of data sources, dead letters recorded and some
of them replayed (claimed, then handled: the read model updates their rows).

Then, in the same store: the log read raw (``select_notifications`` and the mapper, the pages
the runner reads, nothing written), :meth:`ProjectionRunner.catch_up` from zero, and the audit
rows it wrote inserted again into two plain tables (the same columns; primary key only, and
with ``center_audit``'s indexes), one transaction per page, as the read model's own insert.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

from sqlalchemy import Column, Engine, Index, MetaData, Table, func, insert, select

from eventcenter.domain.aggregates import DeadLetter, ProcessorLog
from eventcenter.domain.decisions import Decision, Transition
from eventcenter.domain.hysteresis import HysteresisConfig, Switch
from eventcenter.domain.source_log import SourceLog
from eventcenter.domain.source_modes import EVENT_ONLY, HYBRID
from eventcenter.projections import tables
from eventcenter.projections.runner import ProjectionRunner
from eventcenter.projections.view import ReadModel
from eventcenter.storage.application import CenterApplication

#: Tenants and data sources of the recorded log.
LOG_TENANTS = 50
LOG_SOURCES = 200

#: Handler decisions: (kind, reason); ``ctx.decide`` kinds as the built-in handlers take them.
DECISIONS = (
    ("frequency.reduce", "p95 340 ms over the 250 ms threshold: factor 0.74"),
    ("frequency.restore", "idle for 120 s: restore the tuned frequency"),
    ("deployment.seen", "checkout deployed as v1.4.2"),
    ("traffic.pause", "system idle: pause the agents' traffic"),
    ("traffic.resume", "system active again"),
    ("retest.flagged", "latency spike on a tuned signature"),
    ("order.accepted", "payment authorised"),
    ("order.rejected", "card expired"),
)


@dataclass
class LogWriter:
    """Records decisions like a center does, ``batch`` events per ``app.save``."""

    app: CenterApplication
    rng: random.Random
    batch: int

    def __post_init__(self) -> None:
        now = time.time()
        self.processor = ProcessorLog("bench")
        config = HysteresisConfig()
        self.sources = [
            SourceLog.register(
                f"tenant-{i % LOG_TENANTS}",
                f"source-{i}",
                at=now,
                has_push=True,
                has_poll=True,
                config=config,
            )
            for i in range(LOG_SOURCES)
        ]
        self.pending: list[Any] = []
        self.chain = ("", "", 0)  # correlation id, tenant, decisions left in it
        self.recorded = 0
        self.counts = {"decisions": 0, "transitions": 0, "sources": 0, "dead_letters": 0}
        self._save([self.processor, *self.sources])

    def _save(self, touched: list[Any]) -> None:
        events = sum(len(a.pending_events) for a in touched)
        self.app.save(*touched)
        self.recorded += events

    def record(self, events: int) -> None:
        """Record batches until the log holds at least ``events`` events."""
        while self.recorded < events:
            touched: dict[Any, Any] = {}
            added = 0
            while added < self.batch:
                added += self._one(touched)
            self._save(list(touched.values()))

    def _one(self, touched: dict[Any, Any]) -> int:
        """One decision of the mix, on the aggregates in ``touched``; events added."""
        r = self.rng.random()
        if r < 0.78:
            return self._decision(touched)
        if r < 0.80:
            return self._transition(touched)
        if r < 0.92:
            return self._source(touched)
        return self._dead_letter(touched)

    def _correlation(self) -> tuple[str, str]:
        correlation, tenant, left = self.chain
        if left <= 0:
            correlation = str(uuid4())
            tenant = f"tenant-{int(self.rng.paretovariate(1.2)) % LOG_TENANTS}"
            left = self.rng.randint(3, 10)
        self.chain = (correlation, tenant, left - 1)
        return correlation, tenant

    def _decision(self, touched: dict[Any, Any]) -> int:
        correlation, tenant = self._correlation()
        kind, reason = self.rng.choice(DECISIONS)
        self.processor.decide(
            Decision(
                kind,
                reason,
                correlation,
                tenant,
                {"observed_ms": round(self.rng.uniform(200, 900), 1), "threshold_ms": 250},
                cause=f"{uuid4()}/handler/{kind}/1",
            )
        )
        touched[self.processor.id] = self.processor
        self.counts["decisions"] += 1
        return 1

    def _transition(self, touched: dict[Any, Any]) -> int:
        correlation, _ = self._correlation()
        state = self.processor.state
        dest, trigger = ("adjusting", "adjust") if state == "stable" else ("stable", "settle")
        reason = "latency spike" if dest == "adjusting" else "idle period"
        self.processor.transition(Transition(trigger, state, dest, reason, correlation))
        touched[self.processor.id] = self.processor
        self.counts["transitions"] += 1
        return 1

    def _source(self, touched: dict[Any, Any]) -> int:
        log = self.rng.choice(self.sources)
        at = time.time() + self.recorded * 1e-3  # distinct times: no switch is a repeat
        if self.rng.random() < 0.2:
            log.reconciled(at=at, missing=self.rng.randint(0, 5), changed=0, deleted=0)
        else:
            to = HYBRID if log.mode == EVENT_ONLY else EVENT_ONLY
            failures, successes = (3, 0) if to == HYBRID else (0, 5)
            reason = "3 push failures in a row" if to == HYBRID else "push healthy: 5 in a row"
            log.switch(Switch(at, log.mode, to, reason, failures, successes, 3))
        touched[log.id] = log
        self.counts["sources"] += 1
        return 1

    def _dead_letter(self, touched: dict[Any, Any]) -> int:
        if self.pending and self.rng.random() < 0.3:
            letter = self.pending.pop(self.rng.randrange(len(self.pending)))
            letter.claim("replay asked by an operator")
            letter.replay("handled on replay")
            touched[letter.id] = letter
            self.counts["dead_letters"] += 2
            return 2
        correlation, tenant = self._correlation()
        envelope = {
            "id": str(uuid4()),
            "type": "orders.created",
            "source": "app",
            "tenant": tenant,
            "timestamp": "2026-12-03T16:02:45.173436Z",
            "priority": 2,
            "correlation_id": correlation,
            "metadata": {},
            "payload": {"order": self.rng.randrange(10**6), "amount": 42.5},
            "version": "1",
        }
        letter = DeadLetter(envelope, "app:on_order", "PermanentFailure", "card expired", 5)
        touched[letter.id] = letter
        self.pending.append(letter)
        self.counts["dead_letters"] += 1
        return 1


def _pages(app: CenterApplication, page: int) -> Iterator[int]:
    """The raw read the runner does: each page of notifications, decoded; its length."""
    after = 0
    while True:
        found = app.read(after, page)
        if not found:
            return
        yield len(found)
        after = found[-1][0]
        if len(found) < page:
            return


def plain_copy(name: str, *, indexed: bool) -> Table:
    """A table with ``center_audit``'s columns (and, ``indexed``, its indexes) named ``name``."""
    copy = Table(
        name,
        MetaData(),
        *(Column(c.name, c.type, primary_key=c.primary_key) for c in tables.audit.columns),
    )
    if indexed:
        for index in tables.audit.indexes:
            columns = [copy.c[c.name] for c in index.columns]
            Index(str(index.name).replace("center_audit", name), *columns)
    return copy


def timed_insert(engine: Engine, table: Table, rows: list[dict[str, Any]], page: int) -> float:
    """Seconds to insert ``rows`` into ``table``, ``page`` rows per transaction."""
    table.create(engine)
    started = time.perf_counter()
    for start in range(0, len(rows), page):
        with engine.begin() as connection:
            connection.execute(insert(table), rows[start : start + page])
    return time.perf_counter() - started


def measure_catch_up(
    url: str, events: int, batch: int, page: int, seed: int = 11
) -> dict[str, Any]:
    """Record ``events`` events on the store at ``url``; time the catch-up and its baselines."""
    app = CenterApplication(url)
    try:
        writer = LogWriter(app, random.Random(seed), batch)
        started = time.perf_counter()
        writer.record(events)
        record_s = time.perf_counter() - started
        notifications = app.head()

        sum(_pages(app, page))  # once untimed: the raw read and the catch-up both start warm
        started = time.perf_counter()
        read = sum(_pages(app, page))
        read_s = time.perf_counter() - started
        assert read == notifications, (read, notifications)

        datastore: Any = app.recorder.datastore  # type: ignore[attr-defined]
        model = ReadModel(datastore, app.name)
        model.create_table()
        runner = ProjectionRunner(model, app, page=page)
        started = time.perf_counter()
        processed = runner.catch_up()
        catch_up_s = time.perf_counter() - started
        assert processed == notifications, (processed, notifications)
        assert model.position == notifications

        engine: Engine = datastore.engine
        with engine.connect() as connection:
            rows = [
                dict(r._mapping)
                for r in connection.execute(select(tables.audit).order_by(tables.audit.c.position))
            ]
            letters = connection.execute(
                select(func.count()).select_from(tables.dead_letters)
            ).scalar_one()
            sources = connection.execute(
                select(func.count()).select_from(tables.sources)
            ).scalar_one()
        insert_s = timed_insert(engine, plain_copy("bench_plain", indexed=False), rows, page)
        indexed_s = timed_insert(engine, plain_copy("bench_indexed", indexed=True), rows, page)
    finally:
        app.close()
    floor_s = read_s + indexed_s
    return {
        "status": "measured",
        "events": notifications,
        "mix": writer.counts,
        "audit_rows": len(rows),
        "dead_letter_rows": letters,
        "source_rows": sources,
        "record_s": round(record_s, 2),
        "record_per_s": round(notifications / record_s),
        "catch_up_s": round(catch_up_s, 2),
        "catch_up_per_s": round(notifications / catch_up_s),
        "read_s": round(read_s, 2),
        "read_per_s": round(notifications / read_s),
        "insert_s": round(insert_s, 2),
        "insert_per_s": round(len(rows) / insert_s),
        "indexed_insert_s": round(indexed_s, 2),
        "indexed_insert_per_s": round(len(rows) / indexed_s),
        "floor_per_s": round(notifications / floor_s),
        "ratio": round(floor_s / catch_up_s, 2),
        "page": page,
        "batch": batch,
    }
