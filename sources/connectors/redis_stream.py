"""Redis Streams push path: a consumer group whose entries are acknowledged after admission.

How it keeps every entry:

- **Acknowledged only when told.** ``receive`` reads with ``XREADGROUP``; an entry stays in the
  group's pending list until ``ack`` (``XACK``), which the engine calls once the entry is
  durably admitted.
- **Un-acked entries come again.** On ``open`` the consumer first re-reads its own pending
  entries (a restart under the same consumer name); entries pending with any consumer for
  longer than ``claim_idle`` seconds (a dead consumer, or this one that never acked) are taken
  over with ``XAUTOCLAIM`` and handed out again. The center's idempotent admission drops what
  it already has.
- **No silent gap.** The position is the entry id. ``open(position)`` raises
  :class:`PositionLost` when the stream or the group is gone (Redis keeps nothing without
  persistence: a restart empties it) or when entries after ``position`` were trimmed or
  deleted before they were read (Redis 7's ``max-deleted-entry-id``). The same trim check runs
  while reading, every ``claim_idle / 2`` seconds at most. After a PositionLost, re-list and
  reconcile, then ``open(None)``: the group goes on from where it is.

``open(None)`` creates the group (and the stream, ``MKSTREAM``) if missing, reading from
``start``: ``"0"`` (default) hands out what the stream already holds, ``"$"`` only new entries.

The message format is in :mod:`eventcenter.sources.connectors.redis_entry`. One ``receive`` at a
time per path; ``ack`` may run beside it.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError

from eventcenter.domain.errors import ConfigurationError
from eventcenter.domain.sources import Received
from eventcenter.sources.connectors.errors import (
    PathStateError,
    Where,
    shown_url,
    translated,
    url_password,
)
from eventcenter.sources.connectors.lifecycle import Lifecycle
from eventcenter.sources.connectors.redis_entry import received_entry

DEFAULT_URL = "redis://127.0.0.1:6379/0"
MAX_CHECK_INTERVAL_S = 5.0

StreamId = tuple[int, int]
ZERO: StreamId = (0, 0)


def redis_stream(
    stream: str,
    group: str,
    consumer: str | None = None,
    url: str = DEFAULT_URL,
    *,
    claim_idle: float = 30.0,
    start: str = "0",
    connect_timeout: float = 5.0,
    command_timeout: float = 10.0,
) -> RedisStreamPath:
    """A push path reading ``stream`` as ``consumer`` of ``group`` (see the module doc).

    ``consumer`` defaults to ``eventcenter-<hostname>``: stable across restarts, so a restarted
    center gets its own pending entries back at once instead of after ``claim_idle``.
    ``command_timeout`` bounds each command beyond the receive timeout (a silent network).
    """
    return RedisStreamPath(
        stream,
        group,
        consumer or f"eventcenter-{socket.gethostname()}",
        url,
        claim_idle=claim_idle,
        start=start,
        connect_timeout=connect_timeout,
        command_timeout=command_timeout,
    )


def parse_id(text: str) -> StreamId:
    """``"1717000000000-3"`` as ``(1717000000000, 3)``; raises ValueError for anything else."""
    millis, _, sequence = text.partition("-")
    return int(millis), int(sequence or "0")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass
class _Session:
    """What one ``open`` knows: the position it resumed from and its scans."""

    floor: StreamId | None  # entries up to here were admitted before this open
    removed_seen: _Removed  # removals already accounted for (checked at open)
    backlog: str | None = "0-0"  # where the re-read of this consumer's pending entries is
    claim_cursor: str = "0-0"
    next_check: float = 0.0


class RedisStreamPath:
    """See :func:`redis_stream`."""

    def __init__(
        self,
        stream: str,
        group: str,
        consumer: str,
        url: str,
        *,
        claim_idle: float,
        start: str,
        connect_timeout: float,
        command_timeout: float,
    ) -> None:
        if claim_idle <= 0 or connect_timeout <= 0 or command_timeout <= 0:
            raise ConfigurationError(
                "redis_stream: claim_idle, connect_timeout and command_timeout must be > 0"
            )
        self.stream, self.group, self.consumer = stream, group, consumer
        self._url = url
        self._claim_idle = claim_idle
        self._start = start
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._where = Where("redis_stream", self._target(shown_url(url)), url_password(url))
        self._life = Lifecycle(self.describe)
        self._client: Redis | None = None
        self._session: _Session | None = None

    def _target(self, url: str) -> str:
        return f"{self.stream!r} (group {self.group!r}, consumer {self.consumer!r}) at {url}"

    @property
    def describe(self) -> str:
        return f"redis_stream {self._target(shown_url(self._url))}"

    async def open(self, position: str | None) -> None:
        self._life.check_openable()
        floor = None if position is None else self._parse(position)
        client = Redis.from_url(
            self._url,
            socket_connect_timeout=self._connect_timeout,
            socket_keepalive=True,
            retry=Retry(NoBackoff(), 1),  # one quick retry: a pooled connection may be stale
        )
        try:
            async with translated(self._where, self._connect_timeout + self._command_timeout):
                await client.ping()
                removed = await self._attach(client, floor)
        except BaseException:
            await client.aclose()
            raise
        self._client = client
        self._session = _Session(floor=floor, removed_seen=removed)
        self._life.opened()

    def _parse(self, position: str) -> StreamId:
        try:
            return parse_id(position)
        except ValueError:
            raise self._where.lost(
                f"position {position!r} is not a stream id: it was not stored by this path"
            ) from None

    async def _attach(self, client: Redis, floor: StreamId | None) -> _Removed:
        """Join the group (creating it for a fresh start) and check ``floor`` is still there.

        Returns what the stream has lost so far: the baseline for later trim checks.
        """
        if floor is None:
            try:
                await client.xgroup_create(self.stream, self.group, id=self._start, mkstream=True)
            except ResponseError as error:
                if "BUSYGROUP" not in str(error):
                    raise
            return _removed(await client.xinfo_stream(self.stream))
        info = await self._stream_info(client)
        group = await self._group_info(client)
        if group is None:
            raise self._where.lost(
                "the consumer group is gone (Redis restarted without persistence, or it was"
                " deleted): re-list and reconcile, then open without a position"
            )
        if parse_id(_text(info["last-generated-id"])) < floor:
            raise self._where.lost(
                f"the stream ends before the stored position {_show(floor)} (it was recreated):"
                " re-list and reconcile"
            )
        removed = _removed(info)
        reason = _unread_removed(info, group)
        if removed.max_deleted > floor:
            reason = f"entries after the stored position {_show(floor)} were deleted"
        elif removed.count is None and _first(info.get("first-entry")) > floor:
            # No counters before Redis 7: a first entry past the position may be a gap.
            reason = f"entries after the stored position {_show(floor)} were trimmed"
        if reason is not None:
            raise self._where.lost(f"{reason}: re-list and reconcile")
        return removed

    async def _stream_info(self, client: Redis) -> dict[str, Any]:
        try:
            info: dict[str, Any] = await client.xinfo_stream(self.stream)
        except ResponseError as error:
            if "no such key" not in str(error).lower():
                raise
            raise self._where.lost(
                "the stream is gone (Redis restarted without persistence, or the key was"
                " deleted): re-list and reconcile, then open without a position"
            ) from None
        return info

    async def _group_info(self, client: Redis) -> dict[str, Any] | None:
        groups: list[dict[str, Any]] = await client.xinfo_groups(self.stream)
        for group in groups:
            if _text(group["name"]) == self.group:
                return group
        return None

    def _require(self, action: str) -> tuple[Redis, _Session]:
        self._life.require_open(action)
        if self._client is None or self._session is None:
            raise PathStateError(f"{self.describe}: {action}() while open() failed")
        return self._client, self._session

    async def receive(self, max_items: int, timeout: float) -> Sequence[Received]:
        client, session = self._require("receive")
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        async with translated(self._where, max(timeout, 0.0) + self._command_timeout):
            while session.backlog is not None:
                found = await self._read_backlog(client, session, max_items)
                if found:
                    return found
            if time.monotonic() >= session.next_check:
                found = await self._maintain(client, session, max_items)
                if found:
                    return found
            block = max(1, int(timeout * 1000)) if timeout > 0 else None
            reply = await client.xreadgroup(
                self.group, self.consumer, {self.stream: ">"}, count=max_items, block=block
            )
        return [received_entry(entry_id, fields) for entry_id, fields in _entries(reply)]

    async def _read_backlog(
        self, client: Redis, session: _Session, max_items: int
    ) -> list[Received]:
        """This consumer's pending entries (delivered before, never acked), in id order."""
        reply = await client.xreadgroup(
            self.group, self.consumer, {self.stream: session.backlog or "0-0"}, count=max_items
        )
        entries = _entries(reply)
        if not entries:
            session.backlog = None
            return []
        session.backlog = entries[-1][0]
        gone = [entry_id for entry_id, fields in entries if not fields]
        if gone:
            await self._settle_deleted(client, session, gone)
            await client.xack(self.stream, self.group, *gone)
        return [received_entry(entry_id, fields) for entry_id, fields in entries if fields]

    async def _settle_deleted(self, client: Redis, session: _Session, ids: list[str]) -> None:
        """Entries that were pending and then deleted: fine if admitted before this open,
        a gap otherwise (raises PositionLost)."""
        if session.floor is None:
            return  # a fresh start: what came before is the listing's business
        lost = [entry_id for entry_id in ids if parse_id(entry_id) > session.floor]
        if lost:
            raise self._where.lost(
                f"{len(lost)} pending entries (first {lost[0]}) were deleted from the stream"
                " before they were admitted: re-list and reconcile"
            )

    async def _maintain(self, client: Redis, session: _Session, max_items: int) -> list[Received]:
        """Check for a trim behind the group, then claim entries idle for ``claim_idle``."""
        interval = min(self._claim_idle / 2, MAX_CHECK_INTERVAL_S)
        session.next_check = time.monotonic() + interval
        await self._check_trim(client, session)
        reply = await client.xautoclaim(
            self.stream,
            self.group,
            self.consumer,
            min_idle_time=int(self._claim_idle * 1000),
            start_id=session.claim_cursor,
            count=max_items,
        )
        session.claim_cursor = _text(reply[0])
        if session.claim_cursor != "0-0":
            session.next_check = 0.0  # more pending entries to scan: go on at the next call
        claimed = [(_text(entry_id), fields) for entry_id, fields in reply[1] or []]
        gone = [_text(entry_id) for entry_id in (reply[2] if len(reply) > 2 else [])]
        gone += [entry_id for entry_id, fields in claimed if not fields]
        if gone:
            await self._settle_deleted(client, session, gone)
        return [received_entry(entry_id, fields) for entry_id, fields in claimed if fields]

    async def _check_trim(self, client: Redis, session: _Session) -> None:
        """Entries removed since the last check that the group had not read yet: a gap."""
        info = await self._stream_info(client)
        removed = _removed(info)
        if removed == session.removed_seen:
            return
        session.removed_seen = removed
        group = await self._group_info(client)
        if group is None:
            raise self._where.lost("the consumer group is gone: re-list and reconcile")
        reason = _unread_removed(info, group)
        if reason is not None:
            raise self._where.lost(f"{reason}: re-list and reconcile")

    async def ack(self, received: Sequence[Received]) -> None:
        client, _ = self._require("ack")
        ids = [message.token for message in received if isinstance(message.token, str)]
        if not ids:
            return
        async with translated(self._where, self._command_timeout):
            await client.xack(self.stream, self.group, *ids)

    async def aclose(self) -> None:
        client, self._client, self._session = self._client, None, None
        if self._life.state == "open":
            self._life.closed()
        if client is not None:
            async with translated(self._where, self._command_timeout):
                await client.aclose()


