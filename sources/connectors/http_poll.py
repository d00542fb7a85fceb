"""HTTP poll path: ``GET`` a URL with the cursor in it, read the items changed after it.

The URL template holds ``{cursor}``, replaced by the cursor (URL-encoded; empty at the
start): ``http://127.0.0.1:9000/orders?since={cursor}``. The response::

    {"items": [{"key": "o-1", "version": 3, "data": {...}}, ...], "cursor": "c-42"}

- ``items``: the items changed after the cursor, each in ``decode_item``'s shape; one that is
  not an item is handed out with its problem (and dead-lettered), the others go on;
- ``cursor``: what to ask with next. Missing or null means "nothing new past your cursor": the
  same cursor is asked again (never a restart from the beginning). A string or a number.

Each item's ``position`` is the page's next cursor. Failures raise :class:`SourceError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import quote

import httpx

from eventcenter.domain.errors import ConfigurationError
from eventcenter.domain.sources import Received, SourceErrorKind
from eventcenter.sources.connectors.errors import Where, shown_url, url_password
from eventcenter.sources.connectors.http_client import HttpGetter
from eventcenter.sources.connectors.messages import received_value

PLACEHOLDER = "{cursor}"


def http_poll(
    url_template: str,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
    client: httpx.AsyncClient | None = None,
) -> HttpPoll:
    """A poll path over ``url_template`` (see the module doc); ``timeout`` bounds each GET."""
    return HttpPoll(url_template, headers=headers, timeout=timeout, client=client)


class HttpPoll:
    """See :func:`http_poll`. Call it with a cursor; ``aclose`` when done (safe twice)."""

    def __init__(
        self,
        url_template: str,
        *,
        headers: Mapping[str, str] | None,
        timeout: float,
        client: httpx.AsyncClient | None,
    ) -> None:
        if PLACEHOLDER not in url_template:
            raise ConfigurationError(
                f"http_poll: the URL {shown_url(url_template)!r} has no {PLACEHOLDER} to put"
                " the cursor in"
            )
        if timeout <= 0:
            raise ConfigurationError("http_poll: timeout must be > 0")
        self._template = url_template
        self._where = Where("http_poll", shown_url(url_template), url_password(url_template))
        self._http = HttpGetter(self._where, headers=headers, timeout=timeout, client=client)

    @property
    def describe(self) -> str:
        return f"http_poll {self._where.target}"

    async def __call__(self, cursor: str | None) -> tuple[Sequence[Received], str | None]:
        url = self._template.replace(PLACEHOLDER, quote(cursor or "", safe=""))
        body = await self._http.get_json(url)
        if not isinstance(body, dict) or not isinstance(body.get("items"), list):
            got = "an object without a list 'items'" if isinstance(body, dict) else "not an object"
            raise self._where.error(
                SourceErrorKind.BAD_DATA,
                f'expected a JSON object {{"items": [...], "cursor": ...}}, got {got}',
            )
        following = body.get("cursor")
        if following is None:
            following = cursor
        elif isinstance(following, bool) or not isinstance(following, str | int):
            raise self._where.error(
                SourceErrorKind.BAD_DATA,
                f"'cursor' must be a string or a number, got {type(following).__name__}",
            )
        else:
            following = str(following)
        position = following or ""
        return [received_value(value, position) for value in body["items"]], following

    async def aclose(self) -> None:
        await self._http.aclose()
