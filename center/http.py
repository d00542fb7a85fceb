"""The center's HTTP API: ingest of events, webhook push sources, liveness and readiness.

Build it with :func:`create_app` (nothing happens at import time); ``eventcenter run`` serves it
with uvicorn in the center's own event loop (:mod:`eventcenter.center.service`). Every answer is
JSON. A refusal says what to fix: ``{"error": <code>, "field": <name>, "reason": <why>}``, plus
``"index"`` for the event of a batch at fault.

``POST /events``: one envelope (a JSON object) or a batch (a JSON array), validated from the raw
bytes by the domain's :func:`~eventcenter.domain.event.parse_json` /
:func:`~eventcenter.domain.event.parse_json_batch` (so a repeated key, invalid UTF-8, NaN, too
deep nesting or an oversize body are refused, not silently repaired), then admitted by the
center. Nothing of a refused body is stored; a batch is all or nothing.

- ``202 {"id": ...}`` / ``{"ids": [...]}``: answered only once the center says the events are
  durable;
- ``400``: the body as a whole is unusable (not UTF-8, not JSON, not an object or an array,
  nested too deep, too many events), ``field`` is ``body``;
- ``413``: the body is larger than ``max_body_bytes`` (one event) or ``max_batch_bytes``;
- ``415``: ``Content-Type`` is not JSON (``application/json`` or ``*/*+json``, UTF-8);
- ``422``: a field of an envelope is invalid, named in ``field`` (``payload``, ``type``...), or
  the ``Idempotency-Key`` header is;
- ``503`` with ``Retry-After``: backpressure, the store cannot be reached, the center is not
  running, or the events were not confirmed durable within ``http.publish_wait`` seconds
  (``not_confirmed``: they may still be stored, so send them again with the same key);
- ``409``: this process lost the center's lease to another one; send to the active center;
- ``500``: the store refused the write (the reason says why).

Idempotency: the header ``Idempotency-Key`` names one event; sent again with the same key
(within ``recording.key_retention``, per tenant and source), nothing is admitted again and the
first event's id is returned. On a batch it names the batch: event ``i`` gets the key
``<key>#<i>``, so a retried batch returns the same ids and admits nothing twice. An envelope
cannot carry a ``key`` member itself: the envelope's fields are fixed and an unknown one is
refused. (Without a key, an envelope that repeats an ``id`` is dropped within the processor's
``dedupe_window``, in memory only.)

``POST /sources/{tenant}/{source}/webhook``: one item (``{"key", "version", "data"?, "deleted"?,
"occurred_at"?}``) or an array of them, for a source whose push path is a
:class:`~eventcenter.sources.webhook.WebhookPath`. The items are handed to that path and the
answer waits until the source's engine acknowledged them, i.e. admitted them durably (an item
already admitted is dropped as a repeat) or dead-lettered a bad one with its reason:
``202 {"items": [{"position", "status": "admitted", "key", "version"} | {"position",
"status": "dead_lettered", "reason"}]}``. So a 2xx means durable; on anything else the sender
retries. A body that is not JSON is one bad message (dead-lettered with the reason), not a 400.
``404`` for a source without a webhook path, ``413``/``415`` as above, ``503`` with
``Retry-After`` when the path is closed or full, or the engine did not acknowledge within
``http.publish_wait`` seconds.

``GET /health`` (or ``/healthz``): 200 while the process serves requests (liveness).
``GET /ready`` (or ``/readyz``): 200 when the center runs, holds its lease and its store
answers, and every readiness check added (``readiness_checks``) holds; 503 with the reasons
otherwise. ``GET /metrics``: the center's Prometheus metrics in the text format, read at
scrape time by the collector of :mod:`eventcenter.center.metrics` from a registry owned by
this app (the app's ``state.metrics_registry``), never the process-wide default one.

Every other route needs an API key (:mod:`eventcenter.center.api_auth`): 401 without a valid
one. A tenant key may only send its own tenant's events (403 naming ``tenant``, and
``index`` in a batch; nothing of the body is stored) and webhook items; ``/metrics`` (unless
``[http] public_metrics``) and ``/health/report`` need an admin key. The operational routes
(RCA cases, dead letters, sources) are in :mod:`eventcenter.center.api_ops`; every answer
other than 2xx has the shape of :mod:`eventcenter.center.api_errors`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import orjson
from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from eventcenter.center.api_audit import audit_router
from eventcenter.center.api_auth import (
    AdminCaller,
    ApiAuth,
    CurrentCaller,
    admin_only,
    authenticated,
)
from eventcenter.center.api_errors import Refusal, error_responses, install_error_handlers
from eventcenter.center.api_errors import json_response as _json
from eventcenter.center.api_ops import ops_router, refusal_for
from eventcenter.center.app import EventCenter
from eventcenter.center.dashboard import dashboard_router
from eventcenter.center.metrics import center_registry
from eventcenter.center.settings import HttpSettings
from eventcenter.domain.errors import (
    Backpressure,
    EventCenterError,
    InvalidBatch,
    InvalidEvent,
    LeaseLost,
    ProcessorClosed,
    StoreUnavailable,
)
from eventcenter.domain.event import EnvelopeLimits, Event, parse_json, parse_json_batch
from eventcenter.domain.priority import Priority
from eventcenter.domain.sources import RAW_MAX, Received, SourceError, received_from
from eventcenter.sources.webhook import WebhookPath
from eventcenter.storage.api_keys import ApiKeyStore

__all__ = [
    "IDEMPOTENCY_HEADER",
    "Ingest",
    "ReadinessCheck",
    "Refusal",
    "create_app",
    "not_ready",
]

log = logging.getLogger("eventcenter.http")

IDEMPOTENCY_HEADER = "Idempotency-Key"
_JSON_SPACE = b" \t\r\n"

#: The webhook paths of the sources, by (tenant, source). The sources manager may keep adding
#: to the mapping it passes: each request looks its path up anew.
Webhooks = Mapping[tuple[str, str], WebhookPath]

#: One more condition of readiness (``GET /ready``, ``/readyz``): why the center is not ready,
#: or None when this condition holds. May be a coroutine function; it must answer quickly.
ReadinessCheck = Callable[[], str | Awaitable[str | None] | None]


def not_ready(center: EventCenter) -> list[str]:
    """Why ``center`` cannot take events now; empty when it can."""
    reasons = []
    status = center.processor.status
    if status != "running":
        reasons.append(f"the center is {status}")
    if center.lease_lost is not None:
        reasons.append(str(center.lease_lost))
    if not center.writer.available:
        reasons.append("the store cannot be reached; the center retries until it answers")
    projections = center.projections.status
    limit = center.settings.projections.max_lag
    if status == "running" and not projections.running:
        reasons.append("the read model is not running")
    elif projections.lag > limit:
        reasons.append(
            f"the read model is {projections.lag} events behind the log (more than {limit})"
        )
    return reasons


class Ingest:
    """Hands validated events to the center and turns its answers into HTTP ones.

    A request waits at most ``publish_wait`` seconds. The admission it started is not
    cancelled then (cancelling a commit in flight could leave it half known): it is shielded
    and kept here until it ends, and :meth:`drain` waits for what is left at shutdown.
    """

    def __init__(self, center: EventCenter, settings: HttpSettings) -> None:
        self._center = center
        self._settings = settings
        self._unanswered: set[asyncio.Future[list[str]]] = set()

    async def publish(self, events: Sequence[Event], keys: Sequence[str] | None) -> list[str]:
        """Admit ``events`` (one, or a batch); their ids once durable, or a Refusal."""
        center = self._center
        if center.lease_lost is not None:
            raise _refusal(center.lease_lost, self._settings.retry_after)
        if not center.writer.available:
            raise Refusal(
                503,
                "store_unavailable",
                "the store cannot be reached now; nothing was admitted",
                retry_after=self._settings.retry_after,
            )
        admission: Awaitable[list[str]]
        if len(events) == 1:
            admission = _one(center, events[0], keys[0] if keys else None)
        elif keys is None:
            admission = center.publish_batch(events)
        else:
            # publish_batch takes keys with mappings of envelope fields only: the envelopes
            # are validated once more there, which a batch with a key can afford.
            items = [{**dict(event), "key": key} for event, key in zip(events, keys, strict=True)]
            admission = center.publish_batch(items)
        task = asyncio.ensure_future(admission)
        try:
            async with asyncio.timeout(self._settings.publish_wait):
                return await asyncio.shield(task)
        except TimeoutError:
            raise Refusal(
                503,
                "not_confirmed",
                f"the center did not confirm the events durable within"
                f" {self._settings.publish_wait:g} s; they may still be stored: send them again"
                f" with the same {IDEMPOTENCY_HEADER}",
                retry_after=self._settings.retry_after,
            ) from None
        except EventCenterError as error:
            raise _refusal(error, self._settings.retry_after) from None
        finally:
            if not task.done():
                self._unanswered.add(task)
                task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Future[list[str]]) -> None:
        self._unanswered.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("an ingest nobody waited for any more failed: %s", task.exception())

    @property
    def unanswered(self) -> int:
        """Admissions still running whose request was answered 503 (or went away)."""
        return len(self._unanswered)

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for the admissions left running; cancel the rest."""
        if not self._unanswered:
            return
        left = list(self._unanswered)
        _, stuck = await asyncio.wait(left, timeout=timeout)
        for task in stuck:
            task.cancel()
        await asyncio.gather(*stuck, return_exceptions=True)


