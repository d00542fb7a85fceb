"""Start and stop of an engine's task: one place for the cancellation rules, and for what
the task's log records say about the source it works for."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

#: The source (tenant, source, path) whose work the current task does: set in each engine's
#: task and in a runner's own tasks, so every log record they emit (and the connectors' and
#: admission code's they call) can carry it. The center's log configuration reads it.
current_source: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "eventcenter_source", default=None
)


def source_context(fields: Mapping[str, str]) -> contextvars.Context:
    """A copy of the current context in which :data:`current_source` is ``fields``: pass it
    to ``create_task(..., context=...)`` so the task works for that source from its start,
    whoever starts it (a mode switch, a healing strategy, the runner)."""
    context = contextvars.copy_context()
    context.run(current_source.set, fields)
    return context


class EngineTask:
    """The one ``run()`` task of an engine.

    ``start`` is idempotent while the task runs. ``stop`` cancels it and waits until it
    finished its cleanup (the engine closes its path in a ``finally``); if the task had
    already died of an error, ``stop`` raises that error instead of hiding it.
    """

    def __init__(self, name: str, log_fields: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.log_fields = log_fields
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self, run: Callable[[], Coroutine[Any, Any, None]]) -> asyncio.Task[None]:
        if self._task is not None and not self._task.done():
            return self._task
        context = None if self.log_fields is None else source_context(self.log_fields)
        self._task = asyncio.create_task(run(), name=self.name, context=context)
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


def raise_if_cancelling(cause: BaseException | None = None) -> None:
    """Raise CancelledError if the current task is being cancelled.

    Some client libraries hide a cancellation: redis-py lets a command cancelled while it
    released its connection return its answer as if nothing happened, and turns one that hits
    it in the middle of a read into its own "Timeout reading from ...". An engine that went on
    (to its next ``receive``, or to a retry of that "failure") would not stop for a long
    while, or ever. Call this between two calls on a path, and first in every handler of a
    path's error (passing the error as ``cause``).
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError() from cause
