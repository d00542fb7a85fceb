"""A sample agent: takes the frequency updates a dispatcher sends and shows them.

What a real agent must do with an update is what this one does with it, so it doubles as the
reference for writing one (and as the agent the dispatcher's tests talk to):

- ``POST /frequency`` takes the JSON body the dispatcher sends (:class:`FrequencyUpdate`,
  validated: a 422 names the field). The agent keeps the newest update per service, by
  ``version``: a newer one is **applied** (200 ``{"status": "applied"}``), the same version
  again changes nothing (200 ``{"status": "unchanged"}``: a retried or repeated dispatch is
  harmless), an older one is refused (409 ``{"status": "stale", "version": <held>}``, which
  the dispatcher reads as "a later dispatch got here first"). An update addressed to another
  agent is refused with 400 (a dispatcher pointed at the wrong URL).
- ``GET /frequency`` returns what the agent holds, as JSON; ``GET /`` a plain-text page.

``create_agent_app(name, on_update)`` builds the app; ``on_update`` (sync or async) hears each
applied update. :func:`serve_agent` serves it with uvicorn until SIGINT or SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from typing import Any, Literal, Self

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "AgentState",
    "FrequencyUpdate",
    "create_agent_app",
    "serve_agent",
]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

#: Called with each applied update; may return an awaitable.
OnUpdate = Callable[["FrequencyUpdate"], Awaitable[None] | None]


class FrequencyUpdate(BaseModel):
    """One agent's new request frequency for one service, as the dispatcher sends it."""

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    service: str = Field(min_length=1, max_length=200)
    agent: str = Field(min_length=1, max_length=200)
    version: int = Field(ge=0, description="grows each time the service's frequencies change")
    rate: float = Field(ge=0, description="requests/s this agent sends")
    interval: float | None = Field(gt=0, description="seconds between polls; null: stop polling")
    paused: bool = False
    target: float = Field(ge=0, description="the service's whole target (requests/s)")
    reason: str = Field("", max_length=2000)
    at: float
    correlation_id: str = Field("", max_length=200)

    @model_validator(mode="after")
    def _paused_means_stopped(self) -> Self:
        if self.paused and (self.rate != 0 or self.interval is not None):
            raise ValueError("a paused update carries rate 0 and interval null")
        return self

    def line(self) -> str:
        """One line for a console."""
        head = f"{self.service} version {self.version}"
        if self.paused:
            return f"{head}: paused (0 req/s, polling stopped) - {self.reason}"
        polling = "polling stopped" if self.interval is None else f"poll every {self.interval:g} s"
        return f"{head}: {self.rate:.4g} req/s, {polling} - {self.reason}"


Offered = Literal["applied", "unchanged"] | int


class AgentState:
    """The newest update per service. :meth:`offer` says what an update came to: applied,
    unchanged (that version is held already), or the newer version held (the update is
    stale)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._updates: dict[str, FrequencyUpdate] = {}

    def offer(self, update: FrequencyUpdate) -> Offered:
        held = self._updates.get(update.service)
        if held is not None:
            if held.version == update.version:
                return "unchanged"
            if held.version > update.version:
                return held.version
        self._updates[update.service] = update
        return "applied"

    def updates(self) -> list[FrequencyUpdate]:
        return [self._updates[service] for service in sorted(self._updates)]


def create_agent_app(name: str, on_update: OnUpdate | None = None) -> FastAPI:
    """The agent named ``name`` (it refuses updates addressed to another name)."""
    state = AgentState(name)
    app = FastAPI(title=f"eventcenter sample agent {name}", docs_url=None, redoc_url=None)
    app.state.agent = state

    @app.post("/frequency")
    async def take(update: FrequencyUpdate) -> JSONResponse:
        if update.agent != name:
            why = f"this is agent {name!r}; the update is addressed to agent {update.agent!r}"
            return JSONResponse({"detail": why}, status_code=400)
        offered = state.offer(update)
        if isinstance(offered, int):
            return JSONResponse({"status": "stale", "version": offered}, status_code=409)
        if offered == "applied" and on_update is not None:
            result = on_update(update)
            if inspect.isawaitable(result):
                await result
        return JSONResponse({"status": offered, "version": update.version})

    @app.get("/frequency")
    async def held() -> dict[str, Any]:
        return {"agent": name, "updates": [update.model_dump() for update in state.updates()]}

    @app.get("/", response_class=PlainTextResponse)
    async def page() -> str:
        updates = state.updates()
        lines = [f"eventcenter sample agent {name}: {len(updates)} service(s)", ""]
        lines += [update.line() for update in updates] or ["no frequency received yet"]
        return "\n".join(lines) + "\n"

    return app


class _Server(uvicorn.Server):
    """uvicorn's server without its own signal handlers (it re-raises the signal after its
    shutdown, which ends the process without a word: :func:`serve_agent` owns them), telling
    ``on_started`` once it listens."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_started()


async def serve_agent(
    app: FastAPI,
    host: str = "127.0.0.1",
    port: int = 8082,
    *,
    on_start: Callable[[str], None] | None = None,
) -> str:
    """Serve ``app`` until SIGINT or SIGTERM; return the signal's name. ``on_start`` hears the
    base URL once the server listens (with the real port when ``port`` is 0). Raises
    :class:`OSError` naming the address when it cannot be listened on."""
    listener = bind_listener(host, port)
    bound_host, bound_port = listener.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    url = f"http://{shown}:{bound_port}"
    config = uvicorn.Config(
        app, lifespan="off", log_config=None, access_log=False, server_header=False
    )
    server = _Server(config, lambda: on_start(url) if on_start is not None else None)
    loop = asyncio.get_running_loop()
    stopped_by: list[str] = []

    def on_signal(number: signal.Signals) -> None:
        stopped_by.append(number.name)
        server.should_exit = True

    for number in STOP_SIGNALS:
        loop.add_signal_handler(number, on_signal, number)
    try:
        with listener:
            await server.serve(sockets=[listener])
    finally:
        for number in STOP_SIGNALS:
            loop.remove_signal_handler(number)
    return stopped_by[0] if stopped_by else "exit"


@contextlib.asynccontextmanager
async def serving(app: Any, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve ``app`` (any ASGI app) on ``host:port`` (0: a free port) in the running loop for
    the block; yields its base URL once it listens. Leaves signals alone (for demos and tests
    that run servers beside other work)."""
    listener = bind_listener(host, port)
    bound_host, bound_port = listener.getsockname()[:2]
    config = uvicorn.Config(
        app, lifespan="off", log_config=None, access_log=False, server_header=False
    )
    listening = asyncio.Event()
    server = _Server(config, listening.set)
    with listener:
        task = asyncio.create_task(server.serve(sockets=[listener]))
        started = asyncio.ensure_future(listening.wait())
        try:
            done, _ = await asyncio.wait((task, started), return_when="FIRST_COMPLETED")
            if task in done:
                task.result()  # it failed to start: raise why
                raise OSError(f"the server on {bound_host}:{bound_port} stopped at once")
            yield f"http://{bound_host}:{bound_port}"
        finally:
            started.cancel()
            server.should_exit = True
            await task


def bind_listener(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (not listening yet; port 0: a free one);
    :class:`OSError` naming them if it cannot be."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        listener = socket.socket(family, kind, proto)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(address)
        except BaseException:
            listener.close()
            raise
    except OSError as error:
        raise OSError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return listener
