"""The operational endpoints of the HTTP API: RCA cases, dead letters and data sources.

Every route needs an API key (:mod:`eventcenter.center.api_auth`). A tenant key sees and
changes its own tenant's data only: lists are filtered to it, and a case, letter or source of
another tenant is answered 404 exactly as one that does not exist (same status, same body), so
a key learns nothing about other tenants. An admin key sees everything and may filter lists
with ``?tenant=``; a tenant key asking for another tenant there is refused (403).

- ``GET /rca/cases`` (``open_only``, ``tenant``, ``limit``): cases newest first, as
  ``eventcenter rca list`` shows them; ``GET /rca/cases/{id}``: one case with its recorded
  steps (``rca show``); ``POST /rca/cases/{id}/ack`` (``{"by"?, "note"?}``) and
  ``POST /rca/cases/{id}/resolve`` (``{"by"?, "note"}``): the answers ``rca ack|resolve``
  give, applied at once by the running center (``by`` defaults to the key's id and label);
  409 when the case refuses (it is closed).
- ``GET /dead-letters`` (``status``, ``tenant``), ``GET /dead-letters/{id}``, and
  ``POST /dead-letters/{id}/replay``: the letter is claimed and its event handed back to its
  subscription, as ``dead-letters replay`` does; answered 202 once claimed (the outcome shows
  in the letter's ``status`` and ``failed_again_as``); 409 when it is not pending.
- ``GET /sources`` (``tenant``) and ``GET /sources/{tenant}/{source}``: each source's mode,
  thresholds, switches and health, rebuilt from the store as ``sources list|show`` do.

Reads of the store run off the event loop. A store that cannot be reached is 503 with
``Retry-After``; a center that is not running answers the RCA routes 503.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from typing import Any, Literal, TypeVar
from uuid import UUID

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from eventcenter.center.api_auth import Caller, CurrentCaller
from eventcenter.center.api_errors import Refusal, error_responses
from eventcenter.center.app import EventCenter
from eventcenter.center.rca_views import case_dict, step_dict
from eventcenter.center.settings import SourceSettings
from eventcenter.center.source_report import SourceReport, source_report
from eventcenter.domain.errors import (
    DeadLetterNotFound,
    EventCenterError,
    InvalidAnswer,
    InvalidEvent,
    InvalidPauseRequest,
    LeaseLost,
    ProcessorClosed,
    ReplayRefused,
    SourceModeRefused,
    StoreUnavailable,
    SubscriptionError,
)
from eventcenter.domain.escalation import ID_MAX, TEXT_MAX, Answer
from eventcenter.domain.rca_case import CaseRow
from eventcenter.projections.audit import DeadLetterRow
from eventcenter.sources.manager import SourceNotFound
from eventcenter.storage.writer import is_transient, short_error

__all__ = ["ops_router", "refusal_for"]

T = TypeVar("T")

TenantQuery = Query(
    None,
    min_length=1,
    max_length=200,
    description="only this tenant's (admin keys; a tenant key reads its own tenant only)",
)


# --- what the routes answer -------------------------------------------------------------------


class CaseOut(BaseModel):
    id: str
    tenant: str
    source: str | None
    category: str
    status: str
    opened_at: float
    updated_at: float
    failures: int
    attempts: int
    notifications: int
    confidence: float


class CaseList(BaseModel):
    cases: list[CaseOut]


class StepOut(BaseModel):
    version: int = Field(description="the step's position in the case")
    name: str = Field(description="Opened, Analysed, HealingAttempted, Escalated ...")
    at: float | None
    fields: dict[str, Any] = Field(description="what the step recorded, as plain values")


class CaseDetail(BaseModel):
    case: CaseOut
    steps: list[StepOut]


#: A character that is white space or a control character for none of Python's ``strip``,
#: JSON Schema's (ECMA-262) and pydantic's regular expressions: a text holding one is not
#: blank once stripped, whichever of them checks it.
_VISIBLE = "[^\\x00-\\x20\\x7f-\\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"
_BY = Field(
    None,
    max_length=ID_MAX,
    pattern=_VISIBLE,
    description="who answers (default: the key's id and label)",
)


class AckIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: str | None = _BY
    note: str | None = Field(None, max_length=TEXT_MAX, description="what you are doing about it")


class ResolveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: str | None = _BY
    note: str = Field(max_length=TEXT_MAX, pattern=_VISIBLE, description="what was done (required)")


class PauseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(
        max_length=TEXT_MAX, pattern=_VISIBLE, description="why the source is paused (required)"
    )
    by: str | None = _BY


class ResumeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(None, max_length=TEXT_MAX, description="why it runs again")
    by: str | None = _BY


class PauseOut(BaseModel):
    tenant: str
    source: str
    action: str = Field(description="pause or resume")
    changed: bool = Field(description="false: the source was already as asked (nothing recorded)")
    paused: bool
    pause: dict[str, Any] | None = Field(description="the pause in effect: at, reason, by")
    mode: str = Field(description="the recorded mode: the one a paused source resumes in")
    outcome: str


class AnswerOut(BaseModel):
    case_id: str
    outcome: str = Field(description="acknowledged, acknowledged already, or resolved")
    by: str


class LetterOut(BaseModel):
    id: str
    at: datetime
    tenant: str
    status: str = Field(description="pending, replaying or replayed")
    subscription: str
    attempts: int
    error_type: str
    error: str
    event: dict[str, Any]
    replayed_at: datetime | None
    replay_of: str
    failed_again_as: str


class LetterList(BaseModel):
    dead_letters: list[LetterOut]


class ReplayOut(BaseModel):
    letter_id: str
    event_id: str
    status: str = Field(description="replaying: claimed and handed back to its subscription")


class ModeChangeOut(BaseModel):
    at: float
    kind: str
    previous: str
    to: str
    reason: str


class SourceOut(BaseModel):
    tenant: str
    name: str
    mode: str
    since: float
    paths: list[str]
    level: int
    failure_threshold: int
    success_threshold: int
    cool_down_until: float | None
    event_timeout: float = Field(
        description="seconds of push silence that count as a failure now: the configured"
        " timeout, or longer while an extension a healing strategy recorded runs"
    )
    extended_until: float | None = Field(
        description="when the running extension of the event timeout ends (null: none runs)"
    )
    switches: int
    rollbacks: int
    reconciliations: int
    threshold_changes: int
    running: bool
    health: dict[str, Any]
    recent: list[ModeChangeOut]


class SourceList(BaseModel):
    sources: list[SourceOut]


# --- turning records into answers ---------------------------------------------------------------


def _plain(value: Any) -> Any:
    """JSON-safe: a float that is not finite becomes None (JSON has no NaN or infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _step(step: Any) -> StepOut:
    values = step_dict(step)
    version, name, at = values.pop("version"), values.pop("name"), values.pop("at")
    return StepOut(version=version, name=name, at=at, fields=_plain(values))


def _letter(row: DeadLetterRow) -> LetterOut:
    return LetterOut(
        id=str(row.id),
        at=row.at,
        tenant=row.tenant,
        status=row.status,
        subscription=row.subscription,
        attempts=row.attempts,
        error_type=row.error_type,
        error=row.error,
        event=_plain(row.event),
        replayed_at=row.replayed_at,
        replay_of=row.replay_of,
        failed_again_as=row.failed_again_as,
    )


def _source(report: SourceReport) -> SourceOut:
    row = report.row
    failure, success = row.thresholds
    return SourceOut(
        tenant=row.tenant,
        name=row.name,
        mode=row.mode,
        since=row.since,
        paths=list(row.paths),
        level=row.level,
        failure_threshold=failure,
        success_threshold=success,
        cool_down_until=row.cool_down_until,
        event_timeout=row.event_timeout(report.at),
        extended_until=row.extension_end(report.at),
        switches=row.switches,
        rollbacks=row.rollbacks,
        reconciliations=row.reconciliations,
        threshold_changes=row.threshold_changes,
        running=report.running,
        health=_plain(asdict(report.health)),
        recent=[
            ModeChangeOut(at=c.at, kind=c.kind, previous=c.previous, to=c.to, reason=c.reason)
            for c in row.recent
        ],
    )


def _declared(settings: Any, tenant: str, name: str) -> SourceSettings | None:
    sources: list[SourceSettings] = settings.sources
    return next((s for s in sources if (s.tenant, s.name) == (tenant, name)), None)


# --- errors ---------------------------------------------------------------------------------------


def refusal_for(error: EventCenterError, retry_after: float) -> Refusal:
    """The HTTP answer to an error the center raised while serving an operational route."""
    if isinstance(error, StoreUnavailable):
        return Refusal(503, "store_unavailable", str(error), retry_after=retry_after)
    if isinstance(error, ProcessorClosed):
        return Refusal(503, "not_running", str(error), retry_after=retry_after)
    if isinstance(error, LeaseLost):
        return Refusal(409, "lease_lost", f"{error}; ask the active center")
    if isinstance(error, ReplayRefused | SubscriptionError):
        return Refusal(409, "refused", str(error))
    if isinstance(error, InvalidAnswer):
        return Refusal(422, "invalid_answer", error.reason, field=error.field)
    if isinstance(error, InvalidPauseRequest):
        return Refusal(422, "invalid_request", str(error), field=error.field)
    if isinstance(error, SourceModeRefused):
        return Refusal(409, "refused", str(error))
    if isinstance(error, InvalidEvent):
        return Refusal(409, "refused", f"the letter's event cannot be replayed: {error}")
    return Refusal(500, "failed", str(error))


async def _off_loop(work: Callable[[], T]) -> T:
    """Run a blocking read of the store in a thread; an unreachable store is StoreUnavailable."""
    try:
        return await asyncio.to_thread(work)
    except EventCenterError:
        raise
    except Exception as error:
        if not is_transient(error):
            raise
        raise StoreUnavailable(f"the store cannot be reached: {short_error(error)}") from None


def _no_case(case_id: UUID) -> Refusal:
    return Refusal(404, "not_found", f"no rca case {case_id}", field="case_id")


def _no_letter(letter_id: UUID) -> Refusal:
    return Refusal(404, "not_found", f"no dead letter {letter_id}", field="letter_id")


def _no_source(tenant: str, source: str) -> Refusal:
    return Refusal(404, "not_found", f"no source '{tenant}/{source}'", field="source")


# --- the routes -----------------------------------------------------------------------------------


def ops_router(center: EventCenter, *, wall: Callable[[], float]) -> APIRouter:
    """The routes of the module docstring, on ``center`` (``wall``: now, for source health)."""
    router = APIRouter(responses=error_responses(401, 403, 422, 503))
    read = error_responses(404)
    change = error_responses(400, 404, 409)

    async def own_case(case_id: UUID, caller: Caller) -> CaseOut:
        case = await center.healing.cases.case(case_id)
        if case is None or not caller.sees(case.tenant):
            raise _no_case(case_id)
        return CaseOut(**_plain(case_dict(CaseRow.of(case))))

    @router.get("/rca/cases", tags=["rca"])
    async def list_cases(
        caller: CurrentCaller,
        open_only: bool = Query(False, description="only cases not closed"),
        tenant: str | None = TenantQuery,
        limit: int = Query(100, ge=1, le=1000, description="cases at most, newest first"),
    ) -> CaseList:
        """RCA cases, newest first (``eventcenter rca list``)."""
        rows = await center.healing.cases.cases(
            open_only=open_only, tenant=caller.tenant_filter(tenant), limit=limit
        )
        return CaseList(cases=[CaseOut(**_plain(case_dict(row))) for row in rows])

    @router.get("/rca/cases/{case_id}", tags=["rca"], responses=read)
    async def show_case(case_id: UUID, caller: CurrentCaller) -> CaseDetail:
        """One case and every step recorded for it (``eventcenter rca show``)."""
        case = await own_case(case_id, caller)
        steps = await center.healing.cases.history(case_id)
        return CaseDetail(case=case, steps=[_step(step) for step in steps])

    async def answer(case_id: UUID, caller: Caller, given: Answer) -> AnswerOut:
        await own_case(case_id, caller)
        outcome = await center.healing.answer(str(case_id), given)
        if outcome.startswith("refused"):
            reason = outcome.removeprefix("refused").lstrip(": ")
            raise Refusal(409, "refused", reason, field="case_id")
        return AnswerOut(case_id=str(case_id), outcome=outcome, by=given.by)

    @router.post("/rca/cases/{case_id}/ack", tags=["rca"], responses=change)
    async def acknowledge_case(
        case_id: UUID, caller: CurrentCaller, body: AckIn | None = None
    ) -> AnswerOut:
        """Take an escalated case: no more reminders; it stays open (``rca ack``)."""
        given = body or AckIn()
        answer_given = Answer.acknowledge(given.by or caller.name, given.note or None)
        return await answer(case_id, caller, answer_given)

    @router.post("/rca/cases/{case_id}/resolve", tags=["rca"], responses=change)
    async def resolve_case(case_id: UUID, caller: CurrentCaller, body: ResolveIn) -> AnswerOut:
        """Close a case, saying what was done (``rca resolve``)."""
        return await answer(case_id, caller, Answer.resolve(body.by or caller.name, body.note))

    @router.get("/dead-letters", tags=["dead letters"])
    async def list_letters(
        caller: CurrentCaller,
        status: Literal["pending", "replaying", "replayed"] | None = Query(
            None, description="only letters in this status"
        ),
        tenant: str | None = TenantQuery,
    ) -> LetterList:
        """Dead letters, oldest first (``eventcenter dead-letters list``)."""
        only = caller.tenant_filter(tenant)
        rows = await _off_loop(lambda: center.dead_letters(status))
        return LetterList(
            dead_letters=[_letter(r) for r in rows if only is None or r.tenant == only]
        )

    @router.get("/dead-letters/{letter_id}", tags=["dead letters"], responses=read)
    async def show_letter(letter_id: UUID, caller: CurrentCaller) -> LetterOut:
        """One dead letter: its event, why it failed, and what its replays did."""
        rows = await _off_loop(lambda: center.dead_letters())
        row = next((r for r in rows if r.id == letter_id and caller.sees(r.tenant)), None)
        if row is None:
            raise _no_letter(letter_id)
        return _letter(row)

    @router.post(
        "/dead-letters/{letter_id}/replay", tags=["dead letters"], status_code=202, responses=change
    )
    async def replay_letter(letter_id: UUID, caller: CurrentCaller) -> ReplayOut:
        """Hand a pending letter back to its subscription (``dead-letters replay``)."""
        try:
            letter = await _off_loop(lambda: center.letter_status(letter_id))
        except DeadLetterNotFound:
            raise _no_letter(letter_id) from None
        if not caller.sees(str(letter.envelope.get("tenant", "default"))):
            raise _no_letter(letter_id)
        event = await center.replay_dead_letter(letter_id, reason=f"replayed by {caller.name}")
        return ReplayOut(letter_id=str(letter_id), event_id=str(event.id), status="replaying")

    @router.get("/sources", tags=["sources"])
    async def list_sources(caller: CurrentCaller, tenant: str | None = TenantQuery) -> SourceList:
        """Every recorded source: mode, thresholds, switches, health (``sources list``)."""
        only = caller.tenant_filter(tenant)
        reader = center.reader()

        def reports() -> list[SourceReport]:
            now = wall()
            return [
                source_report(
                    row,
                    reader.outcomes(row.tenant, row.name),
                    now=now,
                    declared=_declared(center.settings, row.tenant, row.name),
                )
                for row in reader.sources()
                if only is None or row.tenant == only
            ]

        return SourceList(sources=[_source(r) for r in await _off_loop(reports)])

    @router.get("/sources/{tenant}/{source}", tags=["sources"], responses=read)
    async def show_source(tenant: str, source: str, caller: CurrentCaller) -> SourceOut:
        """One source, with its recent mode changes and their reasons (``sources show``)."""
        if not caller.sees(tenant):
            raise _no_source(tenant, source)
        reader = center.reader()

        def report() -> SourceReport | None:
            row = next(
                (r for r in reader.sources() if (r.tenant, r.name) == (tenant, source)), None
            )
            if row is None:
                return None
            declared = _declared(center.settings, tenant, source)
            return source_report(
                row, reader.outcomes(tenant, source), now=wall(), declared=declared
            )

        found = await _off_loop(report)
        if found is None:
            raise _no_source(tenant, source)
        return _source(found)

    async def pause_or_resume(
        tenant: str, source: str, caller: Caller, pause: PauseIn | None, resume: ResumeIn | None
    ) -> PauseOut:
        if not caller.sees(tenant):
            raise _no_source(tenant, source)
        try:
            if pause is not None:
                result = await center.pause_source(
                    tenant, source, reason=pause.reason, by=pause.by or caller.name
                )
            else:
                given = resume or ResumeIn()
                result = await center.resume_source(
                    tenant, source, reason=given.reason or "", by=given.by or caller.name
                )
        except SourceNotFound:
            raise _no_source(tenant, source) from None
        return PauseOut(**result.as_dict())

    @router.post("/sources/{tenant}/{source}/pause", tags=["sources"], responses=change)
    async def pause_source(
        tenant: str, source: str, caller: CurrentCaller, body: PauseIn
    ) -> PauseOut:
        """Stop the source's engines, keeping its positions; nothing is admitted from it until
        it is resumed, across restarts too (``sources pause``). Pausing it again changes
        nothing."""
        return await pause_or_resume(tenant, source, caller, body, None)

    @router.post("/sources/{tenant}/{source}/resume", tags=["sources"], responses=change)
    async def resume_source(
        tenant: str, source: str, caller: CurrentCaller, body: ResumeIn | None = None
    ) -> PauseOut:
        """Start a paused source again in its recorded mode from its stored positions
        (``sources resume``)."""
        return await pause_or_resume(tenant, source, caller, None, body)

    return router
