"""Helpers for connector tests: receive with bounded waits, never a sleep as an assertion."""

from __future__ import annotations

import time
from collections.abc import Sequence

from eventcenter.domain.sources import PushPath, Received, SourceError, SourceErrorKind

WAIT_S = 20.0  # only turns a hang into a failure
STEP_S = 0.2


async def receive_until(
    path: PushPath, count: int, *, timeout: float = WAIT_S, batch: int = 100
) -> list[Received]:
    """Receive until ``count`` messages came (more may come in the last batch)."""
    deadline = time.monotonic() + timeout
    found: list[Received] = []
    while len(found) < count:
        assert time.monotonic() < deadline, f"only {len(found)} of {count} within {timeout}s"
        found.extend(await path.receive(batch, STEP_S))
    return found


async def receive_quiet(path: PushPath, wait: float = 0.3) -> list[Received]:
    """What arrives within ``wait`` seconds (expected: nothing)."""
    return list(await path.receive(100, wait))


async def failure_within(path: PushPath, *, timeout: float = WAIT_S) -> SourceError:
    """Receive until the path fails; the failure (messages meanwhile are ignored)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            await path.receive(100, STEP_S)
        except SourceError as error:
            return error
    raise AssertionError(f"the path did not fail within {timeout}s")


def keys(received: Sequence[Received]) -> list[str]:
    return [message.item.key for message in received if message.item is not None]


def problems(received: Sequence[Received]) -> list[str]:
    return [message.problem for message in received if message.problem is not None]


def retryable(error: SourceError) -> bool:
    return error.kind in (SourceErrorKind.CONNECTION, SourceErrorKind.TIMEOUT)
