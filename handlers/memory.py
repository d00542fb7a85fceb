"""In-memory implementations of the decision log, dead-letter and delivery store ports.

For library use without persistence, for benchmarks and for tests of handler logic. They keep
everything in lists for the life of the process; the center uses the event-sourced ones.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from uuid import UUID, uuid4

from eventcenter.domain.decisions import Decision, Transition
from eventcenter.domain.errors import PermanentFailure, SubscriptionError
from eventcenter.domain.event import Event
from eventcenter.domain.ports import AdmissionRecord, BacklogCount, StoredDelivery
from eventcenter.domain.sources import Delivered, SourceProgress
from eventcenter.domain.tuning_run import ServiceTuning, TuningRun


@dataclass
class MemoryDecisionLog:
    """Keeps transitions and decisions in the order they were recorded."""

    transitions: list[Transition] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    causes: set[str] = field(default_factory=set)

    async def record_transition(self, transition: Transition) -> None:
        self.transitions.append(transition)

    async def record_decision(self, decision: Decision) -> None:
        if decision.cause:
            if decision.cause in self.causes:
                return  # recorded before for the same cause: once is enough
            self.causes.add(decision.cause)
        self.decisions.append(decision)


@dataclass(frozen=True)
class MemoryDeadLetter:
    id: UUID
    event: Event
    subscription: str
    error: BaseException
    attempts: int


@dataclass
class MemoryDeadLetters:
    """Keeps dead letters in a list."""

    letters: list[MemoryDeadLetter] = field(default_factory=list)

    async def add(
        self, event: Event, subscription: str, error: BaseException, attempts: int
    ) -> UUID:
        letter = MemoryDeadLetter(uuid4(), event, subscription, error, attempts)
        self.letters.append(letter)
        return letter.id


@dataclass
class MemoryDeliveryStore:
    """The DeliveryStore port in memory: the same contract as the durable store (the contract
    tests run both), for tests of the processor's durable paths without a database. Nothing
    survives the process."""

    rows: dict[int, StoredDelivery] = field(default_factory=dict)
    idents: dict[str, str] = field(default_factory=dict)
    letters: list[MemoryDeadLetter] = field(default_factory=list)
    attempts: dict[int, int] = field(default_factory=dict)
    available: bool = True
    outages: int = 0
    decision_log: MemoryDecisionLog = field(default_factory=MemoryDecisionLog)
    positions: dict[tuple[str, str, str], str] = field(default_factory=dict)
    delivered: dict[tuple[str, str], dict[str, Delivered]] = field(default_factory=dict)

    def _decide(self, decisions: Sequence[Decision]) -> None:
        for decision in decisions:
            if decision.cause and decision.cause in self.decision_log.causes:
                continue
            if decision.cause:
                self.decision_log.causes.add(decision.cause)
            self.decision_log.decisions.append(decision)

    async def admit(
        self, records: Sequence[AdmissionRecord], progress: SourceProgress | None = None
    ) -> list[str | None]:
        results = self._admit(records)
        if progress is not None:
            self._progress(records, results, progress)
        return results

    def _progress(
        self,
        records: Sequence[AdmissionRecord],
        results: list[str | None],
        progress: SourceProgress,
    ) -> None:
        admitted = {str(r.event.id) for r, known in zip(records, results, strict=True) if not known}
        held = self.delivered.setdefault((progress.tenant, progress.source), {})
        for event_id, (key, entry) in progress.delivered.items():
            if event_id in admitted:
                held[key] = entry
        if progress.position is not None:
            self.positions[(progress.tenant, progress.source, progress.path)] = progress.position
        for rejected in progress.rejected:
            event = Event.model_validate(dict(rejected.envelope))
            error = PermanentFailure(rejected.problem)
            self.letters.append(
                MemoryDeadLetter(uuid4(), event, progress.letter_subscription, error, 0)
            )

    async def source_position(self, tenant: str, source: str, path: str) -> str | None:
        return self.positions.get((tenant, source, path))

    async def source_delivered(self, tenant: str, source: str) -> dict[str, Delivered]:
        return dict(self.delivered.get((tenant, source), {}))

    def _admit(self, records: Sequence[AdmissionRecord]) -> list[str | None]:
        results: list[str | None] = []
        for record in records:
            if record.ident is not None:
                earlier = self.idents.get(record.ident)
                if earlier is not None:
                    results.append(earlier)
                    continue
                self.idents[record.ident] = str(record.event.id)
            for target in record.targets:
                self.rows[target.seq] = StoredDelivery(
                    target.seq,
                    target.subscription,
                    int(record.event.priority),
                    record.envelope,
                    0,
                    target.failure,
                    record.replay_of,
                    record.event.tenant,
                )
            results.append(None)
        return results

    def settle(self, seq: int, replay_of: str | None, decisions: Sequence[Decision] = ()) -> None:
        self._decide(decisions)
        self.rows.pop(seq, None)

    def record_attempts(self, seq: int, attempts: int, decisions: Sequence[Decision] = ()) -> None:
        self._decide(decisions)
        row = self.rows.get(seq)
        if row is not None:
            self.rows[seq] = replace(row, attempts=attempts)

    def dead_letter(
        self,
        seq: int,
        envelope: dict[str, Any],
        subscription: str,
        error: BaseException,
        attempts: int,
        replay_of: str | None,
        decisions: Sequence[Decision] = (),
    ) -> None:
        self._decide(decisions)
        self.rows.pop(seq, None)
        event = Event.model_validate(envelope)
        self.letters.append(MemoryDeadLetter(uuid4(), event, subscription, error, attempts))

    async def load(
        self, subscription: str, priority: int, after: int, limit: int, tenant: str | None = None
    ) -> list[StoredDelivery]:
        found = sorted(
            (
                row
                for row in self.rows.values()
                if row.subscription == subscription
                and row.priority == priority
                and row.seq > after
                and (tenant is None or row.tenant == tenant)
            ),
            key=lambda row: row.seq,
        )
        return found[:limit]

    async def summary(self) -> tuple[list[BacklogCount], int]:
        groups: dict[tuple[str, int, str], list[int]] = {}
        for row in self.rows.values():
            groups.setdefault((row.subscription, row.priority, row.tenant), []).append(row.seq)
        counts = [
            BacklogCount(sub, priority, len(seqs), min(seqs), tenant)
            for (sub, priority, tenant), seqs in sorted(groups.items())
        ]
        return counts, max(self.rows, default=0)

    async def flush(self) -> None:
        return None

    async def dead_letter_orphans(self, subscription: str, limit: int) -> int:
        seqs = sorted(seq for seq, row in self.rows.items() if row.subscription == subscription)
        for seq in seqs[:limit]:
            row = self.rows[seq]
            error = SubscriptionError(f"no subscription named '{subscription}' is registered")
            self.dead_letter(seq, json.loads(row.envelope), subscription, error, row.attempts, None)
        return len(seqs[:limit])


@dataclass
class MemoryTuningStore:
    """Keeps the tuning aggregates in a dict (the TuningStore port): each change applies to a
    deep copy, kept only when ``apply`` returns, as the store's transaction would."""

    aggregates: dict[UUID, Any] = field(default_factory=dict)

    async def change(
        self, aggregate_id: UUID, create: Callable[[], Any] | None, apply: Callable[[Any], Any]
    ) -> Any:
        current = self.aggregates.get(aggregate_id)
        working = copy.deepcopy(current) if current is not None else None
        if working is None and create is not None:
            working = create()
        result = apply(working)
        if working is not None:
            working.collect_events()
            self.aggregates[working.id] = working
        return result

    async def get(self, aggregate_id: UUID) -> Any | None:
        found = self.aggregates.get(aggregate_id)
        return copy.deepcopy(found)

    async def open_runs(self) -> list[Any]:
        runs = [a for a in self.aggregates.values() if isinstance(a, TuningRun) and a.is_open]
        return [copy.deepcopy(r) for r in sorted(runs, key=lambda r: r.requested_at)]

    async def tuned_services(self) -> list[Any]:
        found = [a for a in self.aggregates.values() if isinstance(a, ServiceTuning)]
        return [copy.deepcopy(s) for s in sorted(found, key=lambda s: s.service)]
