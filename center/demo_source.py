"""The demo's data source: a local inventory feed whose push path fails, recovers and flaps.

Everything is in the process, on real time, and short: a producer adds one item version every
``PRODUCE_EVERY_S`` to a :class:`LocalFeed` (the system of record). The source reads it two
ways: a push path (:class:`LocalPushPath`, a stream over the feed that the demo can cut or
stall) and a poll path (``callable_poll`` over the same items, by index). The script:

1. push carries the items (``event_only``);
2. **outage**: the push path refuses connections until the source has fallen back to
   ``polling_only`` (``event_only -> hybrid -> polling_only``), then it comes back and the
   source returns (``polling_only -> hybrid -> event_only``) once push has proven itself;
3. **flapping**: twice, the push path stalls (connected, silent: silence counts as failure)
   until the source leaves ``event_only``, then resumes. Four switches within ``flap_window``
   raise the thresholds a step each time and add a cool-down before each return.

Every item version reaches the subscription exactly once whichever path carried it (push, poll,
or both: idempotent admission drops the repeat); :class:`ItemTally` counts what the handler
saw, and the demo prints those counts. The policy's knobs are set small (``SOURCE_POLICY``) so
the script takes a few seconds.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eventcenter.center.app import EventCenter
from eventcenter.domain.event import Event
from eventcenter.domain.source_log import SourceLog
from eventcenter.domain.source_modes import EVENT_ONLY, POLLING_ONLY
from eventcenter.domain.sources import (
    PositionLost,
    Received,
    SourceError,
    SourceErrorKind,
    SourceItem,
)
from eventcenter.handlers.context import Context
from eventcenter.sources.connectors import callable_poll
from eventcenter.sources.manager import SourceRunner
from eventcenter.sources.source import DataSource
from eventcenter.storage.application import CenterApplication

TENANT = "acme"
PRODUCE_EVERY_S = 0.02
POLL_PAGE = 200
SKUS = 40
FLAPS = 2
#: How long each phase may wait for the source's mode before the script goes on anyway.
PHASE_LIMIT_S = 5.0
#: How often the script looks at the source's mode (the runner has no event for a switch).
CHECK_EVERY_S = 0.01
#: The source's hysteresis, set small so that the whole script takes a few seconds.
SOURCE_POLICY: dict[str, Any] = {
    "event_timeout": 0.2,
    "failure_threshold": 2,
    "success_threshold": 3,
    "max_hysteresis": 4,
    "polling_interval": 0.1,
    "flap_window": 30.0,
    "flap_switches": 4,
    "cool_down": 0.2,
    "decay_period": 60.0,
}

UP, DOWN, STALLED = "up", "down", "stalled"


class LocalFeed:
    """The items of a local inventory system in the order they changed, and the state of its
    push connection (``up``, ``down``: refused, ``stalled``: connected but silent)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.items: list[SourceItem] = []
        self.state = UP
        self._changed = asyncio.Event()

    def add(self, item: SourceItem) -> None:
        self.items.append(item)
        self._changed.set()

    def set_state(self, state: str) -> None:
        self.state = state
        self._changed.set()

    async def changed(self, timeout: float) -> None:
        """Wait until an item is added or the state changes, at most ``timeout`` seconds."""
        self._changed.clear()
        try:
            async with asyncio.timeout(max(timeout, 0.0)):
                await self._changed.wait()
        except TimeoutError:
            return

    async def page(self, cursor: str | None) -> tuple[list[SourceItem], int]:
        """The poll path: up to POLL_PAGE items after index ``cursor``, and the next index."""
        start = int(cursor or 0)
        found = self.items[start : start + POLL_PAGE]
        return found, start + len(found)


class LocalPushPath:
    """A push path streaming a :class:`LocalFeed`; its position is the item's index."""

    def __init__(self, feed: LocalFeed) -> None:
        self._feed = feed
        self._offset = 0

    @property
    def describe(self) -> str:
        return f"local feed {self._feed.name!r}"

    def _refused(self, what: str) -> SourceError:
        return SourceError(SourceErrorKind.CONNECTION, f"{self.describe}: {what}")

    async def open(self, position: str | None) -> None:
        if self._feed.state == DOWN:
            raise self._refused("connection refused")
        offset = int(position or 0)
        if offset > len(self._feed.items):
            raise PositionLost(f"{self.describe}: position {position} is past its end")
        self._offset = offset

    async def receive(self, max_items: int, timeout: float) -> Sequence[Received]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            feed = self._feed
            if feed.state == DOWN:
                raise self._refused("connection reset")
            if feed.state == UP and self._offset < len(feed.items):
                end = min(len(feed.items), self._offset + max_items)
                found = [
                    Received(position=str(index + 1), item=feed.items[index])
                    for index in range(self._offset, end)
                ]
                self._offset = end
                return found
            left = deadline - loop.time()
            if left <= 0:
                return []
            await feed.changed(left)

    async def ack(self, received: Sequence[Received]) -> None:
        """Nothing to do: a reconnect resumes from the position the engine admitted last."""

    async def aclose(self) -> None:
        """Nothing to release."""


@dataclass
class ItemTally:
    """What the subscription saw: each (key, version) with its count, and the path it came by."""

    seen: Counter[tuple[str, str]] = field(default_factory=Counter)
    paths: Counter[str] = field(default_factory=Counter)

    async def handler(self, event: Event, ctx: Context) -> None:
        self.seen[(event.payload["key"], event.payload["version"])] += 1
        self.paths[str(event.metadata.get("path"))] += 1