async def _one(center: EventCenter, event: Event, key: str | None) -> list[str]:
    return [await center.publish_event(event, key=key)]


def _refusal(error: EventCenterError, retry_after: float) -> Refusal:
    """The HTTP answer to an error the center raised while admitting."""
    if isinstance(error, InvalidBatch):
        field = IDEMPOTENCY_HEADER if error.field == "key" else error.field
        return Refusal(422, "invalid_event", error.reason, field=field, index=error.index)
    if isinstance(error, InvalidEvent):
        field = IDEMPOTENCY_HEADER if error.field == "key" else error.field
        return Refusal(422, "invalid_event", error.reason, field=field)
    if isinstance(error, LeaseLost):
        return Refusal(409, "lease_lost", f"{error}; send events to the active center")
    if isinstance(error, Backpressure):
        return Refusal(503, "backpressure", str(error), retry_after=retry_after)
    if isinstance(error, StoreUnavailable):
        return Refusal(503, "store_unavailable", str(error), retry_after=retry_after)
    if isinstance(error, ProcessorClosed):
        return Refusal(503, "not_running", str(error), retry_after=retry_after)
    return Refusal(500, "not_recorded", str(error))


# --- reading bodies ---------------------------------------------------------------------------


def _check_json_type(request: Request) -> None:
    content_type = request.headers.get("content-type")
    if content_type is None:
        raise Refusal(
            415, "unsupported_media_type", "is missing: send application/json", field="Content-Type"
        )
    media, _, parameters = content_type.partition(";")
    media = media.strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise Refusal(
            415,
            "unsupported_media_type",
            f"must be application/json, got {content_type!r}",
            field="Content-Type",
        )
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            raise Refusal(
                415,
                "unsupported_media_type",
                f"charset must be utf-8, got {value.strip()!r}",
                field="Content-Type",
            )


