"""Redis stream entries to :class:`Received`: the message format of :func:`redis_stream`.

An entry carries one item in one of two forms::

    XADD orders * item '{"key": "o-1", "version": 3, "data": {"total": 12}}'
    XADD orders * key o-1 version 3 data '{"total": 12}' deleted false occurred_at 1717000000.5

- **JSON**: a field ``item`` holding the JSON of the item (see ``decode_item``); other fields
  are ignored. An entry whose only field is ``data`` is read the same way.
- **Flat fields**: ``key`` and ``version`` (required), ``data`` (the item's JSON object, as
  text), ``deleted`` (``true``/``false``/``1``/``0``), ``occurred_at`` (seconds since the
  epoch). Other fields are ignored.

An entry that fits neither (not UTF-8, JSON that does not parse, no key, no version) becomes a
:class:`Received` with its problem and the entry's fields as JSON text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from eventcenter.domain.sources import InvalidItem, Received, decode_item
from eventcenter.sources.connectors.messages import problem, received_json

_TRUE = {"true", "1"}
_FALSE = {"false", "0", ""}


class _BadField(ValueError):
    """A flat field whose text cannot be read as what it stands for."""


def received_entry(entry_id: str, fields: Mapping[bytes, bytes]) -> Received:
    """The :class:`Received` for the entry ``entry_id`` (its position and its ack token)."""
    body = fields.get(b"item")
    if body is None and len(fields) == 1:
        body = fields.get(b"data")
    if body is not None:
        return received_json(body, entry_id, token=entry_id)
    try:
        text = {key.decode(): value.decode() for key, value in fields.items()}
    except UnicodeDecodeError as error:
        return problem(entry_id, f"a field is not UTF-8 text: {error}", _shown(fields), entry_id)
    try:
        item = decode_item(_flat_item(text))
    except (_BadField, InvalidItem) as error:
        return problem(entry_id, str(error), orjson.dumps(text), entry_id)
    return Received(position=entry_id, item=item, token=entry_id)


def _flat_item(fields: Mapping[str, str]) -> dict[str, Any]:
    value: dict[str, Any] = {"key": fields.get("key"), "version": fields.get("version")}
    if "data" in fields:
        try:
            value["data"] = orjson.loads(fields["data"])
        except orjson.JSONDecodeError as error:
            raise _BadField(f"field 'data' is not JSON: {error}") from None
    if "deleted" in fields:
        flag = fields["deleted"].strip().lower()
        if flag not in _TRUE | _FALSE:
            raise _BadField(f"field 'deleted' must be true or false, got {fields['deleted']!r}")
        value["deleted"] = flag in _TRUE
    if "occurred_at" in fields:
        try:
            value["occurred_at"] = float(fields["occurred_at"])
        except ValueError:
            raise _BadField(
                f"field 'occurred_at' must be seconds since the epoch, got"
                f" {fields['occurred_at']!r}"
            ) from None
    return value


def _shown(fields: Mapping[bytes, bytes]) -> str:
    shown = {
        key.decode(errors="replace"): value.decode(errors="replace")
        for key, value in fields.items()
    }
    return orjson.dumps(shown).decode()
