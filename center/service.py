"""The center run as a service: the center, its data sources and the HTTP server, in one loop.

:class:`Service` starts them in the order each needs the one before: the center first (it takes
the lease and reads back unfinished work; sources and HTTP both admit into it), then the
sources (a webhook route needs its source's path open), then the HTTP server. ``stop`` goes in
reverse: HTTP stops accepting and lets the requests in progress finish (each waits for its
events to be durable), then the sources stop, then the center commits what is queued and
releases its lease.

The HTTP address is bound before the center starts, so a port in use is reported at once,
without taking the lease; nothing listens until the center runs (a connection is refused
until then, never accepted and left waiting).

:func:`serve` is what ``eventcenter run`` calls: start, wait for SIGTERM or SIGINT (or for the
center to lose its lease to another process), stop, and say what was stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Callable, Generator, MutableMapping
from dataclasses import dataclass
from typing import Any

import uvicorn

from eventcenter.center.app import LEASE_CHECK_S, EventCenter
from eventcenter.center.http import Ingest, create_app
from eventcenter.center.settings import HttpSettings
from eventcenter.domain.errors import EventCenterError
from eventcenter.handlers.processor import ShutdownReport
from eventcenter.pressure.sample_agent import bind_listener
from eventcenter.sources.webhook import WebhookPath

__all__ = ["Service", "ServiceError", "StopReport", "serve"]

STARTUP_WAIT_S = 10.0
"""Seconds the HTTP server may take to start listening on its bound socket."""

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ServiceError(EventCenterError):
    """Raised when the service cannot run: its HTTP address cannot be listened on, or the HTTP
    server failed. The message names the address and what to change."""


@dataclass
class StopReport:
    """What :meth:`Service.stop` stopped, for the one line ``eventcenter run`` prints."""

    center_name: str
    center: ShutdownReport
    http_url: str | None = None
    http_requests: int = 0
    sources: bool = False
    #: Why the service stopped: the signal's name, or why it stopped on its own.
    why: str = ""
    #: Set when it stopped on its own because of a failure (exit code 1).
    failure: str | None = None

    def line(self) -> str:
        parts = []
        if self.http_url is not None:
            served = f"{self.http_requests} request{'' if self.http_requests == 1 else 's'}"
            parts.append(f"HTTP server {self.http_url} ({served})")
        parts.append("sources" if self.sources else "no sources")
        report = self.center
        left = f"{report.left_in_store} deliveries left in the store for the next start"
        if report.interrupted:
            left += f", {len(report.interrupted)} handlers interrupted"
        if report.abandoned:
            left += f", {len(report.abandoned)} handlers ignored cancellation"
        parts.append(f"center '{self.center_name}' ({left})")
        why = f" on {self.why}" if self.why else ""
        return f"stopped{why}: " + ", ".join(parts)


class _Server(uvicorn.Server):
    """uvicorn's server without its own signal handlers: the service owns SIGTERM and SIGINT
    (uvicorn would re-raise them after its shutdown, ending the process before the center
    stopped)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class Service:
    """One center with its sources and HTTP server; see the module docstring.

    ``webhooks`` maps (tenant, source) to the webhook path of a source; the HTTP route looks it
    up per request, so paths may be added while running. :meth:`wait` looks at the center's
    lease every ``watch_interval`` seconds. Building a Service does no I/O.
    """

    def __init__(
        self,
        center: EventCenter,
        *,
        webhooks: MutableMapping[tuple[str, str], WebhookPath] | None = None,
        settings: HttpSettings | None = None,
        watch_interval: float = LEASE_CHECK_S,
    ) -> None:
        self.center = center
        self._watch_interval = watch_interval
        self.webhooks: MutableMapping[tuple[str, str], WebhookPath] = (
            webhooks if webhooks is not None else {}
        )
        self.settings = settings or center.settings.http
        self.app = create_app(center, webhooks=self.webhooks, settings=self.settings)
        self.url: str | None = None
        self._server: _Server | None = None
        self._serving: asyncio.Task[None] | None = None
        self._sources: Any = None  # the center's sources manager, once started

    @property
    def ingest(self) -> Ingest:
        ingest: Ingest = self.app.state.ingest
        return ingest

    # lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the center, then its sources, then HTTP; on a failure stop what started."""
        listener = (
            _listen(self.settings.host, self.settings.port) if self.settings.enabled else None
        )
        try:
            await self.center.start()
        except BaseException:
            if listener is not None:
                listener.close()
            raise
        try:
            await self._start_sources()
            if listener is not None:
                await self._start_http(listener)
                listener = None
        except BaseException:
            if listener is not None:
                listener.close()
            await self._stop_sources()
            await self.center.stop()
            raise

    async def stop(self) -> StopReport:
        """Stop HTTP (requests in progress finish), then the sources, then the center."""
        requests = 0
        if self._server is not None and self._serving is not None:
            self._server.should_exit = True
            await asyncio.gather(self._serving, return_exceptions=True)
            requests = self._server.server_state.total_requests
        sources = await self._stop_sources()
        report = await self.center.stop()
        await self.ingest.drain(timeout=1.0)
        return StopReport(
            center_name=self.center.settings.name,
            center=report,
            http_url=self.url,
            http_requests=requests,
            sources=sources,
        )

    async def wait(self, stopping: asyncio.Event) -> str | None:
        """Wait until ``stopping`` is set (returns None) or the service cannot go on (returns
        why: the center lost its lease, or the HTTP server ended)."""
        watch = asyncio.ensure_future(stopping.wait())
        try:
            while True:
                waiting: set[asyncio.Future[Any]] = {watch}
                if self._serving is not None:
                    waiting.add(self._serving)
                await asyncio.wait(
                    waiting,
                    timeout=self._watch_interval,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if stopping.is_set():
                    return None
                if self.center.lease_lost is not None:
                    return f"{self.center.lease_lost}; this center stopped"
                if self._serving is not None and self._serving.done():
                    return _ended(self._serving)
        finally:
            watch.cancel()

    # the parts -----------------------------------------------------------------------------------

    async def _start_sources(self) -> None:
        """Start the center's data sources, if it has any (``center.sources``, the sources
        manager): after the center, which they admit into, and before HTTP, whose webhook
        routes need their paths open."""
        sources = self.center.sources
        for runner in sources.runners():
            path = runner.spec.events
            if isinstance(path, WebhookPath):
                self.webhooks[(runner.spec.tenant, runner.spec.name)] = path
        if len(sources):
            await sources.start()  # a no-op: the center started them
            self._sources = sources

    async def _stop_sources(self) -> bool:
        """Stop the sources started by :meth:`_start_sources`; True if there were any."""
        sources, self._sources = self._sources, None
        if sources is None:
            return False
        await sources.stop()
        return True

    async def _start_http(self, listener: socket.socket) -> None:
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=self.settings.shutdown_timeout,
        )
        server = _Server(config)
        self._server = server
        self._serving = asyncio.create_task(server.serve(sockets=[listener]))
        async with asyncio.timeout(STARTUP_WAIT_S):
            while not server.started:
                if self._serving.done():
                    raise ServiceError(f"the HTTP server did not start: {_ended(self._serving)}")
                await asyncio.sleep(0.01)
        host, port = listener.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}"


