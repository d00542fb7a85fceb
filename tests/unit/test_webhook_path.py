"""WebhookPath: offers from HTTP requests, answered only once the engine acknowledged them."""

from __future__ import annotations

import asyncio

import pytest

from eventcenter.domain.errors import EventCenterError
from eventcenter.domain.sources import (
    PushPath,
    Received,
    SourceError,
    SourceErrorKind,
    received_from,
)
from eventcenter.sources.webhook import RETRY_AFTER_S, WebhookPath, WebhookUnavailable


def item(key: str, version: int = 1) -> Received:
    return received_from({"key": key, "version": version}, "", "")


async def opened(max_pending: int = 100, position: str | None = None) -> WebhookPath:
    path = WebhookPath("acme", "orders", max_pending=max_pending)
    await path.open(position)
    return path


def test_it_is_a_push_path() -> None:
    path: PushPath = WebhookPath("acme", "orders")
    assert path.describe == "webhook POST /sources/acme/orders/webhook"


async def test_an_offer_is_answered_only_once_every_message_is_acked() -> None:
    path = await opened()

    answer = path.offer([item("a"), item("b")])
    taken = await path.receive(10, timeout=1.0)

    assert [m.position for m in taken] == ["1", "2"]
    assert [m.item.key for m in taken if m.item] == ["a", "b"]
    assert not answer.done()
    await path.ack(taken[:1])
    assert not answer.done(), "half of the offer is durable: the sender must still wait"
    await path.ack(taken[1:])
    assert answer.done()
    assert [m.position for m in answer.result()] == ["1", "2"]
    assert path.pending == 0


async def test_a_bad_message_travels_like_any_other_so_the_engine_can_dead_letter_it() -> None:
    path = await opened()
    bad = received_from({"version": 1}, "", '{"version": 1}')

    answer = path.offer([bad])
    (taken,) = await path.receive(10, timeout=1.0)
    await path.ack([taken])

    assert taken.item is None
    assert taken.problem is not None
    assert "no key" in taken.problem
    assert taken.raw == '{"version": 1}'
    assert (await answer)[0].problem == taken.problem


async def test_receive_returns_nothing_after_its_timeout_when_nothing_was_offered() -> None:
    path = await opened()

    assert await path.receive(10, timeout=0) == []


async def test_receive_wakes_up_when_an_offer_arrives() -> None:
    path = await opened()
    waiting = asyncio.create_task(path.receive(10, timeout=60.0))
    await asyncio.sleep(0)  # one loop turn: the receive is now waiting
    assert not waiting.done()

    path.offer([item("a")])
    taken = await asyncio.wait_for(waiting, 1.0)

    assert [m.item.key for m in taken if m.item] == ["a"]


async def test_receive_hands_out_at_most_max_items_in_order() -> None:
    path = await opened()
    path.offer([item("a"), item("b"), item("c")])

    first = await path.receive(2, timeout=0)
    second = await path.receive(2, timeout=0)

    assert [m.position for m in first] == ["1", "2"]
    assert [m.position for m in second] == ["3"]


async def test_acking_twice_changes_nothing() -> None:
    path = await opened()
    answer = path.offer([item("a")])
    taken = await path.receive(1, timeout=0)

    await path.ack(taken)
    await path.ack(taken)

    assert answer.done()
    assert path.pending == 0


async def test_an_empty_offer_is_answered_at_once() -> None:
    path = await opened()

    assert (await path.offer([])) == []


@pytest.mark.parametrize("state", ["never opened", "closed"])
async def test_a_path_that_is_not_open_refuses_offers(state: str) -> None:
    path = WebhookPath("acme", "orders")
    if state == "closed":
        await path.open(None)
        await path.aclose()

    with pytest.raises(WebhookUnavailable, match="is not open") as refused:
        path.offer([item("a")])

    assert refused.value.kind is SourceErrorKind.CONNECTION
    assert refused.value.retry_after == RETRY_AFTER_S
    assert path.pending == 0


async def test_a_full_path_refuses_the_whole_offer_until_messages_are_acked() -> None:
    path = await opened(max_pending=2)
    path.offer([item("a")])

    with pytest.raises(WebhookUnavailable, match="at most 2") as refused:
        path.offer([item("b"), item("c")])
    assert refused.value.kind is SourceErrorKind.RATE_LIMITED
    assert path.waiting == 1, "nothing of a refused offer is queued"

    await path.ack(await path.receive(10, timeout=0))
    answer = path.offer([item("b"), item("c")])
    assert not answer.done()


async def test_closing_fails_every_offer_not_answered_yet_queued_or_taken() -> None:
    path = await opened()
    taken_offer = path.offer([item("a")])
    await path.receive(1, timeout=0)
    queued_offer = path.offer([item("b")])

    await path.aclose()

    for answer in (taken_offer, queued_offer):
        with pytest.raises(WebhookUnavailable, match="was closed"):
            await answer
    assert path.pending == 0
    assert path.waiting == 0


async def test_closing_wakes_a_receive_in_progress_which_raises() -> None:
    path = await opened()
    waiting = asyncio.create_task(path.receive(10, timeout=60.0))
    await asyncio.sleep(0)  # one loop turn: the receive is now waiting
    assert not waiting.done()

    await path.aclose()

    with pytest.raises(SourceError, match="not open"):
        await asyncio.wait_for(waiting, 1.0)


async def test_receive_on_a_path_that_is_not_open_raises() -> None:
    path = WebhookPath("acme", "orders")

    with pytest.raises(SourceError) as failed:
        await path.receive(1, timeout=0)

    assert failed.value.kind is SourceErrorKind.CONNECTION


async def test_positions_continue_from_the_position_open_is_given() -> None:
    path = await opened(position="41")
    path.offer([item("a")])

    (taken,) = await path.receive(1, timeout=0)

    assert taken.position == "42"


async def test_positions_keep_growing_across_a_reopen() -> None:
    path = await opened()
    path.offer([item("a"), item("b")])
    await path.aclose()

    await path.open("1")  # the engine stored only the first one
    path.offer([item("c")])
    (taken,) = await path.receive(1, timeout=0)

    assert taken.position == "3", "a position is never given to two messages"


async def test_a_position_that_is_not_a_count_is_refused() -> None:
    path = WebhookPath("acme", "orders")

    with pytest.raises(SourceError, match="not a webhook position") as refused:
        await path.open("1700000000000-0")

    assert refused.value.kind is SourceErrorKind.BAD_DATA
    assert not path.is_open


async def test_opening_twice_is_refused() -> None:
    path = await opened()

    with pytest.raises(EventCenterError, match="already open"):
        await path.open(None)


async def test_withdrawing_drops_what_was_not_taken_and_keeps_what_was() -> None:
    path = await opened()
    answer = path.offer([item("a"), item("b")])
    taken = await path.receive(1, timeout=0)

    assert path.withdraw(answer) == 1

    assert answer.cancelled()
    assert path.waiting == 0
    assert path.pending == 1, "the message being admitted still counts until it is acked"
    await path.ack(taken)
    assert path.pending == 0
    assert await path.receive(10, timeout=0) == []


async def test_a_request_that_stops_waiting_leaves_other_offers_alone() -> None:
    path = await opened()
    given_up = path.offer([item("a")])
    kept = path.offer([item("b")])

    path.withdraw(given_up)
    taken = await path.receive(10, timeout=0)
    await path.ack(taken)

    assert [m.item.key for m in taken if m.item] == ["b"]
    assert kept.done()
    assert not kept.cancelled()