def _too_large(size: str, limit: int) -> Refusal:
    return Refusal(413, "too_large", f"is {size} bytes; the limit is {limit}", field="body")


async def _read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused (413) as soon as it is known to exceed ``limit`` bytes."""
    _check_json_type(request)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(declared, limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(f"more than {limit}", limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _events(body: bytes, limits: EnvelopeLimits) -> tuple[list[Event], bool]:
    """The events of an ingest body and whether it was a batch; a Refusal if invalid."""
    batch = body.lstrip(_JSON_SPACE)[:1] == b"["
    limit = limits.max_batch_bytes if batch else limits.max_body_bytes
    if len(body) > limit:
        raise _too_large(str(len(body)), limit)
    try:
        if batch:
            return parse_json_batch(body, limits), True
        return [parse_json(body, limits)], False
    except InvalidBatch as error:
        raise Refusal(
            422, "invalid_event", error.reason, field=error.field, index=error.index
        ) from None
    except InvalidEvent as error:
        status = 400 if error.field == "body" else 422
        kind = "invalid_body" if error.field == "body" else "invalid_event"
        raise Refusal(status, kind, error.reason, field=error.field) from None


def _keys(request: Request, count: int, batch: bool, max_length: int) -> list[str] | None:
    """The idempotency keys of the events from the header, or None without one."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    keys = [f"{key}#{index}" for index in range(count)] if batch else [key]
    longest = max((len(k) for k in keys), default=len(key))
    if not key or longest > max_length:
        room = max_length - (longest - len(key))
        raise Refusal(
            422,
            "invalid_key",
            f"must be 1 to {room} characters"
            + (" on a batch (each event adds #<i>)" if batch else ""),
            field=IDEMPOTENCY_HEADER,
        )
    return keys


