"""A subscription's timeout, told apart from a TimeoutError the handler raises itself."""

from __future__ import annotations

import asyncio
import random

from eventcenter.domain.errors import HandlerTimeout
from eventcenter.domain.event import Event
from eventcenter.handlers.config import ProcessorSettings
from eventcenter.handlers.context import Context
from eventcenter.handlers.memory import MemoryDeadLetters, MemoryDecisionLog
from eventcenter.handlers.processor import EventProcessor
from tests.unit.looping import joined


def processor(letters: MemoryDeadLetters) -> EventProcessor:
    return EventProcessor(
        ProcessorSettings(max_attempts=1, handler_timeout=30.0),
        decisions=MemoryDecisionLog(),
        dead_letters=letters,
        rng=random.Random(1),
    )


async def test_a_timeout_error_raised_by_the_handler_is_reported_as_it_is() -> None:
    letters = MemoryDeadLetters()
    center = processor(letters)

    @center.on("payments.authorize", name="payments")
    async def authorize(event: Event, ctx: Context) -> None:
        raise TimeoutError("payment gateway timed out")

    async with center:
        await center.publish("payments.authorize")
        await joined(center)

    [letter] = letters.letters
    assert type(letter.error) is TimeoutError
    assert str(letter.error) == "payment gateway timed out"


async def test_an_attempt_that_outlives_its_timeout_is_a_handler_timeout() -> None:
    letters = MemoryDeadLetters()
    center = processor(letters)

    @center.on("payments.authorize", name="payments", timeout=0.001)
    async def authorize(event: Event, ctx: Context) -> None:
        await asyncio.Event().wait()  # never returns: only the timeout ends it

    async with center:
        await center.publish("payments.authorize")
        await joined(center)

    [letter] = letters.letters
    assert isinstance(letter.error, HandlerTimeout)
    assert "'payments' ran longer than 0.001s" in str(letter.error)
