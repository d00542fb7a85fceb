"""How the HTTP API says no: one JSON shape for every answer other than 2xx.

``{"error": <code>, "field": <name>, "index": <i>, "reason": <why>}``: ``error`` a short code
(``invalid_event``, ``unauthorized``, ``not_found`` ...), ``field`` the header, parameter or
envelope field at fault when there is one, ``index`` the event of a batch, ``reason`` what to
fix. Raise :class:`Refusal` anywhere in a route; :func:`install_error_handlers` also renders
FastAPI's own validation errors (422) and Starlette's (an unknown path is 404, a wrong method
405) in this shape, so a client never has to parse two.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

__all__ = ["ErrorBody", "Refusal", "error_responses", "install_error_handlers", "json_response"]


class ErrorBody(BaseModel):
    """The body of every answer other than 2xx."""

    error: str = Field(description="a short code: invalid_event, unauthorized, not_found ...")
    field: str | None = Field(None, description="the header, parameter or field at fault")
    index: int | None = Field(None, description="the event of a batch at fault")
    reason: str = Field(description="what is wrong and what to do")


class Refusal(Exception):
    """An answer other than 2xx, with what to fix; turned into the JSON error body."""

    def __init__(
        self,
        status: int,
        error: str,
        reason: str,
        *,
        field: str | None = None,
        index: int | None = None,
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.error = error
        self.reason = reason
        self.field = field
        self.index = index
        self.retry_after = retry_after
        self.headers = dict(headers or {})

    def response(self) -> Response:
        body: dict[str, Any] = {"error": self.error}
        if self.field is not None:
            body["field"] = self.field
        if self.index is not None:
            body["index"] = self.index
        body["reason"] = self.reason
        headers = dict(self.headers)
        if self.retry_after is not None:
            headers["Retry-After"] = str(max(0, round(self.retry_after)))
        return json_response(self.status, body, headers or None)


def json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


_DESCRIPTIONS = {
    400: "the body as a whole is unusable",
    401: "no API key, or one that is unknown or revoked",
    403: "the key may not do this (another tenant's data, or admin only)",
    404: "no such thing, or one this key may not see",
    409: "refused by the state of what it asks to change",
    413: "the body is too large",
    415: "the body is not JSON",
    422: "a parameter or field is invalid (named in field)",
    503: "not now: retry after Retry-After seconds",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of a route for these error statuses, each an ErrorBody in
    JSON (also on a route whose own answer is not JSON, such as ``/metrics``)."""
    return {
        code: {
            "model": ErrorBody,
            "description": _DESCRIPTIONS[code],
            "content": {"application/json": {"schema": {"$ref": _ERROR_BODY_REF}}},
        }
        for code in codes
    }


_ERROR_BODY_REF = "#/components/schemas/ErrorBody"


_HTTP_ERRORS = {400: "invalid_body", 404: "not_found", 405: "method_not_allowed"}


def _field(location: Sequence[Any]) -> str:
    """``("query", "status")`` -> ``status``; ``("body",)`` -> ``body``."""
    parts = [str(part) for part in location]
    if len(parts) > 1 and parts[0] in ("query", "path", "header", "body", "cookie"):
        parts = parts[1:]
    return ".".join(parts) or "request"


def install_error_handlers(app: FastAPI) -> None:
    """Render Refusal, FastAPI's validation errors and Starlette's HTTP errors as ErrorBody."""

    @app.exception_handler(Refusal)
    async def refused(request: Request, refusal: Refusal) -> Response:
        return refusal.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> Response:
        found = list(error.errors())
        first = found[0] if found else {"loc": (), "msg": "the request is invalid"}
        reason = str(first.get("msg", "is invalid")).removeprefix("Value error, ")
        refusal = Refusal(422, "invalid_request", reason, field=_field(first.get("loc", ())))
        return refusal.response()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> Response:
        code = _HTTP_ERRORS.get(error.status_code, "http_error")
        field = "body" if error.status_code == 400 else None
        refusal = Refusal(
            error.status_code, code, str(error.detail), field=field, headers=error.headers
        )
        return refusal.response()
