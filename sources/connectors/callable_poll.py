"""A poll path over a user's async callable ``cursor -> (values, next cursor)``.

``values`` is any iterable of what :mod:`.user_code` accepts (SourceItems, mappings, JSON
text); a value that is not an item is handed out with its problem. The next cursor may be a
string, a number or None (None: ask with the same cursor again). Each item's position is the
next cursor. An exception the callable raises becomes a :class:`SourceError` (its own, a
recognised library failure, or a retryable connection failure naming the exception).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from eventcenter.domain.sources import Received
from eventcenter.sources.connectors.errors import Where
from eventcenter.sources.connectors.user_code import received_user_value, user_failure

PollFunction = Callable[[str | None], Awaitable[tuple[Iterable[Any], str | int | None]]]


def callable_poll(function: PollFunction, *, name: str | None = None) -> CallablePoll:
    """A poll path calling ``function``; ``name`` (default: the function's) shows in messages."""
    return CallablePoll(function, name=name or str(getattr(function, "__qualname__", "callable")))


class CallablePoll:
    """See :func:`callable_poll`."""

    def __init__(self, function: PollFunction, *, name: str) -> None:
        self._function = function
        self._where = Where("callable_poll", repr(name))

    @property
    def describe(self) -> str:
        return f"callable_poll {self._where.target}"

    async def __call__(self, cursor: str | None) -> tuple[Sequence[Received], str | None]:
        try:
            values, following = await self._function(cursor)
        except Exception as error:
            raise user_failure(error, self._where) from error
        next_cursor = cursor if following is None else str(following)
        position = next_cursor or ""
        return [received_user_value(value, position) for value in values], next_cursor

    async def aclose(self) -> None:
        """Nothing to release; here so every path closes the same way."""
