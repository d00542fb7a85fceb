"""HTTP listing: ``GET`` a URL returning every item the source holds now.

The response is a JSON array of items, or ``{"items": [...]}``, each in ``decode_item``'s
shape. The listing is the authority reconciliation compares against, so it is taken whole or
refused: an item that does not decode, or a key listed twice, raises :class:`SourceError`
(bad data) naming it, rather than letting a missing item read as deleted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from eventcenter.domain.errors import ConfigurationError
from eventcenter.domain.sources import InvalidItem, SourceErrorKind, SourceItem, decode_item
from eventcenter.sources.connectors.errors import Where, shown_url, url_password
from eventcenter.sources.connectors.http_client import HttpGetter


def http_list(
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    client: httpx.AsyncClient | None = None,
) -> HttpList:
    """A listing path over ``url`` (see the module doc); ``timeout`` bounds the GET."""
    return HttpList(url, headers=headers, timeout=timeout, client=client)


class HttpList:
    """See :func:`http_list`. Call it for the listing; ``aclose`` when done (safe twice)."""

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None,
        timeout: float,
        client: httpx.AsyncClient | None,
    ) -> None:
        if timeout <= 0:
            raise ConfigurationError("http_list: timeout must be > 0")
        self._url = url
        self._where = Where("http_list", shown_url(url), url_password(url))
        self._http = HttpGetter(self._where, headers=headers, timeout=timeout, client=client)

    @property
    def describe(self) -> str:
        return f"http_list {self._where.target}"

    async def __call__(self) -> Sequence[SourceItem]:
        body = await self._http.get_json(self._url)
        values = body.get("items") if isinstance(body, dict) else body
        if not isinstance(values, list):
            raise self._where.error(
                SourceErrorKind.BAD_DATA,
                f'expected a JSON array of items or {{"items": [...]}}, got {type(body).__name__}',
            )
        return self._items(values)

    def _items(self, values: list[Any]) -> list[SourceItem]:
        items: list[SourceItem] = []
        seen: set[str] = set()
        for index, value in enumerate(values):
            try:
                item = decode_item(value)
            except InvalidItem as error:
                raise self._refused(f"item #{index}: {error}") from None
            if item.key in seen:
                raise self._refused(f"item #{index}: key {item.key!r} is listed twice")
            seen.add(item.key)
            items.append(item)
        return items

    def _refused(self, detail: str) -> Exception:
        return self._where.error(
            SourceErrorKind.BAD_DATA,
            f"{detail}; the listing is refused whole (a missing item would read as deleted)",
        )

    async def aclose(self) -> None:
        await self._http.aclose()
