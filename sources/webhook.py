"""The webhook push path: items POSTed to the center's HTTP server, handed to the event engine.

The HTTP route calls :meth:`WebhookPath.offer` with what it received and awaits the returned
future; the engine takes the messages with :meth:`~WebhookPath.receive`, admits them durably and
calls :meth:`~WebhookPath.ack`, which resolves the future. So the sender's 2xx answer means the
items are durable (or dead-lettered with their reason): the sender is the one holding the
message until then, and it retries when it gets anything else.

That is also why this path has nothing to resume. Its position is a counter that numbers the
messages as they are offered (continued from the position ``open`` is given, so numbers keep
growing across restarts); after a restart there is nothing to read again, because every
message whose sender was answered is already durable and every other sender got an error and
retries. Admission is idempotent per ``(tenant, source, key, version)``, so such a retry of a
message that was admitted after all is dropped, never delivered twice.

A path that is not open (never opened, or closed by the engine on a mode switch or at
shutdown) refuses offers with :class:`WebhookUnavailable`, as does a path holding
``max_pending`` messages not yet acknowledged: the route answers 503 with ``Retry-After``.
Closing fails every offer still waiting, for the same reason.

The queue between the route and the engine is a deque with a wake-up event rather than an
``asyncio.Queue``: a request that stops waiting (its ``publish_wait`` ran out, its client went
away) withdraws its messages from the middle of it (:meth:`WebhookPath.withdraw`). After a 503
nothing of that request waits to be taken any more; a message the engine had taken already may
still be admitted, and the sender's retry of it is then dropped as a repeat.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from eventcenter.domain.errors import EventCenterError
from eventcenter.domain.sources import Received, SourceError, SourceErrorKind

__all__ = ["RETRY_AFTER_S", "WebhookPath", "WebhookUnavailable"]

RETRY_AFTER_S = 1.0
"""Seconds a refused sender is told to wait before trying again."""


class WebhookUnavailable(SourceError):
    """Raised by :meth:`WebhookPath.offer` (or set on its future) when the path cannot take the
    messages now: not open, closed while they waited, or full. Nothing of the offer is kept;
    the sender should retry after ``retry_after`` seconds."""

    def __init__(self, kind: SourceErrorKind, message: str) -> None:
        super().__init__(kind, message, retry_after=RETRY_AFTER_S)


@dataclass(eq=False)
class _Offer:
    """One call to :meth:`WebhookPath.offer`: its messages and the positions not acked yet."""

    received: list[Received]
    future: asyncio.Future[list[Received]]
    unacked: set[str] = field(default_factory=set)


class WebhookPath:
    """A :class:`~eventcenter.domain.sources.PushPath` fed by HTTP requests; see the module
    docstring. Build it with no I/O; use it from one event loop."""

    def __init__(self, tenant: str, source: str, *, max_pending: int = 10_000) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        self.tenant = tenant
        self.source = source
        self.max_pending = max_pending
        self._counter = 0
        self._open = False
        self._queue: deque[Received] = deque()
        self._unacked: dict[str, _Offer] = {}  # position -> its offer, from offer to ack
        self._arrived = asyncio.Event()

    @property
    def describe(self) -> str:
        return f"webhook POST /sources/{self.tenant}/{self.source}/webhook"

    @property
    def is_open(self) -> bool:
        return self._open

    @property
    def waiting(self) -> int:
        """Messages offered and not yet received by the engine."""
        return len(self._queue)

    @property
    def pending(self) -> int:
        """Messages offered and not yet acknowledged (waiting or being admitted)."""
        return len(self._unacked)

    # the engine's side (PushPath) ----------------------------------------------------------------

    async def open(self, position: str | None) -> None:
        """Start taking offers. ``position`` (the last one stored) only continues the count."""
        if self._open:
            raise EventCenterError(f"{self.describe} is already open")
        if position is not None:
            if not position.isdigit():
                raise SourceError(
                    SourceErrorKind.BAD_DATA,
                    f"{self.describe}: position {position!r} is not a webhook position"
                    " (a count of messages)",
                )
            self._counter = max(self._counter, int(position))
        self._open = True

    async def receive(self, max_items: int, timeout: float) -> Sequence[Received]:
        """Up to ``max_items`` offered messages, waiting at most ``timeout`` s for the first."""
        self._check_open()
        if not self._queue:
            self._arrived.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._arrived.wait()
            except TimeoutError:
                return []
            self._check_open()  # closed while waiting
        taken: list[Received] = []
        while self._queue and len(taken) < max_items:
            taken.append(self._queue.popleft())
        return taken

    async def ack(self, received: Sequence[Received]) -> None:
        """Mark messages durable; an offer whose messages are all acked is answered.

        Acking a message twice, or one whose offer was withdrawn or failed, changes nothing.
        """
        for message in received:
            offer = self._unacked.pop(message.position, None)
            if offer is None:
                continue
            offer.unacked.discard(message.position)
            if not offer.unacked and not offer.future.done():
                offer.future.set_result(offer.received)

    async def aclose(self) -> None:
        """Stop taking offers; every offer not answered yet fails with WebhookUnavailable."""
        self._open = False
        offers = {id(offer): offer for offer in self._unacked.values()}
        self._queue.clear()
        self._unacked.clear()
        closed = WebhookUnavailable(SourceErrorKind.CONNECTION, f"{self.describe} was closed")
        for offer in offers.values():
            if not offer.future.done():
                offer.future.set_exception(closed)
                offer.future.exception()  # retrieved: a sender that gave up is not an error
        self._arrived.set()  # a receive() in progress raises instead of waiting out its timeout

    # the HTTP route's side -----------------------------------------------------------------------

    def offer(self, received: Sequence[Received]) -> asyncio.Future[list[Received]]:
        """Queue messages for the engine; the future resolves once every one is acked.

        Each message gets the path's next position (the one it carries is replaced) and its
        offer as ``token``; the future's result is the messages as queued, so the caller can
        report their positions. Raises WebhookUnavailable when the path is not open or would
        hold more than ``max_pending`` unacknowledged messages (nothing is queued then). Call
        :meth:`withdraw` if the caller stops waiting.
        """
        if not self._open:
            raise WebhookUnavailable(SourceErrorKind.CONNECTION, f"{self.describe} is not open")
        if self.pending + len(received) > self.max_pending:
            raise WebhookUnavailable(
                SourceErrorKind.RATE_LIMITED,
                f"{self.describe} holds {self.pending} messages not yet admitted"
                f" (at most {self.max_pending})",
            )
        future: asyncio.Future[list[Received]] = asyncio.get_running_loop().create_future()
        offer = _Offer([], future)
        for message in received:
            self._counter += 1
            position = str(self._counter)
            numbered = replace(message, position=position, token=offer)
            offer.received.append(numbered)
            offer.unacked.add(position)
            self._unacked[position] = offer
        if not offer.unacked:
            future.set_result([])
            return future
        self._queue.extend(offer.received)
        self._arrived.set()
        return future

    def withdraw(self, future: asyncio.Future[list[Received]]) -> int:
        """Give up on an offer: its messages the engine has not taken are dropped.

        Messages already taken may still be admitted (the sender's retry is then dropped as a
        repeat). Returns how many were dropped; the future is cancelled if still pending.
        """
        kept: deque[Received] = deque()
        dropped = 0
        for message in self._queue:
            offer = message.token
            if isinstance(offer, _Offer) and offer.future is future:
                self._unacked.pop(message.position, None)
                offer.unacked.discard(message.position)
                dropped += 1
            else:
                kept.append(message)
        self._queue = kept
        future.cancel()
        return dropped

    def _check_open(self) -> None:
        if not self._open:
            raise SourceError(SourceErrorKind.CONNECTION, f"{self.describe} is not open")
