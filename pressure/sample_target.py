"""A load-test target whose true capacity is known: ``slots / service time``.

Each request holds one of ``slots`` slots for ``service_ms`` (an asyncio sleep, no CPU), and
waits for a free slot first; with ``queue`` set, a request that finds that many already
waiting is refused at once with 503. So below its capacity it answers in about ``service_ms``;
above it, requests queue (latency grows without bound over a step) or, with a queue limit, are
refused (errors): what a PressureTester must find.

It speaks just enough HTTP/1.1 (any method and path, keep-alive, a request body skipped by its
Content-Length) on asyncio streams, so that it costs little CPU: on a small machine the load
generator, not this target, is what runs out of CPU first at high rates.

Run it with ``eventcenter sample-target`` or ``python -m eventcenter.pressure.sample_target``;
in code, :func:`start_sample_target` serves it on a running loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

_OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
_FULL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n"
    b"\r\nqueue full"
)
_BAD = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
_MAX_HEAD = 64 * 1024


@dataclass
class SampleTarget:
    """The request handler (see the module docstring); counts what it served and refused."""

    slots: int
    service_ms: float
    queue: int | None = None
    served: int = 0
    refused: int = 0
    _slots: asyncio.Semaphore = field(init=False, repr=False)
    _waiting: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise ValueError("a sample target needs at least one slot")
        if self.service_ms <= 0:
            raise ValueError("service_ms must be positive")
        if self.queue is not None and self.queue < 0:
            raise ValueError("queue must be >= 0")
        self._slots = asyncio.Semaphore(self.slots)

    @property
    def capacity(self) -> float:
        """Requests per second it sustains: slots / service time."""
        return self.slots / (self.service_ms / 1000.0)

    async def answer(self) -> bytes:
        """Hold a slot for the service time (waiting for one first); 503 when the queue is full."""
        if self._slots.locked():
            if self.queue is not None and self._waiting >= self.queue:
                self.refused += 1
                return _FULL
            self._waiting += 1
            try:
                await self._slots.acquire()
            finally:
                self._waiting -= 1
        else:
            await self._slots.acquire()
        try:
            await asyncio.sleep(self.service_ms / 1000.0)
        finally:
            self._slots.release()
        self.served += 1
        return _OK

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection: requests one after another until the client closes it."""
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length, close = _parse_head(head)
                if length < 0:
                    writer.write(_BAD)
                    break
                if length:
                    await reader.readexactly(length)
                writer.write(await self.answer())
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


def _parse_head(head: bytes) -> tuple[int, bool]:
    """(Content-Length, close the connection after?) of a request head; length -1 if bad."""
    lines = head.split(b"\r\n")
    request = lines[0].split()
    if len(request) != 3 or not request[2].startswith(b"HTTP/1."):
        return -1, True
    length, close = 0, request[2] == b"HTTP/1.0"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                return -1, True
        elif name == b"connection":
            token = value.strip().lower()
            close = token == b"close" or (close and token != b"keep-alive")
    return length, close


async def start_sample_target(
    target: SampleTarget, host: str = "127.0.0.1", port: int = 0
) -> asyncio.Server:
    """Serve ``target`` on ``host:port`` (0: any free port; read it from the server's
    sockets) on the running loop. Close the server to stop it."""
    return await asyncio.start_server(
        target.handle, host, port, limit=_MAX_HEAD, backlog=1024, reuse_address=True
    )


def server_port(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


async def serve_until_stopped(
    target: SampleTarget,
    host: str,
    port: int,
    announce: Callable[[str], None],
) -> None:
    """Serve until SIGINT or SIGTERM; ``announce`` gets the URL line once it listens."""
    server = await start_sample_target(target, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    announce(f"listening on http://{host}:{server_port(server)}")
    try:
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()


def main(argv: list[str] | None = None) -> int:
    """``python -m eventcenter.pressure.sample_target``: prints the URL line, then serves."""
    parser = argparse.ArgumentParser(prog="python -m eventcenter.pressure.sample_target")
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--service-ms", type=float, default=20.0)
    parser.add_argument("--queue", type=int, default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args(argv)
    try:
        target = SampleTarget(args.slots, args.service_ms, args.queue)
    except ValueError as error:
        parser.error(str(error))

    def announce(line: str) -> None:
        print(f"capacity {target.capacity:g} req/s; {line}", flush=True)

    asyncio.run(serve_until_stopped(target, args.host, args.port, announce))
    return 0


if __name__ == "__main__":
    sys.exit(main())