def _ended(serving: asyncio.Task[None]) -> str:
    if serving.cancelled():
        return "the HTTP server was cancelled"
    error = serving.exception()
    return f"the HTTP server ended: {error!r}" if error else "the HTTP server ended"


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (not listening yet); ServiceError if it cannot be."""
    try:
        return bind_listener(host, port)
    except OSError as error:
        raise ServiceError(
            f"{error} (choose another with [http] host and port, or EVENTCENTER_HTTP__PORT)"
        ) from None


async def serve(center: EventCenter, *, announce: Callable[[str], None]) -> StopReport:
    """Run ``center`` as a service until SIGTERM or SIGINT; return what was stopped.

    ``announce`` gets one line once everything runs (with the HTTP address). The report's
    ``failure`` is set when the service stopped on its own (the center lost its lease, the HTTP
    server ended). Start-up errors (a port in use, a locked center) are raised.
    """
    service = Service(center)
    stopping = asyncio.Event()
    received: list[str] = []
    loop = asyncio.get_running_loop()

    def on_signal(number: signal.Signals) -> None:
        received.append(number.name)
        stopping.set()

    # Installed before starting: a signal during start-up stops the service right after it.
    for number in STOP_SIGNALS:
        loop.add_signal_handler(number, on_signal, number)
    try:
        try:
            await service.start()
        except BaseException:
            center.close()
            raise
        announce(_started_line(service))
        failure = None
        try:
            failure = await service.wait(stopping)
        finally:
            report = await service.stop()
    finally:
        for number in STOP_SIGNALS:
            loop.remove_signal_handler(number)
    report.why = received[0] if received else ""
    report.failure = failure
    return report


def _started_line(service: Service) -> str:
    center = service.center
    http = f"HTTP on {service.url}" if service.url else "no HTTP server ([http] enabled = false)"
    return (
        f"center '{center.settings.name}' running on {center.settings.shown_url}, {http};"
        " SIGTERM or Ctrl+C stops it"
    )
