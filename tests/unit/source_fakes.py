"""Small in-memory stand-ins for a data source and the center's admission, on a FakeClock.

They are plain classes, not mocks: a source with a change log and a listing, a push path and a
poll function over that log with scripted failures, and a sink that admits each identity
``(tenant, source, key, version)`` once, which is the center's real rule.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from eventcenter.domain.errors import StoreUnavailable
from eventcenter.domain.reconcile import item_digest
from eventcenter.domain.sources import (
    Delivered,
    PositionLost,
    Received,
    SourceError,
    SourceErrorKind,
    SourceItem,
)
from eventcenter.sources.clock import FakeClock
from eventcenter.sources.outcomes import PathOutcome

TENANT = "acme"
SOURCE = "orders"

Identity = tuple[str, str, str, str]


def connection_lost(message: str = "connection reset (test)") -> SourceError:
    return SourceError(SourceErrorKind.CONNECTION, message)


class FixedJitter(random.Random):
    """A random source whose draws are all ``value``: back-off delays become exact."""

    def __init__(self, value: float = 0.0) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


@dataclass(frozen=True)
class Admission:
    item: SourceItem
    path: str
    correction: str | None


class MemorySink:
    """The center's admission in memory: each identity once, the position with the batch.

    ``fail_before`` admissions raise before storing anything; ``fail_after`` store and then
    raise (the commit happened but its answer was lost), so a retry must be deduplicated.
    """

    def __init__(self, journal: list[str] | None = None) -> None:
        self.accepted: dict[Identity, Admission] = {}
        self.repeats: list[Identity] = []
        self.dead_letters: list[Received] = []
        self.positions: dict[tuple[str, str, str], str] = {}
        self.by_path: dict[str, set[tuple[str, str]]] = {}  # (key, version) each path brought
        self.calls: list[tuple[str, int, str | None, str | None]] = []
        self.fail_before = 0
        self.fail_after = 0
        self.journal = journal if journal is not None else []
        self._delivered: dict[tuple[str, str], dict[str, Delivered]] = {}

    async def admit(
        self,
        tenant: str,
        source: str,
        path: str,
        received: Sequence[Received],
        position: str | None,
        *,
        correction: str | None = None,
    ) -> list[str | None]:
        self.calls.append((path, len(received), position, correction))
        if self.fail_before:
            self.fail_before -= 1
            self.journal.append(f"admit-failed:{path}")
            raise StoreUnavailable("the store is unreachable (test)")
        ids: list[str | None] = []
        for message in received:
            item = message.item
            if item is None:
                self.dead_letters.append(message)
                ids.append(None)
                continue
            identity = (tenant, source, item.key, item.version)
            self.by_path.setdefault(path, set()).add((item.key, item.version))
            if identity in self.accepted:
                self.repeats.append(identity)
                ids.append(None)
                continue
            self.accepted[identity] = Admission(item, path, correction)
            held = self._delivered.setdefault((tenant, source), {})
            held[item.key] = Delivered(item.version, item_digest(item), item.deleted)
            ids.append(f"event-{len(self.accepted)}")
        if position is not None:
            self.positions[(tenant, source, path)] = position
        self.journal.append(f"admit:{path}:{','.join(m.position for m in received)}")
        if self.fail_after:
            self.fail_after -= 1
            raise StoreUnavailable("the commit's answer was lost (test)")
        return ids

    async def position(self, tenant: str, source: str, path: str) -> str | None:
        return self.positions.get((tenant, source, path))

    async def delivered(self, tenant: str, source: str) -> dict[str, Delivered]:
        return dict(self._delivered.get((tenant, source), {}))

    def holds(self, message: Received) -> bool:
        """Whether ``message`` is durable here (admitted as an item, or dead-lettered)."""
        if message.item is None:
            return any(letter.position == message.position for letter in self.dead_letters)
        return (message.item.key, message.item.version) in self.identities()

    def identities(self) -> set[tuple[str, str]]:
        return {(key, version) for (_, _, key, version) in self.accepted}


class FakeSource:
    """A data source: a change log (message ``n`` at position ``str(n)``) and current items.

    The push stream keeps only the positions after ``trimmed``; the poll feed and the listing
    see everything.
    """

    def __init__(self) -> None:
        self.log: list[Received] = []
        self.items: dict[str, SourceItem] = {}
        self.trimmed = 0
        self._versions: dict[str, int] = {}

    def change(self, key: str, **data: object) -> SourceItem:
        version = self._versions.get(key, 0) + 1
        self._versions[key] = version
        item = SourceItem(key=key, version=str(version), data=data or {"v": version})
        self.items[key] = item
        self._append(item)
        return item

    def delete(self, key: str) -> SourceItem:
        version = self._versions.get(key, 0) + 1
        self._versions[key] = version
        item = SourceItem(key=key, version=str(version), deleted=True)
        self.items.pop(key, None)
        self._append(item)
        return item

    def bad(self, raw: str = "{not json") -> Received:
        message = Received(
            position=str(len(self.log) + 1), item=None, problem="not JSON (test)", raw=raw
        )
        self.log.append(message)
        return message

    def trim(self) -> None:
        """The push stream drops everything produced so far (a capped stream, a new server)."""
        self.trimmed = len(self.log)

    def produced(self) -> set[tuple[str, str]]:
        return {(m.item.key, m.item.version) for m in self.log if m.item is not None}

    def _append(self, item: SourceItem) -> None:
        self.log.append(Received(position=str(len(self.log) + 1), item=item))


class FakePushPath:
    """A push path over a :class:`FakeSource`'s log, with scripted failures.

    ``receive`` hands out what the log holds after the cursor, or waits ``timeout`` on the
    fake clock and returns nothing; while ``muted`` it hands out nothing at all (a subscription
    that died without an error: only silence tells). Like a consumer group, it hands out again
    on ``open`` what it handed out up to the opened position and was never acknowledged.
    ``ack`` records into ``acked_early`` any message the sink does not hold yet: the engine must
    never acknowledge before admission.
    """

    describe = "fake push path"

    def __init__(self, source: FakeSource, clock: FakeClock, sink: MemorySink) -> None:
        self.source = source
        self.clock = clock
        self.sink = sink
        self.open_errors: deque[SourceError] = deque()
        self.receive_errors: deque[SourceError] = deque()
        self.ack_errors: deque[SourceError] = deque()
        self.redeliver: deque[Received] = deque()
        self.opened: list[str | None] = []
        self.acked: list[str] = []
        self.acked_early: list[Received] = []
        self.closes = 0
        self.is_open = False
        self.muted = False
        self._pending: dict[str, Received] = {}  # handed out, not acknowledged
        self._cursor = 0
        self._group_acked = 0  # the server's durable consumer position

    async def open(self, position: str | None) -> None:
        assert not self.is_open, "opened twice without aclose"
        self.opened.append(position)
        if self.open_errors:
            raise self.open_errors.popleft()
        if position is not None and int(position) < self.source.trimmed:
            raise PositionLost(f"position {position} was trimmed (test)")
        if position is None:
            self._cursor = max(self._group_acked, self.source.trimmed)
        else:
            self._cursor = int(position)
        self.redeliver.extend(
            message
            for position, message in sorted(self._pending.items(), key=lambda p: int(p[0]))
            if int(position) <= self._cursor
        )
        self._pending.clear()
        self.is_open = True

    async def receive(self, max_items: int, timeout: float) -> Sequence[Received]:
        assert self.is_open, "receive on a closed path"
        if self.receive_errors:
            self.is_open = False  # a broken connection
            raise self.receive_errors.popleft()
        if self.muted:
            await self.clock.sleep(timeout)
            return []
        if self.redeliver:
            message = self.redeliver.popleft()
            self._pending[message.position] = message
            return [message]
        if self._cursor < len(self.source.log):
            batch = self.source.log[self._cursor : self._cursor + max_items]
            self._cursor += len(batch)
            self._pending.update((message.position, message) for message in batch)
            return batch
        await self.clock.sleep(timeout)
        return []

    async def ack(self, received: Sequence[Received]) -> None:
        if self.ack_errors:
            raise self.ack_errors.popleft()
        for message in received:
            if not self.sink.holds(message):
                self.acked_early.append(message)
            self.acked.append(message.position)
            self._pending.pop(message.position, None)
            self._group_acked = max(self._group_acked, int(message.position))
        self.sink.journal.append(f"ack:{','.join(m.position for m in received)}")

    async def aclose(self) -> None:
        self.closes += 1
        self.is_open = False

    def forget_consumer(self) -> None:
        """The server lost its consumer state and starts a new one at the end of the stream:
        only the engine's stored position still says where it was."""
        self._group_acked = len(self.source.log)
        self._pending.clear()


