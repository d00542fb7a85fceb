"""Faults on demand for outage tests: a TCP proxy whose connections can be cut or stalled.

Put a :class:`TcpProxy` between a client and a server on loopback, point the client at
``proxy.port``, and break the network under it::

    with TcpProxy("127.0.0.1", 5432) as proxy:
        ...                 # traffic flows
        proxy.cut()         # every connection closed, new ones closed at once
        proxy.stall()       # connections stay open, nothing passes (a silent network)
        proxy.restore()     # traffic flows again (stalled connections resume)

The ``pg_proxy`` fixture (tests/conftest.py) gives a PostgreSQL URL through one.

What it cannot imitate: the proxy's own kernel still acknowledges packets while stalled, so TCP
keepalives and ``tcp_user_timeout`` never fire through it; a stall is seen only by timeouts
above TCP (connect_timeout, statement and read timeouts).
"""

from __future__ import annotations

import contextlib
import queue
import selectors
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Self

Mode = Literal["open", "cut", "stalled"]

CONTROL_TIMEOUT_S = 5.0
UPSTREAM_CONNECT_TIMEOUT_S = 3.0
CHUNK = 65536


@dataclass(eq=False)
class _Pair:
    """A client connection and the proxy's connection to the target on its behalf."""

    client: socket.socket
    upstream: socket.socket

    def close(self) -> None:
        for side in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                side.shutdown(socket.SHUT_RDWR)
            side.close()


@dataclass(eq=False)
class _Command:
    run: Callable[[], None]
    done: threading.Event = field(default_factory=threading.Event)


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` (an ephemeral port) to ``target_host:target_port``.

    One thread runs a selector loop over the listening socket and every connection. The control
    methods hand that thread a command and return once it has been carried out: after ``cut()``
    returns, every connection through the proxy is closed.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._commands: queue.SimpleQueue[_Command] = queue.SimpleQueue()
        self._pairs: set[_Pair] = set()
        self._held: list[socket.socket] = []  # accepted while stalled, not yet forwarded
        self._mode: Mode = "open"
        self._running = False
        self._thread = threading.Thread(target=self._run, name="tcp-proxy", daemon=True)

    # control (any thread) -----------------------------------------------------------------

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def connections(self) -> int:
        """Connections being forwarded (or stalled) right now."""
        return len(self._pairs)

    def start(self) -> Self:
        self._selector.register(self._listener, selectors.EVENT_READ, self._accept)
        self._selector.register(self._wake_read, selectors.EVENT_READ, None)
        self._running = True
        self._thread.start()
        return self

    def cut(self) -> None:
        """Close every connection; close each new one as soon as it is accepted."""
        self._control(self._do_cut)

    def stall(self) -> None:
        """Keep every connection open but forward nothing, on old and new connections alike."""
        self._control(self._do_stall)

    def restore(self) -> None:
        """Forward again: stalled connections resume, held ones are connected to the target."""
        self._control(self._do_restore)

    def close(self) -> None:
        if not self._running:
            return
        self._control(self._do_close)
        self._thread.join(CONTROL_TIMEOUT_S)
        self._selector.close()
        self._wake_read.close()
        self._wake_write.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _control(self, run: Callable[[], None]) -> None:
        command = _Command(run)
        self._commands.put(command)
        self._wake_write.send(b"x")
        if not command.done.wait(CONTROL_TIMEOUT_S):
            raise TimeoutError("the proxy thread did not answer")

    # the loop (proxy thread only) ---------------------------------------------------------

    def _run(self) -> None:
        while self._running:
            for key, _ in self._selector.select():
                handler = key.data
                if handler is None:
                    self._run_commands()
                else:
                    handler(key.fileobj)

    def _run_commands(self) -> None:
        with contextlib.suppress(BlockingIOError):
            self._wake_read.recv(CHUNK)
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            command.run()
            command.done.set()

    def _accept(self, listener: socket.socket) -> None:
        try:
            client, _ = listener.accept()
        except BlockingIOError:
            return
        client.setblocking(True)
        if self._mode == "cut":
            client.close()
        elif self._mode == "stalled":
            self._held.append(client)
        else:
            self._connect(client)

    def _connect(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=UPSTREAM_CONNECT_TIMEOUT_S)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        pair = _Pair(client, upstream)
        self._pairs.add(pair)
        self._watch(pair)

    def _watch(self, pair: _Pair) -> None:
        self._selector.register(pair.client, selectors.EVENT_READ, self._forwarder(pair, True))
        self._selector.register(pair.upstream, selectors.EVENT_READ, self._forwarder(pair, False))

    def _unwatch(self, pair: _Pair) -> None:
        for side in (pair.client, pair.upstream):
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(side)

    def _forwarder(self, pair: _Pair, from_client: bool) -> Callable[[socket.socket], None]:
        target = pair.upstream if from_client else pair.client

        def forward(source: socket.socket) -> None:
            try:
                data = source.recv(CHUNK)
                if data:
                    target.sendall(data)
                    return
            except OSError:
                pass
            self._drop(pair)

        return forward

    def _drop(self, pair: _Pair) -> None:
        self._unwatch(pair)
        self._pairs.discard(pair)
        pair.close()

    def _do_cut(self) -> None:
        self._mode = "cut"
        for pair in list(self._pairs):
            self._drop(pair)
        for client in self._held:
            client.close()
        self._held.clear()

    def _do_stall(self) -> None:
        if self._mode == "open":
            for pair in self._pairs:
                self._unwatch(pair)
        self._mode = "stalled"

    def _do_restore(self) -> None:
        if self._mode == "stalled":
            for pair in self._pairs:
                self._watch(pair)
        self._mode = "open"
        held, self._held = self._held, []
        for client in held:
            self._connect(client)

    def _do_close(self) -> None:
        self._do_cut()
        self._selector.unregister(self._listener)
        self._listener.close()
        self._running = False


@dataclass(frozen=True)
class ProxiedPostgres:
    """What the ``pg_proxy`` fixture gives: a URL through the proxy and one around it, both
    with the test's own schema in the search path."""

    url: str
    direct_url: str
    proxy: TcpProxy
