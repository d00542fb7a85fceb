"""The event envelope: what every published event looks like once it is accepted.

Validation happens once, here, at the boundary. An envelope that exists is valid: downstream
code never re-checks it. Bounds on sizes come from :class:`EnvelopeLimits`, passed in by the
caller (the processor's settings), so they are documented in one place and configurable.

Two ways in:

- :meth:`Event.create` / :meth:`Event.parse` take Python values (code that publishes);
- :func:`parse_json` / :func:`parse_json_batch` take the raw bytes of an HTTP body. They refuse
  what a dict can no longer show: invalid UTF-8, a key repeated in one object, NaN or Infinity,
  nesting deeper than the limit (counted on the bytes, before any parser recurses) and bodies
  larger than ``max_body_bytes`` / ``max_batch_bytes``.

What "payload is JSON" means, for both ways: an object whose values are objects with string
keys, arrays (lists or tuples), strings, finite floats, integers of at most 64 bits, booleans
and null. Its size is the length of its compact UTF-8 JSON (what :meth:`Event.to_json` writes);
its depth counts the payload itself as level 1. Values orjson writes natively without being JSON
types (UUIDs, enum members) are accepted as what they serialise to; datetimes and dataclasses
are refused, as they were with the standard library's encoder.

Cost. Validation is on the processor's hot path (tens of thousands of events per second), so
the payload is serialised once with orjson and its size and depth are read from those bytes with
a handful of C-level ``bytes`` operations instead of a walk over every value in Python (see
:func:`_shape`); the same reading of a raw body bounds its nesting before it is parsed and
counts its keys to find repeated ones. ``bench/envelope.py`` measures it next to baselines.
"""

from __future__ import annotations

import copy
import json
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import accumulate
from math import isfinite
from typing import Any
from uuid import RFC_4122, UUID, SafeUUID

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from uuid_utils import uuid7

from eventcenter.domain.errors import InvalidBatch, InvalidEvent
from eventcenter.domain.priority import Priority

#: One segment of a dot-notation type: letters, digits, ``_`` and ``-``.
SEGMENT = r"[A-Za-z0-9_-]+"
TYPE_PATTERN = re.compile(rf"{SEGMENT}(\.{SEGMENT})*")
#: ``source`` and ``tenant`` name directories, files and URL path segments, so they hold no
#: ``/`` or ``\``, never start with ``.`` and never contain ``..`` (checked apart: a pattern
#: for it would be harder to read than the test).
NAME_PATTERN = re.compile(r"[A-Za-z0-9_:@-][A-Za-z0-9_.:@-]*")
NAME_RULE = (
    "may hold ASCII letters, digits and _ . : @ - only (no '/' or '\\'),"
    " must not start with '.' and must not contain '..'"
)
#: Control characters and lone surrogates: nothing a log line, a file or JSON can carry as is.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")

#: The highest ``max_depth`` allowed. orjson refuses to serialise more than 254 levels and the
#: envelope (and a batch) add levels; 128 stays well inside that and beyond any sane event.
DEPTH_CEILING = 128


