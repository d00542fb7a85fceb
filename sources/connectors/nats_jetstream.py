"""NATS JetStream push path: a durable pull consumer, acknowledged after admission.

How it keeps every message:

- **Acknowledged only when told.** ``receive`` fetches from the durable consumer; a message
  is acked (explicit ack policy) only by ``ack``, which the engine calls once it is durably
  admitted. An un-acked message is delivered again by the server after ``ack_wait`` seconds
  (and after a restart of the center: the consumer's state lives on the server).
- **Position = stream sequence.** ``open(position)`` raises :class:`PositionLost` when the
  stream or the durable consumer is gone (a server that lost its store), when the stream ends
  before ``position`` (it was recreated), or when messages after ``position`` were removed
  (limits, purge: the stream's first sequence is past ``position + 1``). While reading, the
  same check runs every ``check_interval`` seconds; a removal behind what the consumer has
  been delivered is reported the same way. After a PositionLost, re-list and reconcile, then
  ``open(None)``. (On a stream shared by many subjects, removed messages of other subjects
  count too: a needless reconciliation, never a missed gap.)
- **Outages.** The client reconnects by itself ``reconnect_attempts`` times, every
  ``reconnect_wait`` seconds; meanwhile ``receive`` raises a connection error instead of
  reporting silence. If it gives up, the next ``receive`` connects anew.

``open(None)`` creates what is missing: the stream (capturing ``subject``, other settings left
at the server's defaults; create it yourself for anything else) unless
``create_stream=False``, and the durable consumer (filtered on ``subject``, delivering from
the first message of the stream).

Message format: the body is the JSON of one item (see ``decode_item``), e.g.
``{"key": "o-1", "version": 3, "data": {"total": 12}}``; publish with a ``Nats-Msg-Id``
header to let the stream drop a repeated publish. A body that is not an item is handed out
with its problem.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from eventcenter.domain.errors import ConfigurationError
from eventcenter.domain.sources import Received, SourceError, SourceErrorKind
from eventcenter.sources.connectors.errors import (
    PathStateError,
    Where,
    classify,
    shown_url,
    translated,
    url_password,
)
from eventcenter.sources.connectors.lifecycle import Lifecycle
from eventcenter.sources.connectors.messages import received_json

DEFAULT_URL = "nats://127.0.0.1:4222"
MIN_FETCH_S = 0.01  # nats-py refuses a fetch without time to wait
ERRORS_KEPT = 16  # the client's latest errors, to say why a connect failed


def nats_jetstream(
    stream: str,
    subject: str,
    durable: str,
    url: str = DEFAULT_URL,
    *,
    ack_wait: float = 30.0,
    max_ack_pending: int | None = None,
    create_stream: bool = True,
    check_interval: float = 5.0,
    connect_timeout: float = 2.0,
    request_timeout: float = 5.0,
    reconnect_attempts: int = 3,
    reconnect_wait: float = 0.5,
) -> NatsJetStreamPath:
    """A push path reading ``subject`` of ``stream`` through the durable consumer ``durable``.

    ``max_ack_pending`` caps the messages handed out and not yet acked (None: the server's
    default, 1,000); keep it above the engine's batch size.
    """
    return NatsJetStreamPath(
        stream,
        subject,
        durable,
        url,
        ack_wait=ack_wait,
        max_ack_pending=max_ack_pending,
        create_stream=create_stream,
        check_interval=check_interval,
        connect_timeout=connect_timeout,
        request_timeout=request_timeout,
        reconnect_attempts=reconnect_attempts,
        reconnect_wait=reconnect_wait,
    )


@dataclass
class _Session:
    """One connection to the server with the consumer bound."""

    client: Client
    js: JetStreamContext
    sub: JetStreamContext.PullSubscription
    floor: int | None  # the highest sequence known admitted: the open position, then acks
    first_seen: int  # the stream's first sequence already accounted for
    next_check: float = 0.0


class NatsJetStreamPath:
    """See :func:`nats_jetstream`."""

    def __init__(
        self,
        stream: str,
        subject: str,
        durable: str,
        url: str,
        *,
        ack_wait: float,
        max_ack_pending: int | None,
        create_stream: bool,
        check_interval: float,
        connect_timeout: float,
        request_timeout: float,
        reconnect_attempts: int,
        reconnect_wait: float,
    ) -> None:
        if min(ack_wait, check_interval, connect_timeout, request_timeout, reconnect_wait) <= 0:
            raise ConfigurationError(
                "nats_jetstream: ack_wait, check_interval and the timeouts must be > 0"
            )
        if reconnect_attempts < 1:
            raise ConfigurationError("nats_jetstream: reconnect_attempts must be at least 1")
        self.stream, self.subject, self.durable = stream, subject, durable
        self._url = url
        self._ack_wait = ack_wait
        self._max_ack_pending = max_ack_pending
        self._create_stream = create_stream
        self._check_interval = check_interval
        self._connect_timeout = connect_timeout
        self._request_timeout = request_timeout
        self._reconnect_attempts = reconnect_attempts
        self._reconnect_wait = reconnect_wait
        self._where = Where("nats_jetstream", self._target(), url_password(url))
        self._life = Lifecycle(self.describe)
        self._session: _Session | None = None
        self._last_error: BaseException | None = None
        self._connect_errors: deque[BaseException] = deque(maxlen=ERRORS_KEPT)

    def _target(self) -> str:
        return (
            f"stream {self.stream!r} subject {self.subject!r} (durable {self.durable!r})"
            f" at {shown_url(self._url)}"
        )

    @property
    def describe(self) -> str:
        return f"nats_jetstream {self._target()}"

    async def open(self, position: str | None) -> None:
        self._life.check_openable()
        floor = None if position is None else self._parse(position)
        self._session = await self._start(floor, fresh=position is None)
        self._life.opened()

    def _parse(self, position: str) -> int:
        try:
            sequence = int(position)
        except ValueError:
            sequence = -1
        if sequence < 0:
            raise self._where.lost(
                f"position {position!r} is not a stream sequence: it was not stored by this path"
            )
        return sequence

    async def _start(self, floor: int | None, *, fresh: bool) -> _Session:
        """Connect and bind the consumer; only a ``fresh`` start may create what is missing."""
        client = await self._connect()
        try:
            async with translated(self._where, self._request_timeout * 4):
                js = client.jetstream(timeout=self._request_timeout)
                first = await self._check_stream(js, floor, fresh=fresh)
                await self._check_consumer(js, fresh=fresh)
                sub = await js.pull_subscribe_bind(durable=self.durable, stream=self.stream)
        except BaseException:
            await client.close()
            raise
        return _Session(client=client, js=js, sub=sub, floor=floor, first_seen=first)

    async def _connect(self) -> Client:
        self._last_error = None
        self._connect_errors.clear()
        try:
            return await nats.connect(
                self._url,
                name="eventcenter",
                connect_timeout=self._connect_timeout,
                max_reconnect_attempts=self._reconnect_attempts,
                reconnect_time_wait=self._reconnect_wait,
                error_cb=self._on_error,
            )
        except Exception as error:
            found = classify(self._connect_cause(error), self._where)
            if found is None:
                raise
            raise found from error

    def _connect_cause(self, error: Exception) -> BaseException:
        """NoServersError says nothing: the reason is what the client reported per attempt.
        A refused password wins over the connection reset the server follows it with."""
        if not isinstance(error, nats.errors.NoServersError) or not self._connect_errors:
            return error
        for attempt in self._connect_errors:
            found = classify(attempt, self._where)
            if found is not None and found.kind is SourceErrorKind.AUTH:
                return attempt
        return self._connect_errors[-1]

    async def _on_error(self, error: Exception) -> None:
        self._last_error = error
        self._connect_errors.append(error)

    async def _check_stream(self, js: JetStreamContext, floor: int | None, *, fresh: bool) -> int:
        """The stream's first sequence, after checking that ``floor`` is still in it."""
        try:
            info = await js.stream_info(self.stream)
        except NotFoundError:
            if not fresh:
                raise self._where.lost(
                    "the stream is gone (the server lost its store, or it was deleted):"
                    " re-list and reconcile, then open without a position"
                ) from None
            if not self._create_stream:
                raise self._where.error(
                    SourceErrorKind.CONNECTION,
                    "the stream does not exist: create it, or let the path create it"
                    " (create_stream=True)",
                ) from None
            info = await js.add_stream(name=self.stream, subjects=[self.subject])
        state = info.state
        if floor is not None and state.last_seq < floor:
            raise self._where.lost(
                f"the stream ends at {state.last_seq}, before the stored position {floor}"
                " (it was recreated): re-list and reconcile"
            )
        if floor is not None and state.first_seq > floor + 1:
            raise self._where.lost(
                f"messages {floor + 1}..{state.first_seq - 1} after the stored position were"
                " removed before they were read: re-list and reconcile"
            )
        return state.first_seq

    async def _check_consumer(self, js: JetStreamContext, *, fresh: bool) -> None:
        try:
            await js.consumer_info(self.stream, self.durable)
            return
        except NotFoundError:
            if not fresh:
                raise self._where.lost(
                    "the durable consumer is gone (deleted, or the server lost its store):"
                    " re-list and reconcile, then open without a position"
                ) from None
        config = ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self._ack_wait,
            deliver_policy=DeliverPolicy.ALL,
            filter_subject=self.subject,
            max_ack_pending=self._max_ack_pending,
        )
        await js.add_consumer(self.stream, config)

    def _require(self, action: str) -> _Session:
        self._life.require_open(action)
        if self._session is None:
            raise PathStateError(f"{self.describe}: {action}() while open() failed")
        return self._session

    async def receive(self, max_items: int, timeout: float) -> Sequence[Received]:
        session = self._require("receive")
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        if session.client.is_closed:  # the client gave up reconnecting: start over
            self._session = session = await self._start(session.floor, fresh=False)
        if time.monotonic() >= session.next_check:
            await self._check(session)
        wait = max(timeout, MIN_FETCH_S)
        try:
            async with asyncio.timeout(wait + self._request_timeout):
                messages = await session.sub.fetch(max_items, timeout=wait)
        except TimeoutError:
            if session.client.is_connected:
                return []  # silence
            raise self._disconnected() from None
        except Exception as error:
            found = classify(error, self._where)
            if found is None:
                raise
            raise found from error
        return [
            received_json(message.data, str(message.metadata.sequence.stream), token=message)
            for message in messages
        ]

    def _disconnected(self) -> SourceError:
        reason = f" ({type(self._last_error).__name__}: {self._last_error})"
        return self._where.error(
            SourceErrorKind.CONNECTION,
            f"disconnected from the server{reason if self._last_error else ''}; reconnecting",
        )

    async def _check(self, session: _Session) -> None:
        """A stream trimmed behind what the consumer was delivered, or a vanished consumer."""
        session.next_check = time.monotonic() + self._check_interval
        async with translated(self._where, self._request_timeout * 2):
            try:
                stream = await session.js.stream_info(self.stream)
                consumer = await session.js.consumer_info(self.stream, self.durable)
            except NotFoundError:
                raise self._where.lost(
                    "the stream or the durable consumer is gone: re-list and reconcile"
                ) from None
        first = stream.state.first_seq
        if first <= session.first_seen:
            return
        session.first_seen = first
        delivered = consumer.delivered.stream_seq if consumer.delivered else 0
        if first > delivered + 1:
            raise self._where.lost(
                f"messages {delivered + 1}..{first - 1} were removed before they were"
                " delivered: re-list and reconcile"
            )

    async def ack(self, received: Sequence[Received]) -> None:
        session = self._require("ack")
        messages = [item.token for item in received if isinstance(item.token, Msg)]
        if not messages:
            return
        async with translated(self._where, self._request_timeout):
            for message in messages:
                try:
                    await message.ack()
                except nats.errors.MsgAlreadyAckdError:
                    continue
            await session.client.flush(timeout=max(1, round(self._request_timeout)))
        top = max(message.metadata.sequence.stream for message in messages)
        session.floor = max(session.floor or 0, top)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if self._life.state == "open":
            self._life.closed()
        if session is not None and not session.client.is_closed:
            async with translated(self._where, self._request_timeout):
                await session.client.close()
