"""The item sink on a real center: items become events once per (tenant, source, key,
version), whichever path brings them; bad messages become dead letters; the path's position
and the delivered record commit with the items (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from eventcenter.center.app import EventCenter
from eventcenter.center.settings import CenterSettings
from eventcenter.center.source_sink import CHANGED, DELETED, CenterItemSink
from eventcenter.domain.event import Event
from eventcenter.domain.reconcile import item_digest
from eventcenter.domain.sources import Received, SourceItem, received_from
from eventcenter.handlers.config import ProcessorSettings


def settings_for(url: str, tmp_path: Path) -> CenterSettings:
    return CenterSettings(database_url=url, data_dir=tmp_path, processor=ProcessorSettings())


@pytest.fixture
async def center(database_url: str, tmp_path: Path) -> AsyncIterator[EventCenter]:
    built = EventCenter(settings_for(database_url, tmp_path), builtin_handlers=False)
    seen: list[Event] = []

    async def keep(event: Event, ctx: object) -> None:
        seen.append(event)

    built.processor.subscribe("source.item.*", keep, name="items")
    built.seen = seen  # type: ignore[attr-defined]
    await built.start()
    yield built
    await built.stop()
    built.close()


def message(key: str, version: Any, position: str, **data: Any) -> Received:
    body = {"key": key, "version": version, "data": data}
    return received_from(body, position, raw=str(body))


async def test_each_item_version_is_admitted_once_whatever_path_brings_it(
    center: EventCenter,
) -> None:
    sink = CenterItemSink(center.processor)
    first = await sink.admit(
        "acme",
        "orders",
        "push",
        [message("o-1", 1, "1-0", total=5), message("o-2", 1, "2-0")],
        "2-0",
    )
    assert all(first)
    again = await sink.admit("acme", "orders", "poll", [message("o-1", 1, "c1", total=5)], "c1")
    assert again == [None]  # a repeat: nothing admitted
    other_tenant = await sink.admit("beta", "orders", "poll", [message("o-1", 1, "c1")], "c1")
    assert all(other_tenant)
    await center.processor.join()
    seen: list[Event] = center.seen  # type: ignore[attr-defined]
    assert sorted((e.tenant, e.payload["key"]) for e in seen) == [
        ("acme", "o-1"),
        ("acme", "o-2"),
        ("beta", "o-1"),
    ]
    event = next(e for e in seen if e.tenant == "acme" and e.payload["key"] == "o-1")
    assert event.type == CHANGED
    assert event.source == "orders"
    assert event.payload == {"key": "o-1", "version": "1", "deleted": False, "data": {"total": 5}}
    assert event.metadata["path"] == "push"
    assert await sink.position("acme", "orders", "push") == "2-0"
    assert await sink.position("acme", "orders", "poll") == "c1"
    held = await sink.delivered("acme", "orders")
    assert held["o-1"].version == "1"
    assert held["o-1"].digest == item_digest(SourceItem("o-1", "1", {"total": 5}))


async def test_bad_messages_become_dead_letters_and_the_rest_goes_on(center: EventCenter) -> None:
    sink = CenterItemSink(center.processor)
    bad = received_from({"version": 3}, "5-0", raw='{"version": 3}')
    unparseable = Received(position="6-0", item=None, problem="not JSON", raw="{oops")
    results = await sink.admit(
        "acme", "orders", "push", [bad, message("o-9", 2, "7-0"), unparseable], "7-0"
    )
    assert results[0] is None
    assert results[2] is None
    assert results[1] is not None
    await center.processor.join()
    letters = center.dead_letters()
    assert sorted(row.subscription for row in letters) == ["source:acme/orders"] * 2
    assert any("no key" in row.error for row in letters)
    assert any("not JSON" in row.error for row in letters)
    assert await sink.position("acme", "orders", "push") == "7-0"


async def test_a_tombstone_is_a_deleted_event(center: EventCenter) -> None:
    sink = CenterItemSink(center.processor)
    gone = Received("c9", SourceItem("o-1", "deleted@1", {}, deleted=True))
    [event_id] = await sink.admit("acme", "orders", "reconcile", [gone], None, correction="deleted")
    assert event_id is not None
    await center.processor.join()
    [event] = center.seen  # type: ignore[attr-defined]
    assert event.type == DELETED
    assert event.metadata["correction"] == "deleted"
    assert (await sink.delivered("acme", "orders"))["o-1"].deleted
