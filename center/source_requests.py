"""The center's side of ``eventcenter sources pause|resume``: the requests operators leave in the
store (:mod:`eventcenter.storage.source_requests`), applied to the center's sources.

The center applies the waiting requests once before it starts its sources (a source paused
while no center ran never starts its engines), then every ``every`` seconds while it runs.
Each request is applied through :meth:`SourceManager.pause` / :meth:`SourceManager.resume`,
exactly as a call of the HTTP API would be, and marked applied with its outcome (``paused``,
``paused already (by ...)``, ``resumed``, ``not paused: nothing to resume``, or ``refused:
...`` for a source this center does not run). A request the store could not record stays
pending and is tried again at the next pass.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from eventcenter.domain.errors import EventCenterError, InvalidPauseRequest
from eventcenter.domain.source_pause import PauseAction, PauseResult
from eventcenter.sources.manager import SourceManager, SourceNotFound
from eventcenter.storage.queue import DurableSourceRequests
from eventcenter.storage.source_requests import PendingRequest

__all__ = ["REQUESTS_EVERY", "SourceRequests"]

log = logging.getLogger("eventcenter.sources")

REQUESTS_EVERY = 1.0
"""Seconds between two looks for operators' pause and resume requests."""


class SourceRequests:
    """Applies the pause and resume requests left for this center; see the module docstring."""

    def __init__(
        self,
        store: DurableSourceRequests,
        sources: SourceManager,
        *,
        wall: Callable[[], float],
        every: float = REQUESTS_EVERY,
    ) -> None:
        if not every > 0:
            raise ValueError(f"every must be > 0 seconds, got {every}")
        self._store = store
        self._sources = sources
        self._wall = wall
        self._every = every
        self._lock = asyncio.Lock()  # one pass at a time: a request is applied once
        self._task: asyncio.Task[None] | None = None

    async def apply_pending(self) -> int:
        """Apply the requests given since the last pass, oldest first; how many."""
        async with self._lock:
            pending = await self._store.pending()
            for request in pending:
                outcome = await self._apply(request)
                await self._store.applied(request.id, self._wall(), outcome)
                log.warning(
                    "source %s/%s: %s requested by %s (%s): %s",
                    request.tenant,
                    request.source,
                    request.action,
                    request.by,
                    request.reason or "no reason given",
                    outcome,
                )
            return len(pending)

    async def _apply(self, request: PendingRequest) -> str:
        result: PauseResult
        try:
            if request.action == PauseAction.PAUSE:
                result = await self._sources.pause(
                    request.tenant, request.source, reason=request.reason, by=request.by
                )
            elif request.action == PauseAction.RESUME:
                result = await self._sources.resume(
                    request.tenant, request.source, reason=request.reason, by=request.by
                )
            else:
                return f"refused: unknown action {request.action!r} (pause or resume)"
        except (SourceNotFound, InvalidPauseRequest) as refused:
            return f"refused: {refused}"
        return result.outcome

    def start(self) -> None:
        """Look for requests every ``every`` seconds from now on."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._forever(), name="source requests"
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(self._every)
            try:
                await self.apply_pending()
            except EventCenterError as error:  # the store: the requests wait for the next pass
                log.warning("applying requests to pause or resume sources failed: %s", error)
