"""A webhook receiver on loopback (uvicorn), for the escalation tests.

It answers each request from a script (status, headers, body, delay) and keeps what it
received, with the real time it arrived (what a signature's timestamp is checked against).
``async with receiving_webhooks() as receiver:`` serves it on a free port for the block.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from eventcenter.healing.escalation import IDEMPOTENCY_HEADER
from tests.servers import free_port

START_S = 10.0  # only turns a server that never starts into a failure


@dataclass(frozen=True)
class Request:
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def key(self) -> str:
        return self.headers[IDEMPOTENCY_HEADER.lower()]


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"taken"
    delay: float = 0.0


@dataclass
class Receiver:
    """A webhook receiver: answers from ``script`` in order (then 200), keeps every request."""

    url: str
    script: list[Reply] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.requests.append(Request(headers, body, time.time()))
        reply = self.script.pop(0) if self.script else Reply()
        if reply.delay:
            await asyncio.sleep(reply.delay)
        raw = [(k.encode(), v.encode()) for k, v in reply.headers.items()]
        await send({"type": "http.response.start", "status": reply.status, "headers": raw})
        await send({"type": "http.response.body", "body": reply.body})


@asynccontextmanager
async def receiving_webhooks() -> AsyncIterator[Receiver]:
    """A :class:`Receiver` served on a free loopback port until the block ends."""
    port = free_port()
    state = Receiver(url=f"http://127.0.0.1:{port}/hooks/eventcenter")
    config = uvicorn.Config(
        state, host="127.0.0.1", port=port, lifespan="off", log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + START_S
    try:
        while not server.started:
            if task.done():
                task.result()  # the server failed to start: show why
            assert time.monotonic() < deadline, "the receiver did not start"
            await asyncio.sleep(0.01)
        yield state
    finally:
        server.should_exit = True
        await task
