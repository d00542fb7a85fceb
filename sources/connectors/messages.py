"""Message bodies to :class:`Received`: JSON text of an item, or the reason it is not one.

A body that is not JSON, or JSON that is not an item (see ``decode_item``), still becomes a
:class:`Received`, with its ``problem`` and the raw text, so that it is dead-lettered with the
reason and acknowledged: one bad message never stops a stream.
"""

from __future__ import annotations

from typing import Any

import orjson

from eventcenter.domain.sources import RAW_MAX, InvalidItem, Received, decode_item


def as_text(body: bytes | str) -> str:
    """The body as text for a dead letter; undecodable bytes are shown, not refused."""
    return body if isinstance(body, str) else body.decode("utf-8", errors="replace")


def received_json(body: bytes | str, position: str, token: Any = None) -> Received:
    """A :class:`Received` for a body holding the JSON of one item.

    The body is turned into text only for a bad message: a good one costs one parse.
    """
    try:
        item = decode_item(orjson.loads(body))
    except orjson.JSONDecodeError as error:
        return problem(position, f"not JSON: {error}", body, token)
    except InvalidItem as error:
        return problem(position, str(error), body, token)
    return Received(position=position, item=item, token=token)


def problem(position: str, reason: str, body: bytes | str, token: Any = None) -> Received:
    """A :class:`Received` that is not an item: the reason and the raw body, truncated."""
    return Received(
        position=position, item=None, problem=reason, raw=as_text(body)[:RAW_MAX], token=token
    )


def received_value(value: Any, position: str, token: Any = None) -> Received:
    """A :class:`Received` for an already decoded JSON value (an element of a response)."""
    try:
        item = decode_item(value)
    except InvalidItem as error:
        return problem(position, str(error), orjson.dumps(value, default=repr), token)
    return Received(position=position, item=item, token=token)