class EnvelopeLimits(BaseModel):
    """Bounds every envelope must respect. Defaults suit control-plane events, not bulk data.

    Lengths are in characters, sizes in bytes of compact UTF-8 JSON. The body bounds apply to
    raw HTTP bodies only (:func:`parse_json`, :func:`parse_json_batch`), before anything is
    parsed; keep ``max_body_bytes`` above ``max_payload_bytes + max_metadata_bytes`` plus room
    for the other fields and whitespace, or a body may be refused that :meth:`Event.create`
    would accept.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_type_length: int = Field(128, ge=1, description="characters in `type`")
    max_name_length: int = Field(128, ge=1, description="characters in `source`, `tenant`")
    max_correlation_id_length: int = Field(
        128, ge=36, description="characters in `correlation_id` (at least a UUID's 36)"
    )
    max_version_length: int = Field(64, ge=1, description="characters in `version`")
    max_payload_bytes: int = Field(64 * 1024, ge=2, description="bytes of the payload as JSON")
    max_metadata_bytes: int = Field(8 * 1024, ge=2, description="bytes of metadata as JSON")
    max_depth: int = Field(
        16,
        ge=1,
        le=DEPTH_CEILING,
        description="nesting depth of payload and metadata (the object itself is level 1)",
    )
    max_body_bytes: int = Field(
        256 * 1024, ge=2, description="bytes of one raw JSON envelope (parse_json)"
    )
    max_batch_bytes: int = Field(
        4 * 1024 * 1024, ge=2, description="bytes of a raw JSON array of envelopes"
    )
    max_batch_events: int = Field(1000, ge=1, description="envelopes in one JSON batch")


DEFAULT_LIMITS = EnvelopeLimits()

#: Instances built by hand (a UUID from its integer, a clone of a validated Event).
_new = object.__new__
_set = object.__setattr__
#: Read once: an enum member looked up on its class goes through a descriptor each time.
_UNKNOWN_SAFETY = SafeUUID.unknown


def new_event_id() -> UUID:
    """A new event id: a UUIDv7 (RFC 9562), from ``uuid-utils``.

    Version 7 starts with a millisecond timestamp, and this generator keeps ids increasing
    within a millisecond too: ids made one after the other sort in the order they were made,
    so a durable inbox indexed by id appends at the end of its index instead of writing at
    random pages (uuid4), and an id tells roughly when it was made. It is also cheaper than
    ``uuid.uuid4()`` (one call into Rust, no ``os.urandom`` of 16 bytes per id; see
    ``bench/envelope.py``). Ids that arrive from elsewhere may be any RFC 9562 version.
    """
    return new_event_id_text()[0]


def new_event_id_text() -> tuple[UUID, str]:
    """A new event id (see :func:`new_event_id`) and its text, both from one generated id.

    The text comes from ``uuid-utils``' own UUID, written in Rust: the standard library's
    ``str(UUID)`` costs several times the generation itself. The standard ``UUID`` is then
    built from the integer the way ``uuid_utils.compat`` builds it, without re-checking it.
    """
    made = uuid7()
    event_id = _new(UUID)
    _set(event_id, "int", made.int)
    _set(event_id, "is_safe", _UNKNOWN_SAFETY)
    return event_id, str(made)


# --- reading a JSON text's shape from its bytes ----------------------------------------------

#: Everything that is not a quote, a bracket or a colon; and without colons, when only nesting
#: matters.
_NOT_SHAPE = bytes(sorted(set(range(256)) - set(b'"[]{}:')))
_NOT_NESTING = bytes(sorted(set(range(256)) - set(b'"[]{}')))
#: Both kinds of bracket become one pair: nesting is then counted with one ``replace`` a level.
_PARENS = bytes.maketrans(b"[]{}", b"()()")
#: A string once escapes are gone and only quotes, brackets and colons are left.
_STRING = re.compile(rb'"[^"]*"')
#: ``(`` counts +1 and ``)`` -1 as signed bytes, for a running sum.
_STEPS = bytes.maketrans(b"()", b"\x01\xff")


def _shape(text: bytes, *, colons: bool = True) -> bytes:
    """The brackets (as ``(`` and ``)``) and colons of a JSON text that stand outside strings.

    Linear, C-level and never recursive: see :func:`_reduce` and :func:`_without_strings`.
    Exact for valid JSON. For invalid text it only serves to bound work before the parser
    refuses it. Without ``colons``, only the brackets.
    """
    return _without_strings(_reduce(text, _NOT_SHAPE if colons else _NOT_NESTING))


def _reduce(text: bytes, drop: bytes) -> bytes:
    """``text`` with escaped backslashes and quotes removed (so that every ``"`` left opens or
    closes a string), brackets turned into ``(`` and ``)`` and the bytes in ``drop`` deleted."""
    if b"\\" in text:
        text = text.replace(b"\\\\", b"").replace(b'\\"', b"")
    return text.translate(_PARENS, drop)


def _without_strings(reduced: bytes) -> bytes:
    """A reduced text without its strings: first the many left empty (``""``; removing two
    neighbouring quotes never changes which side of a string anything else is on), then the
    few that held a bracket or a colon."""
    reduced = reduced.replace(b'""', b"")
    if b'"' in reduced:
        reduced = _STRING.sub(b"", reduced)
    return reduced


def _deeper_than(parens: bytes, limit: int) -> bool:
    """Whether a run of ``(`` and ``)`` nests deeper than ``limit``, without recursion.

    Each ``replace`` removes the innermost pairs, one level; ``limit`` of them empty a balanced
    run exactly when it nests at most ``limit`` deep. Otherwise (deeper, or unbalanced because
    the text is not JSON) the deepest point is found with a running sum.
    """
    if parens.count(b"(") <= limit:
        return False
    if b"(" * (limit + 1) in parens:  # a plain run of openers, as in a body of 100,000 "["
        return True
    run = parens
    for _ in range(limit):
        shorter = run.replace(b"()", b"")
        if not shorter:
            return False
        if len(shorter) == len(run):
            break
        run = shorter
    steps = memoryview(parens.translate(_STEPS)).cast("b")
    return max(accumulate(steps)) > limit


def _json_deeper_than(text: bytes, limit: int) -> bool:
    """Whether the compact JSON ``text`` nests deeper than ``limit``."""
    reduced = _reduce(text, _NOT_NESTING)
    if reduced.count(b"(") <= limit:  # brackets in strings too: a bound that usually settles it
        return False
    return _deeper_than(_without_strings(reduced), limit)


def _key_count(text: bytes) -> int:
    """How many object keys the JSON ``text`` holds: its colons outside strings.

    (Counting ``":`` would be cheaper but wrong: a string may start with a colon.)
    """
    return _shape(text).count(b":") if b":" in text else 0


#: A non-finite float as pickle writes it: opcode ``G`` (BINFLOAT), then the IEEE 754 double big
#: endian, whose first 12 bits after the sign are all ones for NaN and both infinities.
_PICKLED_NON_FINITE = re.compile(rb"G[\x7f\xff][\xf0-\xff]")


def holds_non_finite(value: Any) -> bool:
    """Whether a NaN or an infinity hides in ``value``; orjson writes them as ``null``.

    So this runs only for a value whose JSON holds ``null``. A walk in Python costs some 20
    times orjson's serialisation; ``pickle.dumps`` visits every value in C (about 5 times) and
    writes each float as its raw 8 bytes after the opcode ``G``, where a non-finite one is
    recognisable. Only a match (or a value pickle refuses) leads to the walk, which decides:
    the pattern may also turn up in the bytes of a string.
    """
    try:
        pickled = pickle.dumps(value, protocol=4)
    except (pickle.PicklingError, TypeError, AttributeError, ValueError):
        return _walk_for_non_finite(value)
    return _PICKLED_NON_FINITE.search(pickled) is not None and _walk_for_non_finite(value)


def _walk_for_non_finite(value: Any) -> bool:
    """The exact answer, by a walk without recursion (a value may be deep or cyclic)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not isfinite(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


#: Serialising a payload: datetimes and dataclasses go to ``default`` (there is none), so they
#: are refused as non-JSON instead of being written as strings and objects.
_STRICT = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def _check_json(value: Any, max_bytes: int, max_depth: int) -> None:
    """Raise ValueError saying why ``value`` is not an acceptable JSON object, if it is not.

    One orjson serialisation gives the size; depth is read from those bytes; only a value
    whose JSON holds ``null`` is searched for NaN (see :func:`holds_non_finite`).
    """
    try:
        text = orjson.dumps(value, option=_STRICT)
    except orjson.JSONEncodeError as error:
        if "Recursion limit" in str(error):  # orjson stops at 254 levels, and on cycles
            raise ValueError(f"nests deeper than {max_depth} levels") from None
        raise ValueError(f"must be JSON-serialisable: {error}") from None
    if _json_deeper_than(text, max_depth):
        raise ValueError(f"nests deeper than {max_depth} levels")
    if len(text) > max_bytes:
        raise ValueError(f"is {len(text)} bytes as JSON; the limit is {max_bytes}")
    if b"null" in text and holds_non_finite(value):
        raise ValueError("must be JSON-serialisable: NaN and infinite floats are not JSON numbers")


#: Values a shallow copy may share: they cannot be changed in place.
_SCALARS = frozenset({str, int, float, bool, type(None)})
#: Up to this many members, checking for a flat object costs less than the round trip.
_FLAT_MAX = 16


def _copy_json(value: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of a JSON object: an orjson round trip, several times faster than deepcopy.

    Tuples come back as lists and str or int subclasses (enum members) as plain values: the
    same JSON. A value changed after validation into something orjson cannot write is copied
    with :func:`copy.deepcopy` instead, so the copy is never shared.
    """
    if not value:
        return {}
    if len(value) <= _FLAT_MAX:
        for member in value.values():  # a loop, not all(...): a generator costs more here
            if type(member) not in _SCALARS:
                break
        else:
            return dict(value)  # a flat object of immutable values: a shallow copy is a deep one
    try:
        copied: dict[str, Any] = orjson.loads(orjson.dumps(value))
    except orjson.JSONEncodeError:
        return copy.deepcopy(value)
    return copied


# --- validation context -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Decoded:
    """Validation context for an envelope decoded from bytes by :func:`parse_json`.

    ``members`` holds the compact JSON of its object and array members, already written to
    count keys: their depth was checked on the body and orjson refuses NaN when it parses, so
    validation only needs their sizes.
    """

    limits: EnvelopeLimits
    members: Mapping[str, bytes]


def _limits(info: ValidationInfo) -> EnvelopeLimits:
    context = info.context
    if isinstance(context, EnvelopeLimits):
        return context
    if isinstance(context, _Decoded):
        return context.limits
    return DEFAULT_LIMITS


def _bounded(value: str, least: int, limit: int) -> None:
    if not least <= len(value) <= limit:
        raise ValueError(f"must be {least} to {limit} characters long, got {len(value)}")


class Event(BaseModel):
    """An accepted event. Immutable; build one with :meth:`create`, :meth:`parse` or
    :func:`parse_json`.

    ``type`` is dot notation (``deployment.changed``), ``tenant`` scopes fairness and audit,
    ``correlation_id`` ties together everything one cause set off (defaults to the event's id).
    ``id`` is any RFC 9562 UUID (versions 1 to 8); new events get a UUIDv7 (:func:`new_event_id`).

    The model is frozen, but ``payload`` and ``metadata`` are plain dicts: a handler gets its
    own copy (:meth:`fresh_copy`), and a publisher must not change what it passed in.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    __slots__ = ("_id_text",)  # the id as text, once asked for (see id_text)

    id: UUID = Field(default_factory=new_event_id)
    type: str
    source: str = "app"
    tenant: str = "default"
    timestamp: datetime = Field(default_factory=lambda: datetime.now(UTC))
    priority: Priority = Priority.NORMAL
    correlation_id: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)
    payload: dict[str, Any] = Field(default_factory=dict)
    version: str = "1"

    @field_validator("id")
    @classmethod
    def _rfc_9562(cls, value: UUID) -> UUID:
        if value.int == 0:
            raise ValueError(
                "is the nil UUID, which names no event; send an RFC 9562 UUID"
                " (versions 1 to 8, e.g. a uuid4 or uuid7) or leave it out to get one"
            )
        if value.variant != RFC_4122 or not 1 <= (value.version or 0) <= 8:
            raise ValueError(
                f"must be an RFC 9562 UUID (variant bits 10, version 1 to 8), got {value}"
            )
        return value

    @field_validator("type")
    @classmethod
    def _valid_type(cls, value: str, info: ValidationInfo) -> str:
        limit = _limits(info).max_type_length
        if len(value) > limit:
            raise ValueError(f"is {len(value)} characters long; the limit is {limit}")
        if not TYPE_PATTERN.fullmatch(value):
            raise ValueError(
                "must be dot notation: segments of letters, digits, '_' or '-' joined by '.'"
                f" (e.g. 'deployment.changed'), got {value!r}"
            )
        return value

    @field_validator("source", "tenant")
    @classmethod
    def _valid_name(cls, value: str, info: ValidationInfo) -> str:
        _bounded(value, 1, _limits(info).max_name_length)
        if not NAME_PATTERN.fullmatch(value) or ".." in value:
            raise ValueError(f"{NAME_RULE}, got {value!r}")
        return value

    @field_validator("correlation_id", "version")
    @classmethod
    def _printable(cls, value: str, info: ValidationInfo) -> str:
        limits = _limits(info)
        if info.field_name == "version":
            _bounded(value, 1, limits.max_version_length)
        else:  # empty: the event's own id is used
            _bounded(value, 0, limits.max_correlation_id_length)
        if _UNPRINTABLE.search(value):
            raise ValueError("must not hold control characters or lone surrogates")
        return value

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("must be timezone-aware (UTC)")
        try:
            return value.astimezone(UTC)
        except OverflowError:  # 0001-01-01T00:00+01:00 is before the year 1 in UTC
            raise ValueError("is outside the years 1 to 9999 once converted to UTC") from None

    @field_validator("priority", mode="before")
    @classmethod
    def _priority(cls, value: Any) -> Priority:
        return Priority.parse(value)

    @field_validator("payload", "metadata")
    @classmethod
    def _json_object(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        name = info.field_name or "payload"
        limits = _limits(info)
        max_bytes = limits.max_payload_bytes if name == "payload" else limits.max_metadata_bytes
        context = info.context
        if isinstance(context, _Decoded) and name in context.members:
            size = len(context.members[name])
            if size > max_bytes:
                raise ValueError(f"is {size} bytes as JSON; the limit is {max_bytes}")
            return value
        _check_json(value, max_bytes, limits.max_depth)
        return value

    @model_validator(mode="after")
    def _default_correlation(self) -> Event:
        if not self.correlation_id:
            object.__setattr__(self, "correlation_id", self.id_text)
        return self

    @property
    def id_text(self) -> str:
        """``str(self.id)``, computed once: admission, storage and delivery each need it.

        Kept in a slot, not in ``__dict__``: ``dict(event)``, ``to_json`` and copies see the
        fields only.
        """
        try:
            text: str = self._id_text  # type: ignore[attr-defined]  # the slot, read directly
        except AttributeError:
            text = str(self.id)
            object.__setattr__(self, "_id_text", text)
        return text

    @classmethod
    def parse(cls, data: Mapping[str, Any], limits: EnvelopeLimits = DEFAULT_LIMITS) -> Event:
        """Validate a mapping (e.g. decoded JSON) into an Event or raise :class:`InvalidEvent`.

        For raw bytes use :func:`parse_json`: a mapping can no longer show repeated keys.
        """
        return _validated(data, limits)

    @classmethod
    def create(
        cls,
        type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        limits: EnvelopeLimits = DEFAULT_LIMITS,
        **fields: Any,
    ) -> Event:
        """Build and validate an event; unset fields get their defaults (new id, now, NORMAL)."""
        data: dict[str, Any] = {k: v for k, v in fields.items() if v is not None}
        data["type"] = type
        if payload is not None:
            data["payload"] = payload
        return _validated(data, limits)

    def sibling(
        self,
        payload: dict[str, Any],
        metadata: dict[str, Any],
        limits: EnvelopeLimits = DEFAULT_LIMITS,
    ) -> Event:
        """A new event of this one's type, tenant, source, priority and version, with its own
        id and time and the given ``payload`` and ``metadata``, which it takes over (do not
        change them afterwards).

        The same checks as :meth:`create` (JSON, size, depth, no NaN; :class:`InvalidEvent`
        naming the field) for what differs; what is shared was validated when this event was.
        For many events that differ only in content (a source's batch of items) this costs a
        quarter of :meth:`create`. The correlation id is the new event's own id, unless this
        one carries an explicit one, which it shares.
        """
        for name, value, max_bytes in (  # in the order validation checks them
            ("metadata", metadata, limits.max_metadata_bytes),
            ("payload", payload, limits.max_payload_bytes),
        ):
            if type(value) is not dict:
                raise InvalidEvent(name, "must be a JSON object")
            try:
                _check_json(value, max_bytes, limits.max_depth)
            except ValueError as error:
                raise InvalidEvent(name, str(error)) from None
        event_id, text = new_event_id_text()
        fields = self.__dict__.copy()
        fields["id"] = event_id
        fields["timestamp"] = datetime.now(UTC)
        fields["payload"] = payload
        fields["metadata"] = metadata
        if self.correlation_id == self.id_text:
            fields["correlation_id"] = text
        clone = _new(Event)
        _set(clone, "__dict__", fields)
        _set(clone, "__pydantic_fields_set__", self.__pydantic_fields_set__)
        _set(clone, "__pydantic_extra__", None)
        _set(clone, "__pydantic_private__", None)
        _set(clone, "_id_text", text)
        return clone

    def to_dict(self) -> dict[str, Any]:
        """The envelope as plain JSON values (ids and times as strings)."""
        return self.model_dump(mode="json")

    def to_json(self) -> bytes:
        """The envelope as compact UTF-8 JSON: the same document as :meth:`to_dict`.

        One orjson call over the fields (in declaration order). The payload is serialised
        again rather than kept from validation: the model is frozen but its dicts are not, and
        a kept copy could silently disagree with them.
        """
        return orjson.dumps(self.__dict__, option=orjson.OPT_UTC_Z)

    def fresh_copy(self) -> Event:
        """This event with its own deep copy of ``payload`` and ``metadata``, not re-validated.

        What each handler attempt gets, so that a handler changing the payload (at any depth)
        changes nothing for other subscribers, retries or the stored dead letter. The copy is
        an orjson round trip (tuples become lists); every other field is immutable and shared.
        """
        # A shallow clone built by hand: BaseModel.__copy__ also copies private and extra state
        # this model does not have, and costs twice as much.
        clone = _new(Event)
        fields = self.__dict__.copy()
        fields["payload"] = _copy_json(self.payload)
        fields["metadata"] = _copy_json(self.metadata)
        _set(clone, "__dict__", fields)
        _set(clone, "__pydantic_fields_set__", self.__pydantic_fields_set__)
        _set(clone, "__pydantic_extra__", None)
        _set(clone, "__pydantic_private__", None)
        _set(clone, "_id_text", self.id_text)  # the same id: its text is known
        return clone


def _validated(data: Mapping[str, Any], context: EnvelopeLimits | _Decoded) -> Event:
    try:
        return Event.model_validate(data, context=context)
    except ValidationError as error:
        raise invalid_event(error) from None


def invalid_event(error: ValidationError) -> InvalidEvent:
    """Translate pydantic's error into ours, naming the first offending field."""
    first = error.errors(include_url=False)[0]
    field = ".".join(str(part) for part in first["loc"]) or "event"
    reason = first["msg"].removeprefix("Value error, ")
    return InvalidEvent(field, reason)


# --- raw JSON bodies ---------------------------------------------------------------------------

#: What an HTTP server hands over as a body.
JsonBody = bytes | bytearray | memoryview


def parse_json(data: JsonBody, limits: EnvelopeLimits = DEFAULT_LIMITS) -> Event:
    """Validate the raw bytes of one JSON envelope (an HTTP body) into an Event.

    Raises :class:`InvalidEvent` naming the field, or ``body`` for the body as a whole: larger
    than ``limits.max_body_bytes``, not UTF-8, not JSON, NaN or Infinity, not an object, a key
    repeated in any object, or nesting deeper than ``limits.max_depth`` below the envelope.
    Nesting is counted on the bytes before anything is parsed, so a body of 100,000 ``[``
    costs one linear pass and never a recursion.
    """
    text = _body(data, limits.max_body_bytes)
    shape = _shape(text)
    if _deeper_than(shape.translate(None, b":"), limits.max_depth + 1):
        raise _too_deep(text, limits.max_depth, batch=False)
    envelope = _decode(text)
    if not isinstance(envelope, dict):
        raise InvalidEvent(
            "body", f"must be a JSON object (one event envelope), got {_kind(envelope)}"
        )
    members = _members_json(envelope)
    if shape.count(b":") != len(envelope) + sum(map(_key_count, members.values())):
        raise _repeated_key(text, batch=False)
    return _validated(envelope, _Decoded(limits, members))


def parse_json_batch(data: JsonBody, limits: EnvelopeLimits = DEFAULT_LIMITS) -> list[Event]:
    """Validate the raw bytes of a JSON array of envelopes; all of them or none.

    The body as a whole is checked like :func:`parse_json`'s, against ``max_batch_bytes`` and
    ``max_batch_events`` (refusals raise :class:`InvalidEvent` with field ``body``); an
    invalid envelope raises :class:`InvalidBatch` naming its index and field.
    """
    text = _body(data, limits.max_batch_bytes)
    shape = _shape(text)
    if _deeper_than(shape.translate(None, b":"), limits.max_depth + 2):
        raise _too_deep(text, limits.max_depth, batch=True)
    items = _decode(text)
    if not isinstance(items, list):
        raise InvalidEvent("body", f"must be a JSON array of event envelopes, got {_kind(items)}")
    if len(items) > limits.max_batch_events:
        raise InvalidEvent(
            "body", f"holds {len(items)} events; the limit is {limits.max_batch_events}"
        )
    members: list[dict[str, bytes]] = []
    keys = 0
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise InvalidBatch(index, "event", f"must be a JSON object, got {_kind(item)}")
        members.append(_members_json(item))
        keys += len(item) + sum(map(_key_count, members[index].values()))
    if shape.count(b":") != keys:
        raise _repeated_key(text, batch=True)
    events = []
    for index, (item, json_members) in enumerate(zip(items, members, strict=True)):
        try:
            events.append(_validated(item, _Decoded(limits, json_members)))
        except InvalidEvent as error:
            raise InvalidBatch(index, error.field, error.reason) from None
    return events


def _body(data: JsonBody, max_bytes: int) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidEvent(
            "body", f"must be the raw bytes of a JSON text, got {type(data).__name__}"
        )
    text = bytes(data)
    if len(text) > max_bytes:
        raise InvalidEvent("body", f"is {len(text)} bytes; the limit is {max_bytes}")
    return text


def _decode(text: bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise InvalidEvent("body", _syntax_reason(text, error)) from None


def _syntax_reason(text: bytes, error: orjson.JSONDecodeError) -> str:
    """Why orjson refused ``text``, said for a person (its own words are terse)."""
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"is not valid UTF-8 (byte 0x{text[bad.start]:02x} at offset {bad.start})"
    if re.match(r"-?(NaN|Infinity)", decoded[error.pos :]):
        return "holds NaN or Infinity, which are not JSON numbers"
    return f"is not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"


def _members_json(envelope: dict[str, Any]) -> dict[str, bytes]:
    """The compact JSON of the envelope's object and array members (payload, metadata)."""
    return {
        key: orjson.dumps(value)
        for key, value in envelope.items()
        if type(value) is dict or type(value) is list  # orjson.loads makes no subclasses
    }


def _kind(value: Any) -> str:
    names: dict[type, str] = {
        dict: "an object",
        list: "an array",
        str: "a string",
        int: "a number",
        float: "a number",
        bool: "true or false",
    }
    return names.get(type(value), "null")


# --- refusals that need a closer look at the body (only run when refusing) --------------------

#: A string, a bracket or a comma: enough to follow nesting and array positions.
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{},]', re.DOTALL)


def _too_deep(text: bytes, max_depth: int, *, batch: bool) -> InvalidEvent:
    """The refusal of a body nested too deeply, naming the member (and index) where it is.

    Follows the tokens only up to the first point deeper than allowed.
    """
    level = 2 if batch else 1  # the depth inside an envelope, where its members sit
    limit = max_depth + level
    depth = index = 0
    top = envelope = b""
    key: bytes | None = None
    last_string: bytes | None = None
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token[:1] == b'"':
            if depth == level:
                last_string = token
        elif token == b",":
            if batch and depth == 1:
                index += 1
        elif token in (b"[", b"{"):
            if depth == 0:
                top = token
            if depth == level - 1:
                envelope, key, last_string = token, None, None
            elif depth == level:
                key = last_string  # the member whose value opens here
            depth += 1
            if depth > limit:
                break
        else:
            depth -= 1
    if not envelope or (batch and top != b"["):
        return InvalidEvent("body", f"nests deeper than {limit} levels")
    if envelope == b"{" and key is not None:
        field, reason = _member_name(key), f"nests deeper than {max_depth} levels"
    else:
        field, reason = (
            ("event" if batch else "body"),
            f"nests deeper than {limit - level + 1} levels",
        )
    return InvalidBatch(index, field, reason) if batch else InvalidEvent(field, reason)


def _member_name(token: bytes) -> str:
    try:
        name = json.loads(token)
    except ValueError:
        return "body"
    return name if isinstance(name, str) else "body"


class _Repeats(dict[str, Any]):
    """A decoded object that repeats a key, or holds (at any depth) an object that does."""

    def __init__(self, pairs: list[tuple[str, Any]], repeated: str, *, own: bool) -> None:
        super().__init__(pairs)
        self.repeated = repeated
        self.own = own


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            return _Repeats(pairs, key, own=True)
        seen.add(key)
    for _, value in pairs:
        inner = _repeats_in(value)
        if inner is not None:
            return _Repeats(pairs, inner.repeated, own=False)
    return dict(pairs)


def _repeats_in(value: Any) -> _Repeats | None:
    if isinstance(value, _Repeats):
        return value
    if isinstance(value, list):  # nesting was bounded before: this recursion is shallow
        for item in value:
            found = _repeats_in(item)
            if found is not None:
                return found
    return None


def _repeated_key(text: bytes, *, batch: bool) -> InvalidEvent:
    """The refusal of a body that repeats a key, naming the member (and index) holding it.

    Parses once more with the standard library, which hands over every key/value pair.
    """
    decoded = json.loads(text, object_pairs_hook=_object_pairs)
    envelopes = list(enumerate(decoded)) if batch else [(0, decoded)]
    for index, envelope in envelopes:
        found = _repeats_in(envelope)
        if found is None:
            continue
        if found.own:
            field, reason = found.repeated, "appears more than once in the envelope"
        else:
            field = next(key for key, value in found.items() if _repeats_in(value) is not None)
            reason = f"repeats the key {found.repeated!r} in one object"
        reason += "; each key may appear once per object"
        return InvalidBatch(index, field, reason) if batch else InvalidEvent(field, reason)
    return InvalidEvent("body", "repeats a key in one object")  # pragma: no cover
