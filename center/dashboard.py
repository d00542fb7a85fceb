"""The live dashboard: one page served by the center's HTTP server, and the JSON it polls.

:func:`dashboard_router` builds the routes (nothing happens at import time);
:func:`~eventcenter.center.http.create_app` includes them:

- ``GET /dashboard``: the page (``dashboard.html`` beside this module, with its script and
  style sheet ``dashboard.js`` and ``dashboard.css`` under ``/dashboard/assets/``): plain
  HTML and JavaScript, nothing loaded from elsewhere (the Content-Security-Policy allows this
  origin only). It asks for ``/dashboard/state`` about once a second and redraws.
- ``GET /dashboard/state``: what the page shows, as JSON, read from the running center at the
  moment of the request: each data source's mode and health (its runner's own figures), the
  recent mode switches with their reasons, the processor's state, queue depths and lag per
  subscription, the latest decisions of the audit trail and the open RCA cases.

Access: the router takes a FastAPI dependency ``caller`` whose value has a ``tenant``
attribute (``str``, or ``None`` for an operator who sees every tenant). The state is
filtered by it: a tenant sees its own sources, switches, decisions and cases, and the
processor's state (one word, the same for all); center-wide figures (the subscriptions'
queues, the processor's transitions, whose reasons may name another tenant's service) are
left out (``null``/empty) for a tenant. Without a ``caller`` everyone is an operator. A
dependency that refuses (raises ``HTTPException(401)``) refuses the state; the page itself
holds no data and is served to anyone.

The page takes an API key from its URL fragment (``/dashboard#key=SECRET``: a fragment is
never sent to the server nor in a Referer), keeps it in the tab's sessionStorage, drops it
from the address bar and sends it as ``Authorization: Bearer SECRET``.

Reads that go to the store (the decisions, the RCA cases) run off the event loop, at most one
of each kind at a time however many pages poll (a page asking while one runs waits for that
one), and answer within ``read_timeout`` seconds or are reported in ``problems`` while the
rest of the state is still served.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the route's
# ``Annotated[..., Depends(caller)]`` at run time, and ``caller`` is a local of the factory.

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any, Protocol, TypeVar

import orjson
from fastapi import APIRouter, Depends, Response

from eventcenter.center.api_errors import error_responses
from eventcenter.center.app import EventCenter
from eventcenter.center.source_views import verdict
from eventcenter.domain import fsm
from eventcenter.domain.errors import EventCenterError
from eventcenter.domain.rca_case import CaseRow
from eventcenter.projections.audit import DecisionRow
from eventcenter.sources.manager import SourceStatus

__all__ = ["Caller", "OneReadAtATime", "ReadLate", "Viewer", "dashboard_router", "everyone"]

log = logging.getLogger("eventcenter.dashboard")

T = TypeVar("T")

#: The page's files: name under ``/dashboard/assets/`` -> media type.
ASSETS = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
PAGE = "dashboard.html"

#: Nothing but this origin: no inline script, no CDN, no frames.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
    " img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

SWITCHES_SHOWN = 50
CASES_SHOWN = 20


class Caller(Protocol):
    """What the ``caller`` dependency gives: whose view it is (None: every tenant's)."""

    @property
    def tenant(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Viewer:
    """A :class:`Caller`; the default one sees every tenant."""

    tenant: str | None = None


def everyone() -> Viewer:
    """The default ``caller``: no access control, the operator's view."""
    return Viewer()


class ReadLate(EventCenterError):
    """Raised when a store read for the dashboard did not answer within its time."""


class OneReadAtATime:
    """Runs at most one read per key; callers asking meanwhile wait for the same one.

    A read that outlives ``timeout`` is left to finish (a store read in a thread cannot be
    cancelled): the caller gets :class:`ReadLate` and the next caller waits for that read
    again, so a slow store never piles up reads. A read that fails after its callers gave up
    on it is logged, since nobody else hears of it.
    """

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._running: dict[Hashable, asyncio.Task[Any]] = {}
        self._waiting: dict[asyncio.Task[Any], int] = {}

    async def run(self, key: Hashable, read: Callable[[], Awaitable[T]], what: str) -> T:
        task = self._running.get(key)
        if task is None:
            task = asyncio.ensure_future(read())
            self._running[key] = task
            self._waiting[task] = 0
            task.add_done_callback(lambda done: self._ended(key, done, what))
        self._waiting[task] += 1
        try:
            done, _ = await asyncio.wait({task}, timeout=self._timeout)
        finally:
            if task in self._waiting:
                self._waiting[task] -= 1
        if not done:
            raise ReadLate(f"{what}: the store did not answer within {self._timeout:g} s")
        result: T = task.result()
        return result

    def _ended(self, key: Hashable, task: asyncio.Task[Any], what: str) -> None:
        """Runs before the waiting callers resume: they are still counted."""
        if self._running.get(key) is task:
            del self._running[key]
        waiting = self._waiting.pop(task, 0)
        if task.cancelled():
            return
        error = task.exception()  # retrieved: the callers waiting re-raise it themselves
        if error is not None and not waiting:
            log.warning("dashboard: %s failed after the pages stopped waiting: %r", what, error)


def dashboard_router(
    center: EventCenter,
    *,
    caller: Callable[..., Any] = everyone,
    poll_interval: float = 1.0,
    decisions: int = 20,
    read_timeout: float = 5.0,
) -> APIRouter:
    """The dashboard's routes for ``center``; see the module docstring.

    ``caller`` is a FastAPI dependency whose value has a ``tenant`` attribute; ``decisions``
    is how many of the latest decisions the state holds; the page polls every
    ``poll_interval`` seconds.
    """
    if poll_interval <= 0 or decisions < 1 or read_timeout <= 0:
        raise ValueError("poll_interval and read_timeout must be > 0, decisions at least 1")
    files = resources.files("eventcenter.center")
    page = (files / PAGE).read_bytes()
    assets = {name: ((files / name).read_bytes(), media) for name, media in ASSETS.items()}
    reads = OneReadAtATime(read_timeout)
    router = APIRouter(responses=error_responses(401, 503))

    @router.get("/dashboard", include_in_schema=False)
    async def dashboard_page() -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

    @router.get("/dashboard/assets/{name}", include_in_schema=False)
    async def dashboard_asset(name: str) -> Response:
        found = assets.get(name)
        if found is None:
            body = {"error": "not_found", "field": "name", "reason": f"no asset {name!r}"}
            return Response(orjson.dumps(body), status_code=404, media_type="application/json")
        content, media = found
        return Response(content, media_type=media, headers=PAGE_HEADERS)

    @router.get("/dashboard/state", summary="What the live dashboard shows, now.")
    async def dashboard_state(viewer: Annotated[Any, Depends(caller)]) -> Response:
        """Sources (mode, health), recent mode switches, the processor's state, queues per
        subscription, the latest decisions and the open RCA cases, filtered by the caller's
        tenant."""
        tenant: str | None = viewer.tenant
        state = await _state(center, tenant, reads, decisions)
        state["poll_interval"] = poll_interval
        return Response(
            orjson.dumps(state),
            media_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    return router


#: The latest processor decisions read for the page (then filtered by tenant and cut).
TRAIL_READ = 500


async def _state(
    center: EventCenter, tenant: str | None, reads: OneReadAtATime, shown: int
) -> dict[str, Any]:
    problems: list[dict[str, str]] = []

    async def trail() -> list[DecisionRow]:
        return await asyncio.to_thread(center.decisions, TRAIL_READ)

    async def cases() -> list[CaseRow]:
        return await center.healing.cases.cases(open_only=True, tenant=tenant, limit=CASES_SHOWN)

    decided, opened = await asyncio.gather(
        reads.run("decisions", trail, "the decisions"),
        reads.run(("cases", tenant), cases, "the RCA cases"),
        return_exceptions=True,
    )
    rows: list[DecisionRow] = _read("decisions", decided, problems) or []
    open_cases: list[CaseRow] = _read("rca_cases", opened, problems) or []

    statuses = [
        status for status in center.sources.statuses() if tenant is None or status.tenant == tenant
    ]
    latest = _latest(rows, tenant, shown)
    operator = tenant is None
    return {
        "at": time.time(),
        "center": {"name": center.settings.name, "status": center.processor.status},
        "tenant": tenant,
        "processor": _processor(center, rows, operator),
        "queues": _queues(center) if operator else None,
        "sources": [_source(status) for status in statuses],
        "switches": _switches(statuses),
        "decisions": [_decision(row) for row in latest],
        "rca_cases": [_case(row) for row in open_cases],
        "problems": problems,
    }


def _read(part: str, result: T | BaseException, problems: list[dict[str, str]]) -> T | None:
    """A read's result; None and a problem if the store refused it (other errors are bugs:
    raised)."""
    if isinstance(result, EventCenterError):
        log.warning("dashboard: %s not read: %s", part, result)
        problems.append({"part": part, "reason": str(result)})
        return None
    if isinstance(result, BaseException):
        raise result
    return result


def _processor(center: EventCenter, rows: list[DecisionRow], operator: bool) -> dict[str, Any]:
    """The state for everyone; for an operator also the correlation id of the work that moved
    the processor there (``holder``) and the last recorded transition."""
    guard = center.processor.state
    last = None
    if operator:
        last = next((row for row in reversed(rows) if row.kind == "transition"), None)
    return {
        "state": guard.state,
        "states": list(fsm.STATES),
        "holder": guard.holder if operator else None,
        "tuning_busy": center.tuning.busy,
        "last_transition": None
        if last is None
        else {"at": last.at.timestamp(), "change": last.summary, "reason": last.reason},
    }


def _queues(center: EventCenter) -> dict[str, Any]:
    """Per subscription: deliveries not ended (its lag), how many wait in memory and in the
    store, running, paused: the figures of ``GET /metrics``."""
    processor = center.processor
    depths = processor.queue_depths()
    subscriptions = []
    for info in processor.subscriptions():
        backlog, buffered = int(info["backlog"]), int(info["buffered"])
        subscriptions.append(
            {
                "name": info["name"],
                "queued": backlog,
                "in_memory": buffered,
                "in_store": backlog - buffered,
                "in_flight": info["in_flight"],
                "paused": info["paused"],
            }
        )
    return {
        "subscriptions": subscriptions,
        "in_flight": depths["in_flight"],
        "retrying": depths["retrying"],
        "oldest_wait_ms": depths["oldest_wait_ms"],
    }


def _source(status: SourceStatus) -> dict[str, Any]:
    health = status.health
    factors = health.factors
    return {
        "tenant": status.tenant,
        "name": status.name,
        "key": status.key,
        "mode": status.mode,
        "paths": list(status.paths),
        "thresholds": {"failure": status.failure_threshold, "success": status.success_threshold},
        "polling_interval": status.polling_interval,
        "health": {
            "score": round(health.score, 3),
            "verdict": verdict(health.score),
            "consecutive_failures": health.consecutive_failures,
            "error_rate": round(health.error_rate, 3),
            "last_success": health.last_success,
            "last_failure": health.last_failure,
            "mean_lag": health.mean_lag,
            "items_pushed": health.items_pushed,
            "items_polled": health.items_polled,
            "factors": None
            if factors is None
            else {
                "mode": round(factors.mode, 3),
                "freshness": round(factors.freshness, 3),
                "streak": round(factors.streak, 3),
                "reliability": round(factors.reliability, 3),
            },
        },
    }


def _switches(statuses: Iterable[SourceStatus]) -> list[dict[str, Any]]:
    """The recent mode switches of the sources, newest first."""
    switches = [
        {
            "tenant": status.tenant,
            "source": status.name,
            "key": status.key,
            "at": entry["at"],
            "previous": entry["previous"],
            "to": entry["to"],
            "reason": entry["reason"],
        }
        for status in statuses
        for entry in status.recent
    ]
    switches.sort(key=lambda switch: switch["at"], reverse=True)
    return switches[:SWITCHES_SHOWN]


def _latest(rows: list[DecisionRow], tenant: str | None, shown: int) -> list[DecisionRow]:
    """The ``shown`` latest rows the viewer may see, newest first."""
    latest: list[DecisionRow] = []
    for row in reversed(rows):
        if tenant is None or row.tenant == tenant:
            latest.append(row)
            if len(latest) == shown:
                break
    return latest


def _decision(row: DecisionRow) -> dict[str, Any]:
    return {
        "position": row.position,
        "at": row.at.timestamp(),
        "kind": row.kind,
        "summary": row.summary,
        "reason": row.reason,
        "tenant": row.tenant,
        "correlation_id": row.correlation_id,
    }


def _case(row: CaseRow) -> dict[str, Any]:
    return {
        "id": row.case_id,
        "tenant": row.tenant,
        "source": row.source,
        "category": row.category,
        "status": row.status,
        "opened_at": row.opened_at,
        "updated_at": row.updated_at,
        "failures": row.failures,
        "attempts": row.attempts,
        "notifications": row.notifications,
        "confidence": round(row.confidence, 3),
    }
