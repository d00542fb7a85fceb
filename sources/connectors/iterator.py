"""A push path over a user's async iterator (an async generator, a client library's stream).

Each value the iterator yields is one message (see :mod:`.user_code` for what it may be); its
position is a counter: ``"1"``, ``"2"``, ... in the order taken from the iterator.

What it cannot do: **resume after a restart**. An iterator has no position a new process
could go back to, so ``open(position)`` with a position beyond what this path has handed out
(a stored position from an earlier process) raises :class:`PositionLost`: re-list, reconcile,
then ``open(None)``. Within one process it keeps what was handed out and not acked, and hands
it out again after ``aclose``/``open`` (from after the position given, if any).

``aclose`` leaves the iterator where it is, so the path can be opened again; ``finish``
ends the iteration for good (the pending pull is cancelled, the iterator's ``aclose`` called).
An iterator that raises is a :class:`SourceError` from then on (it cannot be resumed); one that
ends is silence from then on.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from typing import Any

from eventcenter.domain.sources import Received, SourceError
from eventcenter.sources.connectors.errors import Where
from eventcenter.sources.connectors.lifecycle import Lifecycle
from eventcenter.sources.connectors.user_code import received_user_value, user_failure


def iterator_path(source: AsyncIterable[Any], *, name: str = "iterator") -> IteratorPath:
    """A push path handing out what ``source`` yields; ``name`` shows in messages."""
    return IteratorPath(source, name=name)


async def _next(iterator: AsyncIterator[Any]) -> Any:
    return await anext(iterator)


def _seen(pull: asyncio.Future[Any]) -> None:
    """Mark how a pull ended as seen. A pull survives ``aclose``; if the iterator ends or fails
    after the path was closed for good (the service stopped), nobody reads it and asyncio
    would report an error "never retrieved" at exit. A later ``receive`` still reads it."""
    if not pull.cancelled():
        pull.exception()


class IteratorPath:
    """See :func:`iterator_path`."""

    def __init__(self, source: AsyncIterable[Any], *, name: str) -> None:
        self._iterator = aiter(source)
        self._where = Where("iterator_path", repr(name))
        self._life = Lifecycle(self.describe)
        self._pull: asyncio.Task[Any] | None = None  # survives aclose: nothing is dropped
        self._taken = 0
        self._unacked: dict[int, Received] = {}
        self._again: deque[Received] = deque()
        self._ended = False
        self._failure: SourceError | None = None

    @property
    def describe(self) -> str:
        return f"iterator_path {self._where.target}"

    async def open(self, position: str | None) -> None:
        self._life.check_openable()
        if position is not None:
            upto = self._parse(position)
            for number in [number for number in self._unacked if number <= upto]:
                del self._unacked[number]
        self._again = deque(self._unacked[number] for number in sorted(self._unacked))
        self._life.opened()

    def _parse(self, position: str) -> int:
        try:
            upto = int(position)
        except ValueError:
            upto = -1
        if upto < 0 or upto > self._taken:
            raise self._where.lost(
                f"cannot resume from position {position!r}: an async iterator has no position"
                f" to go back to after a restart (this path has handed out {self._taken});"
                " re-list and reconcile, then open without a position"
            )
        return upto

    async def receive(self, max_items: int, timeout: float) -> Sequence[Received]:
        self._life.require_open("receive")
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        found: list[Received] = []
        while self._again and len(found) < max_items:
            found.append(self._again.popleft())
        if found:
            return found
        if self._failure is not None:
            raise self._failure
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        while len(found) < max_items and not self._ended:
            if self._pull is None:
                self._pull = asyncio.ensure_future(_next(self._iterator))
                self._pull.add_done_callback(_seen)
            wait = 0.0 if found else max(deadline - loop.time(), 0.0)
            done, _ = await asyncio.wait({self._pull}, timeout=wait)
            if not done:
                break
            pull, self._pull = self._pull, None
            try:
                value = pull.result()
            except StopAsyncIteration:
                self._ended = True
                break
            except Exception as error:
                self._failure = user_failure(error, self._where)
                if found:
                    break
                raise self._failure from error
            self._taken += 1
            received = received_user_value(value, str(self._taken), token=self._taken)
            self._unacked[self._taken] = received
            found.append(received)
        if not found and self._ended:
            await asyncio.sleep(max(deadline - loop.time(), 0.0))  # silence for the timeout
        return found

    async def ack(self, received: Sequence[Received]) -> None:
        self._life.require_open("ack")
        for message in received:
            if isinstance(message.token, int):
                self._unacked.pop(message.token, None)

    async def aclose(self) -> None:
        if self._life.state == "open":
            self._life.closed()

    async def finish(self) -> None:
        """Close the path and end the iteration: it cannot be opened again."""
        await self.aclose()
        self._ended = True
        pull, self._pull = self._pull, None
        if pull is not None and not pull.done():
            pull.cancel()
            await asyncio.wait({pull})
        closer = getattr(self._iterator, "aclose", None)
        if closer is not None:
            await closer()