@dataclass(frozen=True)
class ModeSwitchRow:
    """One recorded decision of the demo source, ``at`` seconds after its start."""

    at: float
    previous: str
    to: str
    reason: str


@dataclass
class SourceDemoResult:
    key: str
    policy: dict[str, Any]
    timeline: list[ModeSwitchRow]
    thresholds: list[tuple[int, int]]  # (failure, success) after each raise
    produced: int
    delivered: int
    duplicates: int
    by_path: dict[str, int]
    final_mode: str


class SourceDemo:
    """Builds the demo source on a center and plays the script (see the module docstring)."""

    def __init__(self, center: EventCenter, seed: int) -> None:
        self.name = f"inventory-{secrets.token_hex(2)}"
        self.feed = LocalFeed(self.name)
        self.tally = ItemTally()
        self._rng = random.Random(seed)
        center.processor.subscribe("source.item.*", self.tally.handler, name="inventory")
        self.runner: SourceRunner = center.sources.register(
            DataSource(
                tenant=TENANT,
                name=self.name,
                events=LocalPushPath(self.feed),
                poll=callable_poll(self.feed.page, name=f"{self.name} pages"),
                **SOURCE_POLICY,
            )
        )
        self.started_at = 0.0

    @property
    def key(self) -> str:
        return f"{TENANT}/{self.name}"

    async def play(self, wall: Callable[[], float]) -> None:
        """Run the script, then wait until every item produced was handled (bounded)."""
        self.started_at = wall()
        stop = asyncio.Event()
        producer = asyncio.create_task(self._produce(stop))
        try:
            await asyncio.sleep(0.3)
            await self._outage()
            for _ in range(FLAPS):
                await asyncio.sleep(0.2)
                await self._stall()
        finally:
            stop.set()
            await producer
        await self._until(lambda: self._delivered() >= len(self.feed.items))

    async def _produce(self, stop: asyncio.Event) -> None:
        versions: Counter[str] = Counter()
        while not stop.is_set():
            sku = f"sku-{self._rng.randrange(SKUS)}"
            versions[sku] += 1
            stock = self._rng.randrange(500)
            self.feed.add(SourceItem(key=sku, version=str(versions[sku]), data={"stock": stock}))
            await asyncio.sleep(PRODUCE_EVERY_S)

    async def _outage(self) -> None:
        self.feed.set_state(DOWN)
        await self._until(lambda: self.runner.mode == POLLING_ONLY)
        await asyncio.sleep(0.05)
        self.feed.set_state(UP)
        await self._until(lambda: self.runner.mode == EVENT_ONLY)

    async def _stall(self) -> None:
        self.feed.set_state(STALLED)
        await self._until(lambda: self.runner.mode != EVENT_ONLY)
        self.feed.set_state(UP)
        await self._until(lambda: self.runner.mode == EVENT_ONLY)

    async def _until(self, reached: Callable[[], bool]) -> None:
        """Wait for ``reached`` at most PHASE_LIMIT_S: the script goes on either way, and the
        timeline printed afterwards shows what the source did."""
        for _ in range(round(PHASE_LIMIT_S / CHECK_EVERY_S)):
            if reached():
                return
            await asyncio.sleep(CHECK_EVERY_S)

    def _delivered(self) -> int:
        produced = {(item.key, item.version) for item in self.feed.items}
        return len(produced & set(self.tally.seen))

    def result(self, url: str, after: int) -> SourceDemoResult:
        """The counts from what the handler saw, the timeline as recorded in the store (every
        stored decision of this source after notification ``after``; a blocking read)."""
        timeline, thresholds = recorded_decisions(url, after, TENANT, self.name, self.started_at)
        seen = self.tally.seen
        return SourceDemoResult(
            key=self.key,
            policy=dict(SOURCE_POLICY),
            timeline=timeline,
            thresholds=thresholds,
            produced=len(self.feed.items),
            delivered=self._delivered(),
            duplicates=sum(seen.values()) - len(seen),
            by_path=dict(self.tally.paths),
            final_mode=self.runner.mode,
        )


def recorded_decisions(
    url: str, after: int, tenant: str, name: str, origin: float
) -> tuple[list[ModeSwitchRow], list[tuple[int, int]]]:
    """The source's ModeSwitched (and SwitchRolledBack) events as timeline rows, ``at``
    relative to ``origin``, and the thresholds after each ThresholdRaised."""
    source_id = SourceLog.create_id(tenant, name)
    app = CenterApplication(url, cache_size=0, create_tables=False)
    timeline: list[ModeSwitchRow] = []
    thresholds: list[tuple[int, int]] = []
    try:
        for _, stored in app.read_events(after):
            if stored.originator_id != source_id:
                continue
            kind = type(stored).__qualname__.rpartition(".")[2]
            e: Any = stored
            if kind == "ModeSwitched":
                timeline.append(ModeSwitchRow(e.at - origin, e.previous, e.to, e.reason))
            elif kind == "SwitchRolledBack":
                reason = f"rolled back from {e.attempted}: {e.reason}"
                timeline.append(ModeSwitchRow(e.at - origin, e.attempted, e.to, reason))
            elif kind == "ThresholdRaised":
                thresholds.append((e.failure_threshold, e.success_threshold))
    finally:
        app.close()
    return timeline, thresholds