class FakePoll:
    """A poll path: the log after ``cursor``, ``page`` messages at a time."""

    def __init__(self, source: FakeSource, page: int = 10) -> None:
        self.source = source
        self.page = page
        self.errors: deque[SourceError] = deque()
        self.cursors: list[str | None] = []

    async def __call__(self, cursor: str | None) -> tuple[Sequence[Received], str | None]:
        self.cursors.append(cursor)
        if self.errors:
            raise self.errors.popleft()
        start = int(cursor or 0)
        batch = self.source.log[start : start + self.page]
        return batch, (str(start + len(batch)) if batch else cursor)


class FakeListing:
    """The authoritative listing: every live item at its current version."""

    def __init__(self, source: FakeSource) -> None:
        self.source = source
        self.errors: deque[SourceError] = deque()
        self.calls = 0

    async def __call__(self) -> Sequence[SourceItem]:
        self.calls += 1
        if self.errors:
            raise self.errors.popleft()
        return [self.source.items[key] for key in sorted(self.source.items)]


@dataclass
class Outcomes:
    """Collects what an engine reports."""

    seen: list[PathOutcome] = field(default_factory=list)

    def __call__(self, outcome: PathOutcome) -> None:
        self.seen.append(outcome)

    @property
    def failures(self) -> list[PathOutcome]:
        return [outcome for outcome in self.seen if not outcome.ok]

    @property
    def successes(self) -> list[PathOutcome]:
        return [outcome for outcome in self.seen if outcome.ok]


class MemoryRecorder:
    """The SourceRecorder port in memory: source logs by (tenant, source), outcome rows.

    ``fail`` makes the next ``change`` calls raise (a store that refuses).
    """

    def __init__(self) -> None:
        self.logs: dict[tuple[str, str], Any] = {}
        self.rows: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
        self.fail = 0

    async def change(self, tenant: str, source: str, apply: Any) -> Any:
        if self.fail:
            self.fail -= 1
            raise StoreUnavailable("the store is unreachable (test)")
        changed, result = apply(self.logs.get((tenant, source)))
        if changed is not None:
            self.logs[(tenant, source)] = changed
        return result

    def outcomes(self, tenant: str, source: str, rows: Sequence[tuple[Any, ...]]) -> None:
        self.rows.setdefault((tenant, source), []).extend(rows)

    def events(self, tenant: str = TENANT, source: str = SOURCE) -> list[str]:
        """The names of the source log's events so far (pending, as a store would save them)."""
        log = self.logs[(tenant, source)]
        return [type(e).__name__ for e in log.pending_events]
