"""Which failures count against a delivery's attempts: the handler's yes, the store's no.

A store that cannot be reached, or a lease lost to another center, says nothing about the
handler: retrying is right and must not use up ``max_attempts``. A write the store refused
(RecordingFailed, e.g. a decision whose details cannot be stored) is refused again on every
retry: it counts, so the delivery ends as a dead letter instead of retrying for ever.
"""

from __future__ import annotations

import random

import pytest

from eventcenter.domain.errors import LeaseLost, RecordingFailed, StoreUnavailable
from eventcenter.domain.event import Event
from eventcenter.handlers.config import ProcessorSettings
from eventcenter.handlers.context import Context
from eventcenter.handlers.memory import MemoryDeadLetters, MemoryDecisionLog
from eventcenter.handlers.processor import EventProcessor
from tests.unit.looping import joined

FAILURES_BEFORE_SUCCESS = 4


def processor(letters: MemoryDeadLetters) -> EventProcessor:
    return EventProcessor(
        ProcessorSettings(max_attempts=2, backoff_base=0.0001, backoff_max=0.0002),
        decisions=MemoryDecisionLog(),
        dead_letters=letters,
        rng=random.Random(3),
    )


@pytest.mark.parametrize(
    "error",
    [StoreUnavailable("store unavailable: connection refused"), LeaseLost("token 1 is stale")],
    ids=["store-unavailable", "lease-lost"],
)
async def test_a_failure_of_the_store_is_retried_without_using_up_attempts(
    error: Exception,
) -> None:
    letters = MemoryDeadLetters()
    center = processor(letters)
    calls = 0

    @center.on("work.item")
    async def handle(event: Event, ctx: Context) -> None:
        nonlocal calls
        calls += 1
        if calls <= FAILURES_BEFORE_SUCCESS:
            raise error

    async with center:
        await center.publish("work.item")
        await joined(center)
        totals = center.snapshot().totals

    assert calls == FAILURES_BEFORE_SUCCESS + 1  # more than max_attempts (2)
    assert letters.letters == []
    assert (totals["handled"], totals["failed"], totals["retried"]) == (1, 0, 4)


async def test_a_write_the_store_refused_counts_and_ends_as_a_dead_letter() -> None:
    letters = MemoryDeadLetters()
    center = processor(letters)
    calls = 0

    @center.on("work.item", name="decider")
    async def handle(event: Event, ctx: Context) -> None:
        nonlocal calls
        calls += 1
        raise RecordingFailed("the store refused the write: not serializable")

    async with center:
        await center.publish("work.item")
        await joined(center)

    [letter] = letters.letters
    assert (calls, letter.attempts, letter.subscription) == (2, 2, "decider")
    assert isinstance(letter.error, RecordingFailed)
