"""Timeouts measured on an injected clock, so a test moves them with a fake one."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from eventcenter.domain.sources import Clock

T = TypeVar("T")

#: Real seconds a cancelled call is given to unwind before it is left behind: it only bounds a
#: call that ignores its cancellation (a blocking call in a thread cannot be interrupted).
UNWIND_S = 1.0


async def within(clock: Clock, seconds: float, awaitable: Awaitable[T]) -> T:
    """The result of ``awaitable`` if it finishes within ``seconds`` of ``clock`` time.

    Otherwise it is cancelled and :class:`TimeoutError` raised. ``asyncio.timeout`` would
    measure the loop's time, which a :class:`~eventcenter.sources.clock.FakeClock` does not
    move; this races the call against ``clock.sleep``. A cancellation of the caller cancels
    the call too.
    """
    call = asyncio.ensure_future(awaitable)
    timer = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait({call, timer}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        await _cancel(call, timer)
        raise
    if call.done():
        timer.cancel()  # a cancelled sleep has nothing to report: no need to wait for it
        return call.result()
    await _cancel(call, timer)
    raise TimeoutError(f"no answer within {seconds:g}s")


async def _cancel(*tasks: asyncio.Future[Any]) -> None:
    """Cancel ``tasks`` and give them :data:`UNWIND_S` to finish; their outcome is consumed."""
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks, timeout=UNWIND_S)
    for task in tasks:
        if task.done():
            if not task.cancelled():
                task.exception()
        else:
            task.add_done_callback(_consume)


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and wait until it has unwound. Its own cancellation is swallowed; the
    caller's is not (a caller being cancelled itself gets its CancelledError)."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
