"""Whatever is published, with whatever failures: each delivery ends exactly once."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventcenter.domain.errors import SubscriptionError
from eventcenter.domain.event import Event
from eventcenter.domain.priority import Priority
from eventcenter.handlers.base import HandlerFunc
from eventcenter.handlers.builtin import LatencySpikeHandler
from eventcenter.handlers.config import ProcessorSettings
from eventcenter.handlers.context import Context
from eventcenter.handlers.memory import MemoryDeadLetters, MemoryDecisionLog
from eventcenter.handlers.processor import EventProcessor
from tests.unit.looping import joined

TYPES = ("orders.created", "orders.paid", "stock.low")

events = st.lists(
    st.tuples(
        st.sampled_from(TYPES),
        st.sampled_from(list(Priority)),
        st.sampled_from(["acme", "globex", "initech"]),
        st.integers(min_value=0, max_value=3),  # failures before this event succeeds
        st.booleans(),  # publish the same id twice
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(stream=events, workers=st.integers(1, 4), max_attempts=st.integers(1, 3))
def test_every_delivery_is_handled_or_dead_lettered_exactly_once(
    stream: list[tuple[str, Priority, str, int, bool]], workers: int, max_attempts: int
) -> None:
    asyncio.run(_scenario(stream, workers, max_attempts))


async def _scenario(
    stream: list[tuple[str, Priority, str, int, bool]], workers: int, max_attempts: int
) -> None:
    letters = MemoryDeadLetters()
    processor = EventProcessor(
        ProcessorSettings(
            workers=workers,
            max_attempts=max_attempts,
            backoff_base=0.0001,
            backoff_max=0.0002,
            max_in_flight_per_subscription=2,
        ),
        decisions=MemoryDecisionLog(),
        dead_letters=letters,
        rng=random.Random(3),
    )
    failures_left: dict[str, int] = {}
    handled: Counter[tuple[str, str]] = Counter()

    def handler(name: str) -> HandlerFunc:
        async def handle(event: Event, ctx: Context) -> None:
            key = f"{name}:{event.id}"
            if failures_left.get(key, 0) > 0:
                failures_left[key] -= 1
                raise RuntimeError("flaky")
            await asyncio.sleep(0)
            handled[(name, str(event.id))] += 1

        return handle

    processor.subscribe("orders.*", handler("orders"), name="orders")
    processor.subscribe("#", handler("all"), name="all")
    expected: set[tuple[str, str]] = set()
    async with processor:
        for type_, priority, tenant, failures, twice in stream:
            event = Event.create(type_, {}, tenant=tenant, priority=priority)
            names = ["all", "orders"] if type_.startswith("orders.") else ["all"]
            for name in names:
                failures_left[f"{name}:{event.id}"] = failures
                expected.add((name, str(event.id)))
            await processor.publish_event(event)
            if twice:
                await processor.publish_event(event)
        await joined(processor)

    dead = Counter((letter.subscription, str(letter.event.id)) for letter in letters.letters)
    assert all(n == 1 for n in handled.values()), "nothing handled twice"
    assert all(n == 1 for n in dead.values()), "nothing dead-lettered twice"
    assert not set(handled) & set(dead), "never both handled and dead-lettered"
    assert set(handled) | set(dead) == expected, "nothing lost"
    for name, event_id in dead:
        assert failures_left[f"{name}:{event_id}"] >= 0
    totals = processor.snapshot().totals
    assert totals.get("duplicates", 0) == sum(1 for *_, twice in stream if twice)


def test_registering_a_built_in_twice_says_how_to_do_it() -> None:
    processor = EventProcessor(decisions=MemoryDecisionLog(), dead_letters=MemoryDeadLetters())
    processor.register(LatencySpikeHandler())
    with pytest.raises(SubscriptionError, match="builtin_handlers=False"):
        processor.register(LatencySpikeHandler())
