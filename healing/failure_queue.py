"""The bounded queue of failures waiting for root-cause analysis.

Order: higher severity first. Within a severity, round-robin between tenants, and within a
tenant between its sources (``None``, a failure of no source, counts as one source), oldest
first within a source: one source's flood waits its turn like everybody else and never holds
up another tenant's failure for longer than one turn per tenant.

Bounded, never silent:

- a failure like one already queued (same tenant, source, component, kind and severity) is
  **merged** into it: the queued entry takes the newer failure and counts one more repeat (the
  runner attaches both to the same case anyway);
- when the queue is full, the **biggest contributor** (the tenant and source with the most
  entries, counting the newcomer) loses its lowest-severity, oldest entry; if that is the
  newcomer itself, the newcomer is dropped. A flood therefore evicts its own entries, not a
  quiet source's.

Every failure is counted: ``put`` says what happened to it, and :class:`QueueStats` holds how
many were queued, merged and dropped (per tenant and source), so an operator sees what the
analysis never saw.

Call ``put`` from the event loop's thread (engines' callbacks run there); ``get`` waits.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from typing import Literal

from eventcenter.domain.rca import Failure, Severity

Key = tuple[str, str | None]
Signature = tuple[str, str | None, str, str, int]
PutResult = Literal["queued", "merged", "dropped", "evicted"]

DEFAULT_CAPACITY = 1_000


@dataclass(slots=True)
class QueuedFailure:
    """A failure waiting for analysis; ``repeats`` more like it were merged into it (the
    latest is ``failure``, ``first_at`` when the first of them happened)."""

    failure: Failure
    seq: int
    first_at: float
    repeats: int = 0

    @property
    def count(self) -> int:
        """How many failures this entry stands for."""
        return 1 + self.repeats


@dataclass(slots=True)
class QueueStats:
    """What became of every failure put: queued (as a new entry), merged into a queued
    entry, or dropped (a newcomer refused, or an entry evicted: each counts the failures it
    stood for), per tenant and source for the drops."""

    queued: int = 0
    merged: int = 0
    dropped: int = 0
    taken: int = 0
    dropped_by_key: Counter[Key] = field(default_factory=Counter)


def _signature(failure: Failure) -> Signature:
    return (
        failure.tenant,
        failure.source,
        failure.component.value,
        failure.kind,
        int(failure.severity),
    )


class FailureQueue:
    """See the module docstring. ``capacity``: the most entries held."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.stats = QueueStats()
        # severity -> tenant -> source -> entries, oldest first; dict order is the round-robin
        self._levels: dict[int, OrderedDict[str, OrderedDict[str | None, deque[QueuedFailure]]]]
        self._levels = {int(s): OrderedDict() for s in Severity}
        self._by_signature: dict[Signature, QueuedFailure] = {}
        self._per_key: Counter[Key] = Counter()
        self._size = 0
        self._seq = itertools.count()
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return self._size

    def sizes(self) -> dict[Key, int]:
        """Entries queued per tenant and source."""
        return {key: n for key, n in self._per_key.items() if n}

    # putting -----------------------------------------------------------------------------------

    def put(self, failure: Failure) -> PutResult:
        """Queue ``failure``. Returns ``queued``, ``merged`` (into a like entry), ``evicted``
        (queued, and an entry of the biggest contributor was dropped for it) or ``dropped``
        (the newcomer itself was the one to drop)."""
        signature = _signature(failure)
        like = self._by_signature.get(signature)
        if like is not None:
            like.failure = failure
            like.repeats += 1
            self.stats.merged += 1
            return "merged"
        result: PutResult = "queued"
        if self._size >= self.capacity:
            victim = self._victim(failure)
            if victim is None:
                self._count_drop(failure.key, 1)
                return "dropped"
            self._remove(victim)
            self._count_drop(victim.failure.key, victim.count)
            result = "evicted"
        entry = QueuedFailure(failure, next(self._seq), failure.at)
        tenant, source = failure.key
        level = self._levels[int(failure.severity)]
        level.setdefault(tenant, OrderedDict()).setdefault(source, deque()).append(entry)
        self._by_signature[signature] = entry
        self._per_key[failure.key] += 1
        self._size += 1
        self.stats.queued += 1
        self._ready.set()
        return result

    def _victim(self, newcomer: Failure) -> QueuedFailure | None:
        """The entry to drop for ``newcomer`` (None: drop the newcomer): among the biggest
        contributors, counting the newcomer as one more entry of its own, the lowest-severity
        oldest entry."""
        sizes = Counter(self._per_key)
        sizes[newcomer.key] += 1
        biggest = max(sizes.values())
        best: tuple[int, int] = (int(newcomer.severity), next(self._seq))
        if sizes[newcomer.key] != biggest:
            best = (len(Severity) + 1, best[1])  # not a candidate
        chosen: QueuedFailure | None = None
        for key, size in sizes.items():
            if size != biggest:
                continue
            oldest = self._lowest_oldest(key)
            if oldest is not None and (int(oldest.failure.severity), oldest.seq) < best:
                best = (int(oldest.failure.severity), oldest.seq)
                chosen = oldest
        return chosen

    def _lowest_oldest(self, key: Key) -> QueuedFailure | None:
        tenant, source = key
        for severity in sorted(self._levels):
            sources = self._levels[severity].get(tenant)
            entries = sources.get(source) if sources is not None else None
            if entries:
                return entries[0]
        return None

    def _remove(self, entry: QueuedFailure) -> None:
        tenant, source = entry.failure.key
        level = self._levels[int(entry.failure.severity)]
        sources = level[tenant]
        entries = sources[source]
        entries.remove(entry)
        if not entries:
            del sources[source]
            if not sources:
                del level[tenant]
        self._forget(entry)

    def _forget(self, entry: QueuedFailure) -> None:
        signature = _signature(entry.failure)
        if self._by_signature.get(signature) is entry:
            del self._by_signature[signature]
        self._per_key[entry.failure.key] -= 1
        if not self._per_key[entry.failure.key]:
            del self._per_key[entry.failure.key]
        self._size -= 1
        if not self._size:
            self._ready.clear()

    def _count_drop(self, key: Key, failures: int) -> None:
        self.stats.dropped += failures
        self.stats.dropped_by_key[key] += failures

    # taking ------------------------------------------------------------------------------------

    def get_nowait(self) -> QueuedFailure | None:
        """The next entry (see the module docstring for the order), or None if empty."""
        for severity in sorted(self._levels, reverse=True):
            level = self._levels[severity]
            if not level:
                continue
            tenant, sources = next(iter(level.items()))
            source, entries = next(iter(sources.items()))
            entry = entries.popleft()
            if entries:
                sources.move_to_end(source)
            else:
                del sources[source]
            if sources:
                level.move_to_end(tenant)
            else:
                del level[tenant]
            self._forget(entry)
            self.stats.taken += 1
            return entry
        return None

    async def get(self) -> QueuedFailure:
        """Wait for the next entry."""
        while True:
            entry = self.get_nowait()
            if entry is not None:
                return entry
            await self._ready.wait()
