"""The audit trail over HTTP: filtered pages, one decision, its explanation, the read model.

``GET /audit`` lists decisions in time order (``order=desc``: newest first) with the filters of
``eventcenter audit`` and keyset pagination: a page's ``next`` is the ``after`` of the next
one. ``GET /audit/{position}`` is one decision, ``GET /audit/{position}/explain`` why it was
taken (:mod:`eventcenter.projections.explain`). ``GET /projections`` says where the read model
stands. Each answer carries the read model's ``lag`` (events recorded but not in the tables
yet).

Every query is limited to the caller's tenant (``caller``: a FastAPI dependency answering an
object with a ``tenant`` attribute, None for an admin). A tenant's key that asks for another
tenant gets 403; a decision of another tenant is answered 404 exactly like a missing one. The
database is read in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from eventcenter.center.api_errors import Refusal, error_responses
from eventcenter.center.app import EventCenter
from eventcenter.center.audit_views import parse_since
from eventcenter.domain.errors import EventCenterError
from eventcenter.projections import queries
from eventcenter.projections.explain import explain
from eventcenter.projections.runner import ProjectionStatus

__all__ = ["audit_router"]


class AuditEntryOut(BaseModel):
    """One decision: when, whose, what kind, from -> to, why, and what caused it."""

    position: int = Field(description="the decision's place in the log: the id explain takes")
    at: float = Field(description="when, in seconds since the epoch")
    time: str = Field(description="when, ISO 8601 UTC")
    tenant: str
    source: str
    kind: str = Field(description="e.g. mode.switched, breaker.opened, throughput.measured")
    aggregate: str
    aggregate_id: str
    version: int
    subject: str
    from_state: str
    to_state: str
    reason: str
    correlation_id: str
    cause: str
    details: dict[str, Any] = Field(description="the fields recorded with the decision")


class ReadModelOut(BaseModel):
    position: int
    head: int
    lag: int
    running: bool
    errors: int
    last_error: str
    caught_up_at: float | None


class AuditPageOut(BaseModel):
    entries: list[AuditEntryOut]
    next: str | None = Field(description="pass as 'after' for the next page; null: no more")
    read_model: ReadModelOut


class ExplanationOut(BaseModel):
    decision: AuditEntryOut
    rule: str = Field(description="the rule that fired, in words")
    inputs: dict[str, Any] = Field(description="what the policy saw, as recorded")
    state: dict[str, Any] = Field(description="the aggregate's state when it decided")
    history: list[AuditEntryOut]
    before: list[AuditEntryOut]
    after: list[AuditEntryOut]


def _time(value: str | None, name: str) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return parse_since(value)
    except EventCenterError as error:
        raise Refusal(422, "invalid_parameter", str(error), field=name) from None


def _tenant(caller: Any, asked: str | None) -> str | None:
    """The tenant the query is limited to: the caller's, or (admin) the one asked for."""
    own = getattr(caller, "tenant", None)
    if own is None:
        return asked
    if asked is not None and asked != own:
        raise Refusal(
            403, "forbidden", f"this key reads tenant {own!r} only, not {asked!r}", field="tenant"
        )
    return str(own)


def _everyone() -> None:
    return None


def audit_router(center: EventCenter, caller: Callable[..., Any] | None = None) -> APIRouter:
    """The audit endpoints of ``center``; ``caller`` is the auth dependency (default: every
    request is an admin's)."""
    router = APIRouter(tags=["audit"], responses=error_responses(401, 403, 404, 422, 503))
    who = Depends(caller or _everyone)
    runner = center.projections
    datastore: Any = runner.model.datastore

    def status() -> ProjectionStatus:
        return runner.refresh()

    def read_page(flt: queries.AuditFilter, after: str | None, limit: int, desc: bool) -> Any:
        with datastore.transaction(commit=False) as session:
            page = queries.audit_page(session, flt, after=after, limit=limit, newest_first=desc)
        return {
            "entries": [e.as_dict() for e in page.entries],
            "next": page.next,
            "read_model": status().as_dict(),
        }

    @router.get("/audit", response_model=AuditPageOut)
    async def list_audit(
        tenant: str | None = None,
        source: str | None = None,
        kind: Annotated[list[str] | None, Query()] = None,
        since: Annotated[
            str | None, Query(description="epoch seconds, a duration back (1h) or ISO 8601")
        ] = None,
        until: str | None = None,
        correlation: str | None = None,
        after: Annotated[str | None, Query(description="the 'next' of the previous page")] = None,
        limit: Annotated[int, Query(ge=1, le=queries.MAX_PAGE)] = 100,
        order: Literal["asc", "desc"] = "asc",
        caller_: Any = who,
    ) -> Any:
        """Decisions in time order, filtered, one page at a time."""
        flt = queries.AuditFilter(
            tenant=_tenant(caller_, tenant),
            source=source,
            kinds=tuple(kind or ()),
            since=_time(since, "since"),
            until=_time(until, "until"),
            correlation_id=correlation,
        )
        if after is not None:
            try:
                queries.parse_cursor(after)
            except queries.InvalidQuery as error:
                raise Refusal(422, "invalid_parameter", str(error), field="after") from None
        return await asyncio.to_thread(read_page, flt, after, limit, order == "desc")

    def one(position: int, tenant: str | None) -> Any:
        with datastore.transaction(commit=False) as session:
            entry = queries.audit_entry(session, position, tenant)
        return entry.as_dict() if entry is not None else None

    def why(position: int, tenant: str | None) -> Any:
        with datastore.transaction(commit=False) as session:
            explained = explain(session, position, tenant=tenant)
        return explained.as_dict() if explained is not None else None

    def _missing(position: int) -> Refusal:
        return Refusal(
            404, "not_found", f"no decision #{position} (see GET /audit)", field="position"
        )

    @router.get("/audit/{position}", response_model=AuditEntryOut)
    async def get_audit(position: int, caller_: Any = who) -> Any:
        """One decision by its position."""
        found = await asyncio.to_thread(one, position, _tenant(caller_, None))
        if found is None:
            raise _missing(position)
        return found

    @router.get("/audit/{position}/explain", response_model=ExplanationOut)
    async def explain_audit(position: int, caller_: Any = who) -> Any:
        """Why the decision was taken: its inputs, the rule that fired, its chain."""
        found = await asyncio.to_thread(why, position, _tenant(caller_, None))
        if found is None:
            raise _missing(position)
        return found

    @router.get("/projections", response_model=ReadModelOut)
    async def projections(caller_: Any = who) -> Any:
        """Where the read model stands against the notification log."""
        return (await asyncio.to_thread(status)).as_dict()

    return router