def _entries(reply: Any) -> list[tuple[str, dict[bytes, bytes]]]:
    """The (id, fields) pairs of an XREADGROUP reply: RESP2 ``[[stream, entries]]`` or
    RESP3 ``{stream: [entries]}``. A deleted pending entry has no fields."""
    if not reply:
        return []
    if isinstance(reply, dict):
        batches = [entries for lists in reply.values() for entries in lists]
    else:
        batches = [pair[1] for pair in reply]
    return [(_text(entry_id), fields or {}) for batch in batches for entry_id, fields in batch]


@dataclass(frozen=True)
class _Removed:
    """What a stream has lost so far: the highest deleted id (XDEL) and how many entries are
    gone in all (trimmed or deleted; None before Redis 7, which has no counter)."""

    max_deleted: StreamId
    count: int | None


def _removed(info: dict[str, Any]) -> _Removed:
    value = info.get("max-deleted-entry-id")
    added = info.get("entries-added")
    return _Removed(
        max_deleted=ZERO if value is None else parse_id(_text(value)),
        count=None if added is None else int(added) - int(info["length"]),
    )


def _unread_removed(info: dict[str, Any], group: dict[str, Any]) -> str | None:
    """Why entries the group never read are gone, or None if none are.

    Trimming removes the oldest entries; ``entries-read`` is the group's logical offset (the
    number of entries ever added up to the last one it read). More entries removed than that
    means some were removed unread. A deleted id past the group's last read is one too.
    Redis leaves ``entries-read`` unknown in some cases (deletions in the middle of the
    stream): then only the deleted id is checked.
    """
    delivered = parse_id(_text(group["last-delivered-id"]))
    removed = _removed(info)
    if removed.max_deleted > delivered:
        return (
            f"entries up to {_show(removed.max_deleted)} were deleted before the group read"
            f" them (it has read up to {_show(delivered)})"
        )
    read = group.get("entries-read")
    if read is None and delivered == ZERO:
        read = 0  # the group has read nothing yet
    if removed.count is not None and read is not None and removed.count > int(read):
        return f"{removed.count - int(read)} entries were trimmed before the group read them"
    return None


def _first(entry: Any) -> StreamId:
    return parse_id(_text(entry[0])) if entry else ZERO


def _show(position: StreamId) -> str:
    return f"{position[0]}-{position[1]}"
