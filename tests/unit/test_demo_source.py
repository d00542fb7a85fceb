"""The demo's local source: a push path the demo cuts and stalls, a poll path over the same
items. (The script itself runs on real time in tests/e2e/test_cli.py.)"""

from __future__ import annotations

import pytest

from eventcenter.center.demo_source import (
    DOWN,
    STALLED,
    UP,
    ItemTally,
    LocalFeed,
    LocalPushPath,
)
from eventcenter.domain.event import Event
from eventcenter.domain.sources import PositionLost, SourceError, SourceErrorKind, SourceItem


def feed_of(count: int) -> LocalFeed:
    feed = LocalFeed("inventory")
    for n in range(count):
        feed.add(SourceItem(key=f"sku-{n}", version="1"))
    return feed


async def test_push_hands_out_the_items_in_order_with_their_index_as_position() -> None:
    path = LocalPushPath(feed_of(5))
    await path.open(None)
    first = await path.receive(3, timeout=0)
    rest = await path.receive(10, timeout=0)
    assert [r.position for r in first] == ["1", "2", "3"]
    assert [r.item.key for r in rest if r.item] == ["sku-3", "sku-4"]
    assert await path.receive(10, timeout=0) == []


async def test_a_reopened_push_path_resumes_after_the_position_given() -> None:
    path = LocalPushPath(feed_of(5))
    await path.open(None)
    await path.receive(5, timeout=0)
    await path.aclose()
    await path.open("2")
    assert [r.position for r in await path.receive(10, timeout=0)] == ["3", "4", "5"]


async def test_a_position_past_the_end_is_lost_not_silently_skipped() -> None:
    with pytest.raises(PositionLost):
        await LocalPushPath(feed_of(2)).open("3")


async def test_a_cut_push_path_refuses_connections_and_fails_a_receive() -> None:
    feed = feed_of(2)
    path = LocalPushPath(feed)
    await path.open(None)
    feed.set_state(DOWN)
    with pytest.raises(SourceError) as failed:
        await path.receive(10, timeout=0)
    assert failed.value.kind is SourceErrorKind.CONNECTION
    with pytest.raises(SourceError, match="connection refused"):
        await path.open("0")
    feed.set_state(UP)
    await path.open("0")
    assert len(await path.receive(10, timeout=0)) == 2


async def test_a_stalled_push_path_is_silent_until_it_resumes() -> None:
    feed = feed_of(2)
    path = LocalPushPath(feed)
    await path.open(None)
    feed.set_state(STALLED)
    assert await path.receive(10, timeout=0) == []
    feed.set_state(UP)
    assert len(await path.receive(10, timeout=0)) == 2


async def test_the_poll_path_pages_through_the_same_items_by_index() -> None:
    feed = feed_of(3)
    items, cursor = await feed.page(None)
    assert [item.key for item in items] == ["sku-0", "sku-1", "sku-2"]
    assert cursor == 3
    assert await feed.page("3") == ([], 3)


async def test_the_tally_counts_repeats_and_the_path_each_delivery_came_by() -> None:
    tally = ItemTally()
    for path in ("push", "poll", "push"):
        event = Event.create(
            "source.item.changed",
            {"key": "sku-1", "version": "1" if path != "poll" else "2"},
            metadata={"path": path},
        )
        await tally.handler(event, None)  # type: ignore[arg-type]
    assert tally.seen == {("sku-1", "1"): 2, ("sku-1", "2"): 1}
    assert tally.paths == {"push": 2, "poll": 1}