def _webhook_messages(body: bytes, max_items: int) -> list[Received]:
    """The messages of a webhook body: one per item; a body that is not JSON is one bad one."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raw = body[:RAW_MAX].decode("utf-8", "replace")
        return [Received(position="", item=None, problem=f"the body is not JSON: {error}", raw=raw)]
    values = value if isinstance(value, list) else [value]
    if len(values) > max_items:
        raise Refusal(
            413,
            "too_large",
            f"holds {len(values)} items; the limit is {max_items}",
            field="body",
        )
    return [received_from(item, "", orjson.dumps(item).decode()) for item in values]


def _outcome(message: Received) -> dict[str, Any]:
    if message.item is None:
        return {"position": message.position, "status": "dead_lettered", "reason": message.problem}
    return {
        "position": message.position,
        "status": "admitted",
        "key": message.item.key,
        "version": message.item.version,
    }


# --- the app ------------------------------------------------------------------------------------


class Accepted(BaseModel):
    """``POST /events``: the id of the one event, or the ids of a batch, in order."""

    id: str | None = None
    ids: list[str] | None = None


class WebhookAccepted(BaseModel):
    """``POST /sources/{tenant}/{source}/webhook``: each item's outcome, in order."""

    items: list[dict[str, Any]]


#: What the envelope's validators accept, as JSON schema patterns (for the OpenAPI document).
_NAME = r"^(?!.*\.\.)[A-Za-z0-9_:@-][A-Za-z0-9_.:@-]*$"
_TYPE = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"
_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
_RFC_9562 = (
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[1-8][0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}$"
)


_PRIORITY_NAMES = [name for p in Priority for name in (p.name.lower(), p.name, p.name.capitalize())]


def _ingest_body(limits: EnvelopeLimits) -> dict[str, Any]:
    """The OpenAPI request body of ``POST /events``: an envelope or an array of them, with
    the bounds the parser enforces (nesting depth and sizes are checked on the raw bytes)."""
    name = {"type": "string", "minLength": 1, "maxLength": limits.max_name_length}
    envelope: dict[str, Any] = {
        "type": "object",
        "required": ["type"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string", "format": "uuid", "pattern": _RFC_9562},
            "type": {
                "type": "string",
                "maxLength": limits.max_type_length,
                "pattern": _TYPE,
                "example": "deployment.changed",
            },
            "source": {**name, "pattern": _NAME},
            "tenant": {**name, "pattern": _NAME, "description": "a tenant key's own tenant"},
            "timestamp": {
                "oneOf": [
                    {"type": "string", "format": "date-time"},
                    {
                        "type": "number",
                        "minimum": -62135596800000,
                        "maximum": 253402300799999,
                        "description": "since the epoch: seconds, or milliseconds beyond"
                        " +-2e10 (as pydantic reads numbers)",
                    },
                ]
            },
            "priority": {
                "oneOf": [
                    {"type": "string", "enum": _PRIORITY_NAMES},
                    {"type": "integer", "minimum": 0, "maximum": len(Priority) - 1},
                ]
            },
            "correlation_id": {
                "type": "string",
                "maxLength": limits.max_correlation_id_length,
                "pattern": _PRINTABLE,
            },
            "metadata": {"type": "object"},
            "payload": {"type": "object"},
            "version": {
                "type": "string",
                "minLength": 1,
                "maxLength": limits.max_version_length,
                "pattern": _PRINTABLE,
            },
        },
    }
    batch = {"type": "array", "items": envelope, "maxItems": limits.max_batch_events}
    schema = {"oneOf": [envelope, batch]}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


