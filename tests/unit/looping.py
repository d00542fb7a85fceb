"""Waiting helpers for asyncio tests: bounded by loop turns, never by wall-clock assertions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from eventcenter.handlers.processor import EventProcessor

GUARD_S = 1.0  # only turns a hang into a failure; no assertion depends on it


async def joined(processor: EventProcessor) -> None:
    """Wait until every admitted delivery is finished (fails instead of hanging)."""
    await asyncio.wait_for(processor.join(), GUARD_S)


async def until(condition: Callable[[], bool], turns: int = 200) -> None:
    """Let the loop run until ``condition`` holds, for at most ``turns`` turns."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"condition still false after {turns} loop turns")
