"""Tenant isolation under a flood: one tenant's flooding source does not hold back another's.

Two sources of two tenants run on one real center (SQLite): ``flood/bulk`` hands out 20,000
items as fast as its async iterator can, ``quiet/orders`` a handful once the flood is under way.
The handler notes the order in which items are handled; that order is the evidence, not a
clock: the quiet tenant's items must be handled while the flood is still far from done. Both
sources' engines, the admission into the store and the processor are shared: none of them may
queue the quiet tenant's items behind the flood.

The second test makes the subscription lag (its handler is slower than the flood), so its
deliveries wait in the store: they are read back with the room shared among the tenants
waiting (handlers/backlog.py), so the quiet tenant's items wait for about a memory window of
the flood, not for the flood's whole backlog.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from eventcenter.center.app import EventCenter
from eventcenter.center.settings import CenterSettings
from eventcenter.domain.event import Event
from eventcenter.handlers.config import ProcessorSettings
from eventcenter.sources.connectors import iterator_path
from eventcenter.sources.source import DataSource

FLOOD = 20_000
QUIET = 5
UNDER_WAY = 500  # flood items handled before the quiet tenant produces
WAIT_S = 60.0
POLL_S = 0.01
WINDOW = 100  # memory_window of the lagging subscription's test

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


class Handled:
    """The order in which items were handled: (tenant, key), and waits on counts."""

    def __init__(self) -> None:
        self.order: list[tuple[str, str]] = []
        self.counts: dict[str, int] = {"flood": 0, "quiet": 0}
        self._changed = asyncio.Event()

    def note(self, event: Event) -> None:
        self.order.append((event.tenant, event.payload["key"]))
        self.counts[event.tenant] += 1
        self._changed.set()

    async def until(self, condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(WAIT_S):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    def flood_before_quiet_done(self) -> int:
        """How many flood items were handled before the last quiet one."""
        last = max(i for i, (tenant, _) in enumerate(self.order) if tenant == "quiet")
        return sum(1 for tenant, _ in self.order[:last] if tenant == "flood")


async def flood_items(count: int, done: asyncio.Event | None = None) -> AsyncIterator[Any]:
    for n in range(count):
        yield {"key": f"f-{n}", "version": 1, "data": {"n": n}}
    if done is not None:
        done.set()
    await asyncio.Event().wait()  # a source that stays open


async def quiet_items(start: asyncio.Event) -> AsyncIterator[Any]:
    await start.wait()
    for n in range(QUIET):
        yield {"key": f"q-{n}", "version": 1}
    await asyncio.Event().wait()


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait (bounded) for something no event announces (an engine's admitted position)."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {WAIT_S}s"
        await asyncio.sleep(POLL_S)


def build(url: str, tmp_path: Path, processor: ProcessorSettings) -> EventCenter:
    settings = CenterSettings(database_url=url, data_dir=tmp_path, processor=processor)
    return EventCenter(settings, builtin_handlers=False)


async def test_a_flooding_tenant_does_not_hold_back_another_tenants_items(
    database_url: str, tmp_path: Path
) -> None:
    center = build(database_url, tmp_path, ProcessorSettings())
    handled = Handled()
    under_way = asyncio.Event()

    async def handle(event: Event, ctx: object) -> None:
        handled.note(event)
        if handled.counts["flood"] >= UNDER_WAY:
            under_way.set()

    center.processor.subscribe("source.item.*", handle, name="items")
    center.sources.register(
        DataSource(tenant="flood", name="bulk", events=iterator_path(flood_items(FLOOD)))
    )
    center.sources.register(
        DataSource(tenant="quiet", name="orders", events=iterator_path(quiet_items(under_way)))
    )
    await center.start()
    try:
        await handled.until(lambda: handled.counts["quiet"] == QUIET)
        flood_before = handled.flood_before_quiet_done()
        await handled.until(lambda: handled.counts["flood"] == FLOOD)
    finally:
        await center.stop()

    assert flood_before < FLOOD // 4, (
        f"the quiet tenant's items waited for {flood_before} of {FLOOD} flood items"
    )
    assert sorted(key for tenant, key in handled.order if tenant == "quiet") == [
        f"q-{n}" for n in range(QUIET)
    ]
    assert len({key for tenant, key in handled.order if tenant == "flood"}) == FLOOD
    print(f"\nthe quiet tenant's {QUIET} items were handled after {flood_before} of {FLOOD}")


async def test_a_flooding_tenant_does_not_hold_back_another_tenant_on_a_lagging_subscription(
    database_url: str, tmp_path: Path
) -> None:
    flood = FLOOD // 4
    center = build(database_url, tmp_path, ProcessorSettings(memory_window=WINDOW))
    handled = Handled()
    exhausted, quiet_start, release = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def handle(event: Event, ctx: object) -> None:
        if event.tenant == "flood":
            await release.wait()  # the subscription lags: the flood's backlog piles up
        handled.note(event)

    center.processor.subscribe("source.item.*", handle, name="items")
    center.sources.register(
        DataSource(tenant="flood", name="bulk", events=iterator_path(flood_items(flood, exhausted)))
    )
    center.sources.register(
        DataSource(tenant="quiet", name="orders", events=iterator_path(quiet_items(quiet_start)))
    )
    await center.start()
    try:
        flood_engine = center.sources.runner("flood", "bulk").push
        quiet_engine = center.sources.runner("quiet", "orders").push
        assert flood_engine is not None
        assert quiet_engine is not None
        async with asyncio.timeout(WAIT_S):
            await exhausted.wait()
        await until(lambda: flood_engine.position == str(flood), "every flood item admitted")
        quiet_start.set()
        await until(lambda: quiet_engine.position == str(QUIET), "the quiet items admitted")
        release.set()
        await handled.until(lambda: handled.counts["quiet"] == QUIET)
        flood_before = handled.flood_before_quiet_done()
    finally:
        release.set()
        await center.stop()

    # Bounded by the memory window (what was in memory before the quiet items came, plus the
    # flood's share of the next read), not by the flood's backlog in the store.
    assert flood_before <= 2 * WINDOW, (
        f"the quiet tenant's items waited for {flood_before} of {flood} flood items"
    )
