"""Start and stop of an engine's task: one place for the cancellation rules."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any


class EngineTask:
    """The one ``run()`` task of an engine.

    ``start`` is idempotent while the task runs. ``stop`` cancels it and waits until it
    finished its cleanup (the engine closes its path in a ``finally``); if the task had
    already died of an error, ``stop`` raises that error instead of hiding it.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self, run: Callable[[], Coroutine[Any, Any, None]]) -> asyncio.Task[None]:
        if self._task is not None and not self._task.done():
            return self._task
        self._task = asyncio.create_task(run(), name=self.name)
        return self._task

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the caller itself is being cancelled


def raise_if_cancelling() -> None:
    """Raise CancelledError if the current task is being cancelled.

    Some client libraries swallow a cancellation outright: redis-py 8 lets a command that was
    cancelled while it released its connection return its answer as if nothing happened. An
    engine that went on to its next ``receive`` would then block for the whole receive
    timeout (and more) before ``stop`` returns: call this between two calls on a path.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()


def reraise_if_cancelled(error: BaseException) -> None:
    """Raise CancelledError if the current task is being cancelled.

    Some client libraries turn a cancellation that hits them in the middle of a read into
    their own timeout or connection error (redis-py raises "Timeout reading from ..."). An
    engine that treated that as a path failure would retry forever and its ``stop`` would
    never return: call this first in every handler of a path's error.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError() from error
