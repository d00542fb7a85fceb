"""What a user's iterator or callable hands over, as :class:`Received`; its failures as
:class:`SourceError`.

Accepted values: a :class:`SourceItem`; a mapping in ``decode_item``'s shape; JSON text (str or
bytes) of one. Anything else is handed out with its problem, like any bad message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from eventcenter.domain.sources import Received, SourceError, SourceErrorKind, SourceItem
from eventcenter.sources.connectors.errors import Where, classify
from eventcenter.sources.connectors.messages import problem, received_json, received_value


def received_user_value(value: Any, position: str, token: Any = None) -> Received:
    if isinstance(value, SourceItem):
        return Received(position=position, item=value, token=token)
    if isinstance(value, Mapping):
        return received_value(value, position, token)
    if isinstance(value, str | bytes):
        return received_json(value, position, token)
    return problem(
        position,
        f"expected a SourceItem, a mapping or JSON text, got {type(value).__name__}",
        repr(value),
        token,
    )


def user_failure(error: Exception, where: Where) -> SourceError:
    """A failure of user code: its own SourceError, a recognised library failure, or else a
    connection failure naming the exception (retryable: the engine backs off and retries)."""
    found = classify(error, where)
    if found is not None:
        return found
    return where.error(SourceErrorKind.CONNECTION, f"raised {type(error).__name__}: {error}")
