"""The faults of ``bench.healing``, injected for real on loopback, and the systems they hit.

Each scenario owns what it breaks:

- a **system of record** (:class:`Record`): a producer adds one item every ``1 / RATE`` s; the
  record is what a poll API or a listing would serve, and it notes every item the center's
  handler receives (exactly once is checked against it);
- a ``redis-server`` of its own on a free port (``bench.source_failover.RedisServer``),
  killed by its pid and started again on the same port, with or without its data on disk;
- a route on the bench's HTTP server (:class:`FaultyApi`, a small ASGI app under uvicorn on a
  free port) that serves the record as a poll API and can be told to answer 429 with
  ``Retry-After``, 401, or only after a delay.

Nothing here decides whether a fault healed: the scenarios only switch faults on and off.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import orjson
import uvicorn
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from bench.source_failover import ServerDidNotStart, free_port
from eventcenter.domain.event import Event
from eventcenter.domain.sources import SourceItem

RATE = 20.0  # items per second from each scenario's producer
PAGE = 200  # items per poll answer
READY_S = 10.0


# the system of record ----------------------------------------------------------------------------


class Record:
    """Every item a scenario's producer made (what a poll API and a listing serve), and what the
    center's handler received, by key and by path."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.items: list[SourceItem] = []
        self.seen: Counter[str] = Counter()
        self.paths: Counter[str] = Counter()
        self.changed = asyncio.Event()

    def add(self) -> SourceItem:
        n = len(self.items)
        item = SourceItem(key=f"{self.prefix}-{n}", version="1", data={"n": n})
        self.items.append(item)
        return item

    def page(self, cursor: str | None) -> tuple[list[SourceItem], int]:
        start = int(cursor or 0)
        page = self.items[start : start + PAGE]
        return page, start + len(page)

    async def poll(self, cursor: str | None) -> tuple[list[SourceItem], int]:
        """A poll path over the record (``callable_poll``)."""
        return self.page(cursor)

    async def listing(self) -> list[SourceItem]:
        """The listing reconciliation compares against: every item the record holds."""
        return list(self.items)

    async def handler(self, event: Event, ctx: Any) -> None:
        self.seen[str(event.payload["key"])] += 1
        self.paths[str(event.metadata.get("path"))] += 1
        self.changed.set()

    @property
    def handled(self) -> int:
        return len(self.seen)

    def exactly_once(self) -> dict[str, Any]:
        """Produced against handled: distinct keys, duplicates, the first keys missing."""
        keys = [item.key for item in self.items]
        missing = [key for key in keys if key not in self.seen]
        duplicates = self.seen.total() - len(self.seen)
        return {
            "produced": len(keys),
            "handled": len(self.seen),
            "duplicates": duplicates,
            "missing": len(missing),
            "missing_keys": missing[:10],
            "by_path": dict(sorted(self.paths.items())),
            "held": not missing and duplicates == 0 and set(self.seen) == set(keys),
        }


Push = Callable[[SourceItem], Awaitable[None]]


async def produce(record: Record, push: Push | None, stop: asyncio.Event) -> None:
    """One item every 1/RATE s into the record, and through ``push`` (if any) to the push
    path; a push that fails leaves the item to the poll path or the listing."""
    while not stop.is_set():
        item = record.add()
        if push is not None:
            await push(item)
        await asyncio.sleep(1 / RATE)


# a redis-server of the scenario's own ------------------------------------------------------------


def redis_client(url: str) -> Redis:
    """The producer's client: fails at once while the server is down (no retries)."""
    return Redis.from_url(
        url, socket_connect_timeout=0.2, socket_timeout=1.0, retry=Retry(NoBackoff(), 0)
    )


def entry(item: SourceItem) -> dict[str, bytes]:
    body = orjson.dumps({"key": item.key, "version": item.version, "data": dict(item.data)})
    return {"item": body}


def corrupted(item: SourceItem) -> dict[str, bytes]:
    """What a broken producer writes instead of ``item``: half not JSON, half without key."""
    n = int(item.data["n"])
    if n % 2:
        return {"item": b'{"key": "' + item.key.encode() + b'", "version": 1, "data": {'}
    return {"item": orjson.dumps({"version": item.version, "data": dict(item.data)})}


async def xadd(client: Redis, stream: str, fields: dict[str, bytes]) -> bool:
    """Add an entry; False when the server refused or is down."""
    try:
        await client.xadd(stream, fields)  # type: ignore[arg-type]
    except RedisError:
        return False
    return True


# the HTTP poll API -------------------------------------------------------------------------------

OK, RATE_LIMITED, UNAUTHORIZED, SLOW = "ok", "429", "401", "slow"


@dataclass
class Route:
    """One scenario's poll API: its record and the fault it answers with now."""

    record: Record
    mode: str = OK
    retry_after: float = 1.0
    delay: float = 0.0
    answered: Counter[str] = field(default_factory=Counter)


class FaultyApi:
    """``GET /<route>/poll?since=<cursor>``: the route's record as ``http_poll`` reads it, or the
    route's fault (429 with ``Retry-After``, 401, or the answer after ``delay`` seconds)."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.port = free_port()
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    def url(self, route: str) -> str:
        return f"http://127.0.0.1:{self.port}/{route}/poll?since={{cursor}}"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        parts = scope["path"].strip("/").split("/")
        route = self.routes.get(parts[0]) if len(parts) == 2 and parts[1] == "poll" else None
        if route is None:
            await _answer(send, 404, b'{"error": "no such route"}')
            return
        mode = route.mode
        route.answered[mode] += 1
        if mode == RATE_LIMITED:
            headers = [(b"retry-after", f"{route.retry_after:g}".encode())]
            await _answer(send, 429, b'{"error": "too many requests"}', headers)
            return
        if mode == UNAUTHORIZED:
            await _answer(send, 401, b'{"error": "the token has expired"}')
            return
        if mode == SLOW:
            await asyncio.sleep(route.delay)
        query = parse_qs(scope["query_string"].decode())
        page, cursor = route.record.page(query.get("since", [""])[0] or None)
        body = orjson.dumps(
            {
                "items": [{"key": i.key, "version": i.version, "data": dict(i.data)} for i in page],
                "cursor": str(cursor),
            }
        )
        await _answer(send, 200, body)

    async def start(self) -> None:
        config = uvicorn.Config(
            self,
            host="127.0.0.1",
            port=self.port,
            lifespan="off",
            log_config=None,
            log_level="warning",
            access_log=False,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._task = asyncio.get_running_loop().create_task(server.serve())
        deadline = time.monotonic() + READY_S
        while not server.started:
            if self._task.done() or time.monotonic() > deadline:
                raise ServerDidNotStart(f"the HTTP fault server did not start on {self.port}")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task


async def _answer(
    send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    raw = [(b"content-type", b"application/json"), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