_WEBHOOK_ITEM: dict[str, Any] = {
    "type": "object",
    "required": ["key", "version"],
    "properties": {
        "key": {"type": "string"},
        "version": {"type": ["string", "integer"]},
        "data": {"type": "object"},
        "deleted": {"type": "boolean"},
        "occurred_at": {"type": "string"},
    },
}
#: Any body is taken: what is not an item (or an array of them) becomes one bad item,
#: dead-lettered with the reason, as the source's own push paths treat a bad message.
_WEBHOOK_BODY = {
    "requestBody": {
        "required": True,
        "description": "an item or an array of items; anything else is a bad item, reported"
        " as dead_lettered with the reason",
        "content": {
            "application/json": {
                "schema": {},
                "examples": {
                    "item": {"value": {"key": "o-1", "version": 3, "data": {"total": 10}}}
                },
            }
        },
    }
}


def create_app(
    center: EventCenter,
    *,
    webhooks: Webhooks | None = None,
    settings: HttpSettings | None = None,
    readiness_checks: Sequence[ReadinessCheck] = (),
    clock: Callable[[], float] = time.monotonic,
    wall: Callable[[], float] = time.time,
) -> FastAPI:
    """The HTTP API of ``center``; see the module docstring.

    ``webhooks`` maps (tenant, source) to the source's webhook path (looked up per request);
    ``settings`` default to ``center.settings.http``. ``readiness_checks`` add conditions to
    ``/ready`` and ``/readyz`` (the app's ``state.readiness_checks`` list takes more later).
    ``clock`` times the API key cache, ``wall`` is now for the sources' health. The app's
    ``state.ingest`` is the :class:`Ingest` to :meth:`~Ingest.drain` after the server stopped,
    ``state.auth`` the :class:`~eventcenter.center.api_auth.ApiAuth` its routes depend on.
    """
    http = settings or center.settings.http
    paths: Webhooks = webhooks if webhooks is not None else {}
    ingest = Ingest(center, http)
    processor = center.settings.processor
    limits = processor.limits

    app = FastAPI(
        title="eventcenter",
        summary="Ingest events and webhook items into an event-sourced processing center;"
        " read and answer its RCA cases, dead letters and data sources.",
    )
    app.state.center = center
    app.state.ingest = ingest
    app.state.auth = ApiAuth(
        ApiKeyStore(center.settings.effective_url) if http.auth == "keys" else None,
        cache_seconds=http.key_cache,
        retry_after=http.retry_after,
        clock=clock,
    )
    checks: list[ReadinessCheck] = list(readiness_checks)
    app.state.readiness_checks = checks
    registry = app.state.metrics_registry = center_registry(center)
    install_error_handlers(app)

    @app.exception_handler(EventCenterError)
    async def failed(request: Request, error: EventCenterError) -> Response:
        return refusal_for(error, http.retry_after).response()

    app.include_router(audit_router(center, caller=authenticated))
    app.include_router(dashboard_router(center, caller=authenticated))

    @app.post(
        "/events",
        status_code=202,
        tags=["ingest"],
        response_model=Accepted,
        response_model_exclude_none=True,
        responses=error_responses(400, 401, 403, 409, 413, 415, 422, 503),
        openapi_extra=_ingest_body(limits),
    )
    async def post_events(request: Request, caller: CurrentCaller) -> Response:
        """One event envelope (object) or a batch (array); 202 once durable. A tenant key
        sends its own tenant's events only (403 naming ``tenant``, and ``index`` in a batch)."""
        body = await _read_body(request, max(limits.max_body_bytes, limits.max_batch_bytes))
        events, batch = _events(body, limits)
        for index, event in enumerate(events):
            caller.may_write(event.tenant, index=index if batch else None)
        keys = _keys(request, len(events), batch, processor.max_key_length)
        ids = await ingest.publish(events, keys)
        return _json(202, {"ids": ids} if batch else {"id": ids[0]})

    @app.post(
        "/sources/{tenant}/{source}/webhook",
        status_code=202,
        tags=["ingest"],
        response_model=WebhookAccepted,
        responses=error_responses(401, 403, 404, 413, 415, 503),
        openapi_extra=_WEBHOOK_BODY,
    )
    async def post_webhook(
        tenant: str, source: str, request: Request, caller: CurrentCaller
    ) -> Response:
        """One item or an array of items for a webhook source; 202 once admitted. Needs a
        key of that tenant (or an admin key)."""
        caller.may_write(tenant)
        path = paths.get((tenant, source))
        if path is None:
            raise Refusal(
                404,
                "unknown_source",
                f"tenant {tenant!r} has no source {source!r} with a webhook path",
                field="source",
            )
        body = await _read_body(request, limits.max_batch_bytes)
        messages = _webhook_messages(body, limits.max_batch_events)
        try:
            offered = path.offer(messages)
        except SourceError as error:
            raise _source_refusal(error, http.retry_after) from None
        try:
            async with asyncio.timeout(http.publish_wait):
                admitted = await offered
        except TimeoutError:
            raise Refusal(
                503,
                "not_confirmed",
                f"the source did not confirm the items within {http.publish_wait:g} s;"
                " send them again (an item admitted meanwhile is not admitted twice)",
                retry_after=http.retry_after,
            ) from None
        except SourceError as error:
            raise _source_refusal(error, http.retry_after) from None
        finally:
            if offered.cancelled():
                path.withdraw(offered)
        return _json(202, {"items": [_outcome(message) for message in admitted]})

    @app.get("/health", tags=["health"])
    @app.get("/healthz", tags=["health"])
    async def health() -> Response:
        """Liveness: the process serves requests (no key needed)."""
        return _json(200, {"status": "ok"})

    @app.get("/health/report", tags=["health"], responses=error_responses(401, 403, 503))
    async def health_report(caller: AdminCaller) -> Response:
        """The health checks' report (per service: status, response time, consecutive
        failures and successes, totals; counts by status), the recovery statistics and every
        circuit breaker's state. Admin keys only."""
        healing = center.healing
        return _json(
            200,
            {
                "health": healing.monitor.report().as_dict(),
                "recovery": healing.recovery.stats().as_dict(),
                "breakers": [status.as_dict() for status in healing.breakers.states()],
            },
        )

    @app.get("/ready", tags=["health"])
    @app.get("/readyz", tags=["health"])
    async def ready() -> Response:
        """Readiness: the center runs, holds its lease and its store answers, and every added
        readiness check holds (no key needed)."""
        reasons = not_ready(center)
        for check in checks:
            reason = check()
            if inspect.isawaitable(reason):
                reason = await reason
            if reason:
                reasons.append(reason)
        if reasons:
            return _json(503, {"ready": False, "reasons": reasons})
        return _json(200, {"ready": True})

    @app.get(
        "/metrics",
        tags=["health"],
        response_class=PlainTextResponse,
        dependencies=[] if http.public_metrics else [Depends(admin_only)],
        responses={} if http.public_metrics else error_responses(401, 403, 503),
    )
    async def metrics() -> Response:
        """The center's metrics in the Prometheus text format, computed now (an admin key,
        unless ``[http] public_metrics``).

        Collected here, on the center's event loop, which owns the processor's figures."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(ops_router(center, wall=wall))
    return app


def _source_refusal(error: SourceError, retry_after: float) -> Refusal:
    wait = error.retry_after if error.retry_after is not None else retry_after
    return Refusal(503, "source_unavailable", str(error), retry_after=wait)
