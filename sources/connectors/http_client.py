"""The HTTP side shared by :func:`http_poll` and :func:`http_list`: GET, then JSON or an error.

A failure is a :class:`SourceError` (see :mod:`.errors`: 401/403 auth, 429/503 rate limited
with the server's ``Retry-After``, 410 position lost, a body that is not JSON bad data).
Redirects are followed. The ``httpx.AsyncClient`` is created on first use and closed by
``aclose``; a client passed in is borrowed and left open.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from eventcenter.domain.sources import SourceErrorKind
from eventcenter.sources.connectors.errors import (
    PathStateError,
    Where,
    classify,
    http_status_error,
)

SHOWN_BODY = 200  # characters of a body that is not JSON, in the message


class HttpGetter:
    def __init__(
        self,
        where: Where,
        *,
        headers: Mapping[str, str] | None,
        timeout: float,
        client: httpx.AsyncClient | None,
    ) -> None:
        self._where = where
        self._headers = dict(headers or {})
        self._timeout = timeout
        self._client = client
        self._owned = client is None
        self._closed = False

    async def get_json(self, url: str) -> Any:
        """The decoded JSON body of ``GET url``."""
        if self._closed:
            raise PathStateError(
                f"{self._where.connector} {self._where.target}: used after aclose()"
            )
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout, follow_redirects=True)
        try:
            response = await self._client.get(url, headers=self._headers)
        except httpx.HTTPError as error:
            found = classify(error, self._where)
            if found is None:
                raise
            raise found from error
        if not response.is_success:
            raise http_status_error(response, self._where)
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError as error:
            start = response.text[:SHOWN_BODY]
            raise self._where.error(
                SourceErrorKind.BAD_DATA, f"the response is not JSON ({error}): {start!r}"
            ) from None

    async def aclose(self) -> None:
        self._closed = True
        client, self._client = self._client, None
        if client is not None and self._owned:
            await client.aclose()
