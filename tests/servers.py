"""Servers a test starts, stops and restarts itself, for faults the shared servers must not see.

A :class:`ServerProcess` runs ``redis-server`` or ``nats-server`` on a free loopback port, waits
until it accepts connections, and is stopped by its own pid (``SIGTERM``, then ``SIGKILL`` if
it lingers). ``restart()`` brings it back on the same port::

    with redis_process(tmp_path) as server:          # redis-server, nothing kept on disk
        ... server.url ...
        server.stop()                                 # Redis forgets everything
        server.start()

    with nats_process(tmp_path / "store") as server:  # nats-server -js, store in that dir
        server.restart()                              # streams and consumers survive
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

READY_S = 15.0
STOP_S = 10.0
POLL_S = 0.02


def free_port() -> int:
    """A loopback port nobody listens on right now (another process could still take it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def closed_port() -> int:
    """A loopback port where a connection is refused."""
    return free_port()


def accepting(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class ServerProcess:
    """One server process on ``port``; ``argv`` is the full command line."""

    name: str
    argv: Sequence[str]
    port: int
    scheme: str
    log: Path
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self) -> Self:
        if self.process is not None:
            raise RuntimeError(f"{self.name} is already running")
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                list(self.argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + READY_S
        while not accepting(self.port):
            if self.process.poll() is not None:
                output = self.log.read_text(errors="replace")[-2000:]
                self.process = None
                raise RuntimeError(f"{self.name} exited at start: {output}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not accept connections within {READY_S}s")
            time.sleep(POLL_S)
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(STOP_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_S)

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def binary(name: str) -> str | None:
    return shutil.which(name)


def redis_process(directory: Path, *extra: str) -> ServerProcess:
    """redis-server on a free port that keeps nothing on disk (a restart empties it)."""
    port = free_port()
    argv = [
        binary("redis-server") or "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(directory),
        *extra,
    ]
    return ServerProcess("redis-server", argv, port, "redis", directory / "redis.log")


def nats_process(store: Path, *extra: str) -> ServerProcess:
    """nats-server with JetStream on a free port, its store in ``store`` (kept on restart)."""
    port = free_port()
    store.mkdir(parents=True, exist_ok=True)
    argv = [
        binary("nats-server") or "nats-server",
        "-js",
        "-a",
        "127.0.0.1",
        "-p",
        str(port),
        "-sd",
        str(store),
        *extra,
    ]
    return ServerProcess("nats-server", argv, port, "nats", store.parent / "nats.log")
